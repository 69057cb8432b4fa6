// Crash-safe file output: AtomicFileWriter replaces a file only when the whole new content is
// durably written; a full disk (the injected ENOSPC hook, as write(2) fails on a full disk) is a
// clear error naming the file, with the old file intact and no temporary file left behind. The
// same holds for save_npy, which writes through it.
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/file_io.h"
#include "core/npy.h"
#include "tests/test_util.h"

namespace distill::testing {
namespace {

namespace fs = std::filesystem;

class FileIo : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("distill_file_io_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    inject_write_failure_for_testing(-1);
    fs::remove_all(dir_);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  static std::string read(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename());
    std::sort(names.begin(), names.end());
    return names;
  }
  fs::path dir_;
};

TEST_F(FileIo, CommitReplacesTheFileAndAnAbandonedWriteLeavesIt) {
  const std::string target = path("summary.json");
  {
    AtomicFileWriter out(target, "test");
    out.write(std::string("old"));
    out.commit();
  }
  EXPECT_EQ(read(target), "old");
  {
    AtomicFileWriter out(target, "test");
    out.write(std::string("half of the new"));
    EXPECT_TRUE(fs::exists(out.temp_path()));
    EXPECT_EQ(read(target), "old");  // nothing reaches the real name before commit()
  }                                  // destroyed without commit(): as an exception part-way would
  EXPECT_EQ(read(target), "old");
  EXPECT_EQ(entries(), std::vector<std::string>{"summary.json"});
}

TEST_F(FileIo, FullDiskIsAClearErrorAndLeavesTheOldFile) {
  const std::string target = path("report.md");
  std::ofstream(target) << "previous report";
  inject_write_failure_for_testing(10);  // the disk fills up 10 bytes into the new file
  try {
    AtomicFileWriter out(target, "write report");
    out.write(std::string(100, 'x'));
    out.commit();
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, "write report")) << e.what();
    EXPECT_TRUE(message_has(e, target)) << e.what();
    EXPECT_TRUE(message_has(e, "No space left on device (the disk is full)")) << e.what();
  }
  inject_write_failure_for_testing(-1);
  EXPECT_EQ(read(target), "previous report");
  EXPECT_EQ(entries(), std::vector<std::string>{"report.md"});
  EXPECT_EQ(io_error_text(EFBIG),
            std::string(std::strerror(EFBIG)) + " (the file-size limit was reached)");
  EXPECT_EQ(io_error_text(ENOENT), std::strerror(ENOENT));
}

TEST_F(FileIo, SaveNpyOnAFullDiskKeepsThePreviousArray) {
  const std::string target = path("class_queries.npy");
  const Tensor before = random_tensor({4, 8}, 1);
  save_npy(target, before);
  inject_write_failure_for_testing(100);  // part-way through the new file
  try {
    save_npy(target, random_tensor({64, 64}, 2));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, "save_npy")) << e.what();
    EXPECT_TRUE(message_has(e, target)) << e.what();
    EXPECT_TRUE(message_has(e, "the disk is full")) << e.what();
  }
  inject_write_failure_for_testing(-1);
  EXPECT_EQ(load_npy(target).to_float_vector(), before.to_float_vector());
  EXPECT_EQ(entries(), std::vector<std::string>{"class_queries.npy"});
}

}  // namespace
}  // namespace distill::testing
