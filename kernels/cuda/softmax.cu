// CUDA softmax / log-softmax over the last axis of contiguous [rows, cols] buffers.
//
// Math in float (double for F64) like kernels/cpu/softmax.cpp: subtract the row max (NaN wins,
// so a NaN poisons its row), sum exp, then y = exp(x - max) * (1 / sum) or x - max - log(sum).
// Rows of up to 1024 columns: one warp per row with the row held in registers. Longer rows: one
// block per row, the row cached in shared memory when it fits in 40 KiB, else re-read.
#include <math_constants.h>

#include "kernels/cuda/cuda_utils.cuh"
#include "kernels/softmax.h"

namespace distill::kernels::cuda {

namespace {

constexpr int kWarpMaxCols = 1024;
constexpr int kRowsPerBlock = kBlockSize / 32;
// Dynamic shared memory for the row cache; with the static reduction buffer the block stays
// under the 48 KiB available without an opt-in.
constexpr size_t kMaxRowCacheBytes = 40 * 1024;

__device__ __forceinline__ float d_exp(float v) {
  return expf(v);
}
__device__ __forceinline__ double d_exp(double v) {
  return exp(v);
}
__device__ __forceinline__ float d_log(float v) {
  return logf(v);
}
__device__ __forceinline__ double d_log(double v) {
  return log(v);
}

template <typename A>
__device__ __forceinline__ A negative_infinity() {
  if constexpr (std::is_same_v<A, double>) {
    return -CUDART_INF;
  } else {
    return -CUDART_INF_F;
  }
}

// Max that lets NaN win from either side.
struct MaxNanOp {
  template <typename A>
  __device__ __forceinline__ A operator()(A a, A b) const {
    if (a != a) return a;
    if (b != b) return b;
    return b > a ? b : a;
  }
};

// ---- one warp per row, kPerLane elements per lane held in registers (cols <= 32 * kPerLane)

template <typename T, int kPerLane>
__global__ void softmax_warp_kernel(const T* x, T* y, int64_t rows, int64_t cols, bool log) {
  using A = acc_t<T>;
  const int lane = threadIdx.x & 31;
  const int64_t warps_total = static_cast<int64_t>(gridDim.x) * kRowsPerBlock;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
       row < rows; row += warps_total) {
    const T* xr = x + row * cols;
    T* yr = y + row * cols;
    A v[kPerLane];
    A row_max = negative_infinity<A>();
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      const int64_t c = lane + 32 * k;
      v[k] = c < cols ? to_acc<A>(xr[c]) : negative_infinity<A>();
      if (c < cols) row_max = MaxNanOp{}(row_max, v[k]);
    }
    row_max = warp_reduce(row_max, MaxNanOp{});
    A sum = 0;
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      const int64_t c = lane + 32 * k;
      if (c < cols) {
        const A e = d_exp(v[k] - row_max);
        sum += e;
        if (!log) v[k] = e;
      }
    }
    sum = warp_reduce(sum, SumOp{});
    if (log) {
      const A log_sum = d_log(sum);
#pragma unroll
      for (int k = 0; k < kPerLane; ++k) {
        const int64_t c = lane + 32 * k;
        if (c < cols) yr[c] = from_acc<T>(v[k] - row_max - log_sum);
      }
    } else {
      const A inv_sum = A(1) / sum;
#pragma unroll
      for (int k = 0; k < kPerLane; ++k) {
        const int64_t c = lane + 32 * k;
        if (c < cols) yr[c] = from_acc<T>(v[k] * inv_sum);
      }
    }
  }
}

template <typename T, int kPerLane>
__global__ void softmax_backward_warp_kernel(const T* y, const T* dy, T* dx, int64_t rows,
                                             int64_t cols, bool log) {
  using A = acc_t<T>;
  const int lane = threadIdx.x & 31;
  const int64_t warps_total = static_cast<int64_t>(gridDim.x) * kRowsPerBlock;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
       row < rows; row += warps_total) {
    const int64_t base = row * cols;
    A yv[kPerLane], gv[kPerLane];
    A acc = 0;  // sum(dy * y) for softmax, sum(dy) for log-softmax
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      const int64_t c = lane + 32 * k;
      yv[k] = c < cols ? to_acc<A>(y[base + c]) : A(0);
      gv[k] = c < cols ? to_acc<A>(dy[base + c]) : A(0);
      acc += log ? gv[k] : gv[k] * yv[k];
    }
    acc = warp_reduce(acc, SumOp{});
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      const int64_t c = lane + 32 * k;
      if (c < cols)
        dx[base + c] = from_acc<T>(log ? gv[k] - d_exp(yv[k]) * acc : yv[k] * (gv[k] - acc));
    }
  }
}

// ---- one block per row

template <typename T>
__global__ void softmax_block_kernel(const T* x, T* y, int64_t rows, int64_t cols, bool log,
                                     bool cache_row) {
  using A = acc_t<T>;
  extern __shared__ __align__(16) unsigned char row_cache_bytes[];
  A* row_cache = reinterpret_cast<A*>(row_cache_bytes);
  __shared__ A reduce_buffer[32];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * cols;
    T* yr = y + row * cols;
    // Each thread touches only its own columns of the cache, so rows need no extra barrier.
    A row_max = negative_infinity<A>();
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const A v = to_acc<A>(xr[c]);
      if (cache_row) row_cache[c] = v;
      row_max = MaxNanOp{}(row_max, v);
    }
    row_max = block_reduce(row_max, MaxNanOp{}, negative_infinity<A>(), reduce_buffer);
    A sum = 0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const A v = cache_row ? row_cache[c] : to_acc<A>(xr[c]);
      sum += d_exp(v - row_max);
    }
    sum = block_reduce(sum, SumOp{}, A(0), reduce_buffer);
    const A log_sum = d_log(sum);
    const A inv_sum = A(1) / sum;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const A v = cache_row ? row_cache[c] : to_acc<A>(xr[c]);
      yr[c] = from_acc<T>(log ? v - row_max - log_sum : d_exp(v - row_max) * inv_sum);
    }
  }
}

template <typename T>
__global__ void softmax_backward_block_kernel(const T* y, const T* dy, T* dx, int64_t rows,
                                              int64_t cols, bool log) {
  using A = acc_t<T>;
  __shared__ A reduce_buffer[32];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t base = row * cols;
    A acc = 0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const A g = to_acc<A>(dy[base + c]);
      acc += log ? g : g * to_acc<A>(y[base + c]);
    }
    acc = block_reduce(acc, SumOp{}, A(0), reduce_buffer);
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const A yv = to_acc<A>(y[base + c]);
      const A g = to_acc<A>(dy[base + c]);
      dx[base + c] = from_acc<T>(log ? g - d_exp(yv) * acc : yv * (g - acc));
    }
  }
}

// Calls fn(std::integral_constant<int, kPerLane>) for the smallest power of two with
// 32 * kPerLane >= cols (cols <= 1024).
template <typename Fn>
void dispatch_per_lane(int64_t cols, Fn&& fn) {
  if (cols <= 32) return fn(std::integral_constant<int, 1>{});
  if (cols <= 64) return fn(std::integral_constant<int, 2>{});
  if (cols <= 128) return fn(std::integral_constant<int, 4>{});
  if (cols <= 256) return fn(std::integral_constant<int, 8>{});
  if (cols <= 512) return fn(std::integral_constant<int, 16>{});
  fn(std::integral_constant<int, 32>{});
}

void check_args(const char* op, const View& a, const View& b, const View& c, int64_t rows,
                int64_t cols) {
  if (rows < 0 || cols < 0) throw std::runtime_error(std::string(op) + ": negative size");
  if (a.dtype != b.dtype || a.dtype != c.dtype)
    throw std::runtime_error(std::string(op) + ": operands must share one dtype, got " +
                             dtype_name(a.dtype) + ", " + dtype_name(b.dtype) + ", " +
                             dtype_name(c.dtype));
}

}  // namespace

void softmax_forward(const View& x, int64_t rows, int64_t cols, bool log, const View& y) {
  check_args("softmax_forward", x, y, y, rows, cols);
  if (rows == 0 || cols == 0) return;
  NvtxRange range(log ? "log_softmax_forward" : "softmax_forward");
  dispatch_floating(x.dtype, "softmax_forward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T* xp = static_cast<const T*>(x.data);
    T* yp = static_cast<T*>(y.data);
    cudaStream_t stream = current_stream();
    if (cols <= kWarpMaxCols) {
      dispatch_per_lane(cols, [&](auto per_lane) {
        softmax_warp_kernel<T, decltype(per_lane)::value>
            <<<grid_for(rows, kRowsPerBlock), kBlockSize, 0, stream>>>(xp, yp, rows, cols, log);
      });
    } else {
      const size_t cache_bytes = static_cast<size_t>(cols) * sizeof(A);
      const bool cache_row = cache_bytes <= kMaxRowCacheBytes;
      softmax_block_kernel<T>
          <<<grid_for(rows, 1), kBlockSize, cache_row ? cache_bytes : 0, stream>>>(
              xp, yp, rows, cols, log, cache_row);
    }
    check_launch("softmax_forward");
  });
}

void softmax_backward(const View& y, const View& dy, int64_t rows, int64_t cols, bool log,
                      const View& dx) {
  check_args("softmax_backward", y, dy, dx, rows, cols);
  if (rows == 0 || cols == 0) return;
  NvtxRange range(log ? "log_softmax_backward" : "softmax_backward");
  dispatch_floating(y.dtype, "softmax_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* yp = static_cast<const T*>(y.data);
    const T* dyp = static_cast<const T*>(dy.data);
    T* dxp = static_cast<T*>(dx.data);
    cudaStream_t stream = current_stream();
    if (cols <= kWarpMaxCols) {
      dispatch_per_lane(cols, [&](auto per_lane) {
        softmax_backward_warp_kernel<T, decltype(per_lane)::value>
            <<<grid_for(rows, kRowsPerBlock), kBlockSize, 0, stream>>>(yp, dyp, dxp, rows, cols,
                                                                       log);
      });
    } else {
      softmax_backward_block_kernel<T>
          <<<grid_for(rows, 1), kBlockSize, 0, stream>>>(yp, dyp, dxp, rows, cols, log);
    }
    check_launch("softmax_backward");
  });
}

}  // namespace distill::kernels::cuda
