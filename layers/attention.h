// Multi-head attention layers over the fused attention op (core/ops_attention.h).
#pragma once

#include "core/ops_attention.h"
#include "layers/basic.h"

namespace distill::nn {

// out_proj(attention(q_proj(query), k_proj(key), v_proj(value))) with `heads` heads.
// Self-attention passes the same tensor three times; cross-attention may have keys of another
// width (kdim). query [B, Lq, dim], key/value [B, Lk, kdim] -> [B, Lq, dim]. Checkpoints with a
// packed in_proj (torch.nn.MultiheadAttention, OpenAI CLIP) are split into q/k/v by the converter.
class MultiheadAttention : public Module {
 public:
  MultiheadAttention(int64_t dim, int64_t heads, int64_t kdim = 0, bool bias = true,
                     Generator* gen = nullptr);
  Tensor forward(const Tensor& query, const Tensor& key, const Tensor& value,
                 const AttentionMask& mask = {}) const;
  Tensor forward(const Tensor& x, const AttentionMask& mask = {}) const {
    return forward(x, x, x, mask);
  }
  int64_t heads;
  std::shared_ptr<Linear> q_proj, k_proj, v_proj, out_proj;
};

// The projections and head split shared by the attention layers: projected q [B, Lq, E] and k, v
// [B, Lk, E] -> [B, Lq, E], attention per head.
Tensor multi_head_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t heads,
                            const AttentionMask& mask = {});

// CLIP ModifiedResNet's attention pooling: the mean token, plus a learned position embedding,
// queries the (H*W + 1) tokens; c_proj maps to output_dim. x [N, C, H, W] -> [N, output_dim].
// Parameter names follow OpenAI's (positional_embedding, q_proj, k_proj, v_proj, c_proj).
class AttentionPool2d : public Module {
 public:
  AttentionPool2d(int64_t spatial_dim, int64_t dim, int64_t heads, int64_t output_dim,
                  Generator* gen = nullptr);
  Tensor forward(const Tensor& x) const;
  int64_t heads;
  Tensor positional_embedding;  // [spatial_dim^2 + 1, dim]
  std::shared_ptr<Linear> q_proj, k_proj, v_proj, c_proj;
};

}  // namespace distill::nn
