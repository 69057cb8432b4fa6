// CLIP's towers: the vision transformer, the ModifiedResNet and the text transformer.
// Canonical parameter names (what `distill convert` writes; see models/name_maps.cpp):
//   ViT:  patch_embed.weight, class_embedding, position_embedding, ln_pre,
//         layers.{i}.{ln_1, attn.{q,k,v,out}_proj, ln_2, mlp.fc1, mlp.fc2}, ln_post, proj.weight
//   ResNet: OpenAI's names (conv1, bn1, ..., layer{1..4}.{i}.*, attnpool.*)
//   Text: token_embedding.weight, position_embedding, layers.{i}.*, ln_final, proj.weight
#pragma once

#include "layers/attention.h"
#include "models/encoder.h"

namespace distill::models {

// Pre-LN residual block: x + attn(ln_1(x)); x + mlp(ln_2(x)).
class TransformerBlock : public nn::Module {
 public:
  TransformerBlock(int64_t width, int64_t heads, int64_t mlp_dim, nn::Activation act, double eps,
                   Generator* gen);
  Tensor forward(const Tensor& x, const AttentionMask& mask = {}) const;
  std::shared_ptr<nn::LayerNorm> ln_1, ln_2;
  std::shared_ptr<nn::MultiheadAttention> attn;
  std::shared_ptr<nn::Mlp> mlp;
};

class VisionTransformer : public ImageEncoder {
 public:
  explicit VisionTransformer(const VitConfig& config, Generator* gen = nullptr);
  ImageFeatures encode(const Tensor& pixels) override;
  // The transformer's output before ln_post, [N, 1 + grid^2, width] (for tests and probes).
  Tensor hidden_states(const Tensor& pixels);
  int64_t image_size() const override { return config.image_size; }
  int64_t embed_dim() const override {
    return config.output_dim ? config.output_dim : config.width;
  }
  int64_t token_dim() const override { return embed_dim(); }
  int64_t num_tokens() const override { return 1 + config.grid() * config.grid(); }
  nlohmann::json config_json() const override { return to_json(config); }

  VitConfig config;
  std::shared_ptr<nn::Conv2d> patch_embed;
  Tensor class_embedding, position_embedding;
  std::shared_ptr<nn::LayerNorm> ln_pre, ln_post;
  std::shared_ptr<nn::ModuleList<TransformerBlock>> layers;
  std::shared_ptr<nn::Linear> proj;  // null when output_dim == 0
};

// ModifiedResNet bottleneck: 1x1, 3x3, anti-aliased stride by average pooling, 1x1 (x4).
class Bottleneck : public nn::Module {
 public:
  Bottleneck(int64_t inplanes, int64_t planes, int64_t stride, Generator* gen);
  Tensor forward(const Tensor& x);
  int64_t stride;
  std::shared_ptr<nn::Conv2d> conv1, conv2, conv3;
  std::shared_ptr<nn::BatchNorm2d> bn1, bn2, bn3;
  // OpenAI's downsample Sequential: "-1" AvgPool (no parameters), "0" conv, "1" batch norm.
  std::shared_ptr<nn::Module> downsample;
  std::shared_ptr<nn::Conv2d> downsample_conv;
  std::shared_ptr<nn::BatchNorm2d> downsample_bn;
};

class ModifiedResNet : public ImageEncoder {
 public:
  explicit ModifiedResNet(const ResNetConfig& config, Generator* gen = nullptr);
  ImageFeatures encode(const Tensor& pixels) override;
  int64_t image_size() const override { return config.image_size; }
  int64_t embed_dim() const override { return config.output_dim; }
  int64_t token_dim() const override { return config.embed_dim(); }
  int64_t num_tokens() const override {
    return (config.image_size / 32) * (config.image_size / 32);
  }
  nlohmann::json config_json() const override { return to_json(config); }

  ResNetConfig config;
  std::shared_ptr<nn::Conv2d> conv1, conv2, conv3;
  std::shared_ptr<nn::BatchNorm2d> bn1, bn2, bn3;
  std::array<std::shared_ptr<nn::ModuleList<Bottleneck>>, 4> stages;
  std::shared_ptr<nn::AttentionPool2d> attnpool;
};

class ClipTextTransformer : public TextEncoder {
 public:
  explicit ClipTextTransformer(const ClipTextConfig& config, Generator* gen = nullptr);
  // attention_mask is not needed (causal attention; pooling at the end token) and is ignored.
  TextFeatures encode(const Tensor& ids, const Tensor& attention_mask = Tensor()) override;
  int64_t embed_dim() const override {
    return config.output_dim ? config.output_dim : config.width;
  }
  int64_t max_length() const override { return config.context_length; }
  std::string arch() const override { return "clip-text"; }
  nlohmann::json config_json() const override { return to_json(config); }

  ClipTextConfig config;
  std::shared_ptr<nn::Embedding> token_embedding;
  Tensor position_embedding;
  std::shared_ptr<nn::ModuleList<TransformerBlock>> layers;
  std::shared_ptr<nn::LayerNorm> ln_final;
  std::shared_ptr<nn::Linear> proj;
};

// Checks ids are [N, L] integers with L <= max_len and every id in [0, vocab); names `model`.
void check_token_ids(const Tensor& ids, int64_t vocab_size, int64_t max_len, const char* model);

}  // namespace distill::models
