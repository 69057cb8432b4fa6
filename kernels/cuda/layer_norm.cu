// CUDA layer norm over the last axis of contiguous [rows, cols] buffers.
//
// Statistics in float (double for F64), two-pass (mean, then squared deviations) like
// kernels/cpu/layer_norm.cpp. Rows of up to 1024 columns: one warp per row, the row in
// registers. Longer rows: one block per row, cached in shared memory when it fits.
// Backward: dx per row the same way; dgamma/dbeta by a two-stage column reduction (blocks of
// 32 columns x a chunk of rows write partial sums, a second kernel adds the partials), with no
// atomics, so the result is deterministic.
#include "kernels/cuda/cuda_utils.cuh"
#include "kernels/layer_norm.h"

namespace distill::kernels::cuda {

namespace {

constexpr int kWarpMaxCols = 1024;
constexpr int kRowsPerBlock = kBlockSize / 32;
// Dynamic shared memory for the row cache; with the static reduction buffer the block stays
// under the 48 KiB available without an opt-in.
constexpr size_t kMaxRowCacheBytes = 40 * 1024;

__device__ __forceinline__ float d_rsqrt_exact(float v) {
  return 1.0f / sqrtf(v);
}
__device__ __forceinline__ double d_rsqrt_exact(double v) {
  return 1.0 / sqrt(v);
}

// Optional affine parameters of any floating dtype (nullptr = absent), read through load_as.
struct Affine {
  const void* data;
  DType dtype;
  template <typename A>
  __device__ __forceinline__ A get(int64_t c, A absent) const {
    return data != nullptr ? load_as<A>(data, c, dtype) : absent;
  }
};

template <typename A>
__device__ __forceinline__ void store_stat(const View& v, int64_t row, A value) {
  if (v.data != nullptr) store_as<A>(v.data, row, v.dtype, value);
}

// ---- forward

template <typename T, int kPerLane>
__global__ void layer_norm_warp_kernel(const T* x, Affine gamma, Affine beta, int64_t rows,
                                       int64_t cols, acc_t<T> eps, T* y, View mean, View rstd) {
  using A = acc_t<T>;
  const int lane = threadIdx.x & 31;
  const int64_t warps_total = static_cast<int64_t>(gridDim.x) * kRowsPerBlock;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
       row < rows; row += warps_total) {
    const T* xr = x + row * cols;
    A v[kPerLane];
    A sum = 0;
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      const int64_t c = lane + 32 * k;
      v[k] = c < cols ? to_acc<A>(xr[c]) : A(0);
      sum += v[k];
    }
    const A mu = warp_reduce(sum, SumOp{}) / static_cast<A>(cols);
    A sq = 0;
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      const int64_t c = lane + 32 * k;
      const A d = c < cols ? v[k] - mu : A(0);
      sq += d * d;
    }
    const A inv_std = d_rsqrt_exact(warp_reduce(sq, SumOp{}) / static_cast<A>(cols) + eps);
    T* yr = y + row * cols;
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      const int64_t c = lane + 32 * k;
      if (c < cols)
        yr[c] = from_acc<T>((v[k] - mu) * inv_std * gamma.get(c, A(1)) + beta.get(c, A(0)));
    }
    if (lane == 0) {
      store_stat(mean, row, mu);
      store_stat(rstd, row, inv_std);
    }
  }
}

template <typename T>
__global__ void layer_norm_block_kernel(const T* x, Affine gamma, Affine beta, int64_t rows,
                                        int64_t cols, acc_t<T> eps, T* y, View mean, View rstd,
                                        bool cache_row) {
  using A = acc_t<T>;
  extern __shared__ __align__(16) unsigned char row_cache_bytes[];
  A* row_cache = reinterpret_cast<A*>(row_cache_bytes);
  __shared__ A reduce_buffer[32];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * cols;
    // Each thread reads back only the cache slots it wrote, so no barrier is needed for them.
    A sum = 0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const A v = to_acc<A>(xr[c]);
      if (cache_row) row_cache[c] = v;
      sum += v;
    }
    const A mu = block_reduce(sum, SumOp{}, A(0), reduce_buffer) / static_cast<A>(cols);
    A sq = 0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const A d = (cache_row ? row_cache[c] : to_acc<A>(xr[c])) - mu;
      sq += d * d;
    }
    const A inv_std =
        d_rsqrt_exact(block_reduce(sq, SumOp{}, A(0), reduce_buffer) / static_cast<A>(cols) + eps);
    T* yr = y + row * cols;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const A v = cache_row ? row_cache[c] : to_acc<A>(xr[c]);
      yr[c] = from_acc<T>((v - mu) * inv_std * gamma.get(c, A(1)) + beta.get(c, A(0)));
    }
    if (threadIdx.x == 0) {
      store_stat(mean, row, mu);
      store_stat(rstd, row, inv_std);
    }
  }
}

// ---- backward: dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma

template <typename T, int kPerLane>
__global__ void layer_norm_dx_warp_kernel(const T* x, Affine gamma, View mean, View rstd,
                                          const T* dy, int64_t rows, int64_t cols, T* dx) {
  using A = acc_t<T>;
  const int lane = threadIdx.x & 31;
  const int64_t warps_total = static_cast<int64_t>(gridDim.x) * kRowsPerBlock;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
       row < rows; row += warps_total) {
    const int64_t base = row * cols;
    const A mu = load_as<A>(mean.data, row, mean.dtype);
    const A inv_std = load_as<A>(rstd.data, row, rstd.dtype);
    A g[kPerLane], xhat[kPerLane];
    A sum_g = 0, sum_g_xhat = 0;
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      const int64_t c = lane + 32 * k;
      if (c < cols) {
        g[k] = to_acc<A>(dy[base + c]) * gamma.get(c, A(1));
        xhat[k] = (to_acc<A>(x[base + c]) - mu) * inv_std;
      } else {
        g[k] = A(0);
        xhat[k] = A(0);
      }
      sum_g += g[k];
      sum_g_xhat += g[k] * xhat[k];
    }
    const A mean_g = warp_reduce(sum_g, SumOp{}) / static_cast<A>(cols);
    const A mean_g_xhat = warp_reduce(sum_g_xhat, SumOp{}) / static_cast<A>(cols);
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      const int64_t c = lane + 32 * k;
      if (c < cols) dx[base + c] = from_acc<T>(inv_std * (g[k] - mean_g - xhat[k] * mean_g_xhat));
    }
  }
}

template <typename T>
__global__ void layer_norm_dx_block_kernel(const T* x, Affine gamma, View mean, View rstd,
                                           const T* dy, int64_t rows, int64_t cols, T* dx) {
  using A = acc_t<T>;
  __shared__ A reduce_buffer[32];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t base = row * cols;
    const A mu = load_as<A>(mean.data, row, mean.dtype);
    const A inv_std = load_as<A>(rstd.data, row, rstd.dtype);
    A sum_g = 0, sum_g_xhat = 0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const A g = to_acc<A>(dy[base + c]) * gamma.get(c, A(1));
      sum_g += g;
      sum_g_xhat += g * (to_acc<A>(x[base + c]) - mu) * inv_std;
    }
    const A mean_g = block_reduce(sum_g, SumOp{}, A(0), reduce_buffer) / static_cast<A>(cols);
    const A mean_g_xhat =
        block_reduce(sum_g_xhat, SumOp{}, A(0), reduce_buffer) / static_cast<A>(cols);
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const A g = to_acc<A>(dy[base + c]) * gamma.get(c, A(1));
      const A xhat = (to_acc<A>(x[base + c]) - mu) * inv_std;
      dx[base + c] = from_acc<T>(inv_std * (g - mean_g - xhat * mean_g_xhat));
    }
  }
}

// Stage 1 of dgamma = sum_rows(dy * xhat), dbeta = sum_rows(dy). Block (bx, by): 32 columns
// starting at bx * 32, rows [by * chunk, (by + 1) * chunk). Threads are 32 (columns) x
// kGradRows (rows); the row-threads' sums are added in shared memory and written as one partial
// per (row block, column).
constexpr int kGradRows = 8;

template <typename T>
__global__ void layer_norm_param_grad_partial_kernel(const T* x, View mean, View rstd, const T* dy,
                                                     int64_t rows, int64_t cols, int64_t chunk,
                                                     acc_t<T>* partial_gamma,
                                                     acc_t<T>* partial_beta) {
  using A = acc_t<T>;
  __shared__ A sh_gamma[kGradRows][33];  // +1 column: no bank conflicts on the transpose read
  __shared__ A sh_beta[kGradRows][33];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + tx;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * chunk;
  const int64_t r1 = r0 + chunk < rows ? r0 + chunk : rows;
  A acc_gamma = 0, acc_beta = 0;
  if (c < cols) {
    for (int64_t r = r0 + ty; r < r1; r += kGradRows) {
      const A g = to_acc<A>(dy[r * cols + c]);
      const A mu = load_as<A>(mean.data, r, mean.dtype);
      const A inv_std = load_as<A>(rstd.data, r, rstd.dtype);
      acc_gamma += g * (to_acc<A>(x[r * cols + c]) - mu) * inv_std;
      acc_beta += g;
    }
  }
  sh_gamma[ty][tx] = acc_gamma;
  sh_beta[ty][tx] = acc_beta;
  __syncthreads();
  if (ty == 0 && c < cols) {
    A total_gamma = 0, total_beta = 0;
#pragma unroll
    for (int k = 0; k < kGradRows; ++k) {
      total_gamma += sh_gamma[k][tx];
      total_beta += sh_beta[k][tx];
    }
    partial_gamma[blockIdx.y * cols + c] = total_gamma;
    partial_beta[blockIdx.y * cols + c] = total_beta;
  }
}

// Stage 2: each thread adds one column's partials (coalesced across threads).
template <typename A>
__global__ void layer_norm_param_grad_final_kernel(const A* partial_gamma, const A* partial_beta,
                                                   int64_t row_blocks, int64_t cols, View dgamma,
                                                   View dbeta) {
  for (int64_t c = global_thread_id(); c < cols; c += grid_stride()) {
    A total_gamma = 0, total_beta = 0;
    for (int64_t b = 0; b < row_blocks; ++b) {
      total_gamma += partial_gamma[b * cols + c];
      total_beta += partial_beta[b * cols + c];
    }
    if (dgamma.data != nullptr) store_as<A>(dgamma.data, c, dgamma.dtype, total_gamma);
    if (dbeta.data != nullptr) store_as<A>(dbeta.data, c, dbeta.dtype, total_beta);
  }
}

template <typename Fn>
void dispatch_per_lane(int64_t cols, Fn&& fn) {
  if (cols <= 32) return fn(std::integral_constant<int, 1>{});
  if (cols <= 64) return fn(std::integral_constant<int, 2>{});
  if (cols <= 128) return fn(std::integral_constant<int, 4>{});
  if (cols <= 256) return fn(std::integral_constant<int, 8>{});
  if (cols <= 512) return fn(std::integral_constant<int, 16>{});
  fn(std::integral_constant<int, 32>{});
}

void check_same(const char* op, const View& a, const View& b, const char* what) {
  if (a.dtype != b.dtype)
    throw std::runtime_error(std::string(op) + ": " + what + " has dtype " + dtype_name(b.dtype) +
                             ", expected " + dtype_name(a.dtype));
}

}  // namespace

void layer_norm_forward(const View& x, const View& gamma, const View& beta, int64_t rows,
                        int64_t cols, double eps, const View& y, const View& mean,
                        const View& rstd) {
  if (rows < 0 || cols < 0) throw std::runtime_error("layer_norm_forward: negative size");
  check_same("layer_norm_forward", x, y, "y");
  if (rows == 0 || cols == 0) return;
  NvtxRange range("layer_norm_forward");
  const Affine g{gamma.data, gamma.dtype}, b{beta.data, beta.dtype};
  dispatch_floating(x.dtype, "layer_norm_forward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T* xp = static_cast<const T*>(x.data);
    T* yp = static_cast<T*>(y.data);
    const A eps_a = static_cast<A>(eps);
    cudaStream_t stream = current_stream();
    if (cols <= kWarpMaxCols) {
      dispatch_per_lane(cols, [&](auto per_lane) {
        layer_norm_warp_kernel<T, decltype(per_lane)::value>
            <<<grid_for(rows, kRowsPerBlock), kBlockSize, 0, stream>>>(xp, g, b, rows, cols, eps_a,
                                                                       yp, mean, rstd);
      });
    } else {
      const size_t cache_bytes = static_cast<size_t>(cols) * sizeof(A);
      const bool cache_row = cache_bytes <= kMaxRowCacheBytes;
      layer_norm_block_kernel<T>
          <<<grid_for(rows, 1), kBlockSize, cache_row ? cache_bytes : 0, stream>>>(
              xp, g, b, rows, cols, eps_a, yp, mean, rstd, cache_row);
    }
    check_launch("layer_norm_forward");
  });
}

void layer_norm_backward(const View& x, const View& gamma, const View& mean, const View& rstd,
                         const View& dy, int64_t rows, int64_t cols, const View& dx,
                         const View& dgamma, const View& dbeta) {
  if (rows < 0 || cols < 0) throw std::runtime_error("layer_norm_backward: negative size");
  check_same("layer_norm_backward", x, dy, "dy");
  check_same("layer_norm_backward", x, dx, "dx");
  if (cols == 0) return;
  NvtxRange range("layer_norm_backward");
  const Affine g{gamma.data, gamma.dtype};
  dispatch_floating(x.dtype, "layer_norm_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const T* xp = static_cast<const T*>(x.data);
    const T* dyp = static_cast<const T*>(dy.data);
    cudaStream_t stream = current_stream();
    if (rows > 0 && dx.data != nullptr) {
      T* dxp = static_cast<T*>(dx.data);
      if (cols <= kWarpMaxCols) {
        dispatch_per_lane(cols, [&](auto per_lane) {
          layer_norm_dx_warp_kernel<T, decltype(per_lane)::value>
              <<<grid_for(rows, kRowsPerBlock), kBlockSize, 0, stream>>>(xp, g, mean, rstd, dyp,
                                                                         rows, cols, dxp);
        });
      } else {
        layer_norm_dx_block_kernel<T>
            <<<grid_for(rows, 1), kBlockSize, 0, stream>>>(xp, g, mean, rstd, dyp, rows, cols, dxp);
      }
      check_launch("layer_norm_backward (dx)");
    }
    if (dgamma.data == nullptr && dbeta.data == nullptr) return;
    // Enough (column block, row block) pairs to fill the GPU a few times over.
    const int64_t col_blocks = (cols + 31) / 32;
    const int64_t max_row_blocks = std::max<int64_t>(1, (rows + kGradRows - 1) / kGradRows);
    int64_t row_blocks = std::clamp<int64_t>(max_grid_blocks() / 8 / col_blocks * 4, 1,
                                             std::min<int64_t>(max_row_blocks, 65535));
    const int64_t chunk = std::max<int64_t>(1, (rows + row_blocks - 1) / row_blocks);
    row_blocks = std::max<int64_t>(1, (rows + chunk - 1) / chunk);
    DeviceScratch partials(2 * sizeof(A) * static_cast<size_t>(row_blocks * cols));
    A* partial_gamma = partials.as<A>();
    A* partial_beta = partial_gamma + row_blocks * cols;
    const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(row_blocks));
    layer_norm_param_grad_partial_kernel<T><<<grid, dim3(32, kGradRows), 0, stream>>>(
        xp, mean, rstd, dyp, rows, cols, chunk, partial_gamma, partial_beta);
    check_launch("layer_norm_backward (dgamma/dbeta partials)");
    layer_norm_param_grad_final_kernel<A><<<grid_for(cols), kBlockSize, 0, stream>>>(
        partial_gamma, partial_beta, row_blocks, cols, dgamma, dbeta);
    check_launch("layer_norm_backward (dgamma/dbeta)");
  });
}

}  // namespace distill::kernels::cuda
