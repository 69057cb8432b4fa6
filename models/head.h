// The image-text representation head (DESIGN.md section 1, stage 1) and the stage-2 student.
#pragma once

#include "layers/attention.h"
#include "models/encoder.h"

namespace distill::models {

struct HeadConfig {
  int64_t query_dim = 512;  // d_T: width of the class (or caption) text embeddings
  int64_t token_dim = 512;  // width of the image tokens X
  int64_t width = 512;      // d_h
  int64_t heads = 8;
  int64_t mlp_ratio = 4;
  int64_t num_classes = 10;
  double dropout = 0;
};
nlohmann::json to_json(const HeadConfig& c);
HeadConfig head_config_from_json(const nlohmann::json& j, const std::string& where);

// One cross-attention decoder layer (ML-Decoder / Query2Label style):
//   Q = LN(T) W_q;  H = LN(Q + MHA(Q, X W_k, X W_v));  H = H + MLP(LN(H))
// Class-query mode: T is [C, d_T] (one query per class, the same for every image) and
//   logit_c = <H_c, w_c> + b_c (one weight vector per class).
// Caption mode: T is [B, L, d_T] (the image's caption tokens, with a padding mask); H is
//   mean-pooled over the caption tokens and a linear layer gives the C logits.
class ImageTextHead : public nn::Module {
 public:
  explicit ImageTextHead(const HeadConfig& config, Generator* gen = nullptr);
  // tokens [B, N, token_dim]; class_queries [C, query_dim] -> logits [B, C].
  Tensor forward(const Tensor& tokens, const Tensor& class_queries);
  // caption_tokens [B, L, query_dim], caption_mask [B, L] (1 = token) -> logits [B, C].
  Tensor forward_captions(const Tensor& tokens, const Tensor& caption_tokens,
                          const Tensor& caption_mask);
  // The decoded queries H, [B, Q, width] (for probes and tests).
  Tensor decode(const Tensor& tokens, const Tensor& queries);

  HeadConfig config;
  std::shared_ptr<nn::LayerNorm> query_norm, attn_norm, mlp_norm;
  std::shared_ptr<nn::Linear> query_proj;
  std::shared_ptr<nn::MultiheadAttention> attn;
  std::shared_ptr<nn::Mlp> mlp;
  std::shared_ptr<nn::Dropout> dropout;
  Tensor class_weight;                             // [C, width]
  Tensor class_bias;                               // [C]
  std::shared_ptr<nn::Linear> caption_classifier;  // width -> C
};

// A linear classifier on an encoder's pooled embedding: the stage-2 student (a fresh encoder of
// the teacher's architecture) and the linear-probe baseline share this shape.
class EncoderClassifier : public nn::Module {
 public:
  EncoderClassifier(std::shared_ptr<ImageEncoder> encoder, int64_t num_classes,
                    Generator* gen = nullptr);
  Tensor forward(const Tensor& pixels);  // logits [B, C]
  std::shared_ptr<ImageEncoder> encoder;
  std::shared_ptr<nn::Linear> classifier;
};

}  // namespace distill::models
