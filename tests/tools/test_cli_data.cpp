// `distill info --data` and `distill bench data` as a user runs them.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "data/cifar.h"
#include "data/idx.h"
#include "tests/data/data_test_util.h"
#include "tests/tools/cli_run.h"

namespace {

using distill::testing::random_image;
using distill::testing::Result;
using distill::testing::run_distill;
using distill::testing::ScratchDir;

TEST(CliData, InfoOnGeneratedCifarIdxAndImageFolder) {
  ScratchDir dir;
  std::filesystem::create_directories(dir / "cifar");
  distill::data::write_cifar_binary(
      dir / "cifar/test_batch.bin", distill::data::CifarVariant::Cifar10,
      {random_image(32, 32, 1), random_image(32, 32, 2), random_image(32, 32, 3)}, {7, 7, 2});
  Result r = run_distill("info --data " + (dir / "cifar") + " --split test --json", false);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["format"], "cifar10");
  EXPECT_EQ(j["samples"], 3);
  EXPECT_EQ(j["classes"][7], "horse");
  EXPECT_EQ(j["class_counts"][7], 2);
  EXPECT_EQ(j["class_counts"][2], 1);

  distill::data::write_idx(dir / "im.gz", {2, 2, 2}, std::vector<uint8_t>(8, 5));
  distill::data::write_idx(dir / "lb.gz", {2}, {1, 1});
  j = nlohmann::json::parse(
      run_distill("info --json --data=" + (dir / "im.gz") + "," + (dir / "lb.gz"), false).out);
  EXPECT_EQ(j["format"], "idx");
  EXPECT_EQ(j["class_counts"][1], 2);

  std::filesystem::create_directories(dir / "folder/cat");
  std::filesystem::create_directories(dir / "folder/dog");
  distill::testing::write_bytes(dir / "folder/cat/a.png",
                                distill::data::encode_png(random_image(3, 3, 1)));
  distill::testing::write_bytes(dir / "folder/dog/b.png",
                                distill::data::encode_png(random_image(3, 3, 2)));
  distill::testing::write_bytes(dir / "folder/dog/c.png",
                                distill::data::encode_png(random_image(3, 3, 3)));
  Result text = run_distill("info --data " + (dir / "folder"));
  EXPECT_EQ(text.exit_code, 0) << text.out;
  EXPECT_NE(text.out.find("samples  3"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("dog"), std::string::npos) << text.out;
}

TEST(CliData, InfoErrorsNameTheInput) {
  Result missing = run_distill("info --data /nonexistent/cifar-folder");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.out.find("/nonexistent/cifar-folder"), std::string::npos) << missing.out;
  Result split = run_distill("info --data /tmp --split val");
  EXPECT_EQ(split.exit_code, 2);
  EXPECT_NE(split.out.find("--split"), std::string::npos) << split.out;
  Result help = run_distill("info --help");
  EXPECT_NE(help.out.find("--data"), std::string::npos) << help.out;
}

TEST(CliData, InfoOnTheRealShards) {
  DISTILL_SKIP_WITHOUT_SHARED_DATA("cifar10-jpg/train-0000.tar");
  const std::string pattern =
      distill::testing::shared_data_dir() + "/cifar10-jpg/train-{0000..0004}.tar";
  Result r = run_distill("info --data '" + pattern + "' --json", false);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["format"], "webdataset");
  EXPECT_EQ(j["samples"], 50000);
  ASSERT_EQ(j["classes"].size(), 10u);
  for (const auto& c : j["class_counts"]) EXPECT_EQ(c, 5000);
}

TEST(CliData, BenchDataRunsBriefly) {
  DISTILL_SKIP_WITHOUT_SHARED_DATA("cifar10-jpg/test-0000.tar");
  const std::string shard = distill::testing::shared_data_dir() + "/cifar10-jpg/test-0000.tar";
  Result r = run_distill(
      "bench data --data " + shard + " --workers 1,2 --images 256 --size 32 --batch 32 --json",
      false);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["rows"].size(), 2u);
  for (const auto& row : j["rows"]) EXPECT_GT(row["images_per_s"].get<double>(), 0.0);
  Result bad = run_distill("bench data --workers 0");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.out.find("--workers"), std::string::npos) << bad.out;
}

}  // namespace
