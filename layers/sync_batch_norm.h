// Synchronised BatchNorm for data-parallel training: in training mode the batch statistics are
// those of the global batch (every rank's samples), as if one process held them all. Switched on
// for the whole process by set_sync_batch_norm (the run config's distributed.sync_batch_norm);
// BatchNorm2d then uses it whenever more than one process runs. Per-rank statistics otherwise.
#pragma once

#include "core/tensor.h"

namespace distill::nn {

void set_sync_batch_norm(bool on);
bool sync_batch_norm_enabled();

// batch_norm(x, ..., training = true) with the per-channel sums of x, then of (x - mean)^2,
// summed over ranks (differentiably: the backward sums the statistics' gradients over ranks too).
// The running statistics are updated in place from the global mean and unbiased variance. x [N, C,
// H, W]. Every rank must call it in the same order (it is a collective).
Tensor sync_batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias,
                       const Tensor& running_mean, const Tensor& running_var, double momentum,
                       double eps);

}  // namespace distill::nn
