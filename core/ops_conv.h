// Public API of the conv op family (see core/ops.h for conventions).
#pragma once

#include <optional>
#include <string>

#include "core/ops.h"

namespace distill {

// Which CUDA implementation runs a convolution: the hand-written implicit GEMM (native) or cuDNN.
// CPU tensors always use the CPU reference. The process-wide setting starts as Native; every
// conv call may override it.
enum class ConvBackend : uint8_t { Native, Cudnn };

void set_conv_backend(ConvBackend backend);
ConvBackend conv_backend();
const char* conv_backend_name(ConvBackend backend);           // "native" | "cudnn"
ConvBackend conv_backend_from_name(const std::string& name);  // throws on other names

struct Conv2dParams {
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dilation_h = 1, dilation_w = 1;

  // Square stride / padding / dilation, like torch's int arguments.
  static Conv2dParams square(int64_t stride, int64_t padding, int64_t dilation = 1) {
    return {stride, stride, padding, padding, dilation, dilation};
  }
};

// y = conv2d(x, weight) + bias, NCHW, groups = 1, like torch.nn.functional.conv2d.
// x [N, C, H, W], weight [K, C, R, S], bias [K] or undefined -> y [N, K, P, Q]. Differentiable in
// x, weight and bias. f32, f64 (CPU only), bf16 (fp32 accumulation) and f16 (CPU and cuDNN).
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& params,
              std::optional<ConvBackend> backend = std::nullopt);
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
              int64_t stride = 1, int64_t padding = 0, int64_t dilation = 1,
              std::optional<ConvBackend> backend = std::nullopt);

// The two halves of conv2d's backward, as ops of their own (not differentiable): the gradient with
// respect to the input of shape `input_shape`, and with respect to a weight of `weight_shape`.
Tensor conv2d_backward_input(const Tensor& grad_out, const Tensor& weight, const Shape& input_shape,
                             const Conv2dParams& params,
                             std::optional<ConvBackend> backend = std::nullopt);
Tensor conv2d_backward_weight(const Tensor& grad_out, const Tensor& x, const Shape& weight_shape,
                              const Conv2dParams& params,
                              std::optional<ConvBackend> backend = std::nullopt);

}  // namespace distill
