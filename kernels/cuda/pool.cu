// 2-D pooling on CUDA (kernels/pool.h): one thread per output element in the forward passes and
// one per input element in the backward passes (gathers over the covering windows, no atomics),
// grid-stride loops with 64-bit indices. The window geometry is shared with the CPU reference.
#include <cmath>

#include "kernels/cuda/cuda_utils.cuh"
#include "kernels/pool.h"

namespace distill::kernels::cuda {

namespace {

enum class PoolKind { Avg, Max, Adaptive };

template <typename T, typename A, PoolKind kKind>
__global__ void pool_forward_kernel(const T* __restrict__ x, Pool2dArgs a, T* __restrict__ y,
                                    int64_t* __restrict__ indices) {
  const int64_t total = a.planes * a.out_h * a.out_w;
  for (int64_t o = global_thread_id(); o < total; o += grid_stride()) {
    const int64_t ow = o % a.out_w;
    const int64_t oh = (o / a.out_w) % a.out_h;
    const int64_t plane = o / (a.out_w * a.out_h);
    const T* in = x + plane * a.in_h * a.in_w;
    if constexpr (kKind == PoolKind::Max) {
      const PoolWindow win = pool_window(a, oh, ow);
      A best = -INFINITY;
      int64_t best_index = win.h0 * a.in_w + win.w0;
      for (int64_t h = win.h0; h < win.h1; ++h) {
        for (int64_t w = win.w0; w < win.w1; ++w) {
          const A v = to_acc<A>(in[h * a.in_w + w]);
          if (v > best || isnan(v)) {
            best = v;
            best_index = h * a.in_w + w;
          }
        }
      }
      y[o] = from_acc<T>(best);
      indices[o] = best_index;
    } else {
      int64_t h0, h1, w0, w1, divisor;
      if constexpr (kKind == PoolKind::Avg) {
        const PoolWindow win = pool_window(a, oh, ow);
        h0 = win.h0, h1 = win.h1, w0 = win.w0, w1 = win.w1, divisor = win.divisor;
      } else {
        h0 = adaptive_start(oh, a.in_h, a.out_h), h1 = adaptive_end(oh, a.in_h, a.out_h);
        w0 = adaptive_start(ow, a.in_w, a.out_w), w1 = adaptive_end(ow, a.in_w, a.out_w);
        divisor = (h1 - h0) * (w1 - w0);
      }
      A sum = A(0);
      for (int64_t h = h0; h < h1; ++h)
        for (int64_t w = w0; w < w1; ++w) sum += to_acc<A>(in[h * a.in_w + w]);
      y[o] = from_acc<T>(sum / static_cast<A>(divisor));
    }
  }
}

template <typename T, typename A, PoolKind kKind>
__global__ void pool_backward_kernel(const T* __restrict__ dy, const int64_t* __restrict__ indices,
                                     Pool2dArgs a, T* __restrict__ dx) {
  const int64_t total = a.planes * a.in_h * a.in_w;
  for (int64_t i = global_thread_id(); i < total; i += grid_stride()) {
    const int64_t w = i % a.in_w;
    const int64_t h = (i / a.in_w) % a.in_h;
    const int64_t plane = i / (a.in_w * a.in_h);
    const int64_t out_base = plane * a.out_h * a.out_w;
    int64_t oh0, oh1, ow0, ow1;
    if constexpr (kKind == PoolKind::Adaptive) {
      adaptive_covering_outputs(h, a.in_h, a.out_h, &oh0, &oh1);
      adaptive_covering_outputs(w, a.in_w, a.out_w, &ow0, &ow1);
    } else {
      covering_outputs(h, a.pad_h, a.kernel_h, a.stride_h, a.out_h, &oh0, &oh1);
      covering_outputs(w, a.pad_w, a.kernel_w, a.stride_w, a.out_w, &ow0, &ow1);
    }
    const int64_t self = h * a.in_w + w;
    A sum = A(0);
    for (int64_t oh = oh0; oh <= oh1; ++oh) {
      for (int64_t ow = ow0; ow <= ow1; ++ow) {
        const int64_t o = out_base + oh * a.out_w + ow;
        if constexpr (kKind == PoolKind::Max) {
          if (indices[o] == self) sum += to_acc<A>(dy[o]);
        } else if constexpr (kKind == PoolKind::Avg) {
          sum += to_acc<A>(dy[o]) / static_cast<A>(pool_window(a, oh, ow).divisor);
        } else {
          const int64_t count =
              (adaptive_end(oh, a.in_h, a.out_h) - adaptive_start(oh, a.in_h, a.out_h)) *
              (adaptive_end(ow, a.in_w, a.out_w) - adaptive_start(ow, a.in_w, a.out_w));
          sum += to_acc<A>(dy[o]) / static_cast<A>(count);
        }
      }
    }
    dx[i] = from_acc<T>(sum);
  }
}

template <PoolKind kKind>
void launch_forward(const char* name, const View& x, const Pool2dArgs& a, const View& y,
                    const View& indices) {
  const int64_t total = a.planes * a.out_h * a.out_w;
  if (total == 0) return;
  NvtxRange range(name);
  dispatch_floating(x.dtype, name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    pool_forward_kernel<T, acc_t<T>, kKind><<<grid_for(total), kBlockSize, 0, current_stream()>>>(
        static_cast<const T*>(x.data), a, static_cast<T*>(y.data),
        static_cast<int64_t*>(indices.data));
  });
  check_launch(name);
}

template <PoolKind kKind>
void launch_backward(const char* name, const View& dy, const View& indices, const Pool2dArgs& a,
                     const View& dx) {
  const int64_t total = a.planes * a.in_h * a.in_w;
  if (total == 0) return;
  NvtxRange range(name);
  dispatch_floating(dy.dtype, name, [&](auto tag) {
    using T = typename decltype(tag)::type;
    pool_backward_kernel<T, acc_t<T>, kKind><<<grid_for(total), kBlockSize, 0, current_stream()>>>(
        static_cast<const T*>(dy.data), static_cast<const int64_t*>(indices.data), a,
        static_cast<T*>(dx.data));
  });
  check_launch(name);
}

}  // namespace

void avg_pool2d_forward(const View& x, const Pool2dArgs& args, const View& y) {
  launch_forward<PoolKind::Avg>("avg_pool2d_forward", x, args, y, View{});
}
void avg_pool2d_backward(const View& dy, const Pool2dArgs& args, const View& dx) {
  launch_backward<PoolKind::Avg>("avg_pool2d_backward", dy, View{}, args, dx);
}
void max_pool2d_forward(const View& x, const Pool2dArgs& args, const View& y, const View& indices) {
  launch_forward<PoolKind::Max>("max_pool2d_forward", x, args, y, indices);
}
void max_pool2d_backward(const View& dy, const View& indices, const Pool2dArgs& args,
                         const View& dx) {
  launch_backward<PoolKind::Max>("max_pool2d_backward", dy, indices, args, dx);
}
void adaptive_avg_pool2d_forward(const View& x, const Pool2dArgs& args, const View& y) {
  launch_forward<PoolKind::Adaptive>("adaptive_avg_pool2d_forward", x, args, y, View{});
}
void adaptive_avg_pool2d_backward(const View& dy, const Pool2dArgs& args, const View& dx) {
  launch_backward<PoolKind::Adaptive>("adaptive_avg_pool2d_backward", dy, View{}, args, dx);
}

}  // namespace distill::kernels::cuda
