// The experiment runner end to end on the CPU: tiny teachers on real CIFAR-10 images, every
// stage and baseline, the report; runs killed part-way, stopped by a signal or out of memory,
// then resumed.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>

#include "core/safetensors.h"
#include "tests/models/model_test_util.h"
#include "tests/tools/cli_run.h"
#include "tests/train/shards_test_util.h"
#include "train/experiment.h"

namespace distill::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

json tiny_config(const std::string& name, const json& teacher_arch) {
  json c = json::parse(std::ifstream(std::string(DISTILL_SOURCE_DIR) + "/configs/smoke-cpu.json"));
  c["name"] = name;
  c["data"]["train"] = shards() + "/train-{0000..0004}.tar";
  c["data"]["test"] = shards() + "/test-0000.tar";
  c["data"]["workers"] = 2;
  c["text"]["tokenizer"] =
      std::string(DISTILL_SOURCE_DIR) + "/tests/fixtures/tokenizers/bert-uncased-vocab.txt";
  c["teacher"]["arch"] = teacher_arch;
  // The smoke config's ablations have their own tests (test_ablations.cpp).
  c.erase("ablations");
  c["data"].erase("captions");
  c["data"].erase("train_captions");
  c["student"].erase("targets");
  return c;
}

std::vector<json> read_jsonl(const fs::path& p) {
  std::vector<json> out;
  std::ifstream in(p);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

// Every model tensor of two stage files is bit-identical.
void expect_same_weights(const std::string& path_a, const std::string& path_b) {
  SafetensorsFile a(path_a), b(path_b);
  for (const auto& name : a.names()) {
    if (name.rfind("model.", 0) != 0) continue;
    const Tensor ta = a.tensor(name), tb = b.tensor(name);
    ASSERT_EQ(ta.nbytes(), tb.nbytes()) << name;
    EXPECT_EQ(std::memcmp(ta.data_ptr(), tb.data_ptr(), ta.nbytes()), 0) << name;
  }
}

TEST(Experiment, EveryStageRunsOnATinyVitAndTheReportHasEveryColumn) {
  SKIP_WITHOUT_SHARDS();
  TempDir tmp;
  train::RunOptions opts;
  opts.runs_dir = tmp.path().string();
  opts.quiet = true;
  const json c = tiny_config("vit", json::parse(R"({"type": "vit", "image_size": 32,
      "patch_size": 8, "width": 32, "layers": 2, "heads": 2, "mlp_dim": 64, "output_dim": 32,
      "act": "gelu"})"));
  const json summary = train::run_experiment(c, "test config", opts);
  for (const char* stage :
       {"teacher", "probe", "head", "student_text", "student_notext", "student_labels"}) {
    ASSERT_TRUE(summary["stages"].contains(stage)) << stage;
    const double top1 = summary["stages"][stage]["top1"];
    EXPECT_GE(top1, 0.0);
    EXPECT_LE(top1, 1.0);
  }
  // Zero-shot needs CLIP towers; with a BERT text encoder it is recorded as skipped.
  EXPECT_TRUE(summary["stages"]["zeroshot"].contains("skipped"));
  const fs::path dir = tmp.path() / "vit";
  for (const char* f : {"config.json", "metrics.jsonl", "summary.json", "report.md",
                        "class_queries.npy", "teacher.safetensors", "student_text.safetensors"})
    EXPECT_TRUE(fs::exists(dir / f)) << f;
  // The training losses fall within each trained stage (first logged vs last logged step).
  std::map<std::string, std::vector<double>> losses;
  for (const auto& r : read_jsonl(dir / "metrics.jsonl"))
    if (r.contains("loss") && r.contains("stage")) losses[r["stage"]].push_back(r["loss"]);
  for (const char* stage : {"teacher", "head"}) {
    ASSERT_GE(losses[stage].size(), 2u) << stage;
    EXPECT_LT(losses[stage].back(), losses[stage].front()) << stage;
  }
  std::ifstream in(dir / "report.md");
  const std::string report((std::istreambuf_iterator<char>(in)), {});
  for (const char* column : {"Linear probe", "Head", "Self-distillation without text",
                             "Self-distillation with text", "Student, labels only", "Zero-shot"})
    EXPECT_NE(report.find(column), std::string::npos) << column;
}

TEST(Experiment, ResNetTeacherRunsTheHeadOnItsFeatureMap) {
  SKIP_WITHOUT_SHARDS();
  TempDir tmp;
  train::RunOptions opts;
  opts.runs_dir = tmp.path().string();
  opts.quiet = true;
  json c = tiny_config("rn", json::parse(R"({"type": "resnet", "blocks": [1, 1, 1, 1],
      "width": 8, "image_size": 32, "heads": 2, "output_dim": 16})"));
  c["stages"] = {"teacher", "head", "student_text"};
  c["precision"] = "bf16";  // and mixed precision end to end
  const json summary = train::run_experiment(c, "test config", opts);
  EXPECT_TRUE(summary["stages"].contains("student_text"));
  EXPECT_FALSE(summary["stages"].contains("student_notext"));
}

TEST(Experiment, BadConfigsAreNamed) {
  const json base = tiny_config("bad", json::parse(R"({"type": "vit", "image_size": 32,
      "patch_size": 8, "width": 32, "layers": 1, "heads": 2, "mlp_dim": 64})"));
  auto expect_error = [&](json c, const std::string& needle) {
    try {
      train::resolve_experiment_config(c, "exp.json");
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_TRUE(message_has(e, "exp.json")) << e.what();
      EXPECT_TRUE(message_has(e, needle)) << e.what() << " lacks " << needle;
    }
  };
  json c = base;
  c["studnet"] = json::object();
  expect_error(c, "unknown config key 'studnet'");
  c = base;
  c["student"]["alpah"] = 1;
  expect_error(c, "student.alpah");
  c = base;
  c["stages"] = {"teacher", "distil"};
  expect_error(c, "unknown stage");
  c = base;
  c["teacher"]["arch"] = json::object();
  expect_error(c, "teacher needs a checkpoint or an arch");
  c = base;
  c["student"]["alpha"] = 2;
  expect_error(c, "alpha");
  c = base;
  c["precision"] = "fp16";
  expect_error(c, "precision must be \"f32\" or \"bf16\"");
  c = base;
  c["distributed"] = {{"bucket_mb", -1}};
  expect_error(c, "distributed: bucket_mb must be a number > 0");
  c = base;
  c["distributed"] = {{"sync_bn", true}};
  expect_error(c, "unknown config key 'distributed.sync_bn'");
}

// Every value of the wrong JSON type or out of range fails when the config is read, naming the
// file and the key, before a run folder exists (a zero probe.batch_size once divided by zero).
TEST(Experiment, ConfigValuesOfTheWrongTypeOrRangeAreNamed) {
  const json base = tiny_config("bad", json::parse(R"({"type": "vit", "image_size": 32,
      "patch_size": 8, "width": 32, "layers": 1, "heads": 2, "mlp_dim": 64})"));
  const std::vector<std::pair<std::function<void(json&)>, std::string>> cases = {
      {[](json& c) {
         c = json::array({1, 2});
       },
       "'(top level)' must be a JSON object"},
      {[](json& c) { c["data"] = "cifar10"; }, "'data' must be a JSON object, got \"cifar10\""},
      {[](json& c) { c["data"]["batch_size"] = "64"; },
       "'data.batch_size' must be an integer, got \"64\""},
      {[](json& c) { c["seed"] = 1.5; }, "'seed' must be an integer, got 1.5"},
      {[](json& c) { c["data"]["train"] = 5; }, "'data.train' must be a string, got 5"},
      {[](json& c) { c["stages"] = "teacher"; }, "'stages' must be a list"},
      {[](json& c) { c["student"]["alpha"] = "1"; }, "'student.alpha' must be a number"},
      {[](json& c) { c["name"] = "a/b"; }, "'name' must be a non-empty string without '/'"},
      {[](json& c) { c["data"]["train"] = ""; }, "data.train (a dataset spec) is required"},
      {[](json& c) { c["data"]["batch_size"] = 0; }, "data.batch_size must be >= 1, got 0"},
      {[](json& c) { c["data"]["eval_batch_size"] = -1; },
       "data.eval_batch_size must be >= 1, got -1"},
      {[](json& c) { c["probe"]["batch_size"] = 0; }, "probe.batch_size must be >= 1, got 0"},
      {[](json& c) { c["data"]["workers"] = 0; }, "data.workers must be >= 1, got 0"},
      {[](json& c) { c["stage0"]["epochs"] = 0; }, "stage0.epochs must be >= 1, got 0"},
      {[](json& c) { c["seed"] = -3; }, "seed must be >= 0, got -3"},
      {[](json& c) { c["student"]["tau"] = 0; }, "student.tau must be > 0"},
      {[](json& c) { c["data"]["augment"]["scale_min"] = 0; },
       "data.augment needs 0 < scale_min <= scale_max <= 1"},
      {[](json& c) { c["data"]["augment"]["scale_max"] = 0.3; },
       "data.augment needs 0 < scale_min <= scale_max <= 1"},
      {[](json& c) { c["data"]["augment"]["flip_probability"] = 2; },
       "data.augment.flip_probability must be in [0, 1]"},
      {[](json& c) { c["device"] = "tpu"; }, "device must be \"cpu\" or \"cuda\", got \"tpu\""},
      {[](json& c) { c["text"]["random"] = "yes"; }, "text.random must be a text encoder config"},
      {[](json& c) { c["teacher"]["arch"]["patch_size"] = 7; },
       "teacher.arch: image_size 32 is not a multiple of patch_size 7"},
      {[](json& c) { c["teacher"]["arch"]["type"] = "transformer"; },
       "teacher.arch: \"type\" must be \"vit\" or \"resnet\", got \"transformer\""},
      {[](json& c) { c["teacher"]["arch"]["depth"] = 12; },
       "teacher.arch: unknown model config key 'depth'"},
      {[](json& c) { c["teacher"]["arch"]["width"] = -32; },
       "teacher.arch: 'width' must be an integer >= 1, got -32"},
      {[](json& c) { c["stage0"]["schedule"]["total_steps"] = "100"; },
       "stage0.schedule: 'total_steps' must be an integer"},
      {[](json& c) { c["student"]["optimizer"]["kind"] = "lamb"; }, "student.optimizer"},
      {[](json& c) { c["head"]["config"]["widht"] = 64; }, "head.config"},
      {[](json& c) { c["text"]["tokenizer"] = ""; },
       "stage 'head' needs text.tokenizer (a tokenizer file or folder)"},
  };
  for (const auto& [edit, needle] : cases) {
    json c = base;
    edit(c);
    try {
      train::resolve_experiment_config(c, "exp.json");
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_TRUE(message_has(e, "exp.json: ")) << e.what();
      EXPECT_TRUE(message_has(e, needle)) << e.what() << " lacks " << needle;
    }
  }
}

// `distill run --quiet --config <cfg> --runs-dir <dir> [--resume]` as a child, output discarded.
pid_t start_distill_run(const std::string& cfg, const std::string& runs_dir, bool resume) {
  const pid_t pid = fork();
  if (pid == 0) {
    freopen("/dev/null", "w", stdout);
    freopen("/dev/null", "w", stderr);
    execl(DISTILL_BINARY, DISTILL_BINARY, "run", "--quiet", "--config", cfg.c_str(), "--runs-dir",
          runs_dir.c_str(), resume ? "--resume" : static_cast<char*>(nullptr),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

std::string file_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

// `distill run` with a checkpoint every step, SIGKILLed at random points (mid-step, mid-checkpoint,
// at the stage's end) and each time continued with --resume; once also under a memory cap too
// small for a step, which stops it with a message naming the stage, the batch size and what to
// change, and leaves the checkpoint as it was. The last --resume ends bit-identical to an
// uninterrupted run.
TEST(Experiment, RunKilledAtRandomPointsAndOutOfMemoryResumesBitIdentically) {
  SKIP_WITHOUT_SHARDS();
  TempDir tmp;
  json c = tiny_config("resume", json::parse(R"({"type": "vit", "image_size": 32,
      "patch_size": 8, "width": 32, "layers": 2, "heads": 2, "mlp_dim": 64, "output_dim": 32,
      "act": "gelu"})"));
  c["stages"] = {"teacher"};
  c["stage0"]["epochs"] = 3;
  c["checkpoint_every"] = 1;
  const std::string cfg = tmp.file("resume.json");
  std::ofstream(cfg) << c.dump();
  const std::string straight = (tmp.path() / "straight").string();
  const std::string killed = (tmp.path() / "killed").string();
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(run_distill("run --quiet --config " + cfg + " --runs-dir " + straight).exit_code, 0);
  const int64_t run_us =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  std::mt19937_64 rng(7);

  // The first run, killed once a mid-stage checkpoint exists (plus a random part of a step).
  const fs::path latest = fs::path(killed) / "resume/checkpoints/teacher/latest.json";
  pid_t pid = start_distill_run(cfg, killed, false);
  ASSERT_GE(pid, 0);
  bool checkpointed = false;
  for (int i = 0; i < 6000 && !checkpointed; ++i) {
    checkpointed = fs::exists(latest);
    usleep(checkpointed ? static_cast<useconds_t>(rng() % (run_us / 50 + 1)) : 5000);
  }
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(checkpointed) << "no mid-stage checkpoint appeared";
  if (WIFEXITED(status)) GTEST_SKIP() << "the run finished before it could be killed";

  // Out of memory (the tiny run's setup needs under 1 MiB, a step over 4 MiB).
  const std::string pointer = file_text(latest);
  const std::string resume_args = "run --quiet --resume --config " + cfg + " --runs-dir " + killed;
  Result oom = run_distill(resume_args, true, "DISTILL_MEMORY_LIMIT=2M");
  EXPECT_EQ(oom.exit_code, 1) << oom.out;
  for (const std::string& needle : std::vector<std::string>{
           "error: out of memory on cpu in stage teacher at step ",
           "(batch size 32, precision f32): the step needed ",
           "of 2.0 MiB, the DISTILL_MEMORY_LIMIT cap",
           "lower the batch size (data.batch_size) or use \"precision\": \"bf16\"",
           "the last checkpoint is " + (fs::path(killed) / "resume/checkpoints/teacher").string()})
    EXPECT_NE(oom.out.find(needle), std::string::npos) << needle << " not in " << oom.out;
  EXPECT_EQ(file_text(latest), pointer);

  // Resumed runs killed at random points, until one happens to finish.
  for (int round = 0; round < 3; ++round) {
    pid = start_distill_run(cfg, killed, true);
    ASSERT_GE(pid, 0);
    usleep(static_cast<useconds_t>(rng() % (run_us / 2)));
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    if (WIFEXITED(status)) {
      ASSERT_EQ(WEXITSTATUS(status), 0) << "a resumed run failed";
      break;
    }
  }
  Result r = run_distill(resume_args);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  expect_same_weights(straight + "/resume/teacher.safetensors",
                      killed + "/resume/teacher.safetensors");
}

// SIGTERM (as a scheduler or Ctrl-C sends it): the run finishes its step, checkpoints, says how
// to resume and exits with 128 + 15; the resumed run ends bit-identical to an uninterrupted one.
TEST(Experiment, TerminatedRunCheckpointsAndResumesBitIdentically) {
  SKIP_WITHOUT_SHARDS();
  TempDir tmp;
  json c = tiny_config("term", json::parse(R"({"type": "vit", "image_size": 32,
      "patch_size": 8, "width": 32, "layers": 2, "heads": 2, "mlp_dim": 64, "output_dim": 32,
      "act": "gelu"})"));
  c["stages"] = {"teacher"};
  c["stage0"]["epochs"] = 4;
  c["log_every"] = 1;
  const std::string cfg = tmp.file("term.json");
  std::ofstream(cfg) << c.dump();
  const std::string straight = (tmp.path() / "straight").string();
  const std::string stopped = (tmp.path() / "stopped").string();
  ASSERT_EQ(run_distill("run --quiet --config " + cfg + " --runs-dir " + straight).exit_code, 0);

  const std::string log = tmp.file("stderr.txt");
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    freopen(log.c_str(), "w", stderr);
    execl(DISTILL_BINARY, DISTILL_BINARY, "run", "--quiet", "--config", cfg.c_str(), "--runs-dir",
          stopped.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // Signal once the first optimizer steps are logged.
  const fs::path metrics = fs::path(stopped) / "term/metrics.jsonl";
  const bool signalled = once_a_step_is_logged(metrics, [&] { kill(pid, SIGTERM); });
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(signalled) << "no training step was logged";
  ASSERT_TRUE(WIFEXITED(status)) << "the run died instead of stopping cleanly";
  if (WEXITSTATUS(status) == 0) GTEST_SKIP() << "the run finished before the signal arrived";
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGTERM);
  std::ifstream in(log);
  const std::string err((std::istreambuf_iterator<char>(in)), {});
  EXPECT_NE(err.find("stopped by SIGTERM in stage teacher"), std::string::npos) << err;
  EXPECT_NE(err.find("--resume"), std::string::npos) << err;
  EXPECT_TRUE(fs::exists(fs::path(stopped) / "term/checkpoints/teacher/latest.json"));
  EXPECT_FALSE(fs::exists(fs::path(stopped) / "term/teacher.safetensors"));

  Result r = run_distill("run --quiet --resume --config " + cfg + " --runs-dir " + stopped);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  expect_same_weights(straight + "/term/teacher.safetensors",
                      stopped + "/term/teacher.safetensors");
}

}  // namespace
}  // namespace distill::testing
