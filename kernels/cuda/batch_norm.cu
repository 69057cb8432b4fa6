// Batch norm on CUDA (kernels/batch_norm.h).
//
// Per-channel reductions run in two steps so that a few channels with many elements still fill
// the GPU: a grid of (channel, split) blocks each reduces a contiguous slice of the channel's
// outer * inner elements with a block reduction and writes a partial, then one thread per channel
// combines that channel's partials in double (fixed order: deterministic). Statistics use sums
// shifted by the channel's first element, which keeps E[x^2] - E[x]^2 from cancelling when the
// mean is large relative to the spread. The elementwise passes (normalise, dx) are flat
// grid-stride loops with 4-wide accesses when a channel plane is a multiple of 4 long.
#include <initializer_list>
#include <type_traits>

#include "kernels/batch_norm.h"
#include "kernels/cuda/cuda_utils.cuh"

namespace distill::kernels::cuda {

namespace {

constexpr int kReduceThreads = 256;

// kVec consecutive elements moved with one aligned access.
template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) Vec {
  T v[kVec];
};

// Walks a channel's slice [begin, end) of its outer * inner elements, one element per thread
// per step, calling fn(offset). Advances (n, i) incrementally: no division inside the loop.
template <typename Fn>
__device__ __forceinline__ void for_channel_slice(const BatchNormShape& s, int64_t c, int64_t begin,
                                                  int64_t end, Fn&& fn) {
  int64_t j = begin + threadIdx.x;
  if (j >= end) return;
  int64_t n = j / s.inner, i = j - n * s.inner;
  const int64_t step_n = blockDim.x / s.inner, step_i = blockDim.x % s.inner;
  const int64_t plane_stride = s.channels * s.inner;
  const int64_t channel_offset = c * s.inner;
  for (; j < end; j += blockDim.x) {
    fn(n * plane_stride + channel_offset + i);
    i += step_i;
    n += step_n;
    if (i >= s.inner) {
      i -= s.inner;
      ++n;
    }
  }
}

struct SplitPlan {
  int64_t splits;
  int64_t chunk;  // elements per split
};

SplitPlan plan_splits(const BatchNormShape& s) {
  const int64_t per_channel = s.outer * s.inner;
  const int64_t target_blocks = std::max(1, max_grid_blocks() / 2);
  int64_t splits = (target_blocks + s.channels - 1) / s.channels;
  // At least ~8 elements per thread per block, and within grid.y's limit.
  splits = std::min<int64_t>(splits, (per_channel + kReduceThreads * 8 - 1) / (kReduceThreads * 8));
  splits = std::clamp<int64_t>(splits, 1, 65535);
  const int64_t chunk = (per_channel + splits - 1) / splits;
  return {(per_channel + chunk - 1) / chunk, chunk};
}

// Partials layout: [channels][splits][2].
template <typename T, typename A>
__global__ void __launch_bounds__(kReduceThreads)
    stats_partial_kernel(const T* __restrict__ x, BatchNormShape s, int64_t chunk, int64_t splits,
                         A* __restrict__ partials) {
  __shared__ A shared[32];
  const int64_t c = blockIdx.x;
  const int64_t split = blockIdx.y;
  const int64_t per_channel = s.outer * s.inner;
  const int64_t begin = split * chunk, end = min(per_channel, begin + chunk);
  const A shift = to_acc<A>(x[c * s.inner]);  // the channel's first element
  A sum = A(0), sum_sq = A(0);
  for_channel_slice(s, c, begin, end, [&](int64_t o) {
    const A d = to_acc<A>(x[o]) - shift;
    sum += d;
    sum_sq += d * d;
  });
  sum = block_reduce(sum, SumOp{}, A(0), shared);
  sum_sq = block_reduce(sum_sq, SumOp{}, A(0), shared);
  if (threadIdx.x == 0) {
    partials[(c * splits + split) * 2] = sum;
    partials[(c * splits + split) * 2 + 1] = sum_sq;
  }
}

template <typename T, typename A>
__global__ void stats_finalize_kernel(const T* __restrict__ x, BatchNormShape s, int64_t splits,
                                      const A* __restrict__ partials, double eps, double momentum,
                                      A* __restrict__ save_mean, A* __restrict__ save_rstd,
                                      A* __restrict__ running_mean, A* __restrict__ running_var) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= s.channels) return;
  double sum = 0, sum_sq = 0;
  for (int64_t k = 0; k < splits; ++k) {
    sum += static_cast<double>(partials[(c * splits + k) * 2]);
    sum_sq += static_cast<double>(partials[(c * splits + k) * 2 + 1]);
  }
  const double count = static_cast<double>(s.outer * s.inner);
  const double shift = static_cast<double>(to_acc<A>(x[c * s.inner]));
  const double shifted_mean = sum / count;
  const double var = fmax(sum_sq / count - shifted_mean * shifted_mean, 0.0);
  const double mean = shift + shifted_mean;
  save_mean[c] = static_cast<A>(mean);
  save_rstd[c] = static_cast<A>(1.0 / sqrt(var + eps));
  if (running_mean)
    running_mean[c] =
        static_cast<A>((1 - momentum) * static_cast<double>(running_mean[c]) + momentum * mean);
  if (running_var) {
    const double unbiased = count > 1 ? var * count / (count - 1) : var;
    running_var[c] =
        static_cast<A>((1 - momentum) * static_cast<double>(running_var[c]) + momentum * unbiased);
  }
}

// Per-channel y = (x - mean) * a + b (normalise), or dx = a * dy + b * (x - mean) + d
// (backward), over the flat NCHW buffer. kVec elements per thread step when inner % kVec == 0 (they
// then share one channel).
template <int kVec, typename T, typename A>
__global__ void apply_kernel(const T* __restrict__ x, BatchNormShape s, const A* __restrict__ mean,
                             const A* __restrict__ rstd_or_var, bool second_is_var, A eps,
                             const A* __restrict__ weight, const A* __restrict__ bias,
                             T* __restrict__ y) {
  const int64_t groups = s.outer * s.channels * s.inner / kVec;
  for (int64_t g = global_thread_id(); g < groups; g += grid_stride()) {
    const int64_t first = g * kVec;
    const int64_t c = (first / s.inner) % s.channels;
    const A second = rstd_or_var[c];
    const A rstd = second_is_var ? A(1) / sqrt(second + eps) : second;
    const A scale = rstd * (weight ? weight[c] : A(1));
    const A shift = bias ? bias[c] : A(0);
    const A mu = mean[c];
    const Vec<T, kVec> in = *reinterpret_cast<const Vec<T, kVec>*>(x + first);
    Vec<T, kVec> out;
    // (x - mean) first: folding the mean into the shift would cancel badly for large means.
#pragma unroll
    for (int k = 0; k < kVec; ++k)
      out.v[k] = from_acc<T>((to_acc<A>(in.v[k]) - mu) * scale + shift);
    *reinterpret_cast<Vec<T, kVec>*>(y + first) = out;
  }
}

template <typename T, typename A>
__global__ void __launch_bounds__(kReduceThreads)
    backward_partial_kernel(const T* __restrict__ x, const T* __restrict__ dy, BatchNormShape s,
                            int64_t chunk, int64_t splits, const A* __restrict__ mean,
                            A* __restrict__ partials) {
  __shared__ A shared[32];
  const int64_t c = blockIdx.x;
  const int64_t split = blockIdx.y;
  const int64_t per_channel = s.outer * s.inner;
  const int64_t begin = split * chunk, end = min(per_channel, begin + chunk);
  const A mu = mean[c];
  A sum_dy = A(0), sum_dy_xmu = A(0);
  for_channel_slice(s, c, begin, end, [&](int64_t o) {
    const A g = to_acc<A>(dy[o]);
    sum_dy += g;
    sum_dy_xmu += g * (to_acc<A>(x[o]) - mu);
  });
  sum_dy = block_reduce(sum_dy, SumOp{}, A(0), shared);
  sum_dy_xmu = block_reduce(sum_dy_xmu, SumOp{}, A(0), shared);
  if (threadIdx.x == 0) {
    partials[(c * splits + split) * 2] = sum_dy;
    partials[(c * splits + split) * 2 + 1] = sum_dy_xmu;
  }
}

// Writes dweight / dbias and the dx coefficients [channels][3] = (a, b, d):
// dx = a dy + b (x - mean) + d with a = w rstd, b = -a rstd^2 sum(dy (x - mean)) / M,
// d = -a sum(dy) / M.
template <typename A>
__global__ void backward_finalize_kernel(BatchNormShape s, int64_t splits,
                                         const A* __restrict__ partials, const A* __restrict__ rstd,
                                         const A* __restrict__ weight, A* __restrict__ dweight,
                                         A* __restrict__ dbias, A* __restrict__ coefficients) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= s.channels) return;
  double sum_dy = 0, sum_dy_xmu = 0;
  for (int64_t k = 0; k < splits; ++k) {
    sum_dy += static_cast<double>(partials[(c * splits + k) * 2]);
    sum_dy_xmu += static_cast<double>(partials[(c * splits + k) * 2 + 1]);
  }
  const double r = static_cast<double>(rstd[c]);
  const double count = static_cast<double>(s.outer * s.inner);
  if (dweight) dweight[c] = static_cast<A>(sum_dy_xmu * r);
  if (dbias) dbias[c] = static_cast<A>(sum_dy);
  const double a = (weight ? static_cast<double>(weight[c]) : 1.0) * r;
  coefficients[3 * c] = static_cast<A>(a);
  coefficients[3 * c + 1] = static_cast<A>(-a * r * r * sum_dy_xmu / count);
  coefficients[3 * c + 2] = static_cast<A>(-a * sum_dy / count);
}

template <int kVec, typename T, typename A>
__global__ void backward_dx_kernel(const T* __restrict__ x, const T* __restrict__ dy,
                                   BatchNormShape s, const A* __restrict__ mean,
                                   const A* __restrict__ coefficients, T* __restrict__ dx) {
  const int64_t groups = s.outer * s.channels * s.inner / kVec;
  for (int64_t g = global_thread_id(); g < groups; g += grid_stride()) {
    const int64_t first = g * kVec;
    const int64_t c = (first / s.inner) % s.channels;
    const A a = coefficients[3 * c], b = coefficients[3 * c + 1], d = coefficients[3 * c + 2];
    const A mu = mean[c];
    const Vec<T, kVec> xv = *reinterpret_cast<const Vec<T, kVec>*>(x + first);
    const Vec<T, kVec> gv = *reinterpret_cast<const Vec<T, kVec>*>(dy + first);
    Vec<T, kVec> out;
#pragma unroll
    for (int k = 0; k < kVec; ++k)
      out.v[k] = from_acc<T>(a * to_acc<A>(gv.v[k]) + b * (to_acc<A>(xv.v[k]) - mu) + d);
    *reinterpret_cast<Vec<T, kVec>*>(dx + first) = out;
  }
}

template <typename A>
A* ptr_or_null(const View& v) {
  return static_cast<A*>(v.data);
}

// 4-wide accesses need every 4-group inside one channel plane and 4-element-aligned buffers.
template <typename T>
int vec_width(const BatchNormShape& s, std::initializer_list<const void*> buffers) {
  if (s.inner % 4 != 0) return 1;
  for (const void* p : buffers)
    if (!is_aligned(p, 4 * sizeof(T))) return 1;
  return 4;
}

unsigned channel_blocks(int64_t channels) {
  return static_cast<unsigned>((channels + kBlockSize - 1) / kBlockSize);
}

}  // namespace

void batch_norm_stats(const View& x, const BatchNormShape& shape, double eps, double momentum,
                      const View& save_mean, const View& save_rstd, const View& running_mean,
                      const View& running_var) {
  if (shape.channels == 0 || shape.outer * shape.inner == 0) return;
  NvtxRange range("batch_norm_stats");
  dispatch_floating(x.dtype, "batch_norm_stats", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const SplitPlan plan = plan_splits(shape);
    DeviceScratch partials(sizeof(A) * 2 * shape.channels * plan.splits);
    cudaStream_t stream = current_stream();
    const T* xp = static_cast<const T*>(x.data);
    stats_partial_kernel<T, A>
        <<<dim3(static_cast<unsigned>(shape.channels), static_cast<unsigned>(plan.splits)),
           kReduceThreads, 0, stream>>>(xp, shape, plan.chunk, plan.splits, partials.as<A>());
    check_launch("batch_norm_stats (partials)");
    stats_finalize_kernel<T, A><<<channel_blocks(shape.channels), kBlockSize, 0, stream>>>(
        xp, shape, plan.splits, partials.as<A>(), eps, momentum, ptr_or_null<A>(save_mean),
        ptr_or_null<A>(save_rstd), ptr_or_null<A>(running_mean), ptr_or_null<A>(running_var));
    check_launch("batch_norm_stats (finalize)");
  });
}

void batch_norm_apply(const View& x, const BatchNormShape& shape, const View& mean,
                      const View& rstd_or_var, bool second_is_var, double eps, const View& weight,
                      const View& bias, const View& y) {
  const int64_t total = shape.outer * shape.channels * shape.inner;
  if (total == 0) return;
  NvtxRange range("batch_norm_apply");
  dispatch_floating(x.dtype, "batch_norm_apply", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const int vec = vec_width<T>(shape, {x.data, y.data});
    const unsigned blocks = grid_for(total / vec);
    auto launch = [&](auto vec_tag) {
      constexpr int V = decltype(vec_tag)::value;
      apply_kernel<V, T, A><<<blocks, kBlockSize, 0, current_stream()>>>(
          static_cast<const T*>(x.data), shape, ptr_or_null<const A>(mean),
          ptr_or_null<const A>(rstd_or_var), second_is_var, static_cast<A>(eps),
          ptr_or_null<const A>(weight), ptr_or_null<const A>(bias), static_cast<T*>(y.data));
    };
    if (vec == 4) {
      launch(std::integral_constant<int, 4>{});
    } else {
      launch(std::integral_constant<int, 1>{});
    }
    check_launch("batch_norm_apply");
  });
}

void batch_norm_backward(const View& x, const View& dy, const BatchNormShape& shape,
                         const View& save_mean, const View& save_rstd, const View& weight,
                         const View& dx, const View& dweight, const View& dbias) {
  if (shape.channels == 0) return;
  NvtxRange range("batch_norm_backward");
  dispatch_floating(x.dtype, "batch_norm_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    cudaStream_t stream = current_stream();
    const T* xp = static_cast<const T*>(x.data);
    const T* dyp = static_cast<const T*>(dy.data);
    const SplitPlan plan = plan_splits(shape);
    DeviceScratch partials(sizeof(A) * 2 * shape.channels * plan.splits);
    DeviceScratch coefficients(sizeof(A) * 3 * shape.channels);
    if (shape.outer * shape.inner > 0) {
      backward_partial_kernel<T, A>
          <<<dim3(static_cast<unsigned>(shape.channels), static_cast<unsigned>(plan.splits)),
             kReduceThreads, 0, stream>>>(xp, dyp, shape, plan.chunk, plan.splits,
                                          ptr_or_null<const A>(save_mean), partials.as<A>());
      check_launch("batch_norm_backward (partials)");
    }
    backward_finalize_kernel<A><<<channel_blocks(shape.channels), kBlockSize, 0, stream>>>(
        shape, shape.outer * shape.inner > 0 ? plan.splits : 0, partials.as<A>(),
        ptr_or_null<const A>(save_rstd), ptr_or_null<const A>(weight), ptr_or_null<A>(dweight),
        ptr_or_null<A>(dbias), coefficients.as<A>());
    check_launch("batch_norm_backward (finalize)");
    const int64_t total = shape.outer * shape.channels * shape.inner;
    if (!dx.data || total == 0) return;
    auto launch = [&](auto vec_tag) {
      constexpr int V = decltype(vec_tag)::value;
      backward_dx_kernel<V, T, A><<<grid_for(total / V), kBlockSize, 0, stream>>>(
          xp, dyp, shape, ptr_or_null<const A>(save_mean), coefficients.as<A>(),
          static_cast<T*>(dx.data));
    };
    if (vec_width<T>(shape, {x.data, dy.data, dx.data}) == 4) {
      launch(std::integral_constant<int, 4>{});
    } else {
      launch(std::integral_constant<int, 1>{});
    }
    check_launch("batch_norm_backward (dx)");
  });
}

}  // namespace distill::kernels::cuda
