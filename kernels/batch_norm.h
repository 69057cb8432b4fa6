// Batch normalisation over a contiguous [outer, channels, inner] buffer (NCHW: outer = N,
// inner = H * W); statistics are per channel over outer * inner elements.
//
// Dtypes: x / y / dy / dx share any floating dtype; every per-channel array (mean, rstd,
// running stats, weight, bias, dweight, dbias) is F32, or F64 when x is F64. Optional arrays
// (weight, bias, running stats, dweight, dbias) are skipped when their data is nullptr.
#pragma once

#include "kernels/common.h"

namespace distill::kernels {

struct BatchNormShape {
  int64_t outer = 0;
  int64_t channels = 0;
  int64_t inner = 0;
};

namespace cpu {
// Training statistics: save_mean = mean, save_rstd = 1 / sqrt(biased var + eps). When
// running_mean/var are given they are updated in place like PyTorch:
//   running = (1 - momentum) * running + momentum * batch value (unbiased variance for var).
void batch_norm_stats(const View& x, const BatchNormShape& shape, double eps, double momentum,
                      const View& save_mean, const View& save_rstd, const View& running_mean,
                      const View& running_var);
// y = (x - mean) * rstd * weight + bias. With `second_is_var` the second array holds a
// variance (eval mode with running statistics) and rstd = 1 / sqrt(var + eps).
void batch_norm_apply(const View& x, const BatchNormShape& shape, const View& mean,
                      const View& rstd_or_var, bool second_is_var, double eps, const View& weight,
                      const View& bias, const View& y);
// Training-mode backward with the batch statistics (M = outer * inner, xhat = (x - mean) rstd):
//   dbias = sum dy, dweight = sum dy xhat,
//   dx = weight rstd (dy - dbias / M - xhat dweight / M).
void batch_norm_backward(const View& x, const View& dy, const BatchNormShape& shape,
                         const View& save_mean, const View& save_rstd, const View& weight,
                         const View& dx, const View& dweight, const View& dbias);
}  // namespace cpu

namespace cuda {
void batch_norm_stats(const View& x, const BatchNormShape& shape, double eps, double momentum,
                      const View& save_mean, const View& save_rstd, const View& running_mean,
                      const View& running_var);
void batch_norm_apply(const View& x, const BatchNormShape& shape, const View& mean,
                      const View& rstd_or_var, bool second_is_var, double eps, const View& weight,
                      const View& bias, const View& y);
void batch_norm_backward(const View& x, const View& dy, const BatchNormShape& shape,
                         const View& save_mean, const View& save_rstd, const View& weight,
                         const View& dx, const View& dweight, const View& dbias);
}  // namespace cuda

}  // namespace distill::kernels
