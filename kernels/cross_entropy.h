// Fused softmax-cross-entropy over the last axis of a contiguous [rows, cols] logits buffer.
//
// With u = logits / T (T > 0 the temperature) and lse = log(sum_c exp(u_c)):
//   hard labels y:   loss = (1 - eps) (lse - u_y) + eps / C * sum_c (lse - u_c)   (eps: smoothing)
//   soft targets t:  loss = sum_c t_c (lse - u_c)
// The forward saves per-row statistics; the backward recomputes softmax from them in the same
// pass that writes the gradient, so the [rows, cols] probabilities never exist in memory:
//   dlogits = (softmax(u) * sum_c q_c - q) / T * grad_loss[row]
// with q the (smoothed one-hot or soft) target distribution. sum_c q_c is 1 for hard labels and
// is saved by the soft forward, so targets that do not sum to one still get the exact gradient.
//
// Stability: the statistics are m = max_c logits_c (raw, not divided by T) and
// log_sum = log(sum_c exp((logits_c - m) / T)), so lse = m / T + log_sum. Every exponent is
// computed as (logits_c - m) / T, a difference of nearby floats that is exact, instead of
// logits_c / T - lse, which would lose all precision for logits of magnitude 1e4 in fp32. The
// loss is assembled from non-negative terms ((m - logits_y) / T, log_sum, sum_c (m - logits_c))
// so nothing cancels either.
#pragma once

#include "kernels/common.h"

namespace distill::kernels {

struct CrossEntropyArgs {
  int64_t rows = 0;
  int64_t cols = 0;
  double inv_temperature = 1.0;
  int64_t ignore_index = -100;   // hard labels: rows with this label get loss 0 and gradient 0
  double label_smoothing = 0.0;  // hard labels: eps in [0, 1]
};

// Shared conventions:
// - logits: contiguous [rows, cols], any floating dtype; dlogits: contiguous, same dtype.
// - loss, target_sum, valid: [rows] contiguous in the accumulation dtype (F64 for F64 logits,
//   F32 otherwise); row_stats: contiguous [rows, 2] in that dtype holding (m, log_sum). `valid`
//   (may have data == nullptr) gets 1 for rows that count towards a mean, 0 for ignored rows.
// - grad_loss: [rows] in the accumulation dtype with any stride (stride 0 broadcasts one value).
// - labels: contiguous I64 [rows]. A label outside [0, cols) that is not ignore_index gives a NaN
//   loss and NaN gradient row (the op layer rejects such labels before calling the CPU kernel; on
//   CUDA checking would need a device-to-host sync, so the NaN is the signal).
// - target: contiguous [rows, cols] in the accumulation dtype.
namespace cpu {
void cross_entropy_forward(const View& logits, const View& labels, const CrossEntropyArgs& args,
                           const View& loss, const View& row_stats, const View& valid);
void cross_entropy_backward(const View& logits, const View& labels, const View& row_stats,
                            const View& grad_loss, const CrossEntropyArgs& args,
                            const View& dlogits);
void soft_cross_entropy_forward(const View& logits, const View& target,
                                const CrossEntropyArgs& args, const View& loss,
                                const View& row_stats, const View& target_sum);
void soft_cross_entropy_backward(const View& logits, const View& target, const View& row_stats,
                                 const View& target_sum, const View& grad_loss,
                                 const CrossEntropyArgs& args, const View& dlogits);
}  // namespace cpu

namespace cuda {
void cross_entropy_forward(const View& logits, const View& labels, const CrossEntropyArgs& args,
                           const View& loss, const View& row_stats, const View& valid);
void cross_entropy_backward(const View& logits, const View& labels, const View& row_stats,
                            const View& grad_loss, const CrossEntropyArgs& args,
                            const View& dlogits);
void soft_cross_entropy_forward(const View& logits, const View& target,
                                const CrossEntropyArgs& args, const View& loss,
                                const View& row_stats, const View& target_sum);
void soft_cross_entropy_backward(const View& logits, const View& target, const View& row_stats,
                                 const View& target_sum, const View& grad_loss,
                                 const CrossEntropyArgs& args, const View& dlogits);
}  // namespace cuda

}  // namespace distill::kernels
