// CUDA reductions over the last axis of a contiguous [rows, cols] buffer.
//
// Accumulation: float for F32/BF16/F16, double for F64, int64 for integer Sum/Max/Min/ArgMax and
// double for integer Mean/Var. Variance uses Welford per thread and Chan's pairwise combination
// across threads and blocks. ArgMax returns the first maximal index (a NaN beats everything; the
// first NaN wins), Max/Min propagate NaN, as in kernels/cpu/reduce.cpp.
//
// Launch shapes: rows of up to kWarpRowCols elements get one warp each (8 rows per block); longer
// rows get one block each; few very long rows are split across blocks, each writing a partial
// state, and a second kernel combines the partials.
#include <math_constants.h>

#include <cfloat>
#include <climits>
#include <type_traits>

#include "kernels/cuda/cuda_utils.cuh"
#include "kernels/reduce.h"

namespace distill::kernels::cuda {

namespace {

constexpr int64_t kWarpRowCols = 1024;  // at most this many columns: one warp per row
constexpr int kRowsPerWarpBlock = kBlockSize / 32;
constexpr int64_t kMinColsPerSplit = 8192;  // a split block gets at least this much work

template <typename T>
__device__ __forceinline__ bool is_nan(T v) {
  return v != v;  // false for integers
}

template <typename T>
__device__ __forceinline__ T shfl_xor(T v, int mask) {
  return __shfl_xor_sync(0xffffffffu, v, mask);
}

template <typename A>
__device__ __forceinline__ A lowest_value() {
  if constexpr (std::is_same_v<A, float>) return -CUDART_INF_F;
  if constexpr (std::is_same_v<A, double>) return -CUDART_INF;
  if constexpr (std::is_same_v<A, int64_t>) return LLONG_MIN;
}
template <typename A>
__device__ __forceinline__ A highest_value() {
  if constexpr (std::is_same_v<A, float>) return CUDART_INF_F;
  if constexpr (std::is_same_v<A, double>) return CUDART_INF;
  if constexpr (std::is_same_v<A, int64_t>) return LLONG_MAX;
}

// ---- reducers: Elem (the type elements are widened to), State, identity, add one element, combine
// two states, shuffle, finalize.

template <typename A>
struct SumReducer {
  using Elem = A;
  using State = A;
  bool mean = false;  // Mean divides by cols at the end
  __device__ State identity() const { return A(0); }
  __device__ void add(State& s, A v, int64_t) const { s += v; }
  __device__ State combine(State a, State b) const { return a + b; }
  __device__ State shfl(State s, int mask) const { return shfl_xor(s, mask); }
  __device__ A finalize(State s, int64_t cols) const { return mean ? s / static_cast<A>(cols) : s; }
};

template <typename A>
struct ExtremeReducer {
  using Elem = A;
  using State = A;
  bool want_max = true;
  __device__ State identity() const { return want_max ? lowest_value<A>() : highest_value<A>(); }
  __device__ State combine(State a, State b) const {
    if (is_nan(a)) return a;
    if (is_nan(b)) return b;
    return want_max ? (b > a ? b : a) : (b < a ? b : a);
  }
  __device__ void add(State& s, A v, int64_t) const { s = combine(s, v); }
  __device__ State shfl(State s, int mask) const { return shfl_xor(s, mask); }
  __device__ A finalize(State s, int64_t) const { return s; }
};

template <typename A>
struct ArgMaxState {
  A value;
  int64_t index;
};

template <typename A>
struct ArgMaxReducer {
  using Elem = A;
  using State = ArgMaxState<A>;
  __device__ State identity() const { return {lowest_value<A>(), LLONG_MAX}; }
  // Order-independent "a wins over b": NaN first, then larger value, ties to the smaller index.
  __device__ State combine(State a, State b) const {
    const bool an = is_nan(a.value), bn = is_nan(b.value);
    bool a_wins;
    if (an || bn) {
      a_wins = an && (!bn || a.index < b.index);
    } else {
      a_wins = a.value > b.value || (a.value == b.value && a.index < b.index);
    }
    return a_wins ? a : b;
  }
  __device__ void add(State& s, A v, int64_t index) const { s = combine(s, State{v, index}); }
  __device__ State shfl(State s, int mask) const {
    return {shfl_xor(s.value, mask), shfl_xor(s.index, mask)};
  }
  // An empty row keeps the identity's index: report 0 like the CPU.
  __device__ int64_t finalize(State s, int64_t) const { return s.index == LLONG_MAX ? 0 : s.index; }
};

template <typename A>
struct WelfordState {
  A mean;
  A m2;
  int64_t count;
};

template <typename A>
struct VarReducer {
  using Elem = A;
  using State = WelfordState<A>;
  int64_t correction = 1;
  __device__ State identity() const { return {A(0), A(0), 0}; }
  __device__ void add(State& s, A v, int64_t) const {
    ++s.count;
    const A delta = v - s.mean;
    s.mean += delta / static_cast<A>(s.count);
    s.m2 += delta * (v - s.mean);
  }
  // Chan et al.'s pairwise update.
  __device__ State combine(State a, State b) const {
    if (a.count == 0) return b;
    if (b.count == 0) return a;
    const int64_t n = a.count + b.count;
    const A na = static_cast<A>(a.count), nb = static_cast<A>(b.count), nn = static_cast<A>(n);
    const A delta = b.mean - a.mean;
    return {a.mean + delta * (nb / nn), a.m2 + b.m2 + delta * delta * (na * nb / nn), n};
  }
  __device__ State shfl(State s, int mask) const {
    return {shfl_xor(s.mean, mask), shfl_xor(s.m2, mask), shfl_xor(s.count, mask)};
  }
  // Like PyTorch, a non-positive divisor gives inf/nan rather than an error.
  __device__ A finalize(State s, int64_t cols) const {
    return s.m2 / static_cast<A>(cols - correction);
  }
};

template <typename R>
__device__ __forceinline__ typename R::State warp_combine(const R& r, typename R::State s) {
#pragma unroll
  for (int mask = 16; mask > 0; mask >>= 1) s = r.combine(s, r.shfl(s, mask));
  return s;
}

// Every thread of the block gets the combined state. `shared` holds 32 states.
template <typename R>
__device__ __forceinline__ typename R::State block_combine(const R& r, typename R::State s,
                                                           typename R::State* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int num_warps = static_cast<int>(blockDim.x >> 5);
  s = warp_combine(r, s);
  __syncthreads();
  if (lane == 0) shared[warp] = s;
  __syncthreads();
  s = lane < num_warps ? shared[lane] : r.identity();
  return warp_combine(r, s);
}

// Accumulates x[row][begin, end) with stride `step` starting at `first`; four loads in flight.
template <typename T, typename R>
__device__ __forceinline__ void accumulate_range(const R& r, typename R::State& s, const T* row,
                                                 int64_t first, int64_t end, int64_t step) {
  using L = typename R::Elem;
  int64_t c = first;
  for (; c + 3 * step < end; c += 4 * step) {
    const T v0 = row[c], v1 = row[c + step], v2 = row[c + 2 * step], v3 = row[c + 3 * step];
    r.add(s, to_acc<L>(v0), c);
    r.add(s, to_acc<L>(v1), c + step);
    r.add(s, to_acc<L>(v2), c + 2 * step);
    r.add(s, to_acc<L>(v3), c + 3 * step);
  }
  for (; c < end; c += step) r.add(s, to_acc<L>(row[c]), c);
}

template <typename R, typename V>
__device__ __forceinline__ void store_result(void* out, int64_t row, DType out_dtype, V v) {
  store_as<V>(out, row, out_dtype, v);
}

// One warp per row.
template <typename T, typename R>
__global__ void reduce_warp_rows_kernel(R r, const T* x, int64_t rows, int64_t cols, void* out,
                                        DType out_dtype) {
  const int lane = threadIdx.x & 31;
  const int64_t warps_total = static_cast<int64_t>(gridDim.x) * kRowsPerWarpBlock;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerWarpBlock + (threadIdx.x >> 5);
       row < rows; row += warps_total) {
    typename R::State s = r.identity();
    accumulate_range<T>(r, s, x + row * cols, lane, cols, 32);
    s = warp_combine(r, s);
    if (lane == 0) store_result<R>(out, row, out_dtype, r.finalize(s, cols));
  }
}

// Block (split, row) reduces columns [split * chunk, (split + 1) * chunk) of its rows. With one
// split it writes the final value; otherwise it writes its partial state.
template <typename T, typename R>
__global__ void reduce_block_rows_kernel(R r, const T* x, int64_t rows, int64_t cols, int64_t chunk,
                                         void* out, DType out_dtype, typename R::State* partials) {
  __shared__ typename R::State shared[32];
  const int64_t splits = gridDim.x;
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * chunk;
  const int64_t end = begin + chunk < cols ? begin + chunk : cols;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    typename R::State s = r.identity();
    accumulate_range<T>(r, s, x + row * cols, begin + threadIdx.x, end, blockDim.x);
    s = block_combine(r, s, shared);
    if (threadIdx.x == 0) {
      if (partials == nullptr) {
        store_result<R>(out, row, out_dtype, r.finalize(s, cols));
      } else {
        partials[row * splits + blockIdx.x] = s;
      }
    }
  }
}

// One warp per row combines that row's `splits` partial states.
template <typename R>
__global__ void reduce_partials_kernel(R r, const typename R::State* partials, int64_t rows,
                                       int64_t splits, int64_t cols, void* out, DType out_dtype) {
  const int lane = threadIdx.x & 31;
  const int64_t warps_total = static_cast<int64_t>(gridDim.x) * kRowsPerWarpBlock;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerWarpBlock + (threadIdx.x >> 5);
       row < rows; row += warps_total) {
    typename R::State s = r.identity();
    for (int64_t i = lane; i < splits; i += 32) s = r.combine(s, partials[row * splits + i]);
    s = warp_combine(r, s);
    if (lane == 0) store_result<R>(out, row, out_dtype, r.finalize(s, cols));
  }
}

template <typename T, typename R>
void launch_reduce(const R& r, const T* x, int64_t rows, int64_t cols, void* out, DType out_dtype) {
  cudaStream_t stream = current_stream();
  if (cols <= kWarpRowCols) {
    reduce_warp_rows_kernel<T><<<grid_for(rows, kRowsPerWarpBlock), kBlockSize, 0, stream>>>(
        r, x, rows, cols, out, out_dtype);
    check_launch("reduce_rows");
    return;
  }
  // Split long rows only when there are too few rows to fill the GPU.
  const int64_t target_blocks = max_grid_blocks();
  int64_t splits = 1;
  if (rows < target_blocks / 4) {
    splits = std::min<int64_t>((target_blocks + rows - 1) / rows,
                               (cols + kMinColsPerSplit - 1) / kMinColsPerSplit);
    splits = std::clamp<int64_t>(splits, 1, 65535);
  }
  const int64_t chunk = (cols + splits - 1) / splits;
  splits = (cols + chunk - 1) / chunk;  // no empty split blocks
  const dim3 grid(static_cast<unsigned>(splits),
                  static_cast<unsigned>(std::min<int64_t>(rows, 65535)));
  if (splits == 1) {
    reduce_block_rows_kernel<T><<<grid, kBlockSize, 0, stream>>>(
        r, x, rows, cols, chunk, out, out_dtype, static_cast<typename R::State*>(nullptr));
    check_launch("reduce_rows");
    return;
  }
  DeviceScratch partials(sizeof(typename R::State) * static_cast<size_t>(rows * splits));
  auto* p = partials.as<typename R::State>();
  reduce_block_rows_kernel<T>
      <<<grid, kBlockSize, 0, stream>>>(r, x, rows, cols, chunk, out, out_dtype, p);
  check_launch("reduce_rows (partials)");
  reduce_partials_kernel<<<grid_for(rows, kRowsPerWarpBlock), kBlockSize, 0, stream>>>(
      r, p, rows, splits, cols, out, out_dtype);
  check_launch("reduce_rows (combine)");
}

}  // namespace

void reduce_rows(ReduceOp op, const void* x, DType dtype, int64_t rows, int64_t cols, void* out,
                 DType out_dtype, int64_t correction) {
  if (rows < 0 || cols < 0) throw std::runtime_error("reduce_rows: negative size");
  if (rows == 0) return;
  if (op == ReduceOp::ArgMax && out_dtype != DType::I64)
    throw std::runtime_error(std::string("reduce_rows: argmax writes i64, got output dtype ") +
                             dtype_name(out_dtype));
  NvtxRange range("reduce_rows");
  dispatch_all(dtype, "reduce_rows", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xt = static_cast<const T*>(x);
    constexpr bool kInt = std::is_integral_v<T>;
    // Exact for integers where the CPU is exact (sums, extremes); double where it divides.
    using A = std::conditional_t<kInt, int64_t, acc_t<T>>;
    using F = std::conditional_t<kInt, double, acc_t<T>>;
    switch (op) {
      case ReduceOp::Sum:
        return launch_reduce(SumReducer<A>{false}, xt, rows, cols, out, out_dtype);
      case ReduceOp::Mean:
        return launch_reduce(SumReducer<F>{true}, xt, rows, cols, out, out_dtype);
      case ReduceOp::Max:
        return launch_reduce(ExtremeReducer<A>{true}, xt, rows, cols, out, out_dtype);
      case ReduceOp::Min:
        return launch_reduce(ExtremeReducer<A>{false}, xt, rows, cols, out, out_dtype);
      case ReduceOp::ArgMax:
        return launch_reduce(ArgMaxReducer<A>{}, xt, rows, cols, out, out_dtype);
      case ReduceOp::Var:
        return launch_reduce(VarReducer<F>{correction}, xt, rows, cols, out, out_dtype);
    }
  });
}

}  // namespace distill::kernels::cuda
