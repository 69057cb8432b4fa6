// Public API of the attention op family (see core/ops.h for conventions).
#pragma once

#include "core/ops.h"

namespace distill {

// Which (query, key) pairs attention may use. Both parts combine (causal AND padding).
struct AttentionMask {
  // Query i attends key j only when j <= i. Top-left aligned, like PyTorch SDPA's is_causal: with
  // Lq != Lk the diagonal starts at (0, 0) (rows i >= Lk see every key).
  bool causal = false;
  // Optional key padding mask, [B, Lk] or [1, Lk] (broadcast over the batch), any integer or
  // floating dtype: NONZERO = ATTEND to this key, 0 = masked. Same convention as SDPA's boolean
  // attn_mask and Hugging Face's attention_mask; the opposite of nn.MultiheadAttention's
  // key_padding_mask (where true means "ignore"). Not differentiable.
  Tensor key_keep;
};

// Scaled dot-product attention, fused: softmax(scale * q k^T + mask) v.
//   q [B, H, Lq, D], k and v [B, H, Lk, D] (Lq != Lk allowed) -> [B, H, Lq, D], q's dtype.
//   scale: 0 means 1/sqrt(D).
// dtypes F32, F64, BF16, F16 (all three the same); the head dim must have stride 1 (other
// layouts are copied). A query row whose keys are all masked gives a row of zeros (not NaN) and
// zero gradients. Differentiable in q, k and v. CUDA: D <= 128.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMask& mask = {},
                 double scale = 0);

// Lower-level entry points, used by attention's autograd node, tests and benchmarks. They record
// no autograd history.
struct AttentionForwardResult {
  Tensor out;  // [B, H, Lq, D]
  Tensor lse;  // [B, H, Lq] log-sum-exp of each row's masked, scaled scores (-inf: fully masked);
               // F32, or F64 for F64 inputs
};
AttentionForwardResult attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                         const AttentionMask& mask = {}, double scale = 0);

struct AttentionGrads {
  Tensor q, k, v;
};
// Gradients of attention w.r.t. q, k, v given the forward's out and lse and the output gradient.
AttentionGrads attention_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& out, const Tensor& lse, const Tensor& grad_out,
                                  const AttentionMask& mask = {}, double scale = 0);

}  // namespace distill
