// Presets (parameter counts, manifests), the converter's bad-input errors, and the real
// all-MiniLM-L6-v2 checkpoint.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include "data/tokenizer.h"
#include "models/bert.h"
#include "models/clip.h"
#include "models/convert.h"
#include "tests/models/model_test_util.h"

namespace distill::testing {
namespace {

namespace fs = std::filesystem;

// Counts from the reference implementations (random init, sum of numel over named_parameters;
// see tests/fixtures/models/param_counts.json for how each was derived).
TEST(ModelPresets, ParameterCountsAndManifestsMatch) {
  // Counts from the reference implementations (random init, sum of numel over
  // named_parameters; tests/fixtures/models/param_counts.json says how each was derived).
  const std::map<std::string, int64_t> expected = {
      {"clip-vit-b-32", 87849216},       // open_clip ViT-B-32 visual
      {"clip-vit-b-16", 86192640},       // open_clip ViT-B-16 visual
      {"clip-rn50", 38316896},           // open_clip RN50 visual
      {"clip-text-b", 63428096},         // open_clip ViT-B-32 text tower
      {"clip-text-rn50", 63690240},      // open_clip RN50 text tower (projection 1024)
      {"roberta-base", 124645632},       // transformers RobertaModel (with pooler)
      {"all-minilm-l6-v2", 22713216},    // transformers BertModel (with pooler)
      {"bert-base-uncased", 109482240},  // transformers BertModel, bert-base-uncased config
  };
  for (const auto& name : models::preset_names()) {
    auto model = models::make_preset(name);
    ASSERT_TRUE(expected.count(name)) << name;
    EXPECT_EQ(model->num_parameters(), expected.at(name)) << name;
    // weights/manifests/<preset>.json: what the converter checks its output against.
    const fs::path file = fs::path(DISTILL_SOURCE_DIR) / "weights/manifests" / (name + ".json");
    ASSERT_TRUE(fs::exists(file)) << file;
    std::ifstream in(file);
    const auto manifest = nlohmann::json::parse(in);
    EXPECT_EQ(manifest.at("config"), models::preset(name).config) << name;
    EXPECT_EQ(manifest.at("parameters").get<int64_t>(), model->num_parameters()) << name;
    const auto state = model->state_dict();
    EXPECT_EQ(manifest.at("tensors").size(), state.size()) << name;
    for (const auto& [n, t] : state) {
      ASSERT_TRUE(manifest.at("tensors").contains(n)) << name << ": " << n;
      EXPECT_EQ(manifest.at("tensors").at(n).get<Shape>(), t.shape()) << name << ": " << n;
    }
  }
}

TEST(ModelPresets, UnknownPresetListsTheKnownOnes) {
  try {
    models::preset("clip-vit-h-14");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, "clip-vit-h-14"));
    EXPECT_TRUE(message_has(e, "clip-vit-b-32"));
  }
}

TEST(ModelPresets, ImageEncodersReportTheirTokenLayout) {
  Generator g(3);
  auto vit = models::make_image_encoder(models::preset("clip-vit-b-16").config, "test", &g);
  EXPECT_EQ(vit->num_tokens(), 197);
  EXPECT_EQ(vit->token_dim(), 512);
  auto rn = models::make_image_encoder(models::preset("clip-rn50").config, "test", &g);
  EXPECT_EQ(rn->num_tokens(), 49);
  EXPECT_EQ(rn->token_dim(), 2048);
  EXPECT_EQ(rn->embed_dim(), 1024);
}

// ---- bad input: each names the problem and the file

// A copy of a fixture checkpoint whose tensors `edit` may change.
std::string edited_copy(const TempDir& tmp, const std::string& fixture,
                        const std::function<void(nn::NamedTensors&)>& edit) {
  const fs::path dir = tmp.path() / ("edited_" + fixture);
  fs::create_directories(dir);
  nn::NamedTensors tensors =
      SafetensorsFile(model_fixture(fixture) + "/model.safetensors").load_all();
  edit(tensors);
  save_safetensors((dir / "model.safetensors").string(), tensors);
  fs::copy_file(model_fixture(fixture) + "/config.json", dir / "config.json");
  return dir.string();
}

void expect_convert_error(const std::string& path, const std::vector<std::string>& needles,
                          const std::string& arch = "") {
  models::ConvertOptions opts;
  opts.arch = arch;
  try {
    models::convert_checkpoint(path, opts);
    ADD_FAILURE() << "no error converting " << path;
  } catch (const Error& e) {
    for (const auto& n : needles) EXPECT_TRUE(message_has(e, n)) << e.what() << "\nlacks: " << n;
  }
}

TEST(ConvertBadInput, WrongArchitectureForTheFile) {
  expect_convert_error(model_fixture("hf_clip"), {"model.safetensors", "not a roberta"}, "roberta");
  expect_convert_error(model_fixture("hf_roberta"), {"model.safetensors", "roberta", "not a bert"},
                       "bert");
  expect_convert_error(model_fixture("hf_clip_text"), {"only a clip-text tower", "clip-vision"},
                       "clip-vision");
  expect_convert_error(model_fixture("hf_clip"), {"unknown --arch 'vit'"}, "vit");
}

TEST(ConvertBadInput, MissingTensorIsNamed) {
  TempDir tmp;
  const std::string dir = edited_copy(tmp, "hf_bert", [](nn::NamedTensors& t) {
    std::erase_if(t, [](const auto& p) { return p.first == "encoder.layer.1.output.dense.bias"; });
  });
  expect_convert_error(dir, {"model.safetensors", "missing: encoder.layer.1.output.dense.bias"});
}

TEST(ConvertBadInput, UnexpectedTensorIsNamed) {
  TempDir tmp;
  const std::string dir = edited_copy(tmp, "hf_clip", [](nn::NamedTensors& t) {
    t.emplace_back("vision_model.encoder.layers.0.mystery.weight", random_tensor({4}, 1));
    t.emplace_back("text_model.extra_head.bias", random_tensor({4}, 2));
  });
  expect_convert_error(dir, {"vision_model.encoder.layers.0.mystery.weight",
                             "text_model.extra_head.bias", "unexpected"});
}

TEST(ConvertBadInput, WrongShapeIsNamed) {
  TempDir tmp;
  const std::string dir = edited_copy(tmp, "hf_roberta", [](nn::NamedTensors& t) {
    for (auto& [n, v] : t)
      if (n == "encoder.layer.2.attention.self.key.bias") v = random_tensor({47}, 3);
  });
  expect_convert_error(dir,
                       {"wrong shape", "encoder.layer.2.attention.self.key.bias", "[47]", "[48]"});
}

TEST(ConvertBadInput, TruncatedFileNamesTheFile) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "truncated";
  fs::create_directories(dir);
  fs::copy_file(model_fixture("hf_bert") + "/config.json", dir / "config.json");
  const fs::path weights = dir / "model.safetensors";
  fs::copy_file(model_fixture("hf_bert") + "/model.safetensors", weights);
  fs::resize_file(weights, fs::file_size(weights) / 2);
  expect_convert_error(dir.string(), {weights.string()});
}

TEST(ConvertBadInput, ConfigAndWeightsDisagree) {
  TempDir tmp;
  const std::string dir = edited_copy(tmp, "hf_bert", [](nn::NamedTensors&) {});
  auto config = nlohmann::json::parse(std::ifstream(dir + "/config.json"));
  config["num_hidden_layers"] = 5;
  std::ofstream(dir + "/config.json") << config.dump();
  expect_convert_error(dir, {"config.json", "num_hidden_layers = 5", "have 2"});
}

// Found while writing docs/bad-inputs.md: "hidden_size": "x" ended in nlohmann's bare "type must
// be number, but is string", naming neither the file nor the key.
TEST(ConvertBadInput, ConfigJsonOfTheWrongShape) {
  TempDir tmp;
  const std::string dir = edited_copy(tmp, "hf_bert", [](nn::NamedTensors&) {});
  std::ofstream(dir + "/config.json") << R"({"model_type": "bert", "hidden_size": "x"})";
  expect_convert_error(dir, {"the config of " + dir, "'hidden_size' has the wrong type: \"x\""});
  std::ofstream(dir + "/config.json") << "[]";
  expect_convert_error(dir, {dir + "/config.json must hold a JSON object, got array"});
  std::ofstream(dir + "/config.json") << R"({"hidden_size": )";
  expect_convert_error(dir, {dir + "/config.json is not valid JSON"});
}

TEST(ConvertBadInput, PickleCheckpointsAndMissingPathsAreRefused) {
  TempDir tmp;
  const std::string bin = tmp.file("pytorch_model.bin");
  std::ofstream(bin) << "not really a pickle";
  expect_convert_error(bin, {bin, "pickle"});
  expect_convert_error(tmp.file("nowhere"), {"nowhere", "does not exist"});
  expect_convert_error(tmp.path().string(), {"no .safetensors"});
}

TEST(ConvertBadInput, NotACheckpointOfAnySupportedArchitecture) {
  TempDir tmp;
  const std::string f = tmp.file("other.safetensors");
  save_safetensors(f, {{"decoder.weight", random_tensor({2, 2}, 4)}});
  expect_convert_error(f, {f, "not a checkpoint of a supported architecture"});
}

TEST(ConvertBadInput, LoadingAnUnconvertedFileSaysToConvertIt) {
  try {
    models::load_text_encoder(model_fixture("hf_bert") + "/model.safetensors");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, "not a distill checkpoint"));
    EXPECT_TRUE(message_has(e, "distill convert"));
  }
}

TEST(ConvertBadInput, ImageTowerRequestedFromATextCheckpoint) {
  TempDir tmp;
  const std::string out = tmp.file("bert.safetensors");
  models::save_converted(models::convert_checkpoint(model_fixture("hf_bert")), out);
  try {
    models::load_image_encoder(out);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, out));
    EXPECT_TRUE(message_has(e, "no image tower"));
  }
}

using Metadata = std::map<std::string, std::string>;

// `fixture` converted to tmp/<fixture>.safetensors, and a copy tmp/<name>.safetensors whose
// metadata `edit` changes (the tensors stay as converted).
std::string with_edited_metadata(const TempDir& tmp, const std::string& fixture,
                                 const std::string& name,
                                 const std::function<void(Metadata&)>& edit) {
  const std::string converted = tmp.file(fixture + ".safetensors");
  models::save_converted(models::convert_checkpoint(model_fixture(fixture)), converted);
  SafetensorsFile file(converted);
  Metadata meta = file.metadata();
  edit(meta);
  const std::string out = tmp.file(name + ".safetensors");
  save_safetensors(out, file.load_all(), meta);
  return out;
}

template <typename F>
void expect_error_has(F&& f, const std::vector<std::string>& needles) {
  try {
    f();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    for (const auto& n : needles) EXPECT_TRUE(message_has(e, n)) << e.what() << "\nlacks: " << n;
  }
}

// Found while writing docs/bad-inputs.md: a clip checkpoint without a "vision" config ended in
// nlohmann's bare "key 'vision' not found".
TEST(CheckpointBadInput, MetadataThatDoesNotDescribeTheWeights) {
  TempDir tmp;
  const std::string no_tower = with_edited_metadata(tmp, "hf_clip", "no_tower", [](Metadata& meta) {
    auto config = nlohmann::json::parse(meta["config"]);
    config.erase("vision");
    meta["config"] = config.dump();
  });
  expect_error_has([&] { models::load_image_encoder(no_tower); },
                   {no_tower, "has no 'vision' tower"});
  // Weights of another architecture than the config says: each tensor is named.
  const std::string deeper =
      with_edited_metadata(tmp, "hf_clip_vision", "deeper", [](Metadata& meta) {
        auto config = nlohmann::json::parse(meta["config"]);
        config["layers"] = config["layers"].get<int64_t>() + 1;
        meta["config"] = config.dump();
      });
  expect_error_has([&] { models::load_image_encoder(deeper); }, {deeper, "missing: "});
  const std::string bad_json = with_edited_metadata(
      tmp, "hf_bert", "bad_json", [](Metadata& meta) { meta["config"] = "{\"hidden\": "; });
  expect_error_has([&] { models::load_text_encoder(bad_json); },
                   {bad_json, "the config in its metadata is not valid JSON"});
  const std::string foreign = with_edited_metadata(tmp, "hf_bert", "foreign",
                                                   [](Metadata& meta) { meta["format"] = "pt"; });
  expect_error_has([&] { models::load_text_encoder(foreign); },
                   {foreign, "is not a distill checkpoint (its format is 'pt')"});
  const std::string unknown_arch =
      with_edited_metadata(tmp, "hf_bert", "gpt2", [](Metadata& meta) { meta["arch"] = "gpt2"; });
  expect_error_has([&] { models::load_text_encoder(unknown_arch); },
                   {unknown_arch, "'gpt2' is not a text encoder"});
  // An image-only checkpoint (the unedited conversion above) where a text encoder is needed.
  const std::string vision = tmp.file("hf_clip_vision.safetensors");
  expect_error_has([&] { models::load_text_encoder(vision); }, {vision, "no text encoder"});
}

TEST(ModelConfigBadInput, EachProblemNamesTheKey) {
  const std::vector<std::pair<std::function<void()>, std::string>> cases = {
      {[] {
         models::vit_config_from_json({{"image_size", 32}, {"patch_size", 7}}, "m.json");
       },
       "m.json: image_size 32 is not a multiple of patch_size 7"},
      {[] {
         models::vit_config_from_json({{"width", 30}, {"heads", 4}}, "m.json");
       },
       "m.json: width 30 is not divisible by 4 heads"},
      {[] {
         models::vit_config_from_json({{"widht", 30}}, "m.json");
       },
       "m.json: unknown model config key 'widht'"},
      {[] {
         models::vit_config_from_json({{"layers", 0}}, "m.json");
       },
       "m.json: 'layers' must be an integer >= 1, got 0"},
      {[] {
         models::vit_config_from_json({{"layers", "12"}}, "m.json");
       },
       "m.json: 'layers' must be an integer >= 1, got \"12\""},
      {[] {
         models::vit_config_from_json({{"act", "swish"}}, "m.json");
       },
       "swish"},
      {[] {
         models::vit_config_from_json({{"ln_eps", -1e-5}}, "m.json");
       },
       "m.json: 'ln_eps' must be a positive number"},
      {[] { models::vit_config_from_json(nlohmann::json::array(), "m.json"); },
       "m.json: model config must be a JSON object"},
      {[] {
         models::resnet_config_from_json({{"blocks", {3, 4, 6}}}, "m.json");
       },
       "m.json: 'blocks' must list 4 block counts"},
      {[] {
         models::bert_config_from_json({{"flavour", "gpt"}}, "m.json");
       },
       "m.json: flavour 'gpt' is neither bert nor roberta"},
      {[] {
         models::bert_config_from_json({{"pooling", "max"}}, "m.json");
       },
       "m.json: pooling 'max' is neither cls nor mean"},
      {[] {
         models::make_image_encoder({{"type", "mlp"}}, "m.json");
       },
       "m.json: unknown image tower type 'mlp'"},
      {[] { models::make_image_encoder(nlohmann::json::object(), "m.json"); },
       "m.json: image tower config needs \"type\""},
      {[] {
         models::make_text_encoder("roberta", {{"flavour", "bert"}}, "m.json");
       },
       "m.json: arch 'roberta' but the config's flavour is 'bert'"},
  };
  for (const auto& [f, needle] : cases) expect_error_has(f, {needle});
}

TEST(ModelBadInput, WrongImageSizeAndOutOfVocabularyIds) {
  Generator g(5);
  const models::VitConfig vc = tiny_vit_config(32, 16, 32, 512);
  models::VisionTransformer vit(vc, &g);
  EXPECT_THROW(vit.encode(random_tensor({1, 3, 48, 48}, 1)), Error);
  models::ClipTextConfig tc;
  tc.vocab_size = 10;
  tc.context_length = 4;
  tc.width = 16;
  tc.layers = 1;
  tc.heads = 2;
  tc.mlp_dim = 32;
  models::ClipTextTransformer text(tc, &g);
  try {
    text.encode(Tensor::from_vector(std::vector<int64_t>{1, 2, 10}, {1, 3}));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, "token id 10"));
  }
  // Over-long input: more tokens than the context.
  EXPECT_THROW(text.encode(Tensor::from_vector(std::vector<int64_t>{1, 2, 3, 4, 5}, {1, 5})),
               Error);
}

// ---- the real pretrained all-MiniLM-L6-v2 (fetched by tools/fetch_minilm.sh, run by setup.sh)

std::string minilm_dir() {
  return std::string(DISTILL_SOURCE_DIR) + "/.cache/weights/all-minilm-l6-v2";
}

TEST(RealCheckpoint, AllMiniLmL6V2MatchesSentenceTransformers) {
  if (!fs::exists(minilm_dir() + "/model.safetensors"))
    GTEST_SKIP() << "all-MiniLM-L6-v2 is not at " << minilm_dir()
                 << " (run tools/fetch_minilm.sh; ./setup.sh does)";
  TempDir tmp;
  const std::string out = tmp.file("minilm.safetensors");
  const models::ConvertedModel m = models::convert_checkpoint(minilm_dir());
  EXPECT_EQ(m.spec.arch, "bert");
  EXPECT_EQ(models::matching_preset("bert", m.spec.config), "all-minilm-l6-v2");
  models::save_converted(m, out);
  auto enc = models::load_text_encoder(out);
  SafetensorsFile ref(std::string(DISTILL_SOURCE_DIR) +
                      "/tests/fixtures/minilm/reference.safetensors");
  NoGradGuard guard;
  const models::TextFeatures f = enc->encode(ref.tensor("input_ids"), ref.tensor("attention_mask"));
  // sentence-transformers' pipeline: mean pooling, then L2 normalisation.
  const Tensor norm = sqrt(sum(mul(f.pooled, f.pooled), {1}, true));
  const Tensor emb = div(f.pooled, norm);
  EXPECT_TRUE(close_to_reference(emb, ref.tensor("embeddings"), 1e-4));
  EXPECT_TRUE(
      close_to_reference(slice(f.tokens, 0, 0, 2), ref.tensor("token_embeddings_first2"), 1e-4));
  // Our WordPiece tokenizer gives the reference's ids for the 32 sentences.
  auto tok = load_tokenizer(minilm_dir());
  std::ifstream in(std::string(DISTILL_SOURCE_DIR) + "/tests/fixtures/minilm/sentences.txt");
  std::vector<std::string> sentences;
  for (std::string line; std::getline(in, line);) sentences.push_back(line);
  const TokenBatch batch = tok->encode_batch(sentences);
  EXPECT_EQ(batch.ids.to_int_vector(), ref.tensor("input_ids").to_int_vector());
  EXPECT_EQ(batch.attention_mask.to_int_vector(), ref.tensor("attention_mask").to_int_vector());
}

}  // namespace
}  // namespace distill::testing
