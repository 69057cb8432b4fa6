// BERT and RoBERTa encoders (post-LN transformer), with Hugging Face's parameter names
// (embeddings.*, encoder.layer.{i}.attention.self.query, ..., pooler.dense) as canonical names.
#pragma once

#include "layers/attention.h"
#include "models/encoder.h"

namespace distill::models {

class BertLayer : public nn::Module {
 public:
  BertLayer(const BertConfig& config, Generator* gen);
  Tensor forward(const Tensor& x, const AttentionMask& mask) const;
  int64_t heads;
  std::shared_ptr<nn::Linear> query, key, value, attn_out, intermediate, output;
  std::shared_ptr<nn::LayerNorm> attn_norm, output_norm;
  nn::Activation act;
};

struct BertOutputs {
  Tensor last_hidden_state;  // [N, L, hidden]
  Tensor pooler_output;      // tanh(dense(first token)) when the model has a pooler
  Tensor mean_pooled;        // attention-masked mean of the last hidden state
};

class BertModel : public TextEncoder {
 public:
  explicit BertModel(const BertConfig& config, Generator* gen = nullptr);
  // token_type_ids undefined: all 0. attention_mask undefined: all 1.
  BertOutputs forward(const Tensor& ids, const Tensor& attention_mask,
                      const Tensor& token_type_ids = Tensor());
  // pooled: the config's pooling ("cls": first token's hidden state; "mean": masked mean).
  TextFeatures encode(const Tensor& ids, const Tensor& attention_mask = Tensor()) override;
  int64_t embed_dim() const override { return config.hidden; }
  int64_t max_length() const override;
  std::string arch() const override { return config.flavour; }
  nlohmann::json config_json() const override { return to_json(config); }
  // RoBERTa's padding-aware position ids (pad + 1 + index among non-padding tokens, pad for
  // padding); BERT: 0 .. L-1.
  Tensor position_ids(const Tensor& ids) const;

  BertConfig config;
  std::shared_ptr<nn::Embedding> word_embeddings, position_embeddings, token_type_embeddings;
  std::shared_ptr<nn::LayerNorm> embeddings_norm;
  std::shared_ptr<nn::ModuleList<BertLayer>> layers;
  std::shared_ptr<nn::Linear> pooler;  // null without a pooler
};

}  // namespace distill::models
