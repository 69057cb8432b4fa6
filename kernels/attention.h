// Fused scaled-dot-product attention: out = softmax(scale * q k^T + mask) v, per (batch, head).
//
// Layout: q [B, H, Lq, D], k and v [B, H, Lk, D], out [B, H, Lq, D]. Each operand is described by
// its base pointer and the strides (in elements) of its batch, head and row dims; the head dim D
// must be contiguous (stride 1), so permuted views like [B, L, H, D] -> [B, H, L, D] need no copy.
//
// Masks (combinable):
//   causal    query i attends key j only when j <= i. Top-left aligned like PyTorch SDPA's
//             is_causal: with Lq != Lk the diagonal starts at (0, 0), not at the bottom-right.
//   key_keep  optional U8 [B, Lk] (row stride key_keep_stride_b, 0 broadcasts one row over the
//             batch): nonzero = attend to this key, 0 = masked (the convention of SDPA's boolean
//             attn_mask and Hugging Face's attention_mask, the opposite of nn.MultiheadAttention's
//             key_padding_mask).
// A query row whose keys are all masked produces an output row of zeros (not NaN), a log-sum-exp
// of -inf, and zero gradients.
//
// The forward saves the natural-log log-sum-exp of each query row's masked, scaled scores,
// lse [B, H, Lq] contiguous (F32; F64 when dtype is F64); the backward recomputes the softmax from
// it, never storing the Lq x Lk probability matrix.
#pragma once

#include <cstdint>

#include "kernels/common.h"

namespace distill::kernels {

// One [B, H, L, D] operand: element (b, h, l, d) is data[b*stride_b + h*stride_h + l*stride_l + d].
struct AttentionOperand {
  void* data = nullptr;
  int64_t stride_b = 0, stride_h = 0, stride_l = 0;
};

struct AttentionArgs {
  DType dtype = DType::F32;  // dtype of q, k, v, out and all gradients (F32, F64, BF16, F16)
  int64_t batch = 0, heads = 0, q_len = 0, kv_len = 0, head_dim = 0;
  double scale = 1.0;  // multiplies q.k before the softmax
  bool causal = false;
  const uint8_t* key_keep = nullptr;  // null: no key padding mask
  int64_t key_keep_stride_b = 0;

  AttentionOperand q, k, v;  // inputs
  AttentionOperand out;      // forward: written; backward: read (for rowsum(dO * O))
  void* lse = nullptr;       // [B, H, Lq]: forward writes it, backward reads it

  // Backward only: grad_out is read; grad_q, grad_k, grad_v are written (fully overwritten).
  AttentionOperand grad_out, grad_q, grad_k, grad_v;
};

// lse's dtype for a given input dtype.
inline DType attention_lse_dtype(DType t) {
  return t == DType::F64 ? DType::F64 : DType::F32;
}

namespace cpu {
// Reference: per query row, scores -> stable softmax -> weighted sum of v. Math in float (double
// for F64), softmax normaliser accumulated in double.
void attention_forward(const AttentionArgs& args);
// dv = P^T dO, dP = dO v^T, dS = P * (dP - rowsum(dO * O)), dq = scale dS k, dk = scale dS^T q.
void attention_backward(const AttentionArgs& args);
}  // namespace cpu

namespace cuda {
// Flash-attention-2 style: one CTA per (query tile, head, batch), key tiles streamed through
// shared memory with an online softmax. BF16/F16 with 16-byte aligned rows and D % 8 == 0 run on
// tensor cores (mma.sync m16n8k16, fp32 accumulation); everything else (F32, F64, unaligned)
// runs a SIMT kernel with fp32 (fp64) math. D <= 128.
void attention_forward(const AttentionArgs& args);
// Deterministic backward, no atomics: a preprocessing kernel computes rowsum(dO * O), one kernel
// per key tile accumulates dk and dv over the query tiles, one per query tile accumulates dq over
// the key tiles (recomputing the scores from lse).
void attention_backward(const AttentionArgs& args);
// Largest head dim the CUDA kernels accept.
constexpr int64_t kAttentionMaxHeadDim = 128;
}  // namespace cuda

}  // namespace distill::kernels
