// `distill run --check`: the config resolves and every file it names opens, or each problem is
// listed with the path, and nothing runs.
#include <filesystem>
#include <fstream>

#include "tests/models/model_test_util.h"
#include "tests/tools/cli_run.h"

namespace distill {
namespace {

using testing::run_distill;

TEST(CliRun, CheckListsEveryFileThatDoesNotOpen) {
  testing::TempDir tmp;
  const std::string config = (tmp.path() / "c.json").string();
  std::ofstream(config) << R"({"name": "x", "data": {"train": "/nonexistent/train.tar",
      "test": "/nonexistent/test.tar"}, "teacher": {"checkpoint": "/nonexistent/t.safetensors"},
      "text": {"tokenizer": "/nonexistent/vocab.txt"}})";
  const auto r =
      run_distill("run --check --runs-dir " + tmp.path().string() + " --config " + config);
  EXPECT_EQ(r.exit_code, 1) << r.out;
  for (const char* needle :
       {"/nonexistent/train.tar", "/nonexistent/test.tar", "/nonexistent/t.safetensors",
        "/nonexistent/vocab.txt", "4 problem(s)"})
    EXPECT_NE(r.out.find(needle), std::string::npos) << needle << " in " << r.out;
  // Nothing ran: no run folder.
  EXPECT_FALSE(std::filesystem::exists(tmp.path() / "x"));
}

TEST(CliRun, CheckPassesTheSmokeConfigAndRejectsBadKeys) {
  const std::string root = DISTILL_SOURCE_DIR;
  if (!std::filesystem::exists(root + "/../shared/data/cifar10-jpg/test-0000.tar"))
    GTEST_SKIP() << "real CIFAR-10 shards not found under ../shared/data";
  const auto ok = run_distill("run --check --config " + root + "/configs/smoke-cpu.json");
  EXPECT_EQ(ok.exit_code, 0) << ok.out;
  EXPECT_NE(ok.out.find("everything the config names opens"), std::string::npos) << ok.out;

  testing::TempDir tmp;
  const std::string bad = (tmp.path() / "bad.json").string();
  std::ofstream(bad) << R"({"name": "x", "studnet": {}})";
  const auto r = run_distill("run --check --config " + bad);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("studnet"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(bad), std::string::npos) << r.out;
}

}  // namespace
}  // namespace distill
