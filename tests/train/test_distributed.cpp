// Data parallelism end to end with real processes: `mpirun -np 2 --oversubscribe distill run` on
// the CPU (MPI all-reduce) with a tiny ViT on real CIFAR-10 images.
//  1. 2 ranks with batch b per rank end with the weights of 1 rank with batch 2b. The ranks'
//     batches together are the 1-rank batch (same images, same augmentation), so the only
//     difference is fp32 rounding: the mean of two 16-image means vs one 32-image mean, and
//     GEMMs blocked for 16 rows instead of 32. Tolerance: |a - b| <= 2e-5 + 2e-4 |b| per weight
//     after 10 SGD steps (measured: max |a - b| ~1e-7 on weights of size ~0.1-1; per-rank
//     BatchNorm statistics instead of synchronised ones differ by ~0.1).
//     The same with a ResNet (BatchNorm) and distributed.sync_batch_norm.
//  2. A 2-rank run stopped mid-stage (SIGTERM to both ranks: they agree on the step, rank 0
//     checkpoints) and resumed ends bit-identical to an uninterrupted 2-rank run (a sum of two
//     values does not depend on the order the ranks add them).
// Skipped when mpirun or MPI support or the shards are missing.
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DISTILL_TEST_HAS_ASAN 1
#endif
#endif
#ifndef DISTILL_TEST_HAS_ASAN
#define DISTILL_TEST_HAS_ASAN 0
#endif

#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/distributed.h"
#include "core/safetensors.h"
#include "tests/models/model_test_util.h"
#include "tests/tools/cli_run.h"
#include "tests/train/shards_test_util.h"

namespace distill::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

bool have_mpirun() {
  return std::system("command -v mpirun >/dev/null 2>&1") == 0;
}

#define SKIP_WITHOUT_MPI()                                                                   \
  if (!dist::mpi_compiled()) GTEST_SKIP() << "MPI support is not compiled in (DISTILL_MPI)"; \
  if (!have_mpirun()) GTEST_SKIP() << "mpirun not found (apt-get install openmpi-bin)";      \
  SKIP_WITHOUT_SHARDS()

// OpenMPI's mpirun; one OpenMP thread per rank (2 ranks share 2 cores), no core binding.
std::string mpirun(int ranks) {
  std::string cmd =
      "mpirun -np " + std::to_string(ranks) +
      " --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 -x OMP_WAIT_POLICY=passive";
  if (geteuid() == 0) cmd += " --allow-run-as-root";
#if defined(__SANITIZE_ADDRESS__) || DISTILL_TEST_HAS_ASAN
  // OpenMPI dlclose()s its components at MPI_Finalize, so LeakSanitizer sees their allocations
  // with no module to name or suppress. Under mpirun only, leak checking is off; ASan's memory
  // errors and UBSan still apply, and the same code at world size 1 is leak-checked elsewhere.
  cmd += " -x ASAN_OPTIONS=detect_leaks=0";
#endif
  return cmd + " " + DISTILL_BINARY;
}

Result run_shell(const std::string& cmd) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return {-1, "popen failed"};
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

json tiny_vit_config(const std::string& name, int64_t batch) {
  json c = json::parse(std::ifstream(std::string(DISTILL_SOURCE_DIR) + "/configs/smoke-cpu.json"));
  c["name"] = name;
  c["data"]["train"] = shards() + "/train-{0000..0004}.tar";
  c["data"]["test"] = shards() + "/test-0000.tar";
  c["data"]["workers"] = 1;
  c["data"]["batch_size"] = batch;  // per rank
  c["text"]["tokenizer"] =
      std::string(DISTILL_SOURCE_DIR) + "/tests/fixtures/tokenizers/bert-uncased-vocab.txt";
  c.erase("ablations");
  c["data"].erase("captions");
  c["data"].erase("train_captions");
  c["student"].erase("targets");
  c["stages"] = {"teacher"};
  c["stage0"]["epochs"] = 2;  // 160 images: 5 steps of 32 per epoch
  return c;
}

std::map<std::string, std::vector<float>> model_tensors(const std::string& path) {
  SafetensorsFile f(path);
  std::map<std::string, std::vector<float>> out;
  for (const auto& name : f.names())
    if (name.rfind("model.", 0) == 0 && f.tensor(name).dtype() == DType::F32)
      out[name] = f.tensor(name).to_float_vector();
  return out;
}

// Runs `one` on 1 rank and `two` on 2 ranks (SGD, so that rounding stays rounding; see the top)
// and checks the teacher weights agree within the stated tolerance. Returns the 2-rank folder.
std::string expect_same_training(const TempDir& tmp, json one, json two) {
  for (json* c : {&one, &two}) {
    (*c)["stage0"]["optimizer"] = {{"kind", "sgd"}, {"momentum", 0.9}, {"weight_decay", 0.0}};
    // A moderate lr: at 0.05 the tiny BatchNorm ResNet on 32 images is chaotic (rounding-level
    // differences grow ~3x per step, to 1e-3 after 10 steps) while the ViT stays at 1e-8.
    (*c)["stage0"]["schedule"] = {{"kind", "cosine"}, {"base_lr", 0.01}};
  }
  const std::string cfg1 = tmp.file("one.json"), cfg2 = tmp.file("two.json");
  std::ofstream(cfg1) << one.dump();
  std::ofstream(cfg2) << two.dump();
  const std::string dir1 = (tmp.path() / "one").string(), dir2 = (tmp.path() / "two").string();
  const Result r1 = run_shell(mpirun(1) + " run --quiet --config " + cfg1 + " --runs-dir " + dir1);
  EXPECT_EQ(r1.exit_code, 0) << r1.out;
  const Result r2 = run_shell(mpirun(2) + " run --quiet --config " + cfg2 + " --runs-dir " + dir2);
  EXPECT_EQ(r2.exit_code, 0) << r2.out;
  const std::string name = one["name"].get<std::string>();
  const auto a = model_tensors(dir2 + "/" + name + "/teacher.safetensors");
  const auto b = model_tensors(dir1 + "/" + name + "/teacher.safetensors");
  EXPECT_EQ(a.size(), b.size());
  EXPECT_FALSE(a.empty());
  double worst = 0;
  for (const auto& [tensor, va] : a) {
    const auto& vb = b.at(tensor);
    EXPECT_EQ(va.size(), vb.size()) << tensor;
    for (size_t i = 0; i < va.size() && i < vb.size(); ++i) {
      const double d = std::abs(static_cast<double>(va[i]) - vb[i]);
      worst = std::max(worst, d);
      EXPECT_LE(d, 2e-5 + 2e-4 * std::abs(vb[i])) << tensor << "[" << i << "]";
      if (d > 2e-5 + 2e-4 * std::abs(vb[i])) break;
    }
  }
  std::printf("max |w(2 ranks x 16) - w(1 rank x 32)| = %.3g\n", worst);
  return dir2 + "/" + name;
}

TEST(Distributed, TwoRanksOfBatchBEndWithTheWeightsOfOneRankOfBatch2B) {
  SKIP_WITHOUT_MPI();
  TempDir tmp;
  json one = tiny_vit_config("dp", 32), two = tiny_vit_config("dp", 16);
  two["distributed"] = {{"bucket_mb", 0.01}};  // many buckets
  const std::string dir2 = expect_same_training(tmp, one, two);
  // Rank 0 alone wrote the folder: one metrics log with each step once.
  std::ifstream log(dir2 + "/metrics.jsonl");
  int steps = 0;
  for (std::string line; std::getline(log, line);)
    if (line.find("\"loss\"") != std::string::npos) ++steps;
  EXPECT_EQ(steps, 2);  // log_every 5, 10 steps
  // The test accuracy covers the whole test subset (80 images), split across the ranks.
  const json summary = json::parse(std::ifstream(dir2 + "/summary.json"));
  EXPECT_EQ(summary["stages"]["teacher"]["metrics"]["count"], 80);
  EXPECT_EQ(summary["stages"]["teacher"]["train_images"], 160);
}

// BatchNorm (a ResNet teacher) with distributed.sync_batch_norm: the statistics are those of the
// global batch, so 2 ranks x 16 again train like 1 rank x 32 (per-rank statistics would not).
TEST(Distributed, SyncBatchNormTrainsLikeOneProcessWithTheGlobalBatch) {
  SKIP_WITHOUT_MPI();
  TempDir tmp;
  const json resnet = json::parse(R"({"type": "resnet", "blocks": [1, 1, 1, 1], "width": 8,
      "image_size": 32, "heads": 2, "output_dim": 16})");
  json one = tiny_vit_config("bn", 32), two = tiny_vit_config("bn", 16);
  one["teacher"]["arch"] = resnet;
  two["teacher"]["arch"] = resnet;
  two["distributed"] = {{"sync_batch_norm", true}};
  expect_same_training(tmp, one, two);
}

// A failing rank ends the whole job with its message instead of leaving the others waiting.
TEST(Distributed, AFailingRankEndsTheJobWithItsMessage) {
  SKIP_WITHOUT_MPI();
  TempDir tmp;
  json c = tiny_vit_config("fail", 16);
  c["data"]["train"] = tmp.file("missing-{0000..0001}.tar");
  const std::string cfg = tmp.file("fail.json");
  std::ofstream(cfg) << c.dump();
  const Result r =
      run_shell(mpirun(2) + " run --quiet --config " + cfg + " --runs-dir " + tmp.file("runs"));
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("[rank "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("missing-0000.tar"), std::string::npos) << r.out;
}

TEST(Distributed, BenchAllReduceReportsBusBandwidth) {
  const Result one = run_shell(std::string(DISTILL_BINARY) +
                               " bench allreduce --device cpu --max-bytes 16K --iters 2");
  ASSERT_EQ(one.exit_code, 0) << one.out;
  EXPECT_NE(one.out.find("timing a copy"), std::string::npos) << one.out;
  EXPECT_NE(one.out.find("16384"), std::string::npos) << one.out;
  const Result bad =
      run_shell(std::string(DISTILL_BINARY) + " bench allreduce --device cpu --max-bytes 12XB");
  EXPECT_EQ(bad.exit_code, 2) << bad.out;
  EXPECT_NE(bad.out.find("expected a size like 4096, 64K, 256MB; got '12XB'"), std::string::npos)
      << bad.out;
  SKIP_WITHOUT_MPI();
  const Result two =
      run_shell(mpirun(2) + " bench allreduce --device cpu --max-bytes 16K --iters 2 --json");
  ASSERT_EQ(two.exit_code, 0) << two.out;
  const json j = json::parse(two.out.substr(two.out.find('{')));
  EXPECT_EQ(j["world_size"], 2);
  ASSERT_EQ(j["rows"].size(), 2u);  // 4 KB and 16 KB
  const double algbw = j["rows"][1]["algbw_gbps"], busbw = j["rows"][1]["busbw_gbps"];
  EXPECT_DOUBLE_EQ(busbw, algbw);  // 2 (n - 1) / n = 1 for n = 2
}

// The pids of the `distill` processes in session `sid` (the ranks mpirun started).
std::vector<pid_t> ranks_in_session(pid_t sid) {
  std::vector<pid_t> out;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(entry.path() / "stat");
    std::string stat;
    std::getline(in, stat);
    const size_t open = stat.find('('), close = stat.rfind(')');
    if (open == std::string::npos || close == std::string::npos) continue;
    if (stat.substr(open + 1, close - open - 1) != "distill") continue;
    std::istringstream rest(stat.substr(close + 2));
    std::string state;
    long ppid = 0, pgrp = 0, session = 0;
    rest >> state >> ppid >> pgrp >> session;
    if (session == sid) out.push_back(static_cast<pid_t>(std::stol(name)));
  }
  return out;
}

TEST(Distributed, TwoRankRunStoppedMidStageResumesBitIdentically) {
  SKIP_WITHOUT_MPI();
  TempDir tmp;
  json c = tiny_vit_config("resume", 16);
  c["stage0"]["epochs"] = 4;
  c["log_every"] = 1;
  const std::string cfg = tmp.file("resume.json");
  std::ofstream(cfg) << c.dump();
  const std::string straight = (tmp.path() / "straight").string();
  const std::string stopped = (tmp.path() / "stopped").string();
  const Result r =
      run_shell(mpirun(2) + " run --quiet --config " + cfg + " --runs-dir " + straight);
  ASSERT_EQ(r.exit_code, 0) << r.out;

  const std::string log = tmp.file("mpirun.txt");
  const std::string command =
      mpirun(2) + " run --quiet --config " + cfg + " --runs-dir " + stopped + " >" + log + " 2>&1";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    setsid();  // its own session: the ranks are found by it
    execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // Once the first steps are logged, SIGTERM both ranks (not mpirun, which would kill them).
  const fs::path metrics = fs::path(stopped) / "resume/metrics.jsonl";
  const bool signalled = once_a_step_is_logged(metrics, [&] {
    for (pid_t p : ranks_in_session(pid)) kill(p, SIGTERM);
  });
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(signalled) << "no training step was logged";
  std::ifstream in(log);
  const std::string out((std::istreambuf_iterator<char>(in)), {});
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
    GTEST_SKIP() << "the run finished before the signal arrived";
  EXPECT_NE(out.find("stopped by SIGTERM in stage teacher"), std::string::npos) << out;
  ASSERT_TRUE(fs::exists(fs::path(stopped) / "resume/checkpoints/teacher/latest.json")) << out;
  EXPECT_FALSE(fs::exists(fs::path(stopped) / "resume/teacher.safetensors"));

  const Result resumed =
      run_shell(mpirun(2) + " run --quiet --resume --config " + cfg + " --runs-dir " + stopped);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.out;
  const auto a = model_tensors(straight + "/resume/teacher.safetensors");
  const auto b = model_tensors(stopped + "/resume/teacher.safetensors");
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, va] : a) EXPECT_EQ(va, b.at(name)) << name;
}

}  // namespace
}  // namespace distill::testing
