// 2-D convolution (NCHW activations, KCRS filters, groups = 1): forward, data gradient and weight
// gradient. Every pointer addresses a contiguous tensor of `dtype`.
//   CPU: im2col + OpenBLAS GEMM per image (bf16/f16 widened to f32; f64 for gradient checks).
//   CUDA (native): implicit GEMM on tensor cores (bf16) or CUDA cores (f32), no im2col buffer.
//   CUDA (cuDNN): the same three operations through cuDNN's legacy convolution API, kept in
//   kernels/cuda/conv_cudnn.cu to cross-check and benchmark the native kernels.
#pragma once

#include "kernels/common.h"

namespace distill::kernels {

struct Conv2dGeometry {
  int64_t batch = 0, in_channels = 0, in_h = 0, in_w = 0;  // x: [batch, in_channels, in_h, in_w]
  int64_t out_channels = 0, kernel_h = 0, kernel_w = 0;    // w: [out, in, kernel_h, kernel_w]
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t out_h = 0, out_w = 0;  // y: [batch, out_channels, out_h, out_w]

  DISTILL_HD int64_t x_numel() const { return batch * in_channels * in_h * in_w; }
  DISTILL_HD int64_t w_numel() const { return out_channels * in_channels * kernel_h * kernel_w; }
  DISTILL_HD int64_t y_numel() const { return batch * out_channels * out_h * out_w; }
};

// y = conv(x, w) + bias; bias may be null.
struct Conv2dForwardArgs {
  DType dtype = DType::F32;
  Conv2dGeometry geom;
  const void* x = nullptr;
  const void* w = nullptr;
  const void* bias = nullptr;  // [out_channels] or null
  void* y = nullptr;
};

// dx = d(sum(y * dy)) / dx; overwrites dx.
struct Conv2dBackwardDataArgs {
  DType dtype = DType::F32;
  Conv2dGeometry geom;
  const void* dy = nullptr;
  const void* w = nullptr;
  void* dx = nullptr;
};

// dw = d(sum(y * dy)) / dw; overwrites dw.
struct Conv2dBackwardWeightArgs {
  DType dtype = DType::F32;
  Conv2dGeometry geom;
  const void* dy = nullptr;
  const void* x = nullptr;
  void* dw = nullptr;
};

namespace cpu {
void conv2d_forward(const Conv2dForwardArgs& args);
void conv2d_backward_data(const Conv2dBackwardDataArgs& args);
void conv2d_backward_weight(const Conv2dBackwardWeightArgs& args);
}  // namespace cpu

namespace cuda {
// Native implicit-GEMM kernels: f32 and bf16.
void conv2d_forward(const Conv2dForwardArgs& args);
void conv2d_backward_data(const Conv2dBackwardDataArgs& args);
void conv2d_backward_weight(const Conv2dBackwardWeightArgs& args);
// cuDNN: f32, bf16 and f16 (fp32 accumulation).
void conv2d_forward_cudnn(const Conv2dForwardArgs& args);
void conv2d_backward_data_cudnn(const Conv2dBackwardDataArgs& args);
void conv2d_backward_weight_cudnn(const Conv2dBackwardWeightArgs& args);
const char* cudnn_version_string();  // e.g. "cuDNN 9.19.0"
}  // namespace cuda

}  // namespace distill::kernels
