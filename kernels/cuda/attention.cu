// Fused attention on CUDA, flash-attention-2 style (see kernels/attention.h for the contract).
//
// Forward: one CTA per (tile of query rows, head, batch). Key/value tiles stream through shared
// memory; each query row keeps a running max and sum (fp32, or fp64 for F64) so the softmax is
// exact without ever writing the Lq x Lk score matrix; the CTA writes its output rows and their
// log-sum-exp once at the end.
//
// Backward, deterministic (no atomics, so a training step is reproducible bit for bit):
//   1. dsum = rowsum(dO * O) per query row (a warp per row).
//   2. one CTA per key tile loops over the query tiles that can see it, recomputing
//      P^T = exp(scale K Q^T - lse) and accumulating dV += P^T dO and dK += dS^T Q in registers,
//      with dS^T = P^T * (V dO^T - dsum).
//   3. one CTA per query tile loops over the key tiles, recomputing P and dP = dO V^T and
//      accumulating dQ += dS K.
// Steps 2 and 3 both recompute the scores (7 GEMM-shaped products instead of FA2's 5 with atomic
// dQ), the price of determinism.
//
// Two implementations of each kernel:
//   * tensor cores for BF16/F16 whose rows are 16-byte aligned with D % 8 == 0: 4 warps, each
//     owning 16 rows; mma.sync.m16n8k16 with fp32 accumulation; operands staged in shared memory
//     with cp.async (rows padded by 16 bytes so ldmatrix is bank-conflict free), the next tile
//     prefetched while the current one is used. The probabilities and dS are rounded to the input
//     type before their GEMM, as in FlashAttention-2.
//   * SIMT for everything else (F32, F64, unaligned 16-bit): 256 threads as a 16 x 16 grid, each
//     thread owning rows ty + 16m and columns tx + 16n of every tile (strided ownership keeps
//     shared-memory reads conflict free with rows padded by one element); math in fp32 (fp64).
// Head dims up to 128: tiles are sized for D_MAX in {32, 64, 128} and zero-padded beyond D.
//
// Masks: keys j >= Lk, causal (key j > query i, top-left aligned) and key_keep == 0 are masked by
// selecting 0 / -inf, never by multiplying, so a fully masked row yields zeros, not NaN. Causal
// tiles entirely above the diagonal, 16-row/16-key groups past Lq/Lk in tail tiles and warps with
// no valid rows skip their MMAs; forward tiles that need no mask skip the masking arithmetic.
#include <cmath>
#include <type_traits>

#include "kernels/attention.h"
#include "kernels/cuda/cuda_utils.cuh"

namespace distill::kernels::cuda {

namespace {

constexpr double kLog2e = 1.4426950408889634;
constexpr double kLn2 = 0.6931471805599453;

// Everything a kernel needs, passed by value.
struct Params {
  int batch, heads, q_len, kv_len, head_dim;
  double scale;       // softmax scale (multiplies q.k)
  double scale_log2;  // scale * log2(e): scores are exponentiated with exp2
  bool causal;
  const uint8_t* key_keep;
  int64_t key_keep_stride_b;
  AttentionOperand q, k, v, out, grad_out, grad_q, grad_k, grad_v;
  void* lse;   // [B, H, Lq], float (double for F64), natural log
  void* dsum;  // [B, H, Lq] rowsum(dO * O), accumulation type (backward only)
};

template <typename T>
using lse_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

__device__ __forceinline__ float exp2_acc(float x) {
  return exp2f(x);
}
__device__ __forceinline__ double exp2_acc(double x) {
  return exp2(x);
}
__device__ __forceinline__ float log2_acc(float x) {
  return log2f(x);
}
__device__ __forceinline__ double log2_acc(double x) {
  return log2(x);
}

template <typename A>
__device__ __forceinline__ A neg_inf() {
  return -static_cast<A>(INFINITY);
}

// Pointer to row 0 of operand `t` for (b, h).
template <typename T>
__device__ __forceinline__ T* head_ptr(const AttentionOperand& t, int b, int h) {
  return static_cast<T*>(t.data) + static_cast<int64_t>(b) * t.stride_b +
         static_cast<int64_t>(h) * t.stride_h;
}

// Whether key j is kept by the padding mask (and exists).
__device__ __forceinline__ bool key_kept(const Params& p, int b, int j) {
  return j < p.kv_len && (p.key_keep == nullptr || p.key_keep[b * p.key_keep_stride_b + j] != 0);
}

// ---------------------------------------------------------------------------------------------
// Preprocessing for the backward: dsum[b, h, i] = sum_d dO[b, h, i, d] * O[b, h, i, d].
template <typename T>
__global__ void attention_dsum_kernel(Params p) {
  using A = acc_t<T>;
  const int64_t rows = static_cast<int64_t>(p.batch) * p.heads * p.q_len;
  const int lane = threadIdx.x & 31;
  const int64_t first_warp = global_thread_id() >> 5;
  const int64_t warps = grid_stride() >> 5;
  A* dsum = static_cast<A*>(p.dsum);
  for (int64_t r = first_warp; r < rows; r += warps) {  // uniform per warp
    const int i = static_cast<int>(r % p.q_len);
    const int64_t bh = r / p.q_len;
    const int b = static_cast<int>(bh / p.heads), h = static_cast<int>(bh % p.heads);
    const T* o = head_ptr<T>(p.out, b, h) + static_cast<int64_t>(i) * p.out.stride_l;
    const T* d_o = head_ptr<T>(p.grad_out, b, h) + static_cast<int64_t>(i) * p.grad_out.stride_l;
    A acc = 0;
    for (int d = lane; d < p.head_dim; d += 32) acc += to_acc<A>(o[d]) * to_acc<A>(d_o[d]);
    acc = warp_reduce(acc, SumOp{});
    if (lane == 0) dsum[r] = acc;
  }
}

// =============================================================================================
// Tensor-core path (BF16 / F16)
// =============================================================================================

template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  uint32_t bits;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    memcpy(&bits, &v, 4);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    memcpy(&bits, &v, 4);
  }
  return bits;
}

// c += a (16x16, row-major) * b (16x8, col-major), fp32 accumulate.
template <typename T>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p))
               : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p))
               : "memory");
}

// 16 bytes global -> shared, asynchronously; zero-fills the destination when !valid.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Fragment loads from a row-major shared tile with row stride `ld` elements (see the PTX ISA's
// mma.m16n8k16 fragment layouts). `lane` is the thread's lane.
//   A operand, 16 rows x 16 k, stored [row][k]:
template <typename T>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const T* tile, int ld, int row0, int k0,
                                       int lane) {
  ldmatrix_x4(a, tile + (row0 + (lane & 15)) * ld + k0 + (lane >> 4) * 8);
}
//   B operands of two adjacent n-tiles (16 n x 16 k) stored [n][k]: b[0..1] for n0, b[2..3] for
//   n0 + 8.
template <typename T>
__device__ __forceinline__ void load_b_nk(uint32_t (&b)[4], const T* tile, int ld, int n0, int k0,
                                          int lane) {
  ldmatrix_x4(b, tile + (n0 + (lane & 7) + (lane >> 4) * 8) * ld + k0 + ((lane >> 3) & 1) * 8);
}
//   B operands of two adjacent n-tiles stored [k][n] (transposed on load).
template <typename T>
__device__ __forceinline__ void load_b_kn(uint32_t (&b)[4], const T* tile, int ld, int k0, int n0,
                                          int lane) {
  ldmatrix_x4_trans(b, tile + (k0 + (lane & 15)) * ld + n0 + (lane >> 4) * 8);
}

// Asynchronously copies rows [row0, row0 + ROWS) of one head (row stride `stride_l`, `len` valid
// rows, `dim` valid columns) into a [ROWS][D_MAX + 8] shared tile; missing rows/columns are zero.
template <typename T, int ROWS, int D_MAX, int THREADS>
__device__ __forceinline__ void async_load_tile(T* tile, const T* src, int64_t stride_l, int row0,
                                                int len, int dim) {
  constexpr int kChunksPerRow = D_MAX / 8;
  constexpr int kLd = D_MAX + 8;
  for (int c = threadIdx.x; c < ROWS * kChunksPerRow; c += THREADS) {
    const int r = c / kChunksPerRow;
    const int col = (c % kChunksPerRow) * 8;
    const bool valid = row0 + r < len && col < dim;
    const T* from = valid ? src + static_cast<int64_t>(row0 + r) * stride_l + col : src;
    cp_async_16(tile + r * kLd + col, from, valid);
  }
}

// Writes a warp's 16 staged rows [16][D_MAX + 8] to global memory with 16-byte stores.
template <typename T, int D_MAX>
__device__ __forceinline__ void store_warp_rows(const T* staged, T* dst, int64_t stride_l, int row0,
                                                int len, int dim, int lane) {
  constexpr int kChunksPerRow = D_MAX / 8;
  constexpr int kLd = D_MAX + 8;
  for (int c = lane; c < 16 * kChunksPerRow; c += 32) {
    const int r = c / kChunksPerRow;
    const int col = (c % kChunksPerRow) * 8;
    if (row0 + r < len && col < dim)
      *reinterpret_cast<uint4*>(dst + static_cast<int64_t>(row0 + r) * stride_l + col) =
          *reinterpret_cast<const uint4*>(staged + r * kLd + col);
  }
}

// Stages a warp's fp32 accumulator tile (16 rows x D_MAX, mma C layout) as T into `staged`
// ([16][D_MAX + 8]), multiplying row g by f0 and row g + 8 by f1.
template <typename T, int D_MAX>
__device__ __forceinline__ void stage_acc(T* staged, const float (&acc)[D_MAX / 8][4], float f0,
                                          float f1, int lane) {
  constexpr int kLd = D_MAX + 8;
  const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
  for (int nt = 0; nt < D_MAX / 8; ++nt) {
    *reinterpret_cast<uint32_t*>(staged + g * kLd + nt * 8 + 2 * t4) =
        pack2<T>(acc[nt][0] * f0, acc[nt][1] * f0);
    *reinterpret_cast<uint32_t*>(staged + (g + 8) * kLd + nt * 8 + 2 * t4) =
        pack2<T>(acc[nt][2] * f1, acc[nt][3] * f1);
  }
}

constexpr int kTcThreads = 128;  // 4 warps x 16 rows
constexpr int kTcRows = 64;

template <int D_MAX>
struct TcForwardTiles {
  static constexpr int kBlockKeys = 64;
  static constexpr int kLd = D_MAX + 8;
  static constexpr size_t smem_bytes(size_t elem) {
    return (kTcRows * kLd + 4 * kBlockKeys * kLd) * elem + 2 * kBlockKeys;
  }
};

template <typename T, int D_MAX>
__global__ void __launch_bounds__(kTcThreads) attention_forward_tc(Params p) {
  using Tiles = TcForwardTiles<D_MAX>;
  constexpr int kBc = Tiles::kBlockKeys, kLd = Tiles::kLd;
  extern __shared__ __align__(16) unsigned char smem[];
  T* q_s = reinterpret_cast<T*>(smem);                                // [64][kLd]
  T* k_s = q_s + kTcRows * kLd;                                       // [2][kBc][kLd]
  T* v_s = k_s + 2 * kBc * kLd;                                       // [2][kBc][kLd]
  uint8_t* keep_s = reinterpret_cast<uint8_t*>(v_s + 2 * kBc * kLd);  // [2][kBc]

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t4 = lane & 3;
  const int q0 = blockIdx.x * kTcRows, h = blockIdx.y, b = blockIdx.z;
  const T* q_head = head_ptr<T>(p.q, b, h);
  const T* k_head = head_ptr<T>(p.k, b, h);
  const T* v_head = head_ptr<T>(p.v, b, h);
  // Keys any row of this tile may see: causal rows stop at the diagonal.
  const int kv_end = p.causal ? min(p.kv_len, q0 + kTcRows) : p.kv_len;
  const int tiles = (kv_end + kBc - 1) / kBc;

  auto issue_kv = [&](int tile, int buf) {
    async_load_tile<T, kBc, D_MAX, kTcThreads>(k_s + buf * kBc * kLd, k_head, p.k.stride_l,
                                               tile * kBc, p.kv_len, p.head_dim);
    async_load_tile<T, kBc, D_MAX, kTcThreads>(v_s + buf * kBc * kLd, v_head, p.v.stride_l,
                                               tile * kBc, p.kv_len, p.head_dim);
    for (int j = threadIdx.x; j < kBc; j += kTcThreads)
      keep_s[buf * kBc + j] = key_kept(p, b, tile * kBc + j);
  };

  async_load_tile<T, kTcRows, D_MAX, kTcThreads>(q_s, q_head, p.q.stride_l, q0, p.q_len,
                                                 p.head_dim);
  cp_async_commit();  // group: Q
  if (tiles > 0) issue_kv(0, 0);
  cp_async_commit();  // group: first K/V tile
  cp_async_wait<1>();
  __syncthreads();
  // The warp's Q fragments stay in registers for the whole key loop.
  uint32_t q_frag[D_MAX / 16][4];
#pragma unroll
  for (int kk = 0; kk < D_MAX / 16; ++kk) load_a(q_frag[kk], q_s, kLd, warp * 16, kk * 16, lane);

  const float c = static_cast<float>(p.scale_log2);
  const int row[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
  // Keys this warp's rows can see: with causal masking, none past its last row. 16-key groups
  // beyond hold only masked scores, so their products are skipped (a tail tile of L = 197 has 5
  // live keys of 64; warps whose rows are all past Lq skip everything but the shared loads).
  const int warp_kv_end = p.causal ? min(kv_end, q0 + warp * 16 + 16) : kv_end;
  const bool warp_active = q0 + warp * 16 < p.q_len;
  float o_acc[D_MAX / 8][4] = {};
  float m_run[2] = {-INFINITY, -INFINITY};
  float l_run[2] = {0.f, 0.f};

  for (int t = 0; t < tiles; ++t) {
    const int buf = t & 1;
    if (t + 1 < tiles) {
      issue_kv(t + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const T* k_tile = k_s + buf * kBc * kLd;
    const T* v_tile = v_s + buf * kBc * kLd;
    const uint8_t* keep = keep_s + buf * kBc;
    const int live_keys = warp_active ? warp_kv_end - t * kBc : 0;
    if (live_keys > 0) {
      // S = Q K^T for this warp's 16 rows x kBc keys (skipped groups stay 0 and are masked below).
      float s[kBc / 8][4] = {};
#pragma unroll
      for (int kk = 0; kk < D_MAX / 16; ++kk) {
#pragma unroll
        for (int np = 0; np < kBc / 16; ++np) {
          if (np * 16 >= live_keys) continue;
          uint32_t bf[4];
          load_b_nk(bf, k_tile, kLd, np * 16, kk * 16, lane);
          mma16816<T>(s[2 * np], q_frag[kk], bf[0], bf[1]);
          mma16816<T>(s[2 * np + 1], q_frag[kk], bf[2], bf[3]);
        }
      }

      // Mask (only tiles that need it: a padding mask, keys past Lk, or the causal diagonal),
      // then the online softmax update of each of the thread's two rows.
      const bool unmasked = p.key_keep == nullptr && (t + 1) * kBc <= p.kv_len &&
                            (!p.causal || (t + 1) * kBc - 1 <= q0 + warp * 16);
      if (unmasked) {
#pragma unroll
        for (int nt = 0; nt < kBc / 8; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) s[nt][e] *= c;
      } else {
#pragma unroll
        for (int nt = 0; nt < kBc / 8; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int jj = nt * 8 + 2 * t4 + (e & 1);
            const int j = t * kBc + jj;
            const bool valid = keep[jj] && (!p.causal || j <= row[e >> 1]);
            s[nt][e] = valid ? s[nt][e] * c : -INFINITY;
          }
        }
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < kBc / 8; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m_run[r], mx);
        const float m_use = m_new == -INFINITY ? 0.f : m_new;  // all masked so far: keep zeros
        const float alpha = exp2f(m_run[r] - m_use);
        m_run[r] = m_new;
        l_run[r] *= alpha;
#pragma unroll
        for (int nt = 0; nt < D_MAX / 8; ++nt) {
          o_acc[nt][2 * r] *= alpha;
          o_acc[nt][2 * r + 1] *= alpha;
        }
#pragma unroll
        for (int nt = 0; nt < kBc / 8; ++nt) {
          s[nt][2 * r] = exp2f(s[nt][2 * r] - m_use);
          s[nt][2 * r + 1] = exp2f(s[nt][2 * r + 1] - m_use);
          l_run[r] += s[nt][2 * r] + s[nt][2 * r + 1];
        }
      }

      // O += P V: the S accumulators are reused as the A operand (rounded to T).
#pragma unroll
      for (int kk = 0; kk < kBc / 16; ++kk) {
        if (kk * 16 >= live_keys) continue;
        const uint32_t a[4] = {pack2<T>(s[2 * kk][0], s[2 * kk][1]),
                               pack2<T>(s[2 * kk][2], s[2 * kk][3]),
                               pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                               pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
        for (int np = 0; np < D_MAX / 16; ++np) {
          uint32_t bf[4];
          load_b_kn(bf, v_tile, kLd, kk * 16, np * 16, lane);
          mma16816<T>(o_acc[2 * np], a, bf[0], bf[1]);
          mma16816<T>(o_acc[2 * np + 1], a, bf[2], bf[3]);
        }
      }
    }                 // live_keys > 0
    __syncthreads();  // every warp is done with `buf` before it is refilled
  }

  // Epilogue: normalise, stage the warp's rows in its own (now unused) Q rows, store. With no
  // key tiles the Q copies (issued by every warp) may still be in flight: wait for all of them.
  cp_async_wait<0>();
  __syncthreads();
  float inv[2];
  lse_t<T>* lse = static_cast<lse_t<T>*>(p.lse) + (static_cast<int64_t>(b) * p.heads + h) * p.q_len;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = l_run[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    inv[r] = l == 0.f ? 0.f : 1.f / l;  // fully masked row -> zeros (NaN stays NaN)
    if (t4 == 0 && row[r] < p.q_len)
      lse[row[r]] = l == 0.f ? -INFINITY
                             : static_cast<float>((m_run[r] + log2f(l)) * static_cast<float>(kLn2));
  }
  __syncwarp();
  T* staged = q_s + warp * 16 * kLd;
  stage_acc<T, D_MAX>(staged, o_acc, inv[0], inv[1], lane);
  __syncwarp();
  store_warp_rows<T, D_MAX>(staged, head_ptr<T>(p.out, b, h), p.out.stride_l, q0 + warp * 16,
                            p.q_len, p.head_dim, lane);
}

// Backward, part 2: dK and dV for one tile of 64 keys (16 per warp), looping over query tiles.
template <int D_MAX>
struct TcDkDvTiles {
  static constexpr int kBlockQueries = D_MAX == 128 ? 32 : 64;  // bounds register use
  static constexpr int kLd = D_MAX + 8;
  static constexpr size_t smem_bytes(size_t elem) {
    return (2 * kTcRows * kLd + 4 * kBlockQueries * kLd) * elem + 4 * kBlockQueries * sizeof(float);
  }
};

template <typename T, int D_MAX>
__global__ void __launch_bounds__(kTcThreads) attention_backward_dkdv_tc(Params p) {
  using Tiles = TcDkDvTiles<D_MAX>;
  constexpr int kBq = Tiles::kBlockQueries, kLd = Tiles::kLd;
  extern __shared__ __align__(16) unsigned char smem[];
  T* k_s = reinterpret_cast<T*>(smem);                            // [64][kLd]
  T* v_s = k_s + kTcRows * kLd;                                   // [64][kLd]
  T* q_s = v_s + kTcRows * kLd;                                   // [2][kBq][kLd]
  T* do_s = q_s + 2 * kBq * kLd;                                  // [2][kBq][kLd]
  float* lse_s = reinterpret_cast<float*>(do_s + 2 * kBq * kLd);  // [2][kBq] (log2 domain)
  float* dsum_s = lse_s + 2 * kBq;                                // [2][kBq]

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t4 = lane & 3;
  const int k0 = blockIdx.x * kTcRows, h = blockIdx.y, b = blockIdx.z;
  const int64_t bh = static_cast<int64_t>(b) * p.heads + h;
  const T* q_head = head_ptr<T>(p.q, b, h);
  const T* do_head = head_ptr<T>(p.grad_out, b, h);
  const float* lse_head = static_cast<const float*>(p.lse) + bh * p.q_len;
  const float* dsum_head = static_cast<const float*>(p.dsum) + bh * p.q_len;
  const float log2e = static_cast<float>(kLog2e);
  // Causal: queries before the tile's first key see none of its keys.
  const int q_begin = p.causal ? (k0 / kBq) * kBq : 0;
  const int tiles = q_begin < p.q_len ? (p.q_len - q_begin + kBq - 1) / kBq : 0;

  auto issue_q = [&](int tile, int buf) {
    const int i0 = q_begin + tile * kBq;
    async_load_tile<T, kBq, D_MAX, kTcThreads>(q_s + buf * kBq * kLd, q_head, p.q.stride_l, i0,
                                               p.q_len, p.head_dim);
    async_load_tile<T, kBq, D_MAX, kTcThreads>(do_s + buf * kBq * kLd, do_head, p.grad_out.stride_l,
                                               i0, p.q_len, p.head_dim);
    for (int i = threadIdx.x; i < kBq; i += kTcThreads) {
      const bool valid = i0 + i < p.q_len;
      lse_s[buf * kBq + i] = valid ? lse_head[i0 + i] * log2e : 0.f;
      dsum_s[buf * kBq + i] = valid ? dsum_head[i0 + i] : 0.f;
    }
  };

  async_load_tile<T, kTcRows, D_MAX, kTcThreads>(k_s, head_ptr<T>(p.k, b, h), p.k.stride_l, k0,
                                                 p.kv_len, p.head_dim);
  async_load_tile<T, kTcRows, D_MAX, kTcThreads>(v_s, head_ptr<T>(p.v, b, h), p.v.stride_l, k0,
                                                 p.kv_len, p.head_dim);
  if (tiles > 0) issue_q(0, 0);
  cp_async_commit();

  const float c = static_cast<float>(p.scale_log2);
  const int key[2] = {k0 + warp * 16 + g, k0 + warp * 16 + g + 8};
  const bool kept[2] = {key_kept(p, b, key[0]), key_kept(p, b, key[1])};
  // 16-query groups that cannot see any of the warp's keys (past Lq, or before its first key
  // under causal masking) hold only masked entries: their products are skipped.
  const int warp_key0 = k0 + warp * 16;
  const bool warp_active = warp_key0 < p.kv_len;
  const auto group_live = [&](int i0, int group) {
    const int first = i0 + group * 16;
    return first < p.q_len && (!p.causal || first + 15 >= warp_key0);
  };
  float dk[D_MAX / 8][4] = {};
  float dv[D_MAX / 8][4] = {};

  for (int t = 0; t < tiles; ++t) {
    const int buf = t & 1;
    const int i0 = q_begin + t * kBq;
    if (t + 1 < tiles) {
      issue_q(t + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const T* q_tile = q_s + buf * kBq * kLd;
    const T* do_tile = do_s + buf * kBq * kLd;
    const float* lse2 = lse_s + buf * kBq;
    const float* dsum = dsum_s + buf * kBq;
    if (warp_active) {
      // S^T = K Q^T and dP^T = V dO^T for the warp's 16 keys x kBq queries.
      float st[kBq / 8][4] = {};
      float dpt[kBq / 8][4] = {};
#pragma unroll
      for (int kk = 0; kk < D_MAX / 16; ++kk) {
        uint32_t ak[4], av[4];
        load_a(ak, k_s, kLd, warp * 16, kk * 16, lane);
        load_a(av, v_s, kLd, warp * 16, kk * 16, lane);
#pragma unroll
        for (int np = 0; np < kBq / 16; ++np) {
          if (!group_live(i0, np)) continue;
          uint32_t bq[4], bo[4];
          load_b_nk(bq, q_tile, kLd, np * 16, kk * 16, lane);
          load_b_nk(bo, do_tile, kLd, np * 16, kk * 16, lane);
          mma16816<T>(st[2 * np], ak, bq[0], bq[1]);
          mma16816<T>(st[2 * np + 1], ak, bq[2], bq[3]);
          mma16816<T>(dpt[2 * np], av, bo[0], bo[1]);
          mma16816<T>(dpt[2 * np + 1], av, bo[2], bo[3]);
        }
      }
      // P^T (into st) and dS^T (into dpt).
#pragma unroll
      for (int nt = 0; nt < kBq / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int ii = nt * 8 + 2 * t4 + (e & 1);
          const int i = i0 + ii;
          const bool valid = kept[e >> 1] && i < p.q_len && (!p.causal || key[e >> 1] <= i);
          const float prob = valid ? exp2f(st[nt][e] * c - lse2[ii]) : 0.f;
          st[nt][e] = prob;
          dpt[nt][e] = valid ? prob * (dpt[nt][e] - dsum[ii]) : 0.f;
        }
      }
      // dV += P^T dO and dK += dS^T Q (contraction over the kBq queries).
#pragma unroll
      for (int kk = 0; kk < kBq / 16; ++kk) {
        if (!group_live(i0, kk)) continue;
        const uint32_t ap[4] = {pack2<T>(st[2 * kk][0], st[2 * kk][1]),
                                pack2<T>(st[2 * kk][2], st[2 * kk][3]),
                                pack2<T>(st[2 * kk + 1][0], st[2 * kk + 1][1]),
                                pack2<T>(st[2 * kk + 1][2], st[2 * kk + 1][3])};
        const uint32_t ads[4] = {pack2<T>(dpt[2 * kk][0], dpt[2 * kk][1]),
                                 pack2<T>(dpt[2 * kk][2], dpt[2 * kk][3]),
                                 pack2<T>(dpt[2 * kk + 1][0], dpt[2 * kk + 1][1]),
                                 pack2<T>(dpt[2 * kk + 1][2], dpt[2 * kk + 1][3])};
#pragma unroll
        for (int np = 0; np < D_MAX / 16; ++np) {
          uint32_t bo[4], bq[4];
          load_b_kn(bo, do_tile, kLd, kk * 16, np * 16, lane);
          load_b_kn(bq, q_tile, kLd, kk * 16, np * 16, lane);
          mma16816<T>(dv[2 * np], ap, bo[0], bo[1]);
          mma16816<T>(dv[2 * np + 1], ap, bo[2], bo[3]);
          mma16816<T>(dk[2 * np], ads, bq[0], bq[1]);
          mma16816<T>(dk[2 * np + 1], ads, bq[2], bq[3]);
        }
      }
    }  // warp_active
    __syncthreads();
  }

  cp_async_wait<0>();  // with no tiles the first copies may still be in flight
  __syncthreads();
  const float scale = static_cast<float>(p.scale);
  T* staged_k = k_s + warp * 16 * kLd;  // the warp's own K and V rows are free now
  T* staged_v = v_s + warp * 16 * kLd;
  stage_acc<T, D_MAX>(staged_k, dk, scale, scale, lane);
  stage_acc<T, D_MAX>(staged_v, dv, 1.f, 1.f, lane);
  __syncwarp();
  store_warp_rows<T, D_MAX>(staged_k, head_ptr<T>(p.grad_k, b, h), p.grad_k.stride_l,
                            k0 + warp * 16, p.kv_len, p.head_dim, lane);
  store_warp_rows<T, D_MAX>(staged_v, head_ptr<T>(p.grad_v, b, h), p.grad_v.stride_l,
                            k0 + warp * 16, p.kv_len, p.head_dim, lane);
}

// Backward, part 3: dQ for one tile of 64 queries (16 per warp), looping over key tiles.
template <int D_MAX>
struct TcDqTiles {
  static constexpr int kBlockKeys = D_MAX == 128 ? 32 : 64;
  static constexpr int kLd = D_MAX + 8;
  static constexpr size_t smem_bytes(size_t elem) {
    return (2 * kTcRows * kLd + 4 * kBlockKeys * kLd) * elem + 2 * kBlockKeys;
  }
};

template <typename T, int D_MAX>
__global__ void __launch_bounds__(kTcThreads) attention_backward_dq_tc(Params p) {
  using Tiles = TcDqTiles<D_MAX>;
  constexpr int kBc = Tiles::kBlockKeys, kLd = Tiles::kLd;
  extern __shared__ __align__(16) unsigned char smem[];
  T* q_s = reinterpret_cast<T*>(smem);                                // [64][kLd]
  T* do_s = q_s + kTcRows * kLd;                                      // [64][kLd]
  T* k_s = do_s + kTcRows * kLd;                                      // [2][kBc][kLd]
  T* v_s = k_s + 2 * kBc * kLd;                                       // [2][kBc][kLd]
  uint8_t* keep_s = reinterpret_cast<uint8_t*>(v_s + 2 * kBc * kLd);  // [2][kBc]

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t4 = lane & 3;
  const int q0 = blockIdx.x * kTcRows, h = blockIdx.y, b = blockIdx.z;
  const int64_t bh = static_cast<int64_t>(b) * p.heads + h;
  const T* k_head = head_ptr<T>(p.k, b, h);
  const T* v_head = head_ptr<T>(p.v, b, h);
  const int kv_end = p.causal ? min(p.kv_len, q0 + kTcRows) : p.kv_len;
  const int tiles = (kv_end + kBc - 1) / kBc;

  auto issue_kv = [&](int tile, int buf) {
    async_load_tile<T, kBc, D_MAX, kTcThreads>(k_s + buf * kBc * kLd, k_head, p.k.stride_l,
                                               tile * kBc, p.kv_len, p.head_dim);
    async_load_tile<T, kBc, D_MAX, kTcThreads>(v_s + buf * kBc * kLd, v_head, p.v.stride_l,
                                               tile * kBc, p.kv_len, p.head_dim);
    for (int j = threadIdx.x; j < kBc; j += kTcThreads)
      keep_s[buf * kBc + j] = key_kept(p, b, tile * kBc + j);
  };

  async_load_tile<T, kTcRows, D_MAX, kTcThreads>(q_s, head_ptr<T>(p.q, b, h), p.q.stride_l, q0,
                                                 p.q_len, p.head_dim);
  async_load_tile<T, kTcRows, D_MAX, kTcThreads>(do_s, head_ptr<T>(p.grad_out, b, h),
                                                 p.grad_out.stride_l, q0, p.q_len, p.head_dim);
  if (tiles > 0) issue_kv(0, 0);
  cp_async_commit();

  const float c = static_cast<float>(p.scale_log2);
  const int row[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
  float lse2[2], dsum[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const bool valid = row[r] < p.q_len;
    lse2[r] =
        valid ? static_cast<const float*>(p.lse)[bh * p.q_len + row[r]] * static_cast<float>(kLog2e)
              : 0.f;
    dsum[r] = valid ? static_cast<const float*>(p.dsum)[bh * p.q_len + row[r]] : 0.f;
  }
  // As in the forward: keys past the warp's last row (causal) or past Lk are skipped.
  const int warp_kv_end = p.causal ? min(kv_end, q0 + warp * 16 + 16) : kv_end;
  const bool warp_active = q0 + warp * 16 < p.q_len;
  float dq[D_MAX / 8][4] = {};

  for (int t = 0; t < tiles; ++t) {
    const int buf = t & 1;
    if (t + 1 < tiles) {
      issue_kv(t + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const T* k_tile = k_s + buf * kBc * kLd;
    const T* v_tile = v_s + buf * kBc * kLd;
    const uint8_t* keep = keep_s + buf * kBc;
    const int live_keys = warp_active ? warp_kv_end - t * kBc : 0;
    if (live_keys > 0) {
      float s[kBc / 8][4] = {};
      float dp[kBc / 8][4] = {};
#pragma unroll
      for (int kk = 0; kk < D_MAX / 16; ++kk) {
        uint32_t aq[4], ao[4];
        load_a(aq, q_s, kLd, warp * 16, kk * 16, lane);
        load_a(ao, do_s, kLd, warp * 16, kk * 16, lane);
#pragma unroll
        for (int np = 0; np < kBc / 16; ++np) {
          if (np * 16 >= live_keys) continue;
          uint32_t bk[4], bv[4];
          load_b_nk(bk, k_tile, kLd, np * 16, kk * 16, lane);
          load_b_nk(bv, v_tile, kLd, np * 16, kk * 16, lane);
          mma16816<T>(s[2 * np], aq, bk[0], bk[1]);
          mma16816<T>(s[2 * np + 1], aq, bk[2], bk[3]);
          mma16816<T>(dp[2 * np], ao, bv[0], bv[1]);
          mma16816<T>(dp[2 * np + 1], ao, bv[2], bv[3]);
        }
      }
      // dS = P * (dP - dsum), into dp.
#pragma unroll
      for (int nt = 0; nt < kBc / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int jj = nt * 8 + 2 * t4 + (e & 1);
          const int j = t * kBc + jj;
          const bool valid = keep[jj] && (!p.causal || j <= row[e >> 1]);
          const float prob = valid ? exp2f(s[nt][e] * c - lse2[e >> 1]) : 0.f;
          dp[nt][e] = valid ? prob * (dp[nt][e] - dsum[e >> 1]) : 0.f;
        }
      }
      // dQ += dS K (contraction over the kBc keys).
#pragma unroll
      for (int kk = 0; kk < kBc / 16; ++kk) {
        if (kk * 16 >= live_keys) continue;
        const uint32_t a[4] = {pack2<T>(dp[2 * kk][0], dp[2 * kk][1]),
                               pack2<T>(dp[2 * kk][2], dp[2 * kk][3]),
                               pack2<T>(dp[2 * kk + 1][0], dp[2 * kk + 1][1]),
                               pack2<T>(dp[2 * kk + 1][2], dp[2 * kk + 1][3])};
#pragma unroll
        for (int np = 0; np < D_MAX / 16; ++np) {
          uint32_t bk[4];
          load_b_kn(bk, k_tile, kLd, kk * 16, np * 16, lane);
          mma16816<T>(dq[2 * np], a, bk[0], bk[1]);
          mma16816<T>(dq[2 * np + 1], a, bk[2], bk[3]);
        }
      }
    }  // live_keys > 0
    __syncthreads();
  }

  cp_async_wait<0>();  // with no tiles the first copies may still be in flight
  __syncthreads();
  const float scale = static_cast<float>(p.scale);
  T* staged = q_s + warp * 16 * kLd;
  stage_acc<T, D_MAX>(staged, dq, scale, scale, lane);
  __syncwarp();
  store_warp_rows<T, D_MAX>(staged, head_ptr<T>(p.grad_q, b, h), p.grad_q.stride_l, q0 + warp * 16,
                            p.q_len, p.head_dim, lane);
}

// =============================================================================================
// SIMT path (F32, F64, and 16-bit inputs the tensor-core path cannot take)
// =============================================================================================

constexpr int kSimtThreads = 256;  // 16 x 16
constexpr int kSimtKeys = 32;      // key tile (2 columns per thread)

// Copies rows [row0, row0 + rows) of one head into a [rows][D_MAX + 1] tile of A, zero beyond
// the valid rows and columns. Consecutive threads read consecutive elements of a row.
template <typename T, typename A, int D_MAX>
__device__ __forceinline__ void load_tile_simt(A* tile, const T* src, int64_t stride_l, int row0,
                                               int rows, int len, int dim) {
  constexpr int kLd = D_MAX + 1;
  for (int idx = threadIdx.x; idx < rows * D_MAX; idx += kSimtThreads) {
    const int r = idx / D_MAX, d = idx % D_MAX;
    tile[r * kLd + d] = row0 + r < len && d < dim
                            ? to_acc<A>(src[static_cast<int64_t>(row0 + r) * stride_l + d])
                            : A(0);
  }
}

// Reduction over the 16 threads (tx) that share a row.
template <typename A>
__device__ __forceinline__ A row_max16(A v) {
#pragma unroll
  for (int off = 8; off > 0; off >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}
template <typename A>
__device__ __forceinline__ A row_sum16(A v) {
#pragma unroll
  for (int off = 8; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

template <typename A, int D_MAX, int RM>
struct SimtForwardTiles {
  static constexpr int kRows = 16 * RM;
  static constexpr int kLd = D_MAX + 1;
  static constexpr size_t smem_bytes() {
    return (kRows * kLd + 2 * kSimtKeys * kLd + kRows * (kSimtKeys + 1)) * sizeof(A) + kSimtKeys;
  }
};

template <typename T, int D_MAX, int RM>
__global__ void __launch_bounds__(kSimtThreads) attention_forward_simt(Params p) {
  using A = acc_t<T>;
  using Tiles = SimtForwardTiles<A, D_MAX, RM>;
  constexpr int kRows = Tiles::kRows, kLd = Tiles::kLd, kBc = kSimtKeys, kPLd = kSimtKeys + 1;
  constexpr int kCols = D_MAX / 16;
  extern __shared__ __align__(16) unsigned char smem[];
  A* q_s = reinterpret_cast<A*>(smem);  // [kRows][kLd]
  A* k_s = q_s + kRows * kLd;           // [kBc][kLd]
  A* v_s = k_s + kBc * kLd;             // [kBc][kLd]
  A* p_s = v_s + kBc * kLd;             // [kRows][kPLd]
  uint8_t* keep_s = reinterpret_cast<uint8_t*>(p_s + kRows * kPLd);

  const int ty = threadIdx.x >> 4, tx = threadIdx.x & 15;
  const int q0 = blockIdx.x * kRows, h = blockIdx.y, b = blockIdx.z;
  const T* k_head = head_ptr<T>(p.k, b, h);
  const T* v_head = head_ptr<T>(p.v, b, h);
  const int kv_end = p.causal ? min(p.kv_len, q0 + kRows) : p.kv_len;
  const int tiles = (kv_end + kBc - 1) / kBc;
  const A c = static_cast<A>(p.scale_log2);

  load_tile_simt<T, A, D_MAX>(q_s, head_ptr<T>(p.q, b, h), p.q.stride_l, q0, kRows, p.q_len,
                              p.head_dim);
  A o[RM][kCols] = {};
  A m_run[RM], l_run[RM];
#pragma unroll
  for (int m = 0; m < RM; ++m) {
    m_run[m] = neg_inf<A>();
    l_run[m] = 0;
  }

  for (int t = 0; t < tiles; ++t) {
    const int j0 = t * kBc;
    __syncthreads();  // previous tile fully consumed
    load_tile_simt<T, A, D_MAX>(k_s, k_head, p.k.stride_l, j0, kBc, p.kv_len, p.head_dim);
    load_tile_simt<T, A, D_MAX>(v_s, v_head, p.v.stride_l, j0, kBc, p.kv_len, p.head_dim);
    for (int j = threadIdx.x; j < kBc; j += kSimtThreads) keep_s[j] = key_kept(p, b, j0 + j);
    __syncthreads();

    A s[RM][2] = {};
    for (int d = 0; d < p.head_dim; ++d) {
      A qv[RM];
#pragma unroll
      for (int m = 0; m < RM; ++m) qv[m] = q_s[(ty + 16 * m) * kLd + d];
#pragma unroll
      for (int n = 0; n < 2; ++n) {
        const A kv = k_s[(tx + 16 * n) * kLd + d];
#pragma unroll
        for (int m = 0; m < RM; ++m) s[m][n] += qv[m] * kv;
      }
    }
#pragma unroll
    for (int m = 0; m < RM; ++m) {
      const int i = q0 + ty + 16 * m;
      A mx = neg_inf<A>();
#pragma unroll
      for (int n = 0; n < 2; ++n) {
        const int jj = tx + 16 * n;
        const bool valid = keep_s[jj] && (!p.causal || j0 + jj <= i);
        s[m][n] = valid ? s[m][n] * c : neg_inf<A>();
        mx = max(mx, s[m][n]);
      }
      mx = row_max16(mx);
      const A m_new = max(m_run[m], mx);
      const A m_use = m_new == neg_inf<A>() ? A(0) : m_new;
      const A alpha = exp2_acc(m_run[m] - m_use);
      m_run[m] = m_new;
      l_run[m] *= alpha;
#pragma unroll
      for (int cc = 0; cc < kCols; ++cc) o[m][cc] *= alpha;
#pragma unroll
      for (int n = 0; n < 2; ++n) {
        const A prob = exp2_acc(s[m][n] - m_use);
        l_run[m] += prob;
        p_s[(ty + 16 * m) * kPLd + tx + 16 * n] = prob;
      }
    }
    __syncwarp();  // a row's probabilities are written and read by the same 16 lanes
    for (int j = 0; j < kBc; ++j) {
      A vv[kCols];
#pragma unroll
      for (int cc = 0; cc < kCols; ++cc) vv[cc] = v_s[j * kLd + tx + 16 * cc];
#pragma unroll
      for (int m = 0; m < RM; ++m) {
        const A prob = p_s[(ty + 16 * m) * kPLd + j];
#pragma unroll
        for (int cc = 0; cc < kCols; ++cc) o[m][cc] += prob * vv[cc];
      }
    }
  }

  T* out_head = head_ptr<T>(p.out, b, h);
  lse_t<T>* lse = static_cast<lse_t<T>*>(p.lse) + (static_cast<int64_t>(b) * p.heads + h) * p.q_len;
#pragma unroll
  for (int m = 0; m < RM; ++m) {
    const A l = row_sum16(l_run[m]);
    const A inv = l == A(0) ? A(0) : A(1) / l;
    const int i = q0 + ty + 16 * m;
    if (i >= p.q_len) continue;
#pragma unroll
    for (int cc = 0; cc < kCols; ++cc) {
      const int d = tx + 16 * cc;
      if (d < p.head_dim)
        out_head[static_cast<int64_t>(i) * p.out.stride_l + d] = from_acc<T>(o[m][cc] * inv);
    }
    if (tx == 0)
      lse[i] = l == A(0) ? neg_inf<A>() : (m_run[m] + log2_acc(l)) * static_cast<A>(kLn2);
  }
}

template <typename A, int D_MAX>
struct SimtDkDvTiles {
  static constexpr int kKeys = 32, kQueries = 32;
  static constexpr int kLd = D_MAX + 1;
  static constexpr size_t smem_bytes() { return (4 * 32 * kLd + 2 * 32 * 33 + 2 * 32) * sizeof(A); }
};

template <typename T, int D_MAX>
__global__ void __launch_bounds__(kSimtThreads) attention_backward_dkdv_simt(Params p) {
  using A = acc_t<T>;
  using Tiles = SimtDkDvTiles<A, D_MAX>;
  constexpr int kBk = Tiles::kKeys, kBq = Tiles::kQueries, kLd = Tiles::kLd, kPLd = kBq + 1;
  constexpr int kCols = D_MAX / 16;
  extern __shared__ __align__(16) unsigned char smem[];
  A* k_s = reinterpret_cast<A*>(smem);  // [kBk][kLd]
  A* v_s = k_s + kBk * kLd;             // [kBk][kLd]
  A* q_s = v_s + kBk * kLd;             // [kBq][kLd]
  A* do_s = q_s + kBq * kLd;            // [kBq][kLd]
  A* pt_s = do_s + kBq * kLd;           // [kBk][kPLd]
  A* dst_s = pt_s + kBk * kPLd;         // [kBk][kPLd]
  A* lse_s = dst_s + kBk * kPLd;        // [kBq] (log2 domain)
  A* dsum_s = lse_s + kBq;              // [kBq]

  const int ty = threadIdx.x >> 4, tx = threadIdx.x & 15;
  const int k0 = blockIdx.x * kBk, h = blockIdx.y, b = blockIdx.z;
  const int64_t bh = static_cast<int64_t>(b) * p.heads + h;
  const T* q_head = head_ptr<T>(p.q, b, h);
  const T* do_head = head_ptr<T>(p.grad_out, b, h);
  const lse_t<T>* lse_head = static_cast<const lse_t<T>*>(p.lse) + bh * p.q_len;
  const A* dsum_head = static_cast<const A*>(p.dsum) + bh * p.q_len;
  const A c = static_cast<A>(p.scale_log2);
  const int q_begin = p.causal ? (k0 / kBq) * kBq : 0;

  load_tile_simt<T, A, D_MAX>(k_s, head_ptr<T>(p.k, b, h), p.k.stride_l, k0, kBk, p.kv_len,
                              p.head_dim);
  load_tile_simt<T, A, D_MAX>(v_s, head_ptr<T>(p.v, b, h), p.v.stride_l, k0, kBk, p.kv_len,
                              p.head_dim);
  bool kept[2];
#pragma unroll
  for (int m = 0; m < 2; ++m) kept[m] = key_kept(p, b, k0 + ty + 16 * m);
  A dk[2][kCols] = {};
  A dv[2][kCols] = {};

  for (int i0 = q_begin; i0 < p.q_len; i0 += kBq) {
    __syncthreads();
    load_tile_simt<T, A, D_MAX>(q_s, q_head, p.q.stride_l, i0, kBq, p.q_len, p.head_dim);
    load_tile_simt<T, A, D_MAX>(do_s, do_head, p.grad_out.stride_l, i0, kBq, p.q_len, p.head_dim);
    for (int i = threadIdx.x; i < kBq; i += kSimtThreads) {
      const bool valid = i0 + i < p.q_len;
      lse_s[i] = valid ? static_cast<A>(lse_head[i0 + i]) * static_cast<A>(kLog2e) : A(0);
      dsum_s[i] = valid ? dsum_head[i0 + i] : A(0);
    }
    __syncthreads();

    A st[2][2] = {}, dpt[2][2] = {};
    for (int d = 0; d < p.head_dim; ++d) {
      A kv[2], vv[2];
#pragma unroll
      for (int m = 0; m < 2; ++m) {
        kv[m] = k_s[(ty + 16 * m) * kLd + d];
        vv[m] = v_s[(ty + 16 * m) * kLd + d];
      }
#pragma unroll
      for (int n = 0; n < 2; ++n) {
        const A qv = q_s[(tx + 16 * n) * kLd + d];
        const A ov = do_s[(tx + 16 * n) * kLd + d];
#pragma unroll
        for (int m = 0; m < 2; ++m) {
          st[m][n] += kv[m] * qv;
          dpt[m][n] += vv[m] * ov;
        }
      }
    }
#pragma unroll
    for (int m = 0; m < 2; ++m) {
      const int j = k0 + ty + 16 * m;
#pragma unroll
      for (int n = 0; n < 2; ++n) {
        const int ii = tx + 16 * n;
        const int i = i0 + ii;
        const bool valid = kept[m] && i < p.q_len && (!p.causal || j <= i);
        const A prob = valid ? exp2_acc(st[m][n] * c - lse_s[ii]) : A(0);
        pt_s[(ty + 16 * m) * kPLd + ii] = prob;
        dst_s[(ty + 16 * m) * kPLd + ii] = valid ? prob * (dpt[m][n] - dsum_s[ii]) : A(0);
      }
    }
    __syncwarp();
    for (int i = 0; i < kBq; ++i) {
      A ov[kCols], qv[kCols];
#pragma unroll
      for (int cc = 0; cc < kCols; ++cc) {
        ov[cc] = do_s[i * kLd + tx + 16 * cc];
        qv[cc] = q_s[i * kLd + tx + 16 * cc];
      }
#pragma unroll
      for (int m = 0; m < 2; ++m) {
        const A prob = pt_s[(ty + 16 * m) * kPLd + i];
        const A ds = dst_s[(ty + 16 * m) * kPLd + i];
#pragma unroll
        for (int cc = 0; cc < kCols; ++cc) {
          dv[m][cc] += prob * ov[cc];
          dk[m][cc] += ds * qv[cc];
        }
      }
    }
  }

  const A scale = static_cast<A>(p.scale);
  T* dk_head = head_ptr<T>(p.grad_k, b, h);
  T* dv_head = head_ptr<T>(p.grad_v, b, h);
#pragma unroll
  for (int m = 0; m < 2; ++m) {
    const int j = k0 + ty + 16 * m;
    if (j >= p.kv_len) continue;
#pragma unroll
    for (int cc = 0; cc < kCols; ++cc) {
      const int d = tx + 16 * cc;
      if (d >= p.head_dim) continue;
      dk_head[static_cast<int64_t>(j) * p.grad_k.stride_l + d] = from_acc<T>(dk[m][cc] * scale);
      dv_head[static_cast<int64_t>(j) * p.grad_v.stride_l + d] = from_acc<T>(dv[m][cc]);
    }
  }
}

template <typename A, int D_MAX, int RM>
struct SimtDqTiles {
  static constexpr int kRows = 16 * RM;
  static constexpr int kLd = D_MAX + 1;
  static constexpr size_t smem_bytes() {
    return (2 * kRows * kLd + 2 * kSimtKeys * kLd + kRows * (kSimtKeys + 1)) * sizeof(A) +
           kSimtKeys;
  }
};

template <typename T, int D_MAX, int RM>
__global__ void __launch_bounds__(kSimtThreads) attention_backward_dq_simt(Params p) {
  using A = acc_t<T>;
  using Tiles = SimtDqTiles<A, D_MAX, RM>;
  constexpr int kRows = Tiles::kRows, kLd = Tiles::kLd, kBc = kSimtKeys, kPLd = kSimtKeys + 1;
  constexpr int kCols = D_MAX / 16;
  extern __shared__ __align__(16) unsigned char smem[];
  A* q_s = reinterpret_cast<A*>(smem);  // [kRows][kLd]
  A* do_s = q_s + kRows * kLd;          // [kRows][kLd]
  A* k_s = do_s + kRows * kLd;          // [kBc][kLd]
  A* v_s = k_s + kBc * kLd;             // [kBc][kLd]
  A* ds_s = v_s + kBc * kLd;            // [kRows][kPLd]
  uint8_t* keep_s = reinterpret_cast<uint8_t*>(ds_s + kRows * kPLd);

  const int ty = threadIdx.x >> 4, tx = threadIdx.x & 15;
  const int q0 = blockIdx.x * kRows, h = blockIdx.y, b = blockIdx.z;
  const int64_t bh = static_cast<int64_t>(b) * p.heads + h;
  const T* k_head = head_ptr<T>(p.k, b, h);
  const T* v_head = head_ptr<T>(p.v, b, h);
  const int kv_end = p.causal ? min(p.kv_len, q0 + kRows) : p.kv_len;
  const int tiles = (kv_end + kBc - 1) / kBc;
  const A c = static_cast<A>(p.scale_log2);

  load_tile_simt<T, A, D_MAX>(q_s, head_ptr<T>(p.q, b, h), p.q.stride_l, q0, kRows, p.q_len,
                              p.head_dim);
  load_tile_simt<T, A, D_MAX>(do_s, head_ptr<T>(p.grad_out, b, h), p.grad_out.stride_l, q0, kRows,
                              p.q_len, p.head_dim);
  A lse2[RM], dsum[RM];
#pragma unroll
  for (int m = 0; m < RM; ++m) {
    const int i = q0 + ty + 16 * m;
    const bool valid = i < p.q_len;
    lse2[m] = valid ? static_cast<A>(static_cast<const lse_t<T>*>(p.lse)[bh * p.q_len + i]) *
                          static_cast<A>(kLog2e)
                    : A(0);
    dsum[m] = valid ? static_cast<const A*>(p.dsum)[bh * p.q_len + i] : A(0);
  }
  A dq[RM][kCols] = {};

  for (int t = 0; t < tiles; ++t) {
    const int j0 = t * kBc;
    __syncthreads();
    load_tile_simt<T, A, D_MAX>(k_s, k_head, p.k.stride_l, j0, kBc, p.kv_len, p.head_dim);
    load_tile_simt<T, A, D_MAX>(v_s, v_head, p.v.stride_l, j0, kBc, p.kv_len, p.head_dim);
    for (int j = threadIdx.x; j < kBc; j += kSimtThreads) keep_s[j] = key_kept(p, b, j0 + j);
    __syncthreads();

    A s[RM][2] = {}, dp[RM][2] = {};
    for (int d = 0; d < p.head_dim; ++d) {
      A qv[RM], ov[RM];
#pragma unroll
      for (int m = 0; m < RM; ++m) {
        qv[m] = q_s[(ty + 16 * m) * kLd + d];
        ov[m] = do_s[(ty + 16 * m) * kLd + d];
      }
#pragma unroll
      for (int n = 0; n < 2; ++n) {
        const A kv = k_s[(tx + 16 * n) * kLd + d];
        const A vv = v_s[(tx + 16 * n) * kLd + d];
#pragma unroll
        for (int m = 0; m < RM; ++m) {
          s[m][n] += qv[m] * kv;
          dp[m][n] += ov[m] * vv;
        }
      }
    }
#pragma unroll
    for (int m = 0; m < RM; ++m) {
      const int i = q0 + ty + 16 * m;
#pragma unroll
      for (int n = 0; n < 2; ++n) {
        const int jj = tx + 16 * n;
        const bool valid = keep_s[jj] && (!p.causal || j0 + jj <= i);
        const A prob = valid ? exp2_acc(s[m][n] * c - lse2[m]) : A(0);
        ds_s[(ty + 16 * m) * kPLd + jj] = valid ? prob * (dp[m][n] - dsum[m]) : A(0);
      }
    }
    __syncwarp();
    for (int j = 0; j < kBc; ++j) {
      A kv[kCols];
#pragma unroll
      for (int cc = 0; cc < kCols; ++cc) kv[cc] = k_s[j * kLd + tx + 16 * cc];
#pragma unroll
      for (int m = 0; m < RM; ++m) {
        const A ds = ds_s[(ty + 16 * m) * kPLd + j];
#pragma unroll
        for (int cc = 0; cc < kCols; ++cc) dq[m][cc] += ds * kv[cc];
      }
    }
  }

  const A scale = static_cast<A>(p.scale);
  T* dq_head = head_ptr<T>(p.grad_q, b, h);
#pragma unroll
  for (int m = 0; m < RM; ++m) {
    const int i = q0 + ty + 16 * m;
    if (i >= p.q_len) continue;
#pragma unroll
    for (int cc = 0; cc < kCols; ++cc) {
      const int d = tx + 16 * cc;
      if (d < p.head_dim)
        dq_head[static_cast<int64_t>(i) * p.grad_q.stride_l + d] = from_acc<T>(dq[m][cc] * scale);
    }
  }
}

// =============================================================================================
// Host side
// =============================================================================================

Params make_params(const AttentionArgs& a, const char* op) {
  for (int64_t v : {a.batch, a.heads})
    if (v > 65535)
      throw std::runtime_error(std::string(op) +
                               ": batch and heads must be at most 65535 (grid "
                               "limits), got batch " +
                               std::to_string(a.batch) + ", heads " + std::to_string(a.heads));
  for (int64_t v : {a.q_len, a.kv_len})
    if (v > (int64_t(1) << 30))
      throw std::runtime_error(std::string(op) + ": sequence length " + std::to_string(v) +
                               " is too long for the CUDA kernel");
  if (a.head_dim < 1 || a.head_dim > kAttentionMaxHeadDim)
    throw std::runtime_error(std::string(op) + ": head dim " + std::to_string(a.head_dim) +
                             " is outside the CUDA kernel's range [1, " +
                             std::to_string(kAttentionMaxHeadDim) + "]");
  Params p{};
  p.batch = static_cast<int>(a.batch);
  p.heads = static_cast<int>(a.heads);
  p.q_len = static_cast<int>(a.q_len);
  p.kv_len = static_cast<int>(a.kv_len);
  p.head_dim = static_cast<int>(a.head_dim);
  p.scale = a.scale;
  p.scale_log2 = a.scale * kLog2e;
  p.causal = a.causal;
  p.key_keep = a.key_keep;
  p.key_keep_stride_b = a.key_keep_stride_b;
  p.q = a.q;
  p.k = a.k;
  p.v = a.v;
  p.out = a.out;
  p.grad_out = a.grad_out;
  p.grad_q = a.grad_q;
  p.grad_k = a.grad_k;
  p.grad_v = a.grad_v;
  p.lse = a.lse;
  return p;
}

// 16-byte row alignment for cp.async and vector stores: base pointer and every stride.
bool rows_aligned(const AttentionOperand& t) {
  return is_aligned(t.data, 16) && t.stride_b % 8 == 0 && t.stride_h % 8 == 0 &&
         t.stride_l % 8 == 0;
}

bool use_tensor_cores(const AttentionArgs& a, bool backward) {
  if (a.dtype != DType::BF16 && a.dtype != DType::F16) return false;
  if (a.head_dim % 8 != 0) return false;
  bool ok = rows_aligned(a.q) && rows_aligned(a.k) && rows_aligned(a.v);
  if (!backward) return ok && rows_aligned(a.out);
  return ok && rows_aligned(a.grad_out) && rows_aligned(a.grad_q) && rows_aligned(a.grad_k) &&
         rows_aligned(a.grad_v);
}

int head_dim_bucket(int64_t d) {
  return d <= 32 ? 32 : d <= 64 ? 64 : 128;
}

// Opts the kernel into `bytes` of dynamic shared memory (once per kernel) and launches it.
template <typename Kernel>
void launch(Kernel kernel, dim3 grid, int threads, size_t bytes, const Params& p,
            const char* what) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return;
  if (bytes > 48 * 1024)
    DISTILL_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(bytes)));
  kernel<<<grid, threads, bytes, current_stream()>>>(p);
  check_launch(what);
}

unsigned tiles_of(int64_t n, int64_t tile) {
  return static_cast<unsigned>((n + tile - 1) / tile);
}

template <typename T, int D_MAX>
void forward_tc(const Params& p) {
  const dim3 grid(tiles_of(p.q_len, kTcRows), p.heads, p.batch);
  launch(attention_forward_tc<T, D_MAX>, grid, kTcThreads,
         TcForwardTiles<D_MAX>::smem_bytes(sizeof(T)), p, "attention_forward (tensor cores)");
}

template <typename T, int D_MAX>
void forward_simt(const Params& p) {
  using A = acc_t<T>;
  // Fewer query rows per CTA where the tiles would not fit shared memory comfortably.
  if constexpr (D_MAX == 128 || sizeof(A) == 8) {
    const dim3 grid(tiles_of(p.q_len, 32), p.heads, p.batch);
    launch(attention_forward_simt<T, D_MAX, 2>, grid, kSimtThreads,
           SimtForwardTiles<A, D_MAX, 2>::smem_bytes(), p, "attention_forward (SIMT)");
  } else {
    const dim3 grid(tiles_of(p.q_len, 64), p.heads, p.batch);
    launch(attention_forward_simt<T, D_MAX, 4>, grid, kSimtThreads,
           SimtForwardTiles<A, D_MAX, 4>::smem_bytes(), p, "attention_forward (SIMT)");
  }
}

template <typename T, int D_MAX>
void backward_tc(const Params& p) {
  launch(attention_backward_dkdv_tc<T, D_MAX>, dim3(tiles_of(p.kv_len, kTcRows), p.heads, p.batch),
         kTcThreads, TcDkDvTiles<D_MAX>::smem_bytes(sizeof(T)), p,
         "attention_backward dk/dv (tensor cores)");
  launch(attention_backward_dq_tc<T, D_MAX>, dim3(tiles_of(p.q_len, kTcRows), p.heads, p.batch),
         kTcThreads, TcDqTiles<D_MAX>::smem_bytes(sizeof(T)), p,
         "attention_backward dq (tensor cores)");
}

template <typename T, int D_MAX>
void backward_simt(const Params& p) {
  using A = acc_t<T>;
  launch(attention_backward_dkdv_simt<T, D_MAX>,
         dim3(tiles_of(p.kv_len, SimtDkDvTiles<A, D_MAX>::kKeys), p.heads, p.batch), kSimtThreads,
         SimtDkDvTiles<A, D_MAX>::smem_bytes(), p, "attention_backward dk/dv (SIMT)");
  if constexpr (D_MAX == 128 || sizeof(A) == 8) {
    launch(attention_backward_dq_simt<T, D_MAX, 2>, dim3(tiles_of(p.q_len, 32), p.heads, p.batch),
           kSimtThreads, SimtDqTiles<A, D_MAX, 2>::smem_bytes(), p, "attention_backward dq (SIMT)");
  } else {
    launch(attention_backward_dq_simt<T, D_MAX, 4>, dim3(tiles_of(p.q_len, 64), p.heads, p.batch),
           kSimtThreads, SimtDqTiles<A, D_MAX, 4>::smem_bytes(), p, "attention_backward dq (SIMT)");
  }
}

// Calls fn(TypeTag<T>{}, std::integral_constant<int, D_MAX>{}) for the args' dtype and head dim.
template <typename Fn>
void dispatch_attention(const AttentionArgs& a, const char* op, Fn&& fn) {
  dispatch_floating(a.dtype, op, [&](auto tag) {
    switch (head_dim_bucket(a.head_dim)) {
      case 32:
        fn(tag, std::integral_constant<int, 32>{});
        break;
      case 64:
        fn(tag, std::integral_constant<int, 64>{});
        break;
      default:
        fn(tag, std::integral_constant<int, 128>{});
        break;
    }
  });
}

}  // namespace

void attention_forward(const AttentionArgs& args) {
  if (args.batch * args.heads * args.q_len == 0) return;
  const Params p = make_params(args, "attention_forward");
  const bool tensor_cores = use_tensor_cores(args, /*backward=*/false);
  NvtxRange range("attention_forward");
  dispatch_attention(args, "attention_forward", [&](auto tag, auto d_max) {
    using T = typename decltype(tag)::type;
    constexpr int kDMax = decltype(d_max)::value;
    if constexpr (std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>) {
      if (tensor_cores) {
        forward_tc<T, kDMax>(p);
        return;
      }
    }
    forward_simt<T, kDMax>(p);
  });
}

void attention_backward(const AttentionArgs& args) {
  if (args.batch * args.heads * args.q_len * args.kv_len == 0) return;  // op layer zero-fills
  Params p = make_params(args, "attention_backward");
  const bool tensor_cores = use_tensor_cores(args, /*backward=*/true);
  NvtxRange range("attention_backward");
  const int64_t rows = args.batch * args.heads * args.q_len;
  const size_t acc_bytes = args.dtype == DType::F64 ? sizeof(double) : sizeof(float);
  DeviceScratch dsum(static_cast<size_t>(rows) * acc_bytes);
  p.dsum = dsum.as<void>();
  dispatch_attention(args, "attention_backward", [&](auto tag, auto d_max) {
    using T = typename decltype(tag)::type;
    constexpr int kDMax = decltype(d_max)::value;
    attention_dsum_kernel<T><<<grid_for(rows * 32), kBlockSize, 0, current_stream()>>>(p);
    check_launch("attention_backward (rowsum(dO * O))");
    if constexpr (std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>) {
      if (tensor_cores) {
        backward_tc<T, kDMax>(p);
        return;
      }
    }
    backward_simt<T, kDMax>(p);
  });
}

}  // namespace distill::kernels::cuda
