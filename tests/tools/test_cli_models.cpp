// `distill convert` and `distill info --model` as a user runs them.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/npy.h"
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
  Result bad = run_distill("convert --in " + model_fixture("hf_bert") +
                           " --arch roberta --force --out " + out);
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
  EXPECT_NE(missing.out.find("/nonexistent/ckpt does not exist"), std::string::npos) << missing.out;
  EXPECT_FALSE(fs::exists("/tmp/never.safetensors"));
}

// Single-quoted for /bin/sh: ' becomes '\''.
std::string shell_quote(const std::string& s) {
  std::string out(1, '\'');
  for (char c : s) {
    if (c == '\'') {
      out.append("'\\''");
    } else {
      out.push_back(c);
    }
  }
  out.push_back('\'');
  return out;
}

std::string minilm_dir() {
  return std::string(DISTILL_SOURCE_DIR) + "/.cache/weights/all-minilm-l6-v2";
}

TEST(CliModels, EncodeTextReproducesSentenceTransformersOnTheRealMiniLm) {
  if (!fs::exists(minilm_dir() + "/model.safetensors"))
    GTEST_SKIP() << "all-MiniLM-L6-v2 is not at " << minilm_dir()
                 << " (run tools/fetch_minilm.sh; ./setup.sh does)";
  TempDir tmp;
  const std::string ckpt = tmp.file("minilm.safetensors");
  ASSERT_EQ(run_distill("convert --in " + minilm_dir() + " --out " + ckpt).exit_code, 0);
  std::ifstream in(std::string(DISTILL_SOURCE_DIR) + "/tests/fixtures/minilm/sentences.txt");
  std::string args, line;
  int count = 0;
  while (std::getline(in, line)) {
    args.push_back(' ');
    args.append(shell_quote(line));
    ++count;
  }
  ASSERT_EQ(count, 32);
  const std::string npy = tmp.file("emb.npy");
  Result r = run_distill("encode-text --checkpoint " + ckpt + " --tokenizer " + minilm_dir() +
                         " --out " + npy + args);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  SafetensorsFile ref(std::string(DISTILL_SOURCE_DIR) +
                      "/tests/fixtures/minilm/reference.safetensors");
  EXPECT_TRUE(close_to_reference(load_npy(npy), ref.tensor("embeddings"), 1e-4));
}

TEST(CliModels, EncodeTextBadInput) {
  TempDir tmp;
  const std::string ckpt = tmp.file("bert.safetensors");
  ASSERT_EQ(run_distill("convert --in " + model_fixture("hf_bert") + " --out " + ckpt).exit_code,
            0);
  const std::string clip_vocab = std::string(DISTILL_SOURCE_DIR) +
                                 "/../shared/data/tokenizers/clip/bpe_simple_vocab_16e6.txt.gz";
  if (fs::exists(clip_vocab)) {
    Result wrong =
        run_distill("encode-text --checkpoint " + ckpt + " --tokenizer " + clip_vocab + " hello");
    EXPECT_EQ(wrong.exit_code, 1);
    EXPECT_NE(wrong.out.find("is a clip tokenizer but"), std::string::npos) << wrong.out;
  }
  // The fixture model's 300-entry vocabulary is smaller than the real WordPiece vocabulary: the
  // ids that fall outside it are named.
  const std::string vocab =
      std::string(DISTILL_SOURCE_DIR) + "/tests/fixtures/tokenizers/bert-uncased-vocab.txt";
  Result oov = run_distill("encode-text --checkpoint " + ckpt + " --tokenizer " + vocab +
                           " 'the quick brown fox'");
  EXPECT_EQ(oov.exit_code, 1);
  EXPECT_NE(oov.out.find("outside the vocabulary"), std::string::npos) << oov.out;
  Result none = run_distill("encode-text --checkpoint " + ckpt + " --tokenizer " + vocab);
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_NE(none.out.find("at least one TEXT"), std::string::npos) << none.out;
  Result missing = run_distill("encode-text --checkpoint " + tmp.file("none.safetensors") +
                               " --tokenizer " + vocab + " hi");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.out.find("none.safetensors"), std::string::npos) << missing.out;
}

TEST(CliModels, EncodeImageWritesNormalisedEmbeddingsAndTokens) {
  const std::string images = std::string(DISTILL_SOURCE_DIR) + "/../shared/data/captions-sample";
  if (!fs::exists(images + "/astronaut.png")) GTEST_SKIP() << "no sample images at " << images;
  TempDir tmp;
  const std::string ckpt = tmp.file("clip.safetensors");
  ASSERT_EQ(run_distill("convert --in " + model_fixture("hf_clip") + " --out " + ckpt).exit_code,
            0);
  const std::string npy = tmp.file("img.npy");
  const std::string files =
      images + "/astronaut.png " + images + "/rocket.jpg " + images + "/astronaut.png";
  Result r = run_distill("encode-image --checkpoint " + ckpt + " --out " + npy + " " + files);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Tensor e = load_npy(npy);
  ASSERT_EQ(e.shape(), (Shape{3, 32}));
  const auto v = e.to_double_vector();
  for (int i = 0; i < 3; ++i) {
    double n = 0;
    for (int j = 0; j < 32; ++j) n += v[i * 32 + j] * v[i * 32 + j];
    EXPECT_NEAR(n, 1.0, 1e-5);
  }
  // The same image twice (not bit-equal: GEMM blocking depends on the row).
  for (int j = 0; j < 32; ++j) EXPECT_NEAR(v[j], v[64 + j], 1e-6);
  EXPECT_NE(v[0], v[32]);
  Result tokens = run_distill("encode-image --tokens --checkpoint " + ckpt + " --out " + npy + " " +
                              images + "/rocket.jpg");
  ASSERT_EQ(tokens.exit_code, 0) << tokens.out;
  EXPECT_EQ(load_npy(npy).shape(), (Shape{1, 26, 32}));  // class token + 5x5 patches
}

TEST(CliModels, EncodeImageBadInput) {
  TempDir tmp;
  const std::string ckpt = tmp.file("bert.safetensors");
  ASSERT_EQ(run_distill("convert --in " + model_fixture("hf_bert") + " --out " + ckpt).exit_code,
            0);
  const std::string bad = tmp.file("broken.jpg");
  std::ofstream(bad) << "not an image";
  Result text_only = run_distill("encode-image --checkpoint " + ckpt + " " + bad);
  EXPECT_EQ(text_only.exit_code, 1);
  EXPECT_NE(text_only.out.find("no image tower"), std::string::npos) << text_only.out;
  const std::string clip = tmp.file("clip.safetensors");
  ASSERT_EQ(
      run_distill("convert --in " + model_fixture("hf_clip_vision") + " --out " + clip).exit_code,
      0);
  Result corrupt = run_distill("encode-image --checkpoint " + clip + " " + bad);
  EXPECT_EQ(corrupt.exit_code, 1);
  EXPECT_NE(corrupt.out.find("broken.jpg"), std::string::npos) << corrupt.out;
  Result none = run_distill("encode-image --checkpoint " + clip);
  EXPECT_EQ(none.exit_code, 2);
}

}  // namespace
}  // namespace distill::testing
