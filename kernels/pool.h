// 2-D pooling over contiguous [planes, in_h, in_w] buffers (NCHW with planes = N * C), output
// [planes, out_h, out_w]. Floating dtypes; sums accumulate in fp32 (fp64 for F64).
//
// Backward passes are written as gathers (each input element sums the output windows that cover
// it) rather than scatters, so they need no atomics and are deterministic.
#pragma once

#include "kernels/common.h"

namespace distill::kernels {

struct Pool2dArgs {
  int64_t planes = 0;
  int64_t in_h = 0, in_w = 0;
  int64_t out_h = 0, out_w = 0;
  // Fixed windows (avg/max): window (oh, ow) covers rows oh * stride_h - pad_h + [0, kernel_h).
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  // avg: divide by kernel_h * kernel_w (true, PyTorch's default) or by the in-bounds count.
  bool count_include_pad = true;
};

// ---- window geometry shared by the CPU and CUDA kernels

// In-bounds part [h0, h1) x [w0, w1) of fixed window (oh, ow), and the avg divisor: the window
// clipped to the padded input (all of it unless it overhangs) when count_include_pad, else the
// in-bounds element count (PyTorch's rule).
struct PoolWindow {
  int64_t h0, h1, w0, w1;
  int64_t divisor;
};
DISTILL_HD PoolWindow pool_window(const Pool2dArgs& a, int64_t oh, int64_t ow) {
  int64_t h0 = oh * a.stride_h - a.pad_h, w0 = ow * a.stride_w - a.pad_w;
  int64_t h1 = h0 + a.kernel_h, w1 = w0 + a.kernel_w;
  if (h1 > a.in_h + a.pad_h) h1 = a.in_h + a.pad_h;
  if (w1 > a.in_w + a.pad_w) w1 = a.in_w + a.pad_w;
  const int64_t padded = (h1 - h0) * (w1 - w0);
  if (h0 < 0) h0 = 0;
  if (w0 < 0) w0 = 0;
  if (h1 > a.in_h) h1 = a.in_h;
  if (w1 > a.in_w) w1 = a.in_w;
  return {h0, h1, w0, w1, a.count_include_pad ? padded : (h1 - h0) * (w1 - w0)};
}

// Range [first, last] of fixed-window outputs along one axis whose window covers input `pos`:
// o * stride - pad <= pos < o * stride - pad + kernel. Empty when first > last.
DISTILL_HD void covering_outputs(int64_t pos, int64_t pad, int64_t kernel, int64_t stride,
                                 int64_t out, int64_t* first, int64_t* last) {
  const int64_t p = pos + pad;
  *first = p < kernel ? 0 : (p - kernel) / stride + 1;
  *last = p / stride;
  if (*last > out - 1) *last = out - 1;
}

// Adaptive windows (PyTorch): output o over an input of length `in` with `out` outputs covers
// [floor(o * in / out), ceil((o + 1) * in / out)).
DISTILL_HD int64_t adaptive_start(int64_t o, int64_t in, int64_t out) {
  return (o * in) / out;
}
DISTILL_HD int64_t adaptive_end(int64_t o, int64_t in, int64_t out) {
  return ((o + 1) * in + out - 1) / out;
}
// Outputs whose adaptive window covers input `pos`: exactly
// [floor(pos * out / in), ceil((pos + 1) * out / in) - 1] (from the two inequalities above).
DISTILL_HD void adaptive_covering_outputs(int64_t pos, int64_t in, int64_t out, int64_t* first,
                                          int64_t* last) {
  *first = (pos * out) / in;
  *last = ((pos + 1) * out + in - 1) / in - 1;
  if (*last > out - 1) *last = out - 1;
}

namespace cpu {
void avg_pool2d_forward(const View& x, const Pool2dArgs& args, const View& y);
void avg_pool2d_backward(const View& dy, const Pool2dArgs& args, const View& dx);
// indices: I64 [planes, out_h, out_w], the argmax's flat position h * in_w + w inside its plane
// (PyTorch's return_indices convention). NaN wins, like PyTorch.
void max_pool2d_forward(const View& x, const Pool2dArgs& args, const View& y, const View& indices);
void max_pool2d_backward(const View& dy, const View& indices, const Pool2dArgs& args,
                         const View& dx);
// Uses planes, in_h/in_w and out_h/out_w only.
void adaptive_avg_pool2d_forward(const View& x, const Pool2dArgs& args, const View& y);
void adaptive_avg_pool2d_backward(const View& dy, const Pool2dArgs& args, const View& dx);
}  // namespace cpu

namespace cuda {
void avg_pool2d_forward(const View& x, const Pool2dArgs& args, const View& y);
void avg_pool2d_backward(const View& dy, const Pool2dArgs& args, const View& dx);
void max_pool2d_forward(const View& x, const Pool2dArgs& args, const View& y, const View& indices);
void max_pool2d_backward(const View& dy, const View& indices, const Pool2dArgs& args,
                         const View& dx);
void adaptive_avg_pool2d_forward(const View& x, const Pool2dArgs& args, const View& y);
void adaptive_avg_pool2d_backward(const View& dy, const Pool2dArgs& args, const View& dx);
}  // namespace cuda

}  // namespace distill::kernels
