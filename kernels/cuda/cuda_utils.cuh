// Private helpers shared by the CUDA kernel files: error checks, launch configuration, dtype
// dispatch, strided offset calculation, warp/block reductions and NVTX ranges. Not part of the
// kernels/ interface: only kernels/cuda/*.cu include it.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <nvtx3/nvToolsExt.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/common.h"
#include "kernels/device.h"

namespace distill::kernels::cuda {

// ---- errors

// Throws std::runtime_error naming `what`, the CUDA error and the source location; clears the
// (non-sticky) error so that later calls do not report it again. Defined in device.cu.
[[noreturn]] void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line);

#define DISTILL_CUDA_CHECK(expr)                                                                \
  do {                                                                                          \
    const cudaError_t distill_cuda_err_ = (expr);                                               \
    if (distill_cuda_err_ != cudaSuccess)                                                       \
      ::distill::kernels::cuda::throw_cuda_error(distill_cuda_err_, #expr, __FILE__, __LINE__); \
  } while (0)

[[noreturn]] inline void unsupported_dtype(const char* op, DType t) {
  throw std::runtime_error(std::string(op) + ": dtype " + dtype_name(t) +
                           " is not supported by the CUDA kernel");
}

// ---- streams, launch configuration, scratch memory

inline cudaStream_t current_stream() {
  return static_cast<cudaStream_t>(stream());
}

// Upper bound on blocks for grid-stride kernels: enough to fill every SM several times over,
// far below the 2^31-1 grid limit whatever the tensor size. Cached per device (device.cu).
int max_grid_blocks();

constexpr int kBlockSize = 256;

// Blocks for `work_items` items of `per_block` each, clamped to [1, max_grid_blocks()].
inline unsigned grid_for(int64_t work_items, int64_t per_block = kBlockSize) {
  const int64_t blocks = (work_items + per_block - 1) / per_block;
  return static_cast<unsigned>(std::clamp<int64_t>(blocks, 1, max_grid_blocks()));
}

// Grid-stride loop bounds in 64-bit so tensors beyond 2^31 elements index correctly.
__device__ __forceinline__ int64_t global_thread_id() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_stride() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

// Stream-ordered temporary device memory (cudaMallocAsync on the process stream), freed when
// the owner goes out of scope; later launches on the same stream may still use it safely.
class DeviceScratch {
 public:
  explicit DeviceScratch(size_t bytes) : stream_(current_stream()) {
    if (bytes > 0) DISTILL_CUDA_CHECK(cudaMallocAsync(&ptr_, bytes, stream_));
  }
  ~DeviceScratch() {
    if (ptr_) (void)cudaFreeAsync(ptr_, stream_);
  }
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  cudaStream_t stream_;
  void* ptr_ = nullptr;
};

// An NVTX range for the lifetime of the object: the kernels of one op show up under its name in
// Nsight Systems. nvtxRangePush is a no-op branch when no tool is attached.
class NvtxRange {
 public:
  explicit NvtxRange(const char* name) { nvtxRangePushA(name); }
  ~NvtxRange() { nvtxRangePop(); }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

// ---- scalar types: storage type -> compute type (float, or double for F64; integers compute in
// their own type where the op allows it).

template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};
template <typename T>
using acc_t = typename AccType<T>::type;

// Conversions between storage and compute types. The 16-bit conversions are the hardware
// round-to-nearest-even ones, bit-identical to common.h's float_to_bf16_bits/float_to_f16_bits
// for every non-NaN value.
template <typename A, typename T>
__device__ __forceinline__ A to_acc(T v) {
  return static_cast<A>(v);
}
template <>
__device__ __forceinline__ float to_acc<float, __nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <>
__device__ __forceinline__ float to_acc<float, __half>(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ double to_acc<double, __nv_bfloat16>(__nv_bfloat16 v) {
  return static_cast<double>(__bfloat162float(v));
}
template <>
__device__ __forceinline__ double to_acc<double, __half>(__half v) {
  return static_cast<double>(__half2float(v));
}

template <typename T, typename A>
__device__ __forceinline__ T from_acc(A v) {
  return static_cast<T>(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16, float>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half from_acc<__half, float>(float v) {
  return __float2half_rn(v);
}
// double -> 16-bit goes through float, exactly like the CPU's store_as (static_cast<float> first).
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16, double>(double v) {
  return __float2bfloat16_rn(static_cast<float>(v));
}
template <>
__device__ __forceinline__ __half from_acc<__half, double>(double v) {
  return __float2half_rn(static_cast<float>(v));
}

// ---- dtype dispatch: fn(TypeTag<T>{}) with T the storage type of `t`.

template <typename T>
struct TypeTag {
  using type = T;
};

template <typename Fn>
void dispatch_floating(DType t, const char* op, Fn&& fn) {
  switch (t) {
    case DType::F32:
      fn(TypeTag<float>{});
      return;
    case DType::F64:
      fn(TypeTag<double>{});
      return;
    case DType::BF16:
      fn(TypeTag<__nv_bfloat16>{});
      return;
    case DType::F16:
      fn(TypeTag<__half>{});
      return;
    default:
      unsupported_dtype(op, t);
  }
}

template <typename Fn>
void dispatch_all(DType t, const char* op, Fn&& fn) {
  switch (t) {
    case DType::F32:
      fn(TypeTag<float>{});
      return;
    case DType::F64:
      fn(TypeTag<double>{});
      return;
    case DType::BF16:
      fn(TypeTag<__nv_bfloat16>{});
      return;
    case DType::F16:
      fn(TypeTag<__half>{});
      return;
    case DType::I32:
      fn(TypeTag<int32_t>{});
      return;
    case DType::I64:
      fn(TypeTag<int64_t>{});
      return;
    case DType::U8:
      fn(TypeTag<uint8_t>{});
      return;
  }
  unsupported_dtype(op, t);
}

template <typename Fn>
void dispatch_index(DType t, const char* op, Fn&& fn) {
  switch (t) {
    case DType::I32:
      fn(TypeTag<int32_t>{});
      return;
    case DType::I64:
      fn(TypeTag<int64_t>{});
      return;
    default:
      unsupported_dtype(op, t);
  }
}

// ---- strided offsets

// Maps a row-major linear index over a shared logical shape to an element offset in each of N
// operands. Built on the host from View descriptors and passed to kernels by value. Dims of size
// one are dropped and dims that are contiguous with their neighbour in every operand are merged,
// so a typical broadcast (e.g. [rows, cols] + [cols]) needs one division per element.
template <int N>
struct OffsetCalc {
  int ndim = 0;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[kMaxDims][N] = {};

  __device__ __forceinline__ void get(int64_t linear, int64_t (&offsets)[N]) const {
#pragma unroll
    for (int k = 0; k < N; ++k) offsets[k] = 0;
    for (int d = ndim - 1; d > 0; --d) {
      const int64_t size = sizes[d];
      const int64_t q = linear / size;
      const int64_t idx = linear - q * size;
      linear = q;
#pragma unroll
      for (int k = 0; k < N; ++k) offsets[k] += idx * strides[d][k];
    }
    // The outermost dim needs no division: what is left of `linear` is its index.
    if (ndim > 0) {
#pragma unroll
      for (int k = 0; k < N; ++k) offsets[k] += linear * strides[0][k];
    }
  }
};

// `shape` gives the logical shape; views[k] supply the strides (same ndim as shape).
template <int N>
OffsetCalc<N> make_offset_calc(const View& shape, const std::array<const View*, N>& views) {
  OffsetCalc<N> calc;
  // Collect non-trivial dims, outermost first.
  for (int d = 0; d < shape.ndim; ++d) {
    if (shape.shape[d] == 1) continue;
    const int out = calc.ndim;
    bool merged = false;
    if (out > 0) {
      // Merge with the previous kept dim when, for every operand, stepping the previous dim by
      // one equals stepping this dim by its full size.
      merged = true;
      for (int k = 0; k < N; ++k)
        if (calc.strides[out - 1][k] != views[k]->strides[d] * shape.shape[d]) merged = false;
    }
    if (merged) {
      calc.sizes[out - 1] *= shape.shape[d];
      for (int k = 0; k < N; ++k) calc.strides[out - 1][k] = views[k]->strides[d];
    } else {
      calc.sizes[out] = shape.shape[d];
      for (int k = 0; k < N; ++k) calc.strides[out][k] = views[k]->strides[d];
      ++calc.ndim;
    }
  }
  return calc;
}

// True when `ptr` is aligned for a `bytes`-wide vector access.
inline bool is_aligned(const void* ptr, size_t bytes) {
  return reinterpret_cast<uintptr_t>(ptr) % bytes == 0;
}

// ---- warp and block reductions (blockDim.x must be a multiple of 32)

template <typename T, typename Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

// Reduces one value per thread over the block; every thread gets the result. `shared` holds at
// least 32 T. Safe to call repeatedly with the same buffer.
template <typename T, typename Op>
__device__ __forceinline__ T block_reduce(T v, Op op, T identity, T* shared) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int num_warps = static_cast<int>(blockDim.x >> 5);
  v = warp_reduce(v, op);
  __syncthreads();  // a previous call may still be reading `shared`
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < num_warps ? shared[lane] : identity;
  return warp_reduce(v, op);
}

struct SumOp {
  template <typename T>
  __device__ __forceinline__ T operator()(T a, T b) const {
    return a + b;
  }
};
struct MaxOp {
  template <typename T>
  __device__ __forceinline__ T operator()(T a, T b) const {
    return a > b ? a : b;
  }
};

// The launch failed (bad configuration, no kernel image for this GPU, ...): throw naming the op.
inline void check_launch(const char* what) {
  check_last_error(what);
}

}  // namespace distill::kernels::cuda
