// Converted reference models (tools/fixtures/make_model_fixtures.py: transformers and open_clip
// on small random configs) must reproduce the reference outputs, on every backend.
#include <filesystem>

#include "models/bert.h"
#include "models/clip.h"
#include "models/convert.h"
#include "tests/models/model_test_util.h"

namespace distill::testing {
namespace {

namespace fs = std::filesystem;
constexpr double kTol = 1e-4;  // the bound for fp32, relative to each output's scale

class ModelFidelity : public BackendTest {
 protected:
  // Converts through the same code path as `distill convert` and reads the result back.
  std::string convert(const std::string& fixture, const std::string& arch = "") {
    models::ConvertOptions opts;
    opts.arch = arch;
    const std::string out = tmp_.file(fixture + (arch.empty() ? "" : "_" + arch) + ".safetensors");
    models::save_converted(models::convert_checkpoint(model_fixture(fixture), opts), out);
    return out;
  }
  Tensor ref(const std::string& fixture, const std::string& name) {
    return SafetensorsFile(model_fixture(fixture) + "/reference.safetensors").tensor(name);
  }
  void check_image(const std::string& ckpt, const std::string& ref_dir, bool has_hidden) {
    auto enc = models::load_image_encoder(ckpt);
    enc->to(device());
    NoGradGuard guard;
    const Tensor pixels = to_device(ref(ref_dir, "pixel_values"), device());
    const models::ImageFeatures f = enc->encode(pixels);
    EXPECT_TRUE(close_to_reference(f.pooled, ref(ref_dir, "image_embeds"), kTol));
    EXPECT_TRUE(close_to_reference(f.tokens, ref(ref_dir, "image_tokens"), kTol));
    if (has_hidden) {
      auto* vit = dynamic_cast<models::VisionTransformer*>(enc.get());
      ASSERT_NE(vit, nullptr);
      EXPECT_TRUE(
          close_to_reference(vit->hidden_states(pixels), ref(ref_dir, "image_hidden"), kTol));
    }
  }
  void check_clip_text(const std::string& ckpt, const std::string& ref_dir) {
    auto enc = models::load_text_encoder(ckpt);
    enc->to(device());
    NoGradGuard guard;
    const models::TextFeatures f = enc->encode(ref(ref_dir, "input_ids"));
    EXPECT_TRUE(close_to_reference(f.pooled, ref(ref_dir, "text_embeds"), kTol));
    EXPECT_TRUE(close_to_reference(f.tokens, ref(ref_dir, "text_hidden"), kTol));
  }
  TempDir tmp_;
};

TEST_P(ModelFidelity, HfClipModel) {
  const std::string ckpt = convert("hf_clip");
  EXPECT_EQ(models::read_canonical_spec(ckpt).spec.arch, "clip");
  check_image(ckpt, "hf_clip", true);
  check_clip_text(ckpt, "hf_clip");
}

TEST_P(ModelFidelity, HfClipVisionAndTextModelsWithProjection) {
  const std::string vision = convert("hf_clip_vision");
  EXPECT_EQ(models::read_canonical_spec(vision).spec.arch, "clip-vision");
  check_image(vision, "hf_clip", true);
  const std::string text = convert("hf_clip_text");
  EXPECT_EQ(models::read_canonical_spec(text).spec.arch, "clip-text");
  check_clip_text(text, "hf_clip");
}

TEST_P(ModelFidelity, OneTowerOfAFullClipCheckpoint) {
  check_image(convert("hf_clip", "clip-vision"), "hf_clip", true);
  check_clip_text(convert("openclip_vit", "clip-text"), "openclip_vit");
}

TEST_P(ModelFidelity, OpenClipVitInOpenAiNamingFp16) {
  const std::string ckpt = convert("openclip_vit");
  check_image(ckpt, "openclip_vit", true);
  check_clip_text(ckpt, "openclip_vit");
}

TEST_P(ModelFidelity, OpenClipModifiedResNet) {
  const std::string ckpt = convert("openclip_rn");
  check_image(ckpt, "openclip_rn", false);
  check_clip_text(ckpt, "openclip_rn");
}

void check_bert_family(const std::string& ckpt, const std::string& fixture, Device device,
                       bool has_mean) {
  auto enc = models::load_text_encoder(ckpt);
  auto* bert = dynamic_cast<models::BertModel*>(enc.get());
  ASSERT_NE(bert, nullptr);
  bert->to(device);
  NoGradGuard guard;
  SafetensorsFile r(model_fixture(fixture) + "/reference.safetensors");
  const Tensor types = r.contains("token_type_ids") ? r.tensor("token_type_ids") : Tensor();
  const models::BertOutputs o =
      bert->forward(r.tensor("input_ids"), r.tensor("attention_mask"), types);
  EXPECT_TRUE(close_to_reference(o.last_hidden_state, r.tensor("last_hidden_state"), kTol));
  EXPECT_TRUE(close_to_reference(o.pooler_output, r.tensor("pooler_output"), kTol));
  if (has_mean) {
    EXPECT_TRUE(close_to_reference(o.mean_pooled, r.tensor("mean_pooled"), kTol));
  }
}

TEST_P(ModelFidelity, HfRoberta) {
  const std::string ckpt = convert("hf_roberta");
  EXPECT_EQ(models::read_canonical_spec(ckpt).spec.arch, "roberta");
  check_bert_family(ckpt, "hf_roberta", device(), false);
}

TEST_P(ModelFidelity, HfRobertaWithPrefixAndMaskedLmHead) {
  // RobertaForMaskedLM's layout: every encoder tensor under "roberta.", plus an lm_head.
  SafetensorsFile src(model_fixture("hf_roberta") + "/model.safetensors");
  nn::NamedTensors prefixed;
  for (const auto& [n, t] : src.load_all()) prefixed.emplace_back("roberta." + n, t);
  prefixed.emplace_back("lm_head.dense.weight", random_tensor({48, 48}, 1));
  const fs::path dir = tmp_.path() / "roberta_mlm";
  fs::create_directories(dir);
  save_safetensors((dir / "model.safetensors").string(), prefixed);
  fs::copy_file(model_fixture("hf_roberta") + "/config.json", dir / "config.json");
  const models::ConvertedModel m = models::convert_checkpoint(dir.string());
  EXPECT_EQ(m.spec.arch, "roberta");
  ASSERT_FALSE(m.notes.empty());
  const std::string out = tmp_.file("roberta_mlm.safetensors");
  models::save_converted(m, out);
  check_bert_family(out, "hf_roberta", device(), false);
}

TEST_P(ModelFidelity, HfBert) {
  const std::string ckpt = convert("hf_bert");
  EXPECT_EQ(models::read_canonical_spec(ckpt).spec.arch, "bert");
  check_bert_family(ckpt, "hf_bert", device(), true);
}

TEST_P(ModelFidelity, Bf16ConversionStaysClose) {
  // --dtype bf16 rounds the weights; the model computes in fp32 after loading, so the outputs
  // move by about bf16's precision (2^-8), not more.
  models::ConvertOptions opts;
  opts.dtype = DType::BF16;
  const std::string out = tmp_.file("bf16.safetensors");
  models::save_converted(models::convert_checkpoint(model_fixture("hf_clip"), opts), out);
  SafetensorsFile f(out);
  EXPECT_EQ(f.info("visual.patch_embed.weight").dtype, DType::BF16);
  auto enc = models::load_image_encoder(out);
  enc->to(device());
  NoGradGuard guard;
  const auto feats = enc->encode(to_device(ref("hf_clip", "pixel_values"), device()));
  EXPECT_TRUE(close_to_reference(feats.pooled, ref("hf_clip", "image_embeds"), 3e-2));
  EXPECT_FALSE(close_to_reference(feats.pooled, ref("hf_clip", "image_embeds"), 1e-6));
}

INSTANTIATE_TEST_SUITE_P(Backends, ModelFidelity, ::testing::ValuesIn(all_backends()),
                         backend_name);

}  // namespace
}  // namespace distill::testing
