// Public API of the norm op family (see core/ops.h for conventions): batch norm and 2-D pooling.
// (Layer norm is core/ops.h's layer_norm.)
#pragma once

#include <array>

#include "core/ops.h"

namespace distill {

// Batch normalisation of x [N, C, *] (usually [N, C, H, W]) over every dim except dim 1.
// weight, bias: [C] or undefined (no affine). running_mean, running_var: [C] buffers or
// undefined. All [C] tensors are F32 (F64 when x is F64) and contiguous, on x's device.
// - training: normalises with the batch mean and biased variance; when the running buffers are
//   given they are updated IN PLACE (not recorded by autograd) with
//   running = (1 - momentum) running + momentum batch, using the unbiased variance for
//   running_var (PyTorch's rule). Needs more than one value per channel.
// - eval (!training): normalises with the running statistics (which must be given).
// Differentiable w.r.t. x, weight and bias in both modes (the batch statistics are part of the
// graph in training mode, as in PyTorch).
Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias,
                  const Tensor& running_mean, const Tensor& running_var, bool training,
                  double momentum = 0.1, double eps = 1e-5);

// Pooling over the last two dims of x [N, C, H, W] or [C, H, W] (floating). `stride` {0, 0}
// means "equal to kernel_size" (PyTorch's default). Padding is at most half the kernel; the
// output size is floor((in + 2 pad - kernel) / stride) + 1 (no ceil_mode).
// count_include_pad: divide by the full window (PyTorch's default) or by the in-bounds count.
Tensor avg_pool2d(const Tensor& x, std::array<int64_t, 2> kernel_size,
                  std::array<int64_t, 2> stride = {0, 0}, std::array<int64_t, 2> padding = {0, 0},
                  bool count_include_pad = true);
// Padding counts as -inf. The backward routes each output's gradient to its argmax (saved by the
// forward; the first maximum in row-major window order, NaN counting as the maximum).
Tensor max_pool2d(const Tensor& x, std::array<int64_t, 2> kernel_size,
                  std::array<int64_t, 2> stride = {0, 0}, std::array<int64_t, 2> padding = {0, 0});
// Output [.., out_h, out_w]; window o along an axis of length L covers
// [floor(o L / out), ceil((o + 1) L / out)) (PyTorch's formula).
Tensor adaptive_avg_pool2d(const Tensor& x, std::array<int64_t, 2> output_size);

}  // namespace distill
