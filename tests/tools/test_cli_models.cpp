// `distill convert` and `distill info --model` as a user runs them.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/models/model_test_util.h"
#include "tests/tools/cli_run.h"

namespace distill::testing {
namespace {

namespace fs = std::filesystem;

TEST(CliModels, InfoModelJson) {
  auto j = nlohmann::json::parse(run_json("info --model clip-text-rn50 --json"));
  EXPECT_EQ(j["model"], "clip-text-rn50");
  EXPECT_EQ(j["parameters"].get<int64_t>(), 63690240);
  Result bad = run_distill("info --model clip-vit-z");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.out.find("unknown model preset 'clip-vit-z'"), std::string::npos) << bad.out;
}

TEST(CliModels, ConvertWritesACheckpointWithItsConfig) {
  TempDir tmp;
  const std::string out = tmp.file("clip.safetensors");
  Result r = run_distill("convert --in " + model_fixture("openclip_vit") + " --out " + out);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("openai naming"), std::string::npos) << r.out;
  SafetensorsFile f(out);
  EXPECT_EQ(f.metadata().at("arch"), "clip");
  const auto config = nlohmann::json::parse(f.metadata().at("config"));
  EXPECT_EQ(config["vision"]["heads"], 4);
  EXPECT_TRUE(f.contains("visual.layers.2.attn.v_proj.bias"));
  EXPECT_TRUE(f.contains("text.proj.weight"));
}

TEST(CliModels, ConvertNeverOverwritesWithoutForceAndKeepsOldFileOnFailure) {
  TempDir tmp;
  const std::string out = tmp.file("keep.safetensors");
  std::ofstream(out) << "precious";
  Result r = run_distill("convert --in " + model_fixture("hf_bert") + " --out " + out);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.out.find("--force"), std::string::npos) << r.out;
  // A failing conversion with --force leaves the old file as it was.
  Result bad = run_distill("convert --in " + model_fixture("hf_bert") + " --arch roberta --force --out " + out);
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.out.find("not a roberta checkpoint"), std::string::npos) << bad.out;
  std::ifstream in(out);
  std::string content((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(content, "precious");
}

TEST(CliModels, ConvertBadArguments) {
  Result no_in = run_distill("convert --out x.safetensors");
  EXPECT_EQ(no_in.exit_code, 2);
  EXPECT_NE(no_in.out.find("--in PATH is required"), std::string::npos) << no_in.out;
  Result dtype = run_distill("convert --in a --out b --dtype f8");
  EXPECT_EQ(dtype.exit_code, 2);
  EXPECT_NE(dtype.out.find("--dtype must be f32 or bf16"), std::string::npos) << dtype.out;
  Result missing = run_distill("convert --in /nonexistent/ckpt --out /tmp/never.safetensors");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.out.find("/nonexistent/ckpt does not exist"), std::string::npos)
      << missing.out;
  EXPECT_FALSE(fs::exists("/tmp/never.safetensors"));
}

}  // namespace
}  // namespace distill::testing
