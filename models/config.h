// Model configurations: plain structs with JSON forms (stored in a converted checkpoint's
// __metadata__ and in configs/) and the named presets.
#pragma once

#include <array>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "layers/basic.h"

namespace distill::models {

// CLIP vision transformer (ViT-B/32: 224, 32, 768, 12, 12, 3072, 512).
struct VitConfig {
  int64_t image_size = 224, patch_size = 32, width = 768, layers = 12, heads = 12, mlp_dim = 3072;
  int64_t output_dim = 512;  // 0: no projection (tokens stay at `width`)
  nn::Activation act = nn::Activation::QuickGELU;
  double ln_eps = 1e-5;
  int64_t grid() const { return image_size / patch_size; }
};

// CLIP ModifiedResNet (RN50: blocks 3,4,6,3, width 64).
struct ResNetConfig {
  std::array<int64_t, 4> blocks = {3, 4, 6, 3};
  int64_t width = 64, image_size = 224, heads = 32, output_dim = 1024;
  int64_t embed_dim() const { return width * 32; }  // channels of layer4
};

// CLIP text transformer (causal, pooled at the end-of-text token).
struct ClipTextConfig {
  int64_t vocab_size = 49408, context_length = 77, width = 512, layers = 12, heads = 8;
  int64_t mlp_dim = 2048, output_dim = 512;  // output_dim 0: no projection
  nn::Activation act = nn::Activation::QuickGELU;
  double ln_eps = 1e-5;
  // Pool at the first position of this id; -1: at the largest id of the row (OpenAI's argmax,
  // the same position when the end token is the largest id, as in CLIP's vocabulary).
  int64_t eot_token_id = -1;
};

// BERT and RoBERTa encoders (post-LN). RoBERTa: position ids start after the padding id and
// skip padding (position_offset = pad_token_id + 1), one token type.
struct BertConfig {
  std::string flavour = "bert";  // "bert" | "roberta"
  int64_t vocab_size = 30522, hidden = 768, layers = 12, heads = 12, intermediate = 3072;
  int64_t max_position = 512, type_vocab_size = 2, pad_token_id = 0;
  double ln_eps = 1e-12;
  nn::Activation act = nn::Activation::GELU;
  bool pooler = true;
  std::string pooling = "cls";  // sentence embedding: "cls" (<s> / [CLS]) or "mean"
};

nlohmann::json to_json(const VitConfig& c);
nlohmann::json to_json(const ResNetConfig& c);
nlohmann::json to_json(const ClipTextConfig& c);
nlohmann::json to_json(const BertConfig& c);
// Missing keys keep their defaults; unknown keys and bad values are errors naming `where`.
VitConfig vit_config_from_json(const nlohmann::json& j, const std::string& where);
ResNetConfig resnet_config_from_json(const nlohmann::json& j, const std::string& where);
ClipTextConfig clip_text_config_from_json(const nlohmann::json& j, const std::string& where);
BertConfig bert_config_from_json(const nlohmann::json& j, const std::string& where);

// A converted model: which architecture and its config, as stored in the checkpoint's metadata.
//   arch "clip"        {"vision": {"type": "vit"|"resnet", ...}, "text": {...}}
//   arch "clip-vision" {"type": "vit"|"resnet", ...}
//   arch "clip-text", "roberta", "bert": the tower's config
struct ModelSpec {
  std::string arch;
  nlohmann::json config;
};

// Presets: one tower each (image: clip-vit-b-32, clip-vit-b-16, clip-rn50; text: clip-text-b,
// clip-text-rn50, roberta-base, bert-base-uncased, all-minilm-l6-v2).
std::vector<std::string> preset_names();
ModelSpec preset(const std::string& name);  // throws listing the known names

}  // namespace distill::models
