// Shared helpers for the libFuzzer targets (built with -DDISTILL_FUZZ=ON, run by tools/fuzz.sh).
// A target returns normally when the parser throws for bad input: distill::Error and other
// std::exceptions are the expected, clear failures. Anything else (sanitizer reports, aborts,
// crashes, hangs, runaway allocations) is a finding.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace distill::fuzz {

// A private scratch folder per fuzzing process: most readers take paths, so inputs are written
// to files (on tmpfs when there is one, which keeps this cheap).
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    const std::filesystem::path base =
        std::filesystem::exists("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path();
    std::filesystem::path d = base / ("distill_fuzz." + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

// Writes `size` bytes to `path` (created or truncated); aborts on I/O failure, which would be a
// harness problem, not a parser finding.
inline void write_bytes(const std::filesystem::path& path, const uint8_t* data, size_t size) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
}

// Runs `body`, swallowing the exceptions that bad input is allowed to produce.
template <typename F>
void expect_clean_failure(F&& body) {
  try {
    body();
  } catch (const std::exception&) {
    // distill::Error (or a library exception) for bad input: the behaviour we want.
  }
}

}  // namespace distill::fuzz
