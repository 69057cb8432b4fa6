// Runs the `distill` binary as a user does, for the CLI tests.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace distill::testing {

struct Result {
  int exit_code;
  std::string out;  // stdout and stderr together
};

// Runs the binary; `stderr_too` merges stderr into the output (JSON commands keep it apart).
// `env` ("NAME=value ...") sets environment variables for the child only.
inline Result run_distill(const std::string& args, bool stderr_too = true,
                          const std::string& env = "") {
  const std::string cmd = (env.empty() ? "" : "env " + env + " ") + std::string(DISTILL_BINARY) +
                          " " + args + (stderr_too ? " 2>&1" : " 2>/dev/null");
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return {-1, "popen failed"};
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

// Only the JSON document (stdout) — stderr is kept apart for --json commands.
inline std::string run_json(const std::string& args) {
  return run_distill(args, false).out;
}

}  // namespace distill::testing
