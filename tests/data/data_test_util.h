// Helpers for the data tests: scratch folders, random images, and the shared real data.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/image.h"
#include "kernels/philox.h"

namespace distill::testing {

// A fresh folder under the system temp dir, removed with everything in it on destruction.
class ScratchDir {
 public:
  ScratchDir() {
    static std::atomic<int> counter{0};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    const std::string name = std::string("distill_data_") + (info ? info->name() : "test") + "_" +
                             std::to_string(::getpid()) + "_" + std::to_string(counter++);
    path_ = std::filesystem::temp_directory_path() / name;
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string operator/(const std::string& rel) const { return (path_ / rel).string(); }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

// Random pixels from Philox (never flat: decoders and resizers must see real structure).
inline data::Image random_image(int height, int width, uint64_t seed) {
  data::Image im;
  im.height = height;
  im.width = width;
  im.pixels.resize(static_cast<size_t>(height) * width * 3);
  for (size_t i = 0; i < im.pixels.size(); ++i)
    im.pixels[i] = static_cast<uint8_t>(kernels::philox4x32_10(i, seed).v[0] >> 24);
  return im;
}

// A smooth random image (gradients plus a little noise): JPEG-friendly, so round trips are close.
inline data::Image smooth_image(int height, int width, uint64_t seed) {
  data::Image im = random_image(height, width, seed);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      for (int c = 0; c < 3; ++c) {
        uint8_t& v = im.pixels[(static_cast<size_t>(y) * width + x) * 3 + c];
        v = static_cast<uint8_t>((x * 200 / width + y * 40 / height + c * 10 + v / 16) % 256);
      }
  return im;
}

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// ../shared/data relative to the project root, or "" when it is not there.
inline std::string shared_data_dir() {
  const std::filesystem::path p =
      std::filesystem::path(DISTILL_SOURCE_DIR) / ".." / "shared" / "data";
  return std::filesystem::is_directory(p) ? std::filesystem::canonical(p).string() : "";
}

#define DISTILL_SKIP_WITHOUT_SHARED_DATA(sub)                                                      \
  do {                                                                                             \
    if (::distill::testing::shared_data_dir().empty() ||                                           \
        !std::filesystem::exists(::distill::testing::shared_data_dir() + "/" + (sub)))             \
      GTEST_SKIP() << "real data not found: expected " << DISTILL_SOURCE_DIR << "/../shared/data/" \
                   << (sub) << " (see ../shared/data/README.md)";                                  \
  } while (0)

// Runs `fn` and returns the message of the distill::Error it throws ("" if none).
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace distill::testing

#define EXPECT_MESSAGE_HAS(message, part) \
  EXPECT_NE((message).find(part), std::string::npos) << "message: " << (message)
