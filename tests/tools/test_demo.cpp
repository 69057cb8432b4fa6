// `distill demo` as a user runs it: a --quick run end to end (the printed table, report.md,
// report.html) and the errors for bad arguments and missing files.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "core/device.h"
#include "tests/models/model_test_util.h"
#include "tests/tools/cli_run.h"
#include "tests/train/report_html_check.h"
#include "train/demo.h"
#include "train/report_html.h"

namespace distill::testing {
namespace {

namespace fs = std::filesystem;

std::string read_text(const fs::path& p) {
  std::stringstream s;
  s << std::ifstream(p).rdbuf();
  return s.str();
}

bool has(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

void expect_finished_demo(const Result& r, const fs::path& dir) {
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(has(r.out, "Results on the test split")) << r.out;
  for (const auto& row : train::result_rows()) EXPECT_TRUE(has(r.out, row.label)) << row.label;
  EXPECT_TRUE(has(r.out, "* best student")) << r.out;
  EXPECT_TRUE(has(r.out, "report: " + (dir / "report.html").string())) << r.out;
  EXPECT_TRUE(has(read_text(dir / "report.md"), "## Table 3.1"));
  expect_report_html_structure(read_text(dir / "report.html"));
}

TEST(Demo, QuickRunOnFashionMnist) {
  const fs::path fashion = train::kFashionMnistDir;
  if (!fs::exists(fashion / "t10k-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "Fashion-MNIST not installed at " << fashion
                 << " (Debian package dataset-fashion-mnist)";
  TempDir tmp;
  // MiniLM when fetched, else the random encoder (which the outputs must then announce first).
  const Result r = run_distill("demo --quick --quiet --allow-random-text-encoder --runs-dir " +
                               tmp.path().string());
  const fs::path dir = tmp.path() / "demo-fashion-mnist-quick";
  expect_finished_demo(r, dir);
  EXPECT_TRUE(has(r.out, "Fashion-MNIST")) << r.out;
  EXPECT_TRUE(has(read_text(dir / "report.html"), "Ankle boot"));
  const bool random = has(r.out, "RANDOM");
  EXPECT_EQ(read_text(dir / "report.md").rfind("> **WARNING: random text encoder", 0) == 0, random);
  // A second demo gets its own folder instead of failing on the first one's.
  const Result again = run_distill(
      "demo --quick --print-config --allow-random-text-encoder "
      "--runs-dir " +
      tmp.path().string());
  EXPECT_TRUE(has(again.out, "demo-fashion-mnist-quick-2")) << again.out;
}

// Any dataset spec through --data/--test, and a random text encoder announced first everywhere.
TEST(Demo, QuickRunOnCifarShardsWithARandomTextEncoder) {
  const std::string shards = std::string(DISTILL_SOURCE_DIR) + "/../shared/data/cifar10-jpg";
  if (!fs::exists(shards + "/test-0000.tar"))
    GTEST_SKIP() << "real CIFAR-10 shards not found at " << shards;
  TempDir tmp;
  const Result r = run_distill("demo --quick --quiet --allow-random-text-encoder --text-encoder " +
                               tmp.file("no-minilm") + " --data '" + shards +
                               "/train-{0000..0004}.tar' --test " + shards +
                               "/test-0000.tar --runs-dir " + tmp.path().string() + " --name c");
  const fs::path dir = tmp.path() / "c";
  expect_finished_demo(r, dir);
  EXPECT_EQ(r.out.rfind("[demo] WARNING: running with a RANDOM text encoder", 0), 0u) << r.out;
  EXPECT_EQ(read_text(dir / "report.md").rfind("> **WARNING: random text encoder", 0), 0u);
  EXPECT_TRUE(has(read_text(dir / "report.html"), "RANDOMLY INITIALISED"));
}

TEST(Demo, BadArgumentsAndMissingFilesAreClearErrors) {
  Result r = run_distill("demo --preset tpu");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(has(r.out, "unknown --preset 'tpu' (expected cpu or gpu)")) << r.out;

  r = run_distill("demo --allow-random-text-encoder --data /nonexistent/train-images-idx3-ubyte");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(has(r.out, "/nonexistent/train-images-idx3-ubyte")) << r.out;

  // Without --allow-random-text-encoder a missing MiniLM stops the demo before any work.
  r = run_distill("demo --text-encoder /nonexistent/minilm");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(has(r.out, "/nonexistent/minilm/model.safetensors")) << r.out;
  EXPECT_TRUE(has(r.out, "tools/fetch_minilm.sh")) << r.out;
  EXPECT_TRUE(has(r.out, "--allow-random-text-encoder")) << r.out;

  r = run_distill("demo --allow-random-text-encoder --test x");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(has(r.out, "--test needs --data")) << r.out;

  r = run_distill("demo extra");
  EXPECT_EQ(r.exit_code, 2);

  if (!cuda_available()) {
    r = run_distill("demo --preset gpu");
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_TRUE(has(r.out, "--preset gpu needs a CUDA device")) << r.out;
  }
  r = run_distill("demo --help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(has(r.out, "--allow-random-text-encoder")) << r.out;
}

}  // namespace
}  // namespace distill::testing
