// Fused softmax-cross-entropy on CUDA (math and stability notes in kernels/cross_entropy.h).
//
// Forward: one pass over each row with an online max / rescaled exponential sum, 16-byte
// vectorised loads, a warp per row for short rows (C <= 1024) and a block per row otherwise; the
// per-thread states are merged with shuffles and shared memory. The few extra terms needed for
// label smoothing (sum_c (m - z_c)) and soft targets (sum t, sum t (m - z)) are rescaled online
// like the exponential sum, so each logit is read exactly once.
// Backward: one pass that recomputes softmax from the saved (max, log_sum) and writes
// (softmax * sum(q) - q) / T * grad directly; long rows are split over several blocks (grid.y)
// when there are too few rows to fill the GPU.
#include <cfloat>

#include "kernels/cross_entropy.h"
#include "kernels/cuda/cuda_utils.cuh"

namespace distill::kernels::cuda {

namespace {

enum class Mode { Hard, HardSmoothed, Soft };

// 512 threads per row at most: with the 4-way unrolled load loops a 1024-thread bound (64
// registers) would spill, and 512 threads x 4 loads in flight already cover a 50000-class row.
constexpr int kMaxBlockThreads = 512;

template <typename T>
constexpr int kVecWidth = static_cast<int>(16 / sizeof(T));

// V elements loaded or stored with 16-byte transactions (two of them for float packs that
// mirror 8 bf16 logits).
template <typename T, int V>
struct alignas(16) Pack {
  T v[V];
};

template <typename A>
__device__ __forceinline__ A lowest();
template <>
__device__ __forceinline__ float lowest<float>() {
  return -FLT_MAX;
}
template <>
__device__ __forceinline__ double lowest<double>() {
  return -DBL_MAX;
}

// Running statistics of part of a row. `max` starts at the lowest finite value rather than -inf
// so that -inf logits contribute exp(-inf) = 0 instead of exp(-inf - -inf) = NaN.
//   sum     = sum exp((z - max) * inv_t)
//   below   = sum (max - z)           (label smoothing)
//   t_sum   = sum t, t_below = sum t (max - z)   (soft targets)
template <typename A>
struct RowState {
  A max;
  A sum;
  A count;
  A below;
  A t_sum;
  A t_below;

  __device__ __forceinline__ static RowState empty() {
    return {lowest<A>(), A(0), A(0), A(0), A(0), A(0)};
  }

  // Moves the reference point up to `new_max` (> max), rescaling every term.
  template <Mode kMode>
  __device__ __forceinline__ void raise_max(A new_max, A inv_t) {
    if (count > A(0)) {
      const A delta = new_max - max;
      sum *= exp(-delta * inv_t);
      if constexpr (kMode == Mode::HardSmoothed) below += count * delta;
      if constexpr (kMode == Mode::Soft) t_below += t_sum * delta;
    }
    max = new_max;
  }

  template <Mode kMode, int V>
  __device__ __forceinline__ void add(const A (&z)[V], const A (&t)[V], A inv_t) {
    A pack_max = z[0];
#pragma unroll
    for (int k = 1; k < V; ++k) pack_max = z[k] > pack_max ? z[k] : pack_max;
    if (pack_max > max) this->template raise_max<kMode>(pack_max, inv_t);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      sum += exp((z[k] - max) * inv_t);
      if constexpr (kMode == Mode::HardSmoothed) below += max - z[k];
      if constexpr (kMode == Mode::Soft) {
        t_sum += t[k];
        t_below += t[k] * (max - z[k]);
      }
    }
    count += A(V);
  }

  template <Mode kMode>
  __device__ __forceinline__ void merge(RowState o, A inv_t) {
    if (o.count == A(0)) return;
    if (count == A(0)) {
      *this = o;
      return;
    }
    if (o.max > max) {
      this->template raise_max<kMode>(o.max, inv_t);
    } else {
      o.template raise_max<kMode>(max, inv_t);
    }
    sum += o.sum;
    count += o.count;
    below += o.below;
    t_sum += o.t_sum;
    t_below += o.t_below;
  }
};

template <Mode kMode, typename A>
__device__ __forceinline__ RowState<A> warp_merge(RowState<A> s, A inv_t) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    RowState<A> o;
    o.max = __shfl_xor_sync(0xffffffffu, s.max, off);
    o.sum = __shfl_xor_sync(0xffffffffu, s.sum, off);
    o.count = __shfl_xor_sync(0xffffffffu, s.count, off);
    o.below = __shfl_xor_sync(0xffffffffu, s.below, off);
    o.t_sum = __shfl_xor_sync(0xffffffffu, s.t_sum, off);
    o.t_below = __shfl_xor_sync(0xffffffffu, s.t_below, off);
    s.template merge<kMode>(o, inv_t);
  }
  return s;
}

// Where a row's 16-byte-aligned middle starts and ends. `vec_ok == false` (operands misaligned
// relative to each other) makes the whole row scalar.
struct RowSplit {
  int64_t head;     // scalar elements before the first aligned pack
  int64_t packs;    // aligned packs
  int64_t vec_end;  // first element of the scalar tail
};

template <typename T>
__device__ __forceinline__ RowSplit split_row(const T* row, int64_t cols, bool vec_ok) {
  constexpr int V = kVecWidth<T>;
  if (!vec_ok) return {0, 0, 0};
  const uintptr_t addr = reinterpret_cast<uintptr_t>(row);
  int64_t head = static_cast<int64_t>(((16 - addr % 16) % 16) / sizeof(T));
  if (head > cols) head = cols;
  const int64_t packs = (cols - head) / V;
  return {head, packs, head + packs * V};
}

template <typename A>
__device__ __forceinline__ bool aligned16(const A* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

// ---------------------------------------------------------------------------------------------
// Forward

struct ForwardParams {
  int64_t rows, cols;
  int64_t ignore_index;
  double inv_t, eps;
};

template <typename T, typename A, Mode kMode, bool kWarpPerRow>
__global__ void __launch_bounds__(kMaxBlockThreads)
    cross_entropy_forward_kernel(const T* __restrict__ logits, const int64_t* __restrict__ labels,
                                 const A* __restrict__ target, ForwardParams p,
                                 A* __restrict__ loss, A* __restrict__ stats,
                                 A* __restrict__ row_extra /* valid or target_sum */) {
  constexpr int V = kVecWidth<T>;
  __shared__ RowState<A> warp_states[32];
  const A inv_t = static_cast<A>(p.inv_t);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int tid = kWarpPerRow ? lane : static_cast<int>(threadIdx.x);
  const int nthreads = kWarpPerRow ? 32 : static_cast<int>(blockDim.x);
  const int64_t rows_per_step = kWarpPerRow ? int64_t(gridDim.x) * (blockDim.x >> 5) : gridDim.x;
  const int64_t first_row =
      kWarpPerRow ? int64_t(blockIdx.x) * (blockDim.x >> 5) + warp : blockIdx.x;

  for (int64_t row = first_row; row < p.rows; row += rows_per_step) {
    const T* zrow = logits + row * p.cols;
    const A* trow = kMode == Mode::Soft ? target + row * p.cols : nullptr;
    RowSplit split = split_row(zrow, p.cols, true);
    if constexpr (kMode == Mode::Soft) {
      if (!aligned16(trow + split.head)) split = split_row(zrow, p.cols, false);
    }
    RowState<A> s = RowState<A>::empty();
    auto add_scalar = [&](int64_t c) {
      const A z[1] = {to_acc<A>(zrow[c])};
      A t[1] = {A(0)};
      if constexpr (kMode == Mode::Soft) t[0] = trow[c];
      s.template add<kMode, 1>(z, t, inv_t);
    };
    for (int64_t c = tid; c < split.head; c += nthreads) add_scalar(c);
      // Unrolled so that several independent 16-byte loads are in flight per thread.
#pragma unroll 4
    for (int64_t v = tid; v < split.packs; v += nthreads) {
      const int64_t c = split.head + v * V;
      const Pack<T, V> zp = *reinterpret_cast<const Pack<T, V>*>(zrow + c);
      A z[V], t[V];
#pragma unroll
      for (int k = 0; k < V; ++k) {
        z[k] = to_acc<A>(zp.v[k]);
        t[k] = A(0);
      }
      if constexpr (kMode == Mode::Soft) {
        const Pack<A, V> tp = *reinterpret_cast<const Pack<A, V>*>(trow + c);
#pragma unroll
        for (int k = 0; k < V; ++k) t[k] = tp.v[k];
      }
      s.template add<kMode, V>(z, t, inv_t);
    }
    for (int64_t c = split.vec_end + tid; c < p.cols; c += nthreads) add_scalar(c);

    s = warp_merge<kMode>(s, inv_t);
    if constexpr (!kWarpPerRow) {
      __syncthreads();  // the previous row's leader may still read warp_states
      if (lane == 0) warp_states[warp] = s;
      __syncthreads();
      if (warp == 0) {
        const int num_warps = static_cast<int>(blockDim.x >> 5);
        s = lane < num_warps ? warp_states[lane] : RowState<A>::empty();
        s = warp_merge<kMode>(s, inv_t);
      }
    }
    if (tid != 0) continue;

    const A log_sum = log(s.sum);
    stats[2 * row] = s.max;
    stats[2 * row + 1] = log_sum;
    if constexpr (kMode == Mode::Soft) {
      loss[row] = s.t_sum * log_sum + s.t_below * inv_t;
      row_extra[row] = s.t_sum;
    } else {
      const int64_t y = labels[row];
      const bool ignored = y == p.ignore_index;
      A row_loss = A(0);
      if (!ignored) {
        if (y < 0 || y >= p.cols) {
          row_loss = A(NAN);
        } else {
          const A eps = static_cast<A>(p.eps);
          const A nll = (s.max - to_acc<A>(zrow[y])) * inv_t + log_sum;
          row_loss = (A(1) - eps) * nll;
          if constexpr (kMode == Mode::HardSmoothed)
            row_loss += eps * (log_sum + s.below * inv_t / static_cast<A>(p.cols));
        }
      }
      loss[row] = row_loss;
      if (row_extra) row_extra[row] = ignored ? A(0) : A(1);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Backward

struct BackwardParams {
  int64_t rows, cols;
  int64_t ignore_index;
  int64_t grad_stride;
  double inv_t, eps;
};

template <typename T, typename A, bool kSoft, bool kWarpPerRow>
__global__ void __launch_bounds__(kMaxBlockThreads)
    cross_entropy_backward_kernel(const T* __restrict__ logits, const int64_t* __restrict__ labels,
                                  const A* __restrict__ target, const A* __restrict__ stats,
                                  const A* __restrict__ target_sum, const A* __restrict__ grad,
                                  BackwardParams p, T* __restrict__ dlogits) {
  constexpr int V = kVecWidth<T>;
  const A inv_t = static_cast<A>(p.inv_t);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int tid = kWarpPerRow ? lane : static_cast<int>(threadIdx.x);
  const int nthreads = kWarpPerRow ? 32 : static_cast<int>(blockDim.x);
  const int64_t rows_per_step = kWarpPerRow ? int64_t(gridDim.x) * (blockDim.x >> 5) : gridDim.x;
  const int64_t first_row =
      kWarpPerRow ? int64_t(blockIdx.x) * (blockDim.x >> 5) + warp : blockIdx.x;
  // Column split: block y of gridDim.y handles its share of the packs; block 0 also does the
  // scalar head and tail.
  const int64_t split_index = kWarpPerRow ? 0 : blockIdx.y;
  const int64_t splits = kWarpPerRow ? 1 : gridDim.y;
  const bool same_alignment =
      reinterpret_cast<uintptr_t>(logits) % 16 == reinterpret_cast<uintptr_t>(dlogits) % 16;

  for (int64_t row = first_row; row < p.rows; row += rows_per_step) {
    const int64_t base = row * p.cols;
    const T* zrow = logits + base;
    T* drow = dlogits + base;
    const A* trow = kSoft ? target + base : nullptr;
    RowSplit split = split_row(zrow, p.cols, same_alignment);
    if constexpr (kSoft) {
      if (!aligned16(trow + split.head)) split = split_row(zrow, p.cols, false);
    }
    const A m = stats[2 * row];
    const A log_sum = stats[2 * row + 1];
    A scale = grad[row * p.grad_stride] * inv_t;
    A p_factor = A(1);  // sum of the target distribution
    A q_smooth = A(0), q_label = A(0);
    int64_t y = -1;
    bool zero_row = false;
    if constexpr (kSoft) {
      p_factor = target_sum[row];
    } else {
      y = labels[row];
      const A eps = static_cast<A>(p.eps);
      q_smooth = eps / static_cast<A>(p.cols);
      q_label = A(1) - eps;
      zero_row = y == p.ignore_index;
      if (!zero_row && (y < 0 || y >= p.cols)) scale = A(NAN);
    }
    auto grad_of = [&](A z, A t, int64_t c) -> A {
      if (zero_row) return A(0);
      const A prob = exp((z - m) * inv_t - log_sum);
      if constexpr (kSoft) {
        return (prob * p_factor - t) * scale;
      } else {
        return (prob - (q_smooth + (c == y ? q_label : A(0)))) * scale;
      }
    };
    auto do_scalar = [&](int64_t c) {
      const A t = kSoft ? trow[c] : A(0);
      drow[c] = from_acc<T>(grad_of(to_acc<A>(zrow[c]), t, c));
    };

    const int64_t packs_per_split = (split.packs + splits - 1) / splits;
    const int64_t pack_begin = split_index * packs_per_split;
    const int64_t pack_end = min(split.packs, pack_begin + packs_per_split);
#pragma unroll 4
    for (int64_t v = pack_begin + tid; v < pack_end; v += nthreads) {
      const int64_t c = split.head + v * V;
      const Pack<T, V> zp = *reinterpret_cast<const Pack<T, V>*>(zrow + c);
      A t[V];
#pragma unroll
      for (int k = 0; k < V; ++k) t[k] = A(0);
      if constexpr (kSoft) {
        const Pack<A, V> tp = *reinterpret_cast<const Pack<A, V>*>(trow + c);
#pragma unroll
        for (int k = 0; k < V; ++k) t[k] = tp.v[k];
      }
      Pack<T, V> out;
#pragma unroll
      for (int k = 0; k < V; ++k) out.v[k] = from_acc<T>(grad_of(to_acc<A>(zp.v[k]), t[k], c + k));
      *reinterpret_cast<Pack<T, V>*>(drow + c) = out;
    }
    if (split.packs == 0) {
      // Whole row scalar (short or misaligned): split it over the blocks like the packs.
      const int64_t per_split = (p.cols + splits - 1) / splits;
      const int64_t c_end = min(p.cols, (split_index + 1) * per_split);
      for (int64_t c = split_index * per_split + tid; c < c_end; c += nthreads) do_scalar(c);
    } else if (split_index == 0) {
      for (int64_t c = tid; c < split.head; c += nthreads) do_scalar(c);
      for (int64_t c = split.vec_end + tid; c < p.cols; c += nthreads) do_scalar(c);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Launch helpers

constexpr int64_t kWarpPerRowMaxCols = 1024;
constexpr int kRowsPerWarpBlock = 8;  // 256 threads

int block_threads_for(int64_t cols) {
  if (cols <= 4096) return 128;
  if (cols <= 16384) return 256;
  return kMaxBlockThreads;
}

unsigned row_blocks(int64_t rows, int64_t rows_per_block) {
  const int64_t blocks = (rows + rows_per_block - 1) / rows_per_block;
  return static_cast<unsigned>(std::clamp<int64_t>(blocks, 1, max_grid_blocks()));
}

template <typename T, typename A, Mode kMode>
void launch_forward(const View& logits, const View& labels, const View& target,
                    const CrossEntropyArgs& args, const View& loss, const View& stats,
                    const View& extra) {
  const ForwardParams p{args.rows, args.cols, args.ignore_index, args.inv_temperature,
                        args.label_smoothing};
  const T* z = static_cast<const T*>(logits.data);
  const int64_t* y = static_cast<const int64_t*>(labels.data);
  const A* t = static_cast<const A*>(target.data);
  A* out = static_cast<A*>(loss.data);
  A* st = static_cast<A*>(stats.data);
  A* ex = static_cast<A*>(extra.data);
  cudaStream_t stream = current_stream();
  if (args.cols <= kWarpPerRowMaxCols) {
    cross_entropy_forward_kernel<T, A, kMode, true>
        <<<row_blocks(args.rows, kRowsPerWarpBlock), kRowsPerWarpBlock * 32, 0, stream>>>(
            z, y, t, p, out, st, ex);
  } else {
    cross_entropy_forward_kernel<T, A, kMode, false>
        <<<row_blocks(args.rows, 1), block_threads_for(args.cols), 0, stream>>>(z, y, t, p, out, st,
                                                                                ex);
  }
  check_launch("cross_entropy_forward");
}

template <typename T, typename A, bool kSoft>
void launch_backward(const View& logits, const View& labels, const View& target, const View& stats,
                     const View& target_sum, const View& grad, const CrossEntropyArgs& args,
                     const View& dlogits) {
  const BackwardParams p{
      args.rows,           args.cols, args.ignore_index, grad.strides[0], args.inv_temperature,
      args.label_smoothing};
  const T* z = static_cast<const T*>(logits.data);
  const int64_t* y = static_cast<const int64_t*>(labels.data);
  const A* t = static_cast<const A*>(target.data);
  const A* st = static_cast<const A*>(stats.data);
  const A* ts = static_cast<const A*>(target_sum.data);
  const A* g = static_cast<const A*>(grad.data);
  T* dz = static_cast<T*>(dlogits.data);
  cudaStream_t stream = current_stream();
  if (args.cols <= kWarpPerRowMaxCols) {
    cross_entropy_backward_kernel<T, A, kSoft, true>
        <<<row_blocks(args.rows, kRowsPerWarpBlock), kRowsPerWarpBlock * 32, 0, stream>>>(
            z, y, t, st, ts, g, p, dz);
  } else {
    const int threads = block_threads_for(args.cols);
    // Few long rows: split each row over several blocks so that every SM has work.
    const int64_t target_blocks = max_grid_blocks() / 4;  // ~8 blocks per SM
    const int64_t packs = args.cols / kVecWidth<T>;
    int64_t splits = std::max<int64_t>(1, target_blocks / std::max<int64_t>(args.rows, 1));
    splits = std::min<int64_t>({splits, std::max<int64_t>(1, packs / threads), 65535});
    const dim3 grid(row_blocks(args.rows, 1), static_cast<unsigned>(splits));
    cross_entropy_backward_kernel<T, A, kSoft, false>
        <<<grid, threads, 0, stream>>>(z, y, t, st, ts, g, p, dz);
  }
  check_launch("cross_entropy_backward");
}

}  // namespace

void cross_entropy_forward(const View& logits, const View& labels, const CrossEntropyArgs& args,
                           const View& loss, const View& row_stats, const View& valid) {
  if (args.rows == 0) return;
  NvtxRange range("cross_entropy_forward");
  dispatch_floating(logits.dtype, "cross_entropy_forward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    if (args.label_smoothing > 0) {
      launch_forward<T, A, Mode::HardSmoothed>(logits, labels, View{}, args, loss, row_stats,
                                               valid);
    } else {
      launch_forward<T, A, Mode::Hard>(logits, labels, View{}, args, loss, row_stats, valid);
    }
  });
}

void cross_entropy_backward(const View& logits, const View& labels, const View& row_stats,
                            const View& grad_loss, const CrossEntropyArgs& args,
                            const View& dlogits) {
  if (args.rows == 0) return;
  NvtxRange range("cross_entropy_backward");
  dispatch_floating(logits.dtype, "cross_entropy_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_backward<T, acc_t<T>, false>(logits, labels, View{}, row_stats, View{}, grad_loss, args,
                                        dlogits);
  });
}

void soft_cross_entropy_forward(const View& logits, const View& target,
                                const CrossEntropyArgs& args, const View& loss,
                                const View& row_stats, const View& target_sum) {
  if (args.rows == 0) return;
  NvtxRange range("soft_cross_entropy_forward");
  dispatch_floating(logits.dtype, "soft_cross_entropy_forward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_forward<T, acc_t<T>, Mode::Soft>(logits, View{}, target, args, loss, row_stats,
                                            target_sum);
  });
}

void soft_cross_entropy_backward(const View& logits, const View& target, const View& row_stats,
                                 const View& target_sum, const View& grad_loss,
                                 const CrossEntropyArgs& args, const View& dlogits) {
  if (args.rows == 0) return;
  NvtxRange range("soft_cross_entropy_backward");
  dispatch_floating(logits.dtype, "soft_cross_entropy_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_backward<T, acc_t<T>, true>(logits, View{}, target, row_stats, target_sum, grad_loss,
                                       args, dlogits);
  });
}

}  // namespace distill::kernels::cuda
