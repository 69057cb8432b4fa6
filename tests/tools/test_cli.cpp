// The `distill` binary as a user runs it: help, info, bench, bad arguments and a bad or too small
// memory cap (DISTILL_MEMORY_LIMIT).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "tests/tools/cli_run.h"

namespace {

using distill::testing::Result;
using distill::testing::run_distill;
using distill::testing::run_json;

TEST(Cli, HelpListsCommands) {
  Result r = run_distill("--help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("info"), std::string::npos);
  EXPECT_NE(r.out.find("bench"), std::string::npos);
  Result sub = run_distill("info --help");
  EXPECT_EQ(sub.exit_code, 0);
  EXPECT_NE(sub.out.find("--json"), std::string::npos);
}

TEST(Cli, InfoJsonHasTheFields) {
  auto j = nlohmann::json::parse(run_json("info --json"));
  EXPECT_TRUE(j.contains("version"));
  EXPECT_TRUE(j["cuda_compiled"].is_boolean());
  EXPECT_TRUE(j["gpus"].is_array());
  EXPECT_NE(j["blas"].get<std::string>().find("OpenBLAS"), std::string::npos);
  EXPECT_GE(j["threads"].get<int>(), 1);
  Result text = run_distill("info");
  EXPECT_EQ(text.exit_code, 0);
  if (j["gpus"].empty()) {
    EXPECT_NE(text.out.find("no GPU"), std::string::npos) << text.out;
  }
}

TEST(Cli, UnknownCommandAndOptionsAreUsageErrors) {
  Result r = run_distill("frobnicate");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.out.find("unknown command 'frobnicate'"), std::string::npos) << r.out;
  Result o = run_distill("info --colour");
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_NE(o.out.find("unknown option '--colour'"), std::string::npos) << o.out;
  Result none = run_distill("");
  EXPECT_EQ(none.exit_code, 2);
}

TEST(Cli, BenchGemmReportsARatioAgainstCblas) {
  auto j =
      nlohmann::json::parse(run_json("bench gemm --device cpu --sizes 48,64 --iters 1 --json"));
  ASSERT_EQ(j["rows"].size(), 2u);
  for (const auto& row : j["rows"]) {
    EXPECT_EQ(row["peer"], "cblas_sgemm");
    EXPECT_GT(row["ratio"].get<double>(), 0.0);
    // Same computation on the same buffers: the results must agree to fp32 rounding.
    EXPECT_LT(row["max_rel_diff"].get<double>(), 1e-5);
  }
}

TEST(Cli, BenchRejectsBadArguments) {
  Result sizes = run_distill("bench gemm --sizes 12,abc");
  EXPECT_EQ(sizes.exit_code, 2);
  EXPECT_NE(sizes.out.find("--sizes"), std::string::npos) << sizes.out;
  Result target = run_distill("bench nothing");
  EXPECT_EQ(target.exit_code, 2);
  EXPECT_NE(target.out.find("unknown benchmark 'nothing'"), std::string::npos) << target.out;
  Result dev = run_distill("bench gemm --device tpu");
  EXPECT_EQ(dev.exit_code, 2);
  Result iters = run_distill("bench gemm --iters x");
  EXPECT_EQ(iters.exit_code, 2);
  EXPECT_NE(iters.out.find("expects an integer"), std::string::npos) << iters.out;
  Result missing = run_distill("bench gemm --sizes");
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.out.find("needs a value"), std::string::npos) << missing.out;
}

TEST(Cli, BenchStepRejectsBadArguments) {
  // Checked before any model is built, so these cost nothing.
  Result model = run_distill("bench step --device cpu --model clip-vit-h-14");
  EXPECT_EQ(model.exit_code, 2);
  EXPECT_NE(model.out.find("--model accepts clip-vit-b-32"), std::string::npos) << model.out;
  Result precision = run_distill("bench step --device cpu --precision fp8");
  EXPECT_EQ(precision.exit_code, 2);
  EXPECT_NE(precision.out.find("--precision accepts f32 or bf16"), std::string::npos)
      << precision.out;
  Result batch = run_distill("bench step --device cpu --batch 0");
  EXPECT_EQ(batch.exit_code, 2);
  EXPECT_NE(batch.out.find("--batch must be at least 1"), std::string::npos) << batch.out;
}

// A whole step of a real-sized model on the CPU at batch 1: it trains (the loss changes, FLOPs
// are counted as PyTorch counts them: ViT-B/32's forward is 8.8 GFLOP per image in timm's count,
// ours adds CLIP's projection and ln_pre).
TEST(Cli, BenchStepRunsAndCountsModelFlops) {
  auto j = nlohmann::json::parse(run_json(
      "bench step --device cpu --model clip-vit-b-32 --batch 1 --iters 1 --warmup 1 --classes 4 "
      "--json"));
  EXPECT_EQ(j["impl"], "distill");
  EXPECT_GT(j["step_ms"].get<double>(), 0.0);
  EXPECT_NEAR(j["student_gflop_per_image"].get<double>(), 8.8, 0.2);
  EXPECT_GT(j["teacher_gflop_per_image"].get<double>(),
            j["student_gflop_per_image"].get<double>() * 0.95);
  EXPECT_NE(j["loss_first"].get<double>(), j["loss_last"].get<double>());
}

// A malformed DISTILL_MEMORY_LIMIT stops every command at start-up, naming the variable.
TEST(Cli, BadMemoryLimitIsNamed) {
  Result r = run_distill("info", true, "DISTILL_MEMORY_LIMIT=lots");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("DISTILL_MEMORY_LIMIT='lots': 'lots' is not a size"), std::string::npos)
      << r.out;
  EXPECT_EQ(run_distill("info", true, "DISTILL_MEMORY_LIMIT=cpu=64G").exit_code, 0);
}

// Out of memory in bench step is a message with the model, batch size and what to change.
TEST(Cli, BenchStepOutOfMemorySaysWhatDidNotFit) {
  Result r = run_distill("bench step --device cpu --model clip-vit-b-32 --batch 8 --iters 1", true,
                         "DISTILL_MEMORY_LIMIT=64M");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("error: out of memory on cpu in distill bench step clip-vit-b-32 (batch "
                       "size 8, precision f32): building the models needed"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("of 64.0 MiB, the DISTILL_MEMORY_LIMIT cap)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("the models alone do not fit"), std::string::npos) << r.out;
}

}  // namespace
