// `distill run --check`: the config resolves and every file it names opens, or each problem is
// listed with the path, and nothing runs.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

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
  // Config paths are relative to the project root, where users run distill.
  const auto cwd = std::filesystem::current_path();
  std::filesystem::current_path(root);
  const auto ok = run_distill("run --check --config configs/smoke-cpu.json");
  std::filesystem::current_path(cwd);
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

// train-head then train-student in one folder: each runs its stage and what it needs, reusing
// what the folder holds; config.json accumulates the stages asked for.
TEST(CliRun, TrainHeadTrainStudentAndEvalShareTheRunFolder) {
  const std::string root = DISTILL_SOURCE_DIR;
  if (!std::filesystem::exists(root + "/../shared/data/cifar10-jpg/test-0000.tar"))
    GTEST_SKIP() << "real CIFAR-10 shards not found under ../shared/data";
  testing::TempDir tmp;
  nlohmann::json c = nlohmann::json::parse(std::ifstream(root + "/configs/smoke-cpu.json"));
  c.erase("ablations");
  c["data"].erase("captions");
  c["data"].erase("train_captions");
  c["data"]["train"] = root + "/../shared/data/cifar10-jpg/train-{0000..0004}.tar";
  c["data"]["test"] = root + "/../shared/data/cifar10-jpg/test-0000.tar";
  c["text"]["tokenizer"] = root + "/tests/fixtures/tokenizers/bert-uncased-vocab.txt";
  c["stage0"]["epochs"] = 1;
  const std::string config = (tmp.path() / "c.json").string();
  std::ofstream(config) << c.dump();
  const std::string common =
      " --quiet --config " + config + " --runs-dir " + tmp.path().string() + " --name r";
  const auto head = run_distill("train-head" + common);
  ASSERT_EQ(head.exit_code, 0) << head.out;
  const auto dir = tmp.path() / "r";
  for (const char* f : {"teacher.safetensors", "head.safetensors"})
    EXPECT_TRUE(std::filesystem::exists(dir / f)) << f;
  EXPECT_FALSE(std::filesystem::exists(dir / "student_notext.safetensors"));
  const auto teacher_time = std::filesystem::last_write_time(dir / "teacher.safetensors");

  const auto student = run_distill("train-student --teacher notext" + common);
  ASSERT_EQ(student.exit_code, 0) << student.out;
  EXPECT_TRUE(std::filesystem::exists(dir / "student_notext.safetensors"));
  EXPECT_TRUE(std::filesystem::exists(dir / "probe.safetensors"));
  // The teacher was loaded, not retrained.
  EXPECT_EQ(std::filesystem::last_write_time(dir / "teacher.safetensors"), teacher_time);
  const auto written = nlohmann::json::parse(std::ifstream(dir / "config.json"));
  EXPECT_EQ(written["stages"], nlohmann::json({"head", "student_notext"}));
  const auto summary = nlohmann::json::parse(std::ifstream(dir / "summary.json"));
  for (const char* stage : {"teacher", "head", "probe", "student_notext"})
    EXPECT_TRUE(summary["stages"].contains(stage)) << stage;

  // eval: the stored numbers again on the same test split, another split on request, and a
  // clear error for a stage that never ran; the folder is left as it was.
  const auto config_time = std::filesystem::last_write_time(dir / "config.json");
  const auto metrics_size = std::filesystem::file_size(dir / "metrics.jsonl");
  const std::string where =
      " --config " + config + " --runs-dir " + tmp.path().string() + " --name r";
  const auto again = run_distill("eval --json --stage student_notext,head" + where, false);
  ASSERT_FALSE(again.out.empty());
  const auto evaluated = nlohmann::json::parse(again.out);
  for (const char* stage : {"student_notext", "head"})
    EXPECT_DOUBLE_EQ(evaluated["evaluations"][stage]["top1"].get<double>(),
                     summary["stages"][stage]["top1"].get<double>())
        << stage;
  const auto other = run_distill("eval --json --stage student_notext --test " + root +
                                     "/../shared/data/cifar10-jpg/train-0000.tar" + where,
                                 false);
  ASSERT_FALSE(other.out.empty());
  EXPECT_EQ(nlohmann::json::parse(other.out)["evaluations"]["student_notext"]["metrics"]["count"],
            10000);
  const auto missing = run_distill("eval --stage student_text" + where);
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.out.find("student_text.safetensors"), std::string::npos) << missing.out;
  EXPECT_EQ(std::filesystem::last_write_time(dir / "config.json"), config_time);
  EXPECT_EQ(std::filesystem::file_size(dir / "metrics.jsonl"), metrics_size);

  const auto bad = run_distill("train-student --teacher oracle" + common);
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.out.find("--teacher accepts text, notext or labels"), std::string::npos) << bad.out;
  // A different config for the same folder is refused, naming the folder's config.json.
  c["seed"] = 7;
  std::ofstream(config) << c.dump();
  const auto changed = run_distill("train-head" + common);
  EXPECT_NE(changed.exit_code, 0);
  EXPECT_NE(changed.out.find("config differs"), std::string::npos) << changed.out;
}

}  // namespace
}  // namespace distill
