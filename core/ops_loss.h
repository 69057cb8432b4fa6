// Public API of the loss op family (see core/ops.h for conventions).
//
// Fused softmax-cross-entropy (kernels/cross_entropy.h): one kernel for the forward, which saves
// two numbers per row, and one for the backward, which writes dlogits directly; softmax
// probabilities are never materialised. Stable for logits of any magnitude (1e4 in fp32 is fine).
// The loss is computed in fp32 for f32/bf16/f16 logits (f64 for f64 logits) and returned in that
// dtype, so bf16 models still get an fp32 loss; dlogits have the logits' dtype.
#pragma once

#include "core/ops.h"

namespace distill {

enum class Reduction { None, Mean, Sum };

struct CrossEntropyOptions {
  Reduction reduction = Reduction::Mean;
  // Rows whose label equals ignore_index contribute 0 to the loss and get a zero gradient. With
  // Reduction::Mean the sum is divided by the number of non-ignored rows (PyTorch's rule; all
  // rows ignored gives NaN, 0/0, like PyTorch).
  int64_t ignore_index = -100;
  // PyTorch's label smoothing: the target is (1 - s) one_hot(y) + s / C.
  double label_smoothing = 0.0;
  // Logits are divided by the temperature (> 0) before the softmax; the gradient includes 1/T.
  double temperature = 1.0;
};

// logits [N, C] (floating), labels [N] (I64 or I32; values in [0, C) or ignore_index).
// Returns a scalar (Mean, Sum) or [N] (None). Differentiable w.r.t. logits. On the CPU an
// out-of-range label throws; on CUDA it yields NaN for that row (checking would need a sync).
Tensor cross_entropy(const Tensor& logits, const Tensor& labels,
                     const CrossEntropyOptions& options = {});

// Soft-target cross-entropy: loss_n = -sum_c target[n, c] log softmax(logits[n] / T)_c.
// target [N, C] holds probabilities (teacher outputs); it is treated as a constant: no gradient
// flows into it even if it requires grad (detach it yourself to make that explicit). Mean
// divides by N. Targets that do not sum to one still get the exact gradient of this formula.
Tensor soft_cross_entropy(const Tensor& logits, const Tensor& target, double temperature = 1.0,
                          Reduction reduction = Reduction::Mean);

}  // namespace distill
