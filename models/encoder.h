// The two encoder interfaces every image and text tower implements, so the head, the student and
// the CLI need not know which architecture they hold.
#pragma once

#include <memory>
#include <string>

#include "layers/module.h"
#include "models/config.h"

namespace distill::models {

struct ImageFeatures {
  Tensor pooled;  // [N, embed_dim]: the tower's image embedding (projected where it has one)
  Tensor tokens;  // [N, T, token_dim]: ViT: every final token through ln_post and the projection;
                  // ResNet: the layer4 map as H*W tokens (row-major), channels last
};

class ImageEncoder : public nn::Module {
 public:
  using nn::Module::Module;
  virtual ImageFeatures encode(const Tensor& pixels) = 0;  // [N, 3, S, S] normalised
  virtual int64_t image_size() const = 0;
  virtual int64_t embed_dim() const = 0;
  virtual int64_t token_dim() const = 0;
  virtual int64_t num_tokens() const = 0;
  virtual nlohmann::json config_json() const = 0;  // {"type": ..., ...}
};

struct TextFeatures {
  Tensor pooled;  // [N, embed_dim]: CLIP: end-of-text token + projection; RoBERTa/BERT: the
                  // config's pooling (<s>/[CLS] token or masked mean), not normalised
  Tensor tokens;  // [N, L, width]: the final hidden states
};

class TextEncoder : public nn::Module {
 public:
  using nn::Module::Module;
  // ids [N, L] integer, attention_mask [N, L] (1 = token, 0 = padding) or undefined (all 1).
  virtual TextFeatures encode(const Tensor& ids, const Tensor& attention_mask = Tensor()) = 0;
  virtual int64_t embed_dim() const = 0;
  virtual int64_t max_length() const = 0;
  virtual std::string arch() const = 0;  // "clip-text" | "roberta" | "bert"
  virtual nlohmann::json config_json() const = 0;
};

// Builds a freshly initialised tower of the given spec (arch "clip-vision" / "clip-text" /
// "roberta" / "bert"; for arch "clip" the part named by `tower`: "vision" or "text").
std::shared_ptr<ImageEncoder> make_image_encoder(const nlohmann::json& vision_config,
                                                 const std::string& where,
                                                 Generator* gen = nullptr);
std::shared_ptr<TextEncoder> make_text_encoder(const std::string& arch,
                                               const nlohmann::json& config,
                                               const std::string& where, Generator* gen = nullptr);
// A preset's tower (image or text), freshly initialised.
std::shared_ptr<nn::Module> make_preset(const std::string& name, Generator* gen = nullptr);

}  // namespace distill::models
