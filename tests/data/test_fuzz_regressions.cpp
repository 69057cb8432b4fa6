// The inputs in tests/fuzz/regressions/<target>/ (each once crashed a fuzz target) replayed in the
// ordinary test suite, through the reader that target drives: each must be a distill::Error
// naming the file. tools/fuzz.sh replays them too, but only in the sanitizer build.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include "data/idx.h"
#include "data/image.h"
#include "data/tar.h"
#include "data/webdataset.h"
#include "tests/data/data_test_util.h"

namespace distill::data {
namespace {

namespace fs = std::filesystem;
using testing::error_of;
using testing::ScratchDir;

std::vector<uint8_t> file_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// The error the target's reader gives for `input` ("" when it reads it without one).
std::string replay(const std::string& target, const fs::path& input, const ScratchDir& dir) {
  const std::vector<uint8_t> bytes = file_bytes(input);
  if (target == "image")
    return error_of([&] { decode_image(bytes.data(), bytes.size(), input.string()); });
  if (target == "tar") {
    return error_of([&] {
      TarReader tar(input.string());
      TarMember member;
      while (tar.next(member)) tar.read_data();
    });
  }
  if (target == "idx") {
    // As fuzz_idx splits it: the first byte is the labels file's length.
    EXPECT_FALSE(bytes.empty()) << input;
    if (bytes.empty()) return "";
    const size_t label_size = std::min<size_t>(bytes[0], bytes.size() - 1);
    testing::write_bytes(dir / "labels", {bytes.begin() + 1, bytes.begin() + 1 + label_size});
    testing::write_bytes(dir / "images", {bytes.begin() + 1 + label_size, bytes.end()});
    return error_of([&] { IdxDataset ds(dir / "images", dir / "labels"); });
  }
  ADD_FAILURE() << "no replay for fuzz target '" << target << "' (" << input
                << "): add one to this test";
  return "";
}

TEST(FuzzRegressions, EveryInputIsAnErrorNamingTheFile) {
  const fs::path root = fs::path(DISTILL_SOURCE_DIR) / "tests" / "fuzz" / "regressions";
  ASSERT_TRUE(fs::is_directory(root)) << root;
  ScratchDir dir;
  int replayed = 0;
  for (const auto& target : fs::directory_iterator(root)) {
    for (const auto& input : fs::directory_iterator(target.path())) {
      SCOPED_TRACE(input.path().string());
      const std::string msg = replay(target.path().filename().string(), input.path(), dir);
      EXPECT_FALSE(msg.empty()) << "read without an error";
      // IDX inputs are split into two scratch files, which the message names instead.
      const std::string named =
          target.path().filename() == "idx" ? dir.str() : input.path().string();
      EXPECT_MESSAGE_HAS(msg, named);
      ++replayed;
    }
  }
  EXPECT_GE(replayed, 5);
}

}  // namespace
}  // namespace distill::data
