// Native CUDA convolution: implicit GEMM, no im2col buffer in global memory.
//
//   forward  C[m = (n, p, q)][k]        = sum over (r, s, c) of x[n, c, h, w] * w[k, c, r, s]
//   dgrad    C[m = (n, h, w)][c]        = sum over (r, s, k) of dy[n, k, p, q] * w[k, c, r, s]
//   wgrad    C[k][(r, s, c)]            = sum over (n, p, q) of dy[n, k, p, q] * x[n, c, h, w]
//
// Operands are gathered tile by tile straight into shared memory. The reduction runs over channels
// fastest, so activations are first copied to channels-last (NHWC, same size as the input: a
// layout change, not an im2col) and every 16-byte run of channels is one cp.async. Pointwise
// convolutions (1x1, stride 1, no padding) need no layout change: they are batched GEMMs on NCHW.
// The data gradient of a strided convolution is split by output phase (h mod stride, w mod
// stride): each phase is a dense implicit GEMM over only the taps that reach it, so no multiply is
// spent on the zeros a stride inserts; a non-overlapping convolution (patch embedding) instead
// puts (c, r, s) in the GEMM's N dimension and is a single GEMM. The weight gradient reduces over
// N*P*Q, split over blockIdx.z into an fp32 workspace and summed by a second kernel
// (deterministic).
//
// bf16 runs on tensor cores (mma.sync m16n8k16, fp32 accumulation, ldmatrix fragments, a
// 4-stage cp.async pipeline); f32 runs on CUDA cores with the same loaders (fp32 FMA, no TF32).
// Channel counts that are not a multiple of the 16-byte vector fall back to scalar gathers.
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/conv.h"
#include "kernels/cuda/cuda_utils.cuh"

namespace distill::kernels::cuda {

namespace {

constexpr int kMaxKernelExtent = 64;  // largest R or S the data-gradient tap tables hold

// ---------------------------------------------------------------------------------------------
// Small device helpers

// Unsigned division by a runtime constant through a multiply-high (dividends < 2^31).
struct FastDiv {
  uint32_t divisor = 1, multiplier = 0, shift = 0;
  FastDiv() = default;
  explicit FastDiv(int d) : divisor(static_cast<uint32_t>(d)) {
    if (divisor <= 1) return;
    uint32_t log2_ceil = 0;
    while ((uint64_t{1} << log2_ceil) < divisor) ++log2_ceil;
    const uint64_t p = 31 + log2_ceil;
    multiplier = static_cast<uint32_t>(((uint64_t{1} << p) + divisor - 1) / divisor);
    shift = static_cast<uint32_t>(p - 32);
  }
  __device__ __forceinline__ int div(int n) const {
    return divisor == 1 ? n
                        : static_cast<int>(__umulhi(static_cast<uint32_t>(n), multiplier) >> shift);
  }
};

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int src_bytes = valid ? 16 : 0;  // 0: fill the 16 bytes with zeros, read nothing
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Storage <-> float: bf16 travels as raw uint16_t bits, f32 as float.
__device__ __forceinline__ float elem_to_float(uint16_t v) {
  return __bfloat162float(__ushort_as_bfloat16(v));
}
__device__ __forceinline__ float elem_to_float(float v) {
  return v;
}
template <typename E>
__device__ __forceinline__ E float_to_elem(float v);
template <>
__device__ __forceinline__ uint16_t float_to_elem<uint16_t>(float v) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(v));
}
template <>
__device__ __forceinline__ float float_to_elem<float>(float v) {
  return v;
}

// ---------------------------------------------------------------------------------------------
// Tile configurations. K-major: a tile row holds BK consecutive reduction elements of one M (or
// N) index; MN-major: a tile row holds consecutive M (or N) indices of one reduction index. Rows
// are padded so that ldmatrix / the FMA loop read shared memory without bank conflicts.

template <int BM_, int BN_, bool A_KMAJOR_, bool B_KMAJOR_>
struct TcCfg {
  using Elem = uint16_t;
  static constexpr int BM = BM_, BN = BN_, BK = 32, STAGES = 4, ELEMS = 8, PAD = 8;
  static constexpr int WM = 64, WN = 32;
  static constexpr int WARPS_M = BM / WM, WARPS_N = BN / WN;
  static constexpr int THREADS = 32 * WARPS_M * WARPS_N;
  static constexpr bool A_KMAJOR = A_KMAJOR_, B_KMAJOR = B_KMAJOR_;
  static constexpr int A_PITCH = A_KMAJOR ? BK + PAD : BM + PAD;
  static constexpr int B_PITCH = B_KMAJOR ? BK + PAD : BN + PAD;
  static constexpr int A_STAGE = (A_KMAJOR ? BM : BK) * A_PITCH;
  static constexpr int B_STAGE = (B_KMAJOR ? BN : BK) * B_PITCH;
  static constexpr int EPI_LD = BM + 4;  // fp32 staging of the output tile, [BN][BM + 4]
  static constexpr int SMEM_BYTES =
      std::max((A_STAGE + B_STAGE) * STAGES * static_cast<int>(sizeof(Elem)), BN* EPI_LD * 4);
};

template <bool A_KMAJOR_, bool B_KMAJOR_>
struct SimtCfg {
  using Elem = float;
  static constexpr int BM = 128, BN = 128, BK = 16, STAGES = 3, ELEMS = 4, PAD = 4;
  static constexpr int THREADS = 256, TM = 8, TN = 8;  // 16 x 16 threads, 8 x 8 outputs each
  static constexpr bool A_KMAJOR = A_KMAJOR_, B_KMAJOR = B_KMAJOR_;
  static constexpr int A_PITCH = A_KMAJOR ? BK + PAD : BM + PAD;
  static constexpr int B_PITCH = B_KMAJOR ? BK + PAD : BN + PAD;
  static constexpr int A_STAGE = (A_KMAJOR ? BM : BK) * A_PITCH;
  static constexpr int B_STAGE = (B_KMAJOR ? BN : BK) * B_PITCH;
  static constexpr int EPI_LD = BM + 4;
  static constexpr int SMEM_BYTES =
      std::max((A_STAGE + B_STAGE) * STAGES * static_cast<int>(sizeof(Elem)), BN* EPI_LD * 4);
};

// Which 16-byte chunks of an operand tile a thread copies. A thread's chunks all share one
// column, so per-column decoding happens once per k-tile.
template <class Cfg, int ROWS, bool KMAJOR>
struct TileMap {
  static constexpr int E = Cfg::ELEMS;
  static constexpr int CPR = KMAJOR ? Cfg::BK / E : ROWS / E;  // chunks per shared-memory row
  static constexpr int CHUNKS = (KMAJOR ? ROWS : Cfg::BK) * CPR;
  static constexpr int PER_THREAD = CHUNKS / Cfg::THREADS;
  static constexpr int PITCH = KMAJOR ? Cfg::BK + Cfg::PAD : ROWS + Cfg::PAD;
  static_assert(CHUNKS % Cfg::THREADS == 0, "tile chunks must divide evenly over the threads");
  static_assert(Cfg::THREADS % CPR == 0, "a thread's chunks must share their column");
  __device__ __forceinline__ static int row(int i) {
    return (static_cast<int>(threadIdx.x) + i * Cfg::THREADS) / CPR;
  }
  __device__ __forceinline__ static int col() { return (static_cast<int>(threadIdx.x) % CPR) * E; }
  __device__ __forceinline__ static int smem_offset(int i) { return row(i) * PITCH + col(); }
};

// E values assembled in registers, stored to shared memory as one 16-byte write.
template <typename E>
union Chunk {
  uint4 vec;
  E v[16 / sizeof(E)];
};

// ---------------------------------------------------------------------------------------------
// Main loops

// Multi-stage pipeline: while tile `it` is multiplied, tiles it+1 .. it+STAGES-1 are in flight.
// Scalar loaders store synchronously into a stage nobody reads until a later barrier, so the same
// loop serves both.
template <class Cfg, class Core, class AL, class BL, class P>
__device__ __forceinline__ void mainloop(Core& core, const AL& a, const BL& b, const P& p,
                                         int kt_begin, int kt_end, typename Cfg::Elem* smem) {
  using E = typename Cfg::Elem;
  E* As = smem;
  E* Bs = smem + Cfg::STAGES * Cfg::A_STAGE;
  const int tiles = kt_end - kt_begin;
#pragma unroll
  for (int s = 0; s < Cfg::STAGES - 1; ++s) {
    if (s < tiles) {
      a.load(As + s * Cfg::A_STAGE, kt_begin + s, p);
      b.load(Bs + s * Cfg::B_STAGE, kt_begin + s, p);
    }
    cp_async_commit();
  }
  for (int it = 0; it < tiles; ++it) {
    cp_async_wait<Cfg::STAGES - 2>();
    __syncthreads();  // tile `it` visible to all; stage (it - 1) % STAGES free for reuse
    const int next = it + Cfg::STAGES - 1;
    if (next < tiles) {
      const int stage = next % Cfg::STAGES;
      a.load(As + stage * Cfg::A_STAGE, kt_begin + next, p);
      b.load(Bs + stage * Cfg::B_STAGE, kt_begin + next, p);
    }
    cp_async_commit();
    const int stage = it % Cfg::STAGES;
    core.compute(As + stage * Cfg::A_STAGE, Bs + stage * Cfg::B_STAGE);
  }
  cp_async_wait<0>();
}

// Tensor-core warp tiles of 64 x 32: 4 x 4 mma.m16n8k16 per 16-deep k step.
template <class Cfg>
struct TcCore {
  static constexpr int MI = Cfg::WM / 16, NI = Cfg::WN / 8;
  float acc[MI][NI][4];

  __device__ __forceinline__ TcCore() {
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int j = 0; j < NI; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;
  }

  __device__ __forceinline__ void compute(const uint16_t* As, const uint16_t* Bs) {
    const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
    const int wm0 = (warp % Cfg::WARPS_M) * Cfg::WM, wn0 = (warp / Cfg::WARPS_M) * Cfg::WN;
#pragma unroll
    for (int ks = 0; ks < Cfg::BK; ks += 16) {
      uint32_t af[MI][4];
      uint32_t bf[NI][2];
#pragma unroll
      for (int mi = 0; mi < MI; ++mi) {
        if constexpr (Cfg::A_KMAJOR) {
          const uint16_t* src =
              As + (wm0 + mi * 16 + (lane % 16)) * Cfg::A_PITCH + ks + (lane / 16) * 8;
          ldmatrix_x4(af[mi], src);
        } else {
          const uint16_t* src = As + (ks + (lane % 8) + (lane / 16) * 8) * Cfg::A_PITCH + wm0 +
                                mi * 16 + ((lane / 8) % 2) * 8;
          ldmatrix_x4_trans(af[mi], src);
        }
      }
#pragma unroll
      for (int nj = 0; nj < NI / 2; ++nj) {
        uint32_t r[4];
        if constexpr (Cfg::B_KMAJOR) {
          const uint16_t* src = Bs + (wn0 + nj * 16 + (lane % 8) + (lane / 16) * 8) * Cfg::B_PITCH +
                                ks + ((lane / 8) % 2) * 8;
          ldmatrix_x4(r, src);
        } else {
          const uint16_t* src = Bs + (ks + (lane % 8) + ((lane / 8) % 2) * 8) * Cfg::B_PITCH + wn0 +
                                nj * 16 + (lane / 16) * 8;
          ldmatrix_x4_trans(r, src);
        }
        bf[2 * nj][0] = r[0];
        bf[2 * nj][1] = r[1];
        bf[2 * nj + 1][0] = r[2];
        bf[2 * nj + 1][1] = r[3];
      }
#pragma unroll
      for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) mma_bf16(acc[mi][ni], af[mi], bf[ni][0], bf[ni][1]);
    }
  }

  // f(row, col, value) for every accumulator, row/col relative to the CTA tile.
  template <class F>
  __device__ __forceinline__ void for_each(F&& f) const {
    const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
    const int wm0 = (warp % Cfg::WARPS_M) * Cfg::WM, wn0 = (warp / Cfg::WARPS_M) * Cfg::WN;
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int row = wm0 + mi * 16 + lane / 4 + half * 8;
#pragma unroll
        for (int ni = 0; ni < NI; ++ni)
#pragma unroll
          for (int e = 0; e < 2; ++e)
            f(row, wn0 + ni * 8 + (lane % 4) * 2 + e, acc[mi][ni][half * 2 + e]);
      }
  }
};

// CUDA-core fp32 tiles: each thread owns rows tm + 16 i and columns tn + 16 j.
template <class Cfg>
struct SimtCore {
  float acc[Cfg::TM][Cfg::TN];

  __device__ __forceinline__ SimtCore() {
#pragma unroll
    for (int i = 0; i < Cfg::TM; ++i)
#pragma unroll
      for (int j = 0; j < Cfg::TN; ++j) acc[i][j] = 0.f;
  }

  __device__ __forceinline__ void compute(const float* As, const float* Bs) {
    const int tm = static_cast<int>(threadIdx.x) % 16, tn = static_cast<int>(threadIdx.x) / 16;
#pragma unroll 4
    for (int k = 0; k < Cfg::BK; ++k) {
      float a[Cfg::TM], b[Cfg::TN];
#pragma unroll
      for (int i = 0; i < Cfg::TM; ++i)
        a[i] = Cfg::A_KMAJOR ? As[(tm + 16 * i) * Cfg::A_PITCH + k]
                             : As[k * Cfg::A_PITCH + tm + 16 * i];
#pragma unroll
      for (int j = 0; j < Cfg::TN; ++j)
        b[j] = Cfg::B_KMAJOR ? Bs[(tn + 16 * j) * Cfg::B_PITCH + k]
                             : Bs[k * Cfg::B_PITCH + tn + 16 * j];
#pragma unroll
      for (int i = 0; i < Cfg::TM; ++i)
#pragma unroll
        for (int j = 0; j < Cfg::TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
  }

  template <class F>
  __device__ __forceinline__ void for_each(F&& f) const {
    const int tm = static_cast<int>(threadIdx.x) % 16, tn = static_cast<int>(threadIdx.x) / 16;
#pragma unroll
    for (int i = 0; i < Cfg::TM; ++i)
#pragma unroll
      for (int j = 0; j < Cfg::TN; ++j) f(tm + 16 * i, tn + 16 * j, acc[i][j]);
  }
};

// NCHW outputs are contiguous along the tile's M (pixel) dimension, which the mma fragment layout
// scatters over 4 columns per store. The tile is staged through shared memory (the pipeline's,
// free once the main loop has drained) and written back with consecutive threads on consecutive
// pixels, so every warp store is one contiguous run.
// Each thread writes one fixed row (pixel) of the tile, so the pixel's output offset is decoded
// once: row_base(row) returns it (negative: row outside the problem), store(base, col, v) writes.
template <class Cfg, class Core, class RowBase, class Store>
__device__ __forceinline__ void staged_epilogue(const Core& core, void* smem_raw,
                                                RowBase&& row_base, Store&& store) {
  static_assert(Cfg::THREADS % Cfg::BM == 0, "a thread must keep one row of the tile");
  float* tile = static_cast<float*>(smem_raw);
  __syncthreads();  // every warp is done reading the last pipeline stage
  core.for_each([&](int row, int col, float v) { tile[col * Cfg::EPI_LD + row] = v; });
  __syncthreads();
  const int row = static_cast<int>(threadIdx.x) % Cfg::BM;
  const int64_t base = row_base(row);
  if (base < 0) return;
  for (int col = static_cast<int>(threadIdx.x) / Cfg::BM; col < Cfg::BN;
       col += Cfg::THREADS / Cfg::BM)
    store(base, col, tile[col * Cfg::EPI_LD + row]);
}

// ---------------------------------------------------------------------------------------------
// Problem parameters shared by the implicit GEMMs (all GEMM indices fit in int; checked on host).

struct ConvDims {
  int N, C, H, W, K, R, S, P, Q;
  int sh, sw, ph, pw, dh, dw;
  int PQ, SC;
  FastDiv div_pq, div_q, div_sc, div_c, div_k;
};

struct FwdParams {
  ConvDims d;
  const void* x;     // NHWC [N, H, W, C]
  const void* w;     // [K, R, S, C]
  const void* bias;  // [K] or null
  void* y;           // NCHW [N, K, P, Q]
  int M, Ngemm, Kg;  // N*P*Q, K, R*S*C
};

struct DgradParams {
  ConvDims d;
  const void* dy;  // NHWC [N, P, Q, K]
  const void* w;   // [C, R, S, K]
  void* dx;        // NCHW [N, C, H, W]
};

struct WgradParams {
  ConvDims d;
  const void* dy;    // NHWC [N, P, Q, K]
  const void* x;     // NHWC [N, H, W, C]
  float* ws;         // [splits, K, R*S*C]
  int M, Ngemm, Kg;  // K, R*S*C, N*P*Q
  int tiles_per_split;
};

// Pointwise (1x1, stride 1, unpadded) convolutions as GEMMs batched over images, on NCHW memory.
// Operand element (row, kk) of image b lives at base + b * batch_stride + row * ld + kk (K-major)
// or base + b * batch_stride + kk * ld + row (MN-major).
struct PointwiseParams {
  const void* a;
  int64_t a_batch, a_ld;
  const void* b;
  int64_t b_batch, b_ld;
  void* c;  // c(m, n) of image b at c + b * c_batch + n * c_ld + m
  int64_t c_batch, c_ld;
  const void* bias;  // [Ngemm] or null
  float* ws;         // reduce-over-images mode: [splits, M, Ngemm]
  int M, Ngemm, Kg;  // per image
  int images, tiles_per_image, images_per_split;
};

// ---------------------------------------------------------------------------------------------
// Loaders

// x gathered by (output pixel, (r, s, c)), the pixel along the tile rows (forward A operand,
// K-major) — shared with the weight gradient's B operand below through gather_pixel_rsc.
// Vector mode needs the whole 16-byte run to be contiguous, aligned and uniformly in or out of
// the image (see vector_gather_ok on the host).
template <typename E>
__device__ __forceinline__ bool pixel_tap_address(const ConvDims& d, int n_img, int h0, int w0,
                                                  int r, int s, int c, const E* x, const E** src) {
  const int h = h0 + r * d.dh, w = w0 + s * d.dw;
  if (static_cast<unsigned>(h) >= static_cast<unsigned>(d.H) ||
      static_cast<unsigned>(w) >= static_cast<unsigned>(d.W))
    return false;
  *src = x + ((static_cast<int64_t>(n_img) * d.H + h) * d.W + w) * d.C + c;
  return true;
}

struct RSC {
  int r, s, c;
};
__device__ __forceinline__ RSC decode_rsc(const ConvDims& d, int kk) {
  const int r = d.div_sc.div(kk);
  const int rem = kk - r * d.SC;
  const int s = d.div_c.div(rem);
  return {r, s, rem - s * d.C};
}

template <class Cfg, bool VEC>
struct FwdA {
  using E = typename Cfg::Elem;
  using Map = TileMap<Cfg, Cfg::BM, true>;
  int n_img[Map::PER_THREAD], h0[Map::PER_THREAD], w0[Map::PER_THREAD];

  __device__ __forceinline__ FwdA(const FwdParams& p, int m0) {
#pragma unroll
    for (int i = 0; i < Map::PER_THREAD; ++i) {
      const int m = m0 + Map::row(i);
      if (m < p.M) {
        const int n = p.d.div_pq.div(m);
        const int pq = m - n * p.d.PQ;
        const int pp = p.d.div_q.div(pq);
        n_img[i] = n;
        h0[i] = pp * p.d.sh - p.d.ph;
        w0[i] = (pq - pp * p.d.Q) * p.d.sw - p.d.pw;
      } else {
        n_img[i] = -1;
        h0[i] = w0[i] = 0;
      }
    }
  }

  __device__ __forceinline__ void load(E* stage, int kt, const FwdParams& p) const {
    const E* x = static_cast<const E*>(p.x);
    const int kk0 = kt * Cfg::BK + Map::col();
    if constexpr (VEC) {
      const bool k_ok = kk0 < p.Kg;
      const RSC t = decode_rsc(p.d, k_ok ? kk0 : 0);
#pragma unroll
      for (int i = 0; i < Map::PER_THREAD; ++i) {
        const E* src = x;
        const bool ok = k_ok && n_img[i] >= 0 &&
                        pixel_tap_address(p.d, n_img[i], h0[i], w0[i], t.r, t.s, t.c, x, &src);
        cp_async16(stage + Map::smem_offset(i), src, ok);
      }
    } else {
      Chunk<E> chunk[Map::PER_THREAD];
#pragma unroll
      for (int e = 0; e < Map::E; ++e) {
        const int kk = kk0 + e;
        const bool k_ok = kk < p.Kg;
        const RSC t = decode_rsc(p.d, k_ok ? kk : 0);
#pragma unroll
        for (int i = 0; i < Map::PER_THREAD; ++i) {
          const E* src = x;
          const bool ok = k_ok && n_img[i] >= 0 &&
                          pixel_tap_address(p.d, n_img[i], h0[i], w0[i], t.r, t.s, t.c, x, &src);
          chunk[i].v[e] = ok ? *src : E(0);
        }
      }
#pragma unroll
      for (int i = 0; i < Map::PER_THREAD; ++i)
        *reinterpret_cast<uint4*>(stage + Map::smem_offset(i)) = chunk[i].vec;
    }
  }
};

// A dense row-major [rows, Kg] matrix as a K-major operand (forward weights [K, R*S*C]).
template <class Cfg, int ROWS, bool VEC>
struct DenseKMajor {
  using E = typename Cfg::Elem;
  using Map = TileMap<Cfg, ROWS, true>;
  const E* base;
  int rows, cols, row0;

  __device__ __forceinline__ DenseKMajor(const void* data, int rows_, int cols_, int row0_)
      : base(static_cast<const E*>(data)), rows(rows_), cols(cols_), row0(row0_) {}

  template <class P>
  __device__ __forceinline__ void load(E* stage, int kt, const P&) const {
    const int kk0 = kt * Cfg::BK + Map::col();
#pragma unroll
    for (int i = 0; i < Map::PER_THREAD; ++i) {
      const int row = row0 + Map::row(i);
      const E* src = base + static_cast<int64_t>(row) * cols + kk0;
      if constexpr (VEC) {
        const bool ok = row < rows && kk0 < cols;
        cp_async16(stage + Map::smem_offset(i), ok ? src : base, ok);
      } else {
        Chunk<E> chunk;
#pragma unroll
        for (int e = 0; e < Map::E; ++e)
          chunk.v[e] = (row < rows && kk0 + e < cols) ? src[e] : E(0);
        *reinterpret_cast<uint4*>(stage + Map::smem_offset(i)) = chunk.vec;
      }
    }
  }
};

// Data gradient, one output phase (th, tw) per blockIdx.z. Taps of the phase: r_list/p_off (and
// s_list/q_off) in shared memory, p = i + p_off[tr] for output-gradient row i of the phase.
struct PhaseTaps {
  int nr, ns;
  const int* r_list;
  const int* p_off;
  const int* s_list;
  const int* q_off;
};

struct TapK {
  int tr, ts, k;
};
__device__ __forceinline__ TapK decode_tap_k(const ConvDims& d, const PhaseTaps& taps, int kk) {
  const int t = d.div_k.div(kk);
  const int k = kk - t * d.K;
  const int tr = t / taps.ns;
  return {tr, t - tr * taps.ns, k};
}

template <class Cfg, bool VEC>
struct DgradA {  // dy gathered by (dx pixel of this phase, (tap, k)), K-major
  using E = typename Cfg::Elem;
  using Map = TileMap<Cfg, Cfg::BM, true>;
  PhaseTaps taps;
  int Kg;
  int64_t img_off[Map::PER_THREAD];  // n * P * Q * K, or -1 outside the phase
  int pi[Map::PER_THREAD], qj[Map::PER_THREAD];

  __device__ __forceinline__ DgradA(const DgradParams& p, const PhaseTaps& t, int kg, int m0,
                                    int mp, int hp, int wp)
      : taps(t), Kg(kg) {
#pragma unroll
    for (int i = 0; i < Map::PER_THREAD; ++i) {
      const int m = m0 + Map::row(i);
      if (m < mp) {
        const int n = m / (hp * wp);
        const int rem = m - n * hp * wp;
        img_off[i] = static_cast<int64_t>(n) * p.d.PQ * p.d.K;
        pi[i] = rem / wp;
        qj[i] = rem - pi[i] * wp;
      } else {
        img_off[i] = -1;
        pi[i] = qj[i] = 0;
      }
    }
  }

  __device__ __forceinline__ bool address(const DgradParams& p, int i, const TapK& t,
                                          const E** src) const {
    const int pp = pi[i] + taps.p_off[t.tr], qq = qj[i] + taps.q_off[t.ts];
    if (img_off[i] < 0 || static_cast<unsigned>(pp) >= static_cast<unsigned>(p.d.P) ||
        static_cast<unsigned>(qq) >= static_cast<unsigned>(p.d.Q))
      return false;
    *src = static_cast<const E*>(p.dy) + img_off[i] +
           (static_cast<int64_t>(pp) * p.d.Q + qq) * p.d.K + t.k;
    return true;
  }

  __device__ __forceinline__ void load(E* stage, int kt, const DgradParams& p) const {
    const E* dy = static_cast<const E*>(p.dy);
    const int kk0 = kt * Cfg::BK + Map::col();
    if constexpr (VEC) {
      const bool k_ok = kk0 < Kg;
      const TapK t = decode_tap_k(p.d, taps, k_ok ? kk0 : 0);
#pragma unroll
      for (int i = 0; i < Map::PER_THREAD; ++i) {
        const E* src = dy;
        const bool ok = k_ok && address(p, i, t, &src);
        cp_async16(stage + Map::smem_offset(i), src, ok);
      }
    } else {
      Chunk<E> chunk[Map::PER_THREAD];
#pragma unroll
      for (int e = 0; e < Map::E; ++e) {
        const bool k_ok = kk0 + e < Kg;
        const TapK t = decode_tap_k(p.d, taps, k_ok ? kk0 + e : 0);
#pragma unroll
        for (int i = 0; i < Map::PER_THREAD; ++i) {
          const E* src = dy;
          const bool ok = k_ok && address(p, i, t, &src);
          chunk[i].v[e] = ok ? *src : E(0);
        }
      }
#pragma unroll
      for (int i = 0; i < Map::PER_THREAD; ++i)
        *reinterpret_cast<uint4*>(stage + Map::smem_offset(i)) = chunk[i].vec;
    }
  }
};

template <class Cfg, bool VEC>
struct DgradB {  // weights [C, R, S, K] gathered by (c, (tap, k)), K-major
  using E = typename Cfg::Elem;
  using Map = TileMap<Cfg, Cfg::BN, true>;
  PhaseTaps taps;
  int Kg, n0;

  __device__ __forceinline__ DgradB(const PhaseTaps& t, int kg, int n0_)
      : taps(t), Kg(kg), n0(n0_) {}

  __device__ __forceinline__ const E* address(const DgradParams& p, int c, const TapK& t) const {
    const int r = taps.r_list[t.tr], s = taps.s_list[t.ts];
    return static_cast<const E*>(p.w) +
           ((static_cast<int64_t>(c) * p.d.R + r) * p.d.S + s) * p.d.K + t.k;
  }

  __device__ __forceinline__ void load(E* stage, int kt, const DgradParams& p) const {
    const E* w = static_cast<const E*>(p.w);
    const int kk0 = kt * Cfg::BK + Map::col();
    if constexpr (VEC) {
      const bool k_ok = kk0 < Kg;
      const TapK t = decode_tap_k(p.d, taps, k_ok ? kk0 : 0);
#pragma unroll
      for (int i = 0; i < Map::PER_THREAD; ++i) {
        const int c = n0 + Map::row(i);
        const bool ok = k_ok && c < p.d.C;
        cp_async16(stage + Map::smem_offset(i), ok ? address(p, c, t) : w, ok);
      }
    } else {
      Chunk<E> chunk[Map::PER_THREAD];
#pragma unroll
      for (int e = 0; e < Map::E; ++e) {
        const bool k_ok = kk0 + e < Kg;
        const TapK t = decode_tap_k(p.d, taps, k_ok ? kk0 + e : 0);
#pragma unroll
        for (int i = 0; i < Map::PER_THREAD; ++i) {
          const int c = n0 + Map::row(i);
          chunk[i].v[e] = (k_ok && c < p.d.C) ? *address(p, c, t) : E(0);
        }
      }
#pragma unroll
      for (int i = 0; i < Map::PER_THREAD; ++i)
        *reinterpret_cast<uint4*>(stage + Map::smem_offset(i)) = chunk[i].vec;
    }
  }
};

// Weight gradient A: dy NHWC viewed as [N*P*Q, K], an MN-major operand (k along the tile row).
template <class Cfg, bool VEC>
struct WgradA {
  using E = typename Cfg::Elem;
  using Map = TileMap<Cfg, Cfg::BM, false>;
  int m0;

  __device__ __forceinline__ explicit WgradA(int m0_) : m0(m0_) {}

  __device__ __forceinline__ void load(E* stage, int kt, const WgradParams& p) const {
    const E* dy = static_cast<const E*>(p.dy);
    const int m = m0 + Map::col();
#pragma unroll
    for (int i = 0; i < Map::PER_THREAD; ++i) {
      const int j = kt * Cfg::BK + Map::row(i);
      const E* src = dy + static_cast<int64_t>(j) * p.d.K + m;
      if constexpr (VEC) {
        const bool ok = j < p.Kg && m < p.M;
        cp_async16(stage + Map::smem_offset(i), ok ? src : dy, ok);
      } else {
        Chunk<E> chunk;
#pragma unroll
        for (int e = 0; e < Map::E; ++e) chunk.v[e] = (j < p.Kg && m + e < p.M) ? src[e] : E(0);
        *reinterpret_cast<uint4*>(stage + Map::smem_offset(i)) = chunk.vec;
      }
    }
  }
};

// Weight gradient B: x gathered by ((r, s, c), output pixel j), MN-major ((r, s, c) along the
// tile row). The column's (r, s, c) is fixed for the thread, the pixel changes per k-tile.
template <class Cfg, bool VEC>
struct WgradB {
  using E = typename Cfg::Elem;
  using Map = TileMap<Cfg, Cfg::BN, false>;
  int n_first;  // first (r, s, c) index of this thread's chunks

  __device__ __forceinline__ explicit WgradB(int n0) : n_first(n0 + Map::col()) {}

  __device__ __forceinline__ void load(E* stage, int kt, const WgradParams& p) const {
    const E* x = static_cast<const E*>(p.x);
    const bool vec_n_ok = n_first < p.Ngemm;
    const RSC t0 = decode_rsc(p.d, vec_n_ok ? n_first : 0);
#pragma unroll
    for (int i = 0; i < Map::PER_THREAD; ++i) {
      const int j = kt * Cfg::BK + Map::row(i);
      const bool j_ok = j < p.Kg;
      int n_img = 0, h0 = 0, w0 = 0;
      if (j_ok) {
        n_img = p.d.div_pq.div(j);
        const int pq = j - n_img * p.d.PQ;
        const int pp = p.d.div_q.div(pq);
        h0 = pp * p.d.sh - p.d.ph;
        w0 = (pq - pp * p.d.Q) * p.d.sw - p.d.pw;
      }
      if constexpr (VEC) {
        const E* src = x;
        const bool ok =
            j_ok && vec_n_ok && pixel_tap_address(p.d, n_img, h0, w0, t0.r, t0.s, t0.c, x, &src);
        cp_async16(stage + Map::smem_offset(i), src, ok);
      } else {
        Chunk<E> chunk;
#pragma unroll
        for (int e = 0; e < Map::E; ++e) {
          const int n = n_first + e;
          const E* src = x;
          bool ok = j_ok && n < p.Ngemm;
          if (ok) {
            const RSC t = decode_rsc(p.d, n);
            ok = pixel_tap_address(p.d, n_img, h0, w0, t.r, t.s, t.c, x, &src);
          }
          chunk.v[e] = ok ? *src : E(0);
        }
        *reinterpret_cast<uint4*>(stage + Map::smem_offset(i)) = chunk.vec;
      }
    }
  }
};

// Pointwise operands: strided matrices of one image (vector mode only: the host routes shapes
// whose rows are not 16-byte multiples to the general path).
template <class Cfg_, int ROWS, bool KMAJOR>
struct StridedOperand {
  using Cfg = Cfg_;
  using E = typename Cfg::Elem;
  using Map = TileMap<Cfg, ROWS, KMAJOR>;
  const E* base;
  int64_t batch_stride, ld;
  int rows, row0;

  __device__ __forceinline__ StridedOperand(const void* data, int64_t batch_stride_, int64_t ld_,
                                            int rows_, int row0_)
      : base(static_cast<const E*>(data)),
        batch_stride(batch_stride_),
        ld(ld_),
        rows(rows_),
        row0(row0_) {}

  // Loads the tile at reduction offset kk0 of image `image` (reduction length kg per image).
  __device__ __forceinline__ void load_image(E* stage, int image, int kk_tile0, int kg) const {
    const E* img = base + image * batch_stride;
#pragma unroll
    for (int i = 0; i < Map::PER_THREAD; ++i) {
      int row, kk;
      if constexpr (KMAJOR) {
        row = row0 + Map::row(i);
        kk = kk_tile0 + Map::col();
      } else {
        row = row0 + Map::col();
        kk = kk_tile0 + Map::row(i);
      }
      const bool ok = row < rows && kk < kg;
      const E* src = KMAJOR ? img + row * ld + kk : img + kk * ld + row;
      cp_async16(stage + Map::smem_offset(i), ok ? src : base, ok);
    }
  }
};

// Adapts a StridedOperand to the mainloop: k-tiles either walk one image (blockIdx.z = image) or,
// in reduce-over-images mode, walk (image, tile) pairs of the images of this split.
template <class Op, bool REDUCE_IMAGES>
struct PointwiseLoader {
  const Op& op;
  template <class P>
  __device__ __forceinline__ void load(typename Op::E* stage, int kt, const P& p) const {
    constexpr int BK = Op::Cfg::BK;
    if constexpr (REDUCE_IMAGES) {
      const int image = kt / p.tiles_per_image;
      op.load_image(stage, image, (kt - image * p.tiles_per_image) * BK, p.Kg);
    } else {
      op.load_image(stage, static_cast<int>(blockIdx.z), kt * BK, p.Kg);
    }
  }
};

// ---------------------------------------------------------------------------------------------
// Kernels

template <class Cfg>
using CoreOf =
    std::conditional_t<std::is_same_v<typename Cfg::Elem, float>, SimtCore<Cfg>, TcCore<Cfg>>;

template <class Cfg, bool VEC>
__global__ void __launch_bounds__(Cfg::THREADS)
    conv_fwd_kernel(const __grid_constant__ FwdParams p) {
  using E = typename Cfg::Elem;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int m0 = static_cast<int>(blockIdx.x) * Cfg::BM,
            n0 = static_cast<int>(blockIdx.y) * Cfg::BN;
  const FwdA<Cfg, VEC> a(p, m0);
  const DenseKMajor<Cfg, Cfg::BN, VEC> b(p.w, p.Ngemm, p.Kg, n0);
  CoreOf<Cfg> core;
  mainloop<Cfg>(core, a, b, p, 0, (p.Kg + Cfg::BK - 1) / Cfg::BK, reinterpret_cast<E*>(smem_raw));
  E* y = static_cast<E*>(p.y);
  const E* bias = static_cast<const E*>(p.bias);
  staged_epilogue<Cfg>(
      core, smem_raw,
      [&](int row) -> int64_t {
        const int m = m0 + row;
        if (m >= p.M) return -1;
        const int n = p.d.div_pq.div(m);
        return static_cast<int64_t>(n) * p.d.K * p.d.PQ + (m - n * p.d.PQ);
      },
      [&](int64_t base, int col, float v) {
        const int k = n0 + col;
        if (k >= p.Ngemm) return;
        if (bias) v += elem_to_float(bias[k]);
        y[base + static_cast<int64_t>(k) * p.d.PQ] = float_to_elem<E>(v);
      });
}

template <class Cfg, bool VEC>
__global__ void __launch_bounds__(Cfg::THREADS)
    conv_dgrad_kernel(const __grid_constant__ DgradParams p) {
  using E = typename Cfg::Elem;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ int tables[4 * kMaxKernelExtent];
  __shared__ int counts[2];
  const ConvDims& d = p.d;
  const int phase = static_cast<int>(blockIdx.z);
  const int th = phase / d.sw, tw = phase - (phase / d.sw) * d.sw;
  const int hp = th < d.H ? (d.H - th + d.sh - 1) / d.sh : 0;
  const int wp = tw < d.W ? (d.W - tw + d.sw - 1) / d.sw : 0;
  const int mp = d.N * hp * wp;
  const int m0 = static_cast<int>(blockIdx.x) * Cfg::BM,
            n0 = static_cast<int>(blockIdx.y) * Cfg::BN;
  if (m0 >= mp) return;  // this phase has fewer pixels than the largest one
  int* r_list = tables;
  int* p_off = tables + kMaxKernelExtent;
  int* s_list = tables + 2 * kMaxKernelExtent;
  int* q_off = tables + 3 * kMaxKernelExtent;
  if (threadIdx.x == 0) {
    // Kernel row r reaches dx row h = th + i*sh from dy row p = (h + ph - r*dh) / sh when exact.
    int nr = 0, ns = 0;
    for (int r = 0; r < d.R; ++r) {
      const int num = th + d.ph - r * d.dh;
      if (num % d.sh == 0) {
        r_list[nr] = r;
        p_off[nr++] = num / d.sh;
      }
    }
    for (int s = 0; s < d.S; ++s) {
      const int num = tw + d.pw - s * d.dw;
      if (num % d.sw == 0) {
        s_list[ns] = s;
        q_off[ns++] = num / d.sw;
      }
    }
    counts[0] = nr;
    counts[1] = ns;
  }
  __syncthreads();
  const PhaseTaps taps{counts[0], counts[1], r_list, p_off, s_list, q_off};
  const int kg = taps.nr * taps.ns * d.K;  // 0 when no tap reaches this phase: dx is 0 there
  const DgradA<Cfg, VEC> a(p, taps, kg, m0, mp, hp, wp);
  const DgradB<Cfg, VEC> b(taps, kg, n0);
  CoreOf<Cfg> core;
  mainloop<Cfg>(core, a, b, p, 0, (kg + Cfg::BK - 1) / Cfg::BK, reinterpret_cast<E*>(smem_raw));
  E* dx = static_cast<E*>(p.dx);
  const int64_t hw = static_cast<int64_t>(d.H) * d.W;
  staged_epilogue<Cfg>(
      core, smem_raw,
      [&](int row) -> int64_t {
        const int m = m0 + row;
        if (m >= mp) return -1;
        const int n = m / (hp * wp);
        const int rem = m - n * hp * wp;
        const int i = rem / wp;
        const int h = th + i * d.sh, w = tw + (rem - i * wp) * d.sw;
        return static_cast<int64_t>(n) * d.C * hw + static_cast<int64_t>(h) * d.W + w;
      },
      [&](int64_t base, int col, float v) {
        const int c = n0 + col;
        if (c < d.C) dx[base + c * hw] = float_to_elem<E>(v);
      });
}

template <class Cfg, bool VEC>
__global__ void __launch_bounds__(Cfg::THREADS)
    conv_wgrad_kernel(const __grid_constant__ WgradParams p) {
  using E = typename Cfg::Elem;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int m0 = static_cast<int>(blockIdx.x) * Cfg::BM,
            n0 = static_cast<int>(blockIdx.y) * Cfg::BN;
  const int split = static_cast<int>(blockIdx.z);
  const int total_tiles = (p.Kg + Cfg::BK - 1) / Cfg::BK;
  const int kt_begin = split * p.tiles_per_split;
  const int kt_end = min(total_tiles, kt_begin + p.tiles_per_split);
  const WgradA<Cfg, VEC> a(m0);
  const WgradB<Cfg, VEC> b(n0);
  CoreOf<Cfg> core;
  mainloop<Cfg>(core, a, b, p, kt_begin, max(kt_begin, kt_end), reinterpret_cast<E*>(smem_raw));
  float* ws = p.ws + static_cast<int64_t>(split) * p.M * p.Ngemm;
  core.for_each([&](int row, int col, float v) {
    const int m = m0 + row, n = n0 + col;
    if (m < p.M && n < p.Ngemm) ws[static_cast<int64_t>(m) * p.Ngemm + n] = v;
  });
}

// Pointwise: batched GEMM on NCHW. REDUCE_IMAGES: the weight gradient, images are reduced over
// (a split of them per blockIdx.z) into the fp32 workspace; otherwise blockIdx.z is the image.
template <class Cfg, bool REDUCE_IMAGES>
__global__ void __launch_bounds__(Cfg::THREADS)
    conv_pointwise_kernel(const __grid_constant__ PointwiseParams p) {
  using E = typename Cfg::Elem;
  using AOp = StridedOperand<Cfg, Cfg::BM, Cfg::A_KMAJOR>;
  using BOp = StridedOperand<Cfg, Cfg::BN, Cfg::B_KMAJOR>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int m0 = static_cast<int>(blockIdx.x) * Cfg::BM,
            n0 = static_cast<int>(blockIdx.y) * Cfg::BN;
  const AOp a_op(p.a, p.a_batch, p.a_ld, p.M, m0);
  const BOp b_op(p.b, p.b_batch, p.b_ld, p.Ngemm, n0);
  int kt_begin = 0, kt_end = p.tiles_per_image;
  if constexpr (REDUCE_IMAGES) {
    const int first = static_cast<int>(blockIdx.z) * p.images_per_split;
    const int last = min(p.images, first + p.images_per_split);
    kt_begin = first * p.tiles_per_image;
    kt_end = max(first, last) * p.tiles_per_image;
  }
  CoreOf<Cfg> core;
  const PointwiseLoader<AOp, REDUCE_IMAGES> a{a_op};
  const PointwiseLoader<BOp, REDUCE_IMAGES> b{b_op};
  mainloop<Cfg>(core, a, b, p, kt_begin, kt_end, reinterpret_cast<E*>(smem_raw));
  if constexpr (REDUCE_IMAGES) {
    float* ws = p.ws + static_cast<int64_t>(blockIdx.z) * p.M * p.Ngemm;
    core.for_each([&](int row, int col, float v) {
      const int m = m0 + row, n = n0 + col;
      if (m < p.M && n < p.Ngemm) ws[static_cast<int64_t>(m) * p.Ngemm + n] = v;
    });
  } else {
    E* c = static_cast<E*>(p.c) + static_cast<int64_t>(blockIdx.z) * p.c_batch;
    const E* bias = static_cast<const E*>(p.bias);
    staged_epilogue<Cfg>(
        core, smem_raw, [&](int row) -> int64_t { return m0 + row < p.M ? m0 + row : -1; },
        [&](int64_t m, int col, float v) {
          const int n = n0 + col;
          if (n >= p.Ngemm) return;
          if (bias) v += elem_to_float(bias[n]);
          c[static_cast<int64_t>(n) * p.c_ld + m] = float_to_elem<E>(v);
        });
  }
}

// Data gradient of a non-overlapping convolution (patch embedding: kernel = stride, no padding,
// no dilation): every dx pixel receives at most one product sum, so the whole data gradient is one
// GEMM  G[m = (n, p, q)][(c, r, s)] = sum over k of dy[n, k, p, q] * w[k, c, r, s]  scattered to
// dx[n, c, p*R + r, q*S + s]. A: dy NHWC [N*P*Q, K] (K-major); B: w as [K, C*R*S] (MN-major).
struct PatchDgradParams {
  const void* dy;    // NHWC [N, P, Q, K]
  const void* w;     // [K, C, R, S]
  void* dx;          // NCHW [N, C, H, W]
  int M, Ngemm, Kg;  // N*P*Q, C*R*S, K
  int C, H, W, R, S, P, Q;
  FastDiv div_pq, div_q, div_rs, div_s;
};

template <class Cfg>
__global__ void __launch_bounds__(Cfg::THREADS)
    conv_dgrad_patch_kernel(const __grid_constant__ PatchDgradParams p) {
  using E = typename Cfg::Elem;
  using BOp = StridedOperand<Cfg, Cfg::BN, false>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int m0 = static_cast<int>(blockIdx.x) * Cfg::BM,
            n0 = static_cast<int>(blockIdx.y) * Cfg::BN;
  const DenseKMajor<Cfg, Cfg::BM, true> a(p.dy, p.M, p.Kg, m0);
  const BOp b_op(p.w, 0, p.Ngemm, p.Ngemm, n0);
  const PointwiseLoader<BOp, false> b{b_op};  // blockIdx.y only selects the N tile: image 0
  CoreOf<Cfg> core;
  mainloop<Cfg>(core, a, b, p, 0, (p.Kg + Cfg::BK - 1) / Cfg::BK, reinterpret_cast<E*>(smem_raw));
  // Stage the tile row-major and write it with consecutive threads on consecutive (c, r, s):
  // neighbouring s are neighbouring dx columns.
  constexpr int LD = Cfg::BN + 4;
  static_assert(Cfg::BM * LD * 4 <= Cfg::SMEM_BYTES, "staging tile must fit the pipeline memory");
  static_assert(Cfg::THREADS % Cfg::BN == 0, "a thread must keep one column of the tile");
  float* tile = reinterpret_cast<float*>(smem_raw);
  __syncthreads();
  core.for_each([&](int row, int col, float v) { tile[row * LD + col] = v; });
  __syncthreads();
  const int col = static_cast<int>(threadIdx.x) % Cfg::BN;
  const int n = n0 + col;
  if (n >= p.Ngemm) return;
  const int c = p.div_rs.div(n);
  const int rs = n - c * p.R * p.S;
  const int r = p.div_s.div(rs);
  const int64_t col_off = (static_cast<int64_t>(c) * p.H + r) * p.W + (rs - r * p.S);
  E* dx = static_cast<E*>(p.dx);
  for (int row = static_cast<int>(threadIdx.x) / Cfg::BN; row < Cfg::BM;
       row += Cfg::THREADS / Cfg::BN) {
    const int m = m0 + row;
    if (m >= p.M) break;
    const int img = p.div_pq.div(m);
    const int pq = m - img * p.P * p.Q;
    const int pp = p.div_q.div(pq);
    const int64_t base = static_cast<int64_t>(img) * p.C * p.H * p.W +
                         static_cast<int64_t>(pp) * p.R * p.W +
                         static_cast<int64_t>(pq - pp * p.Q) * p.S;
    dx[base + col_off] = float_to_elem<E>(tile[row * LD + col]);
  }
}

// dw[k, c, r, s] = sum over splits of ws[split, k, (r*S + s)*C + c].
template <typename E>
__global__ void wgrad_reduce_kernel(const float* ws, E* dw, int K, int C, int R, int S,
                                    int splits) {
  const int64_t total = static_cast<int64_t>(K) * C * R * S;
  const int64_t crs = static_cast<int64_t>(C) * R * S;
  for (int64_t idx = global_thread_id(); idx < total; idx += grid_stride()) {
    const int64_t k = idx / crs;
    int64_t rem = idx - k * crs;
    const int64_t c = rem / (R * S);
    rem -= c * R * S;
    const int64_t r = rem / S, s = rem - r * S;
    const int64_t col = (r * S + s) * C + c;
    float sum = 0.f;
    for (int z = 0; z < splits; ++z) sum += ws[(static_cast<int64_t>(z) * K + k) * crs + col];
    dw[idx] = float_to_elem<E>(sum);
  }
}

// [batch, rows, cols] -> [batch, cols, rows] (NCHW -> NHWC with rows = C, cols = H*W).
template <typename E>
__global__ void transpose_kernel(const E* in, E* out, int rows, int cols) {
  __shared__ E tile[32][33];
  const int64_t plane = static_cast<int64_t>(rows) * cols;
  const E* src = in + blockIdx.z * plane;
  E* dst = out + blockIdx.z * plane;
  const int c0 = static_cast<int>(blockIdx.x) * 32, r0 = static_cast<int>(blockIdx.y) * 32;
  for (int i = static_cast<int>(threadIdx.y); i < 32; i += 8) {
    const int r = r0 + i, c = c0 + static_cast<int>(threadIdx.x);
    if (r < rows && c < cols) tile[i][threadIdx.x] = src[static_cast<int64_t>(r) * cols + c];
  }
  __syncthreads();
  for (int i = static_cast<int>(threadIdx.y); i < 32; i += 8) {
    const int c = c0 + i, r = r0 + static_cast<int>(threadIdx.x);
    if (r < rows && c < cols) dst[static_cast<int64_t>(c) * rows + r] = tile[threadIdx.x][i];
  }
}

// ---------------------------------------------------------------------------------------------
// Host side

int sm_count() {
  static const int count = [] {
    int device = 0, sms = 0;
    DISTILL_CUDA_CHECK(cudaGetDevice(&device));
    DISTILL_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    return sms;
  }();
  return count;
}

int checked_int(int64_t v, const char* op, const char* what) {
  if (v < 0 || v > INT32_MAX)
    throw std::invalid_argument(std::string(op) + ": " + what + " = " + std::to_string(v) +
                                " exceeds the native kernel's 32-bit GEMM indexing");
  return static_cast<int>(v);
}

unsigned checked_grid(int64_t v, int64_t limit, const char* op) {
  if (v > limit)
    throw std::invalid_argument(std::string(op) + ": grid dimension " + std::to_string(v) +
                                " exceeds the CUDA limit");
  return static_cast<unsigned>(std::max<int64_t>(v, 1));
}

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

ConvDims make_dims(const Conv2dGeometry& g, const char* op) {
  ConvDims d{};
  d.N = checked_int(g.batch, op, "batch");
  d.C = checked_int(g.in_channels, op, "channels");
  d.H = checked_int(g.in_h, op, "height");
  d.W = checked_int(g.in_w, op, "width");
  d.K = checked_int(g.out_channels, op, "filters");
  d.R = checked_int(g.kernel_h, op, "kernel height");
  d.S = checked_int(g.kernel_w, op, "kernel width");
  d.P = checked_int(g.out_h, op, "output height");
  d.Q = checked_int(g.out_w, op, "output width");
  d.sh = static_cast<int>(g.stride_h);
  d.sw = static_cast<int>(g.stride_w);
  d.ph = static_cast<int>(g.pad_h);
  d.pw = static_cast<int>(g.pad_w);
  d.dh = static_cast<int>(g.dilation_h);
  d.dw = static_cast<int>(g.dilation_w);
  d.PQ = checked_int(g.out_h * g.out_w, op, "P*Q");
  d.SC = checked_int(g.kernel_w * g.in_channels, op, "S*C");
  checked_int(g.x_numel(), op, "input pixels");  // image/pixel indices are int on the device
  checked_int(static_cast<int64_t>(d.N) * d.PQ, op, "N*P*Q");
  checked_int(static_cast<int64_t>(d.R) * d.SC, op, "R*S*C");
  checked_int(static_cast<int64_t>(d.R) * d.S * d.K, op, "R*S*K");
  d.div_pq = FastDiv(d.PQ);
  d.div_q = FastDiv(d.Q);
  d.div_sc = FastDiv(d.SC);
  d.div_c = FastDiv(d.C);
  d.div_k = FastDiv(d.K);
  return d;
}

// Whether x can be gathered by (pixel, (r, s, c)) in 16-byte runs of `elems` elements: each run
// inside one kernel row r, contiguous, aligned, and all in or all out of the image.
bool vector_gather_ok(const ConvDims& d, int elems) {
  if (d.C % elems == 0) return true;  // a run is within one (r, s): one pixel's channels
  // A run spans several s: contiguous when dilation is 1 (neighbouring pixels are adjacent in
  // NHWC), never outside the image horizontally without padding, and aligned when every row start
  // and every output column's start are multiples of the run.
  return d.dw == 1 && d.pw == 0 && d.SC % elems == 0 &&
         (static_cast<int64_t>(d.sw) * d.C) % elems == 0 &&
         (static_cast<int64_t>(d.W) * d.C) % elems == 0;
}

template <typename E>
void transpose(const void* in, void* out, int64_t batch, int64_t rows, int64_t cols,
               const char* op) {
  if (batch * rows * cols == 0) return;
  const dim3 grid(checked_grid(ceil_div(cols, 32), INT32_MAX, op),
                  checked_grid(ceil_div(rows, 32), 65535, op), checked_grid(batch, 65535, op));
  transpose_kernel<E>
      <<<grid, dim3(32, 8), 0, current_stream()>>>(static_cast<const E*>(in), static_cast<E*>(out),
                                                   static_cast<int>(rows), static_cast<int>(cols));
  check_launch(op);
}

// Launches `kernel` with its configuration's dynamic shared memory (opted in once per kernel).
template <auto Kernel, class Cfg, class Params>
void launch(dim3 grid, const Params& p, const char* op) {
  static const bool configured = [] {
    DISTILL_CUDA_CHECK(
        cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::SMEM_BYTES));
    return true;
  }();
  (void)configured;
  Kernel<<<grid, Cfg::THREADS, Cfg::SMEM_BYTES, current_stream()>>>(p);
  check_launch(op);
}

bool is_pointwise(const Conv2dGeometry& g) {
  return g.kernel_h == 1 && g.kernel_w == 1 && g.stride_h == 1 && g.stride_w == 1 && g.pad_h == 0 &&
         g.pad_w == 0;
}

// Pointwise shapes take the NCHW batched-GEMM path when every operand row is a whole number of
// 16-byte vectors (bf16 only: the f32 path always uses the general kernels).
bool pointwise_vector_ok(const Conv2dGeometry& g) {
  return is_pointwise(g) && g.out_h * g.out_w % 8 == 0 && g.in_channels % 8 == 0 &&
         g.out_channels % 8 == 0;
}

// ---- forward

template <class Cfg, bool VEC>
void launch_fwd(const FwdParams& p) {
  const dim3 grid(checked_grid(ceil_div(p.M, Cfg::BM), INT32_MAX, "conv2d"),
                  checked_grid(ceil_div(p.Ngemm, Cfg::BN), 65535, "conv2d"), 1);
  launch<conv_fwd_kernel<Cfg, VEC>, Cfg>(grid, p, "conv2d (native forward)");
}

template <bool VEC>
void launch_fwd_bf16(const FwdParams& p) {
  if (p.Ngemm > 64) return launch_fwd<TcCfg<128, 128, true, true>, VEC>(p);
  launch_fwd<TcCfg<128, 64, true, true>, VEC>(p);
}

template <typename E>
void forward_general(const Conv2dForwardArgs& args, bool tensor_cores) {
  const Conv2dGeometry& g = args.geom;
  const ConvDims d = make_dims(g, "conv2d");
  DeviceScratch x_nhwc(static_cast<size_t>(g.x_numel()) * sizeof(E));
  DeviceScratch w_krsc(static_cast<size_t>(g.w_numel()) * sizeof(E));
  transpose<E>(args.x, x_nhwc.as<void>(), d.N, d.C, static_cast<int64_t>(d.H) * d.W,
               "conv2d (NHWC copy)");
  transpose<E>(args.w, w_krsc.as<void>(), d.K, d.C, static_cast<int64_t>(d.R) * d.S,
               "conv2d (KRSC copy)");
  FwdParams p{};
  p.d = d;
  p.x = x_nhwc.as<void>();
  p.w = w_krsc.as<void>();
  p.bias = args.bias;
  p.y = args.y;
  p.M = d.N * d.PQ;
  p.Ngemm = d.K;
  p.Kg = d.R * d.SC;
  constexpr int elems = 16 / static_cast<int>(sizeof(E));
  const bool vec = vector_gather_ok(d, elems) && p.Kg % elems == 0;
  if (tensor_cores) {
    vec ? launch_fwd_bf16<true>(p) : launch_fwd_bf16<false>(p);
  } else {
    vec ? launch_fwd<SimtCfg<true, true>, true>(p) : launch_fwd<SimtCfg<true, true>, false>(p);
  }
}

void forward_pointwise_bf16(const Conv2dForwardArgs& args) {
  const Conv2dGeometry& g = args.geom;
  PointwiseParams p{};
  p.M = checked_int(g.out_h * g.out_w, "conv2d", "P*Q");
  p.Ngemm = checked_int(g.out_channels, "conv2d", "filters");
  p.Kg = checked_int(g.in_channels, "conv2d", "channels");
  p.a = args.x;  // x[n] as [C, PQ]: element (pixel m, channel kk) at kk * PQ + m
  p.a_batch = g.in_channels * p.M;
  p.a_ld = p.M;
  p.b = args.w;  // w as [K, C]: element (filter n, channel kk) at n * C + kk
  p.b_batch = 0;
  p.b_ld = g.in_channels;
  p.c = args.y;
  p.c_batch = g.out_channels * p.M;
  p.c_ld = p.M;
  p.bias = args.bias;
  p.images = checked_int(g.batch, "conv2d", "batch");
  p.tiles_per_image = static_cast<int>(ceil_div(p.Kg, 32));
  p.images_per_split = 1;
  using Cfg128 = TcCfg<128, 128, false, true>;
  using Cfg64 = TcCfg<128, 64, false, true>;
  const int bn = p.Ngemm > 64 ? 128 : 64;
  const dim3 grid(checked_grid(ceil_div(p.M, 128), INT32_MAX, "conv2d"),
                  checked_grid(ceil_div(p.Ngemm, bn), 65535, "conv2d"),
                  checked_grid(p.images, 65535, "conv2d"));
  if (bn == 128) {
    launch<conv_pointwise_kernel<Cfg128, false>, Cfg128>(grid, p,
                                                         "conv2d (native pointwise forward)");
  } else {
    launch<conv_pointwise_kernel<Cfg64, false>, Cfg64>(grid, p,
                                                       "conv2d (native pointwise forward)");
  }
}

// ---- data gradient

template <class Cfg, bool VEC>
void launch_dgrad(const DgradParams& p) {
  const ConvDims& d = p.d;
  // Phase 0 holds the most dx pixels: ceil(H / sh) * ceil(W / sw) per image.
  const int64_t max_mp = static_cast<int64_t>(d.N) * ceil_div(d.H, d.sh) * ceil_div(d.W, d.sw);
  const dim3 grid(checked_grid(ceil_div(max_mp, Cfg::BM), INT32_MAX, "conv2d_backward_data"),
                  checked_grid(ceil_div(d.C, Cfg::BN), 65535, "conv2d_backward_data"),
                  checked_grid(static_cast<int64_t>(d.sh) * d.sw, 65535, "conv2d_backward_data"));
  launch<conv_dgrad_kernel<Cfg, VEC>, Cfg>(grid, p, "conv2d_backward_data (native)");
}

template <bool VEC>
void launch_dgrad_bf16(const DgradParams& p) {
  if (p.d.C > 64) return launch_dgrad<TcCfg<128, 128, true, true>, VEC>(p);
  launch_dgrad<TcCfg<128, 64, true, true>, VEC>(p);
}

template <typename E>
void backward_data_general(const Conv2dBackwardDataArgs& args, bool tensor_cores) {
  const Conv2dGeometry& g = args.geom;
  const char* op = "conv2d_backward_data";
  const ConvDims d = make_dims(g, op);
  if (d.R > kMaxKernelExtent || d.S > kMaxKernelExtent)
    throw std::invalid_argument(std::string(op) + ": the native kernel supports kernels up to " +
                                std::to_string(kMaxKernelExtent) + " wide (use the cudnn backend)");
  DeviceScratch dy_nhwc(static_cast<size_t>(g.y_numel()) * sizeof(E));
  DeviceScratch w_crsk(static_cast<size_t>(g.w_numel()) * sizeof(E));
  transpose<E>(args.dy, dy_nhwc.as<void>(), d.N, d.K, d.PQ, "conv2d_backward_data (NHWC copy)");
  transpose<E>(args.w, w_crsk.as<void>(), 1, d.K, static_cast<int64_t>(d.C) * d.R * d.S,
               "conv2d_backward_data (CRSK copy)");
  DgradParams p{};
  p.d = d;
  p.dy = dy_nhwc.as<void>();
  p.w = w_crsk.as<void>();
  p.dx = args.dx;
  constexpr int elems = 16 / static_cast<int>(sizeof(E));
  const bool vec = d.K % elems == 0;
  if (tensor_cores) {
    vec ? launch_dgrad_bf16<true>(p) : launch_dgrad_bf16<false>(p);
  } else {
    vec ? launch_dgrad<SimtCfg<true, true>, true>(p) : launch_dgrad<SimtCfg<true, true>, false>(p);
  }
}

void backward_data_pointwise_bf16(const Conv2dBackwardDataArgs& args) {
  const Conv2dGeometry& g = args.geom;
  const char* op = "conv2d_backward_data";
  PointwiseParams p{};
  p.M = checked_int(g.out_h * g.out_w, op, "P*Q");
  p.Ngemm = checked_int(g.in_channels, op, "channels");
  p.Kg = checked_int(g.out_channels, op, "filters");
  p.a = args.dy;  // dy[n] as [K, PQ]: element (pixel m, filter kk) at kk * PQ + m
  p.a_batch = g.out_channels * p.M;
  p.a_ld = p.M;
  p.b = args.w;  // w as [K, C]: element (channel n, filter kk) at kk * C + n
  p.b_batch = 0;
  p.b_ld = g.in_channels;
  p.c = args.dx;
  p.c_batch = g.in_channels * p.M;
  p.c_ld = p.M;
  p.images = checked_int(g.batch, op, "batch");
  p.tiles_per_image = static_cast<int>(ceil_div(p.Kg, 32));
  p.images_per_split = 1;
  using Cfg128 = TcCfg<128, 128, false, false>;
  using Cfg64 = TcCfg<128, 64, false, false>;
  const int bn = p.Ngemm > 64 ? 128 : 64;
  const dim3 grid(checked_grid(ceil_div(p.M, 128), INT32_MAX, op),
                  checked_grid(ceil_div(p.Ngemm, bn), 65535, op),
                  checked_grid(p.images, 65535, op));
  if (bn == 128) {
    launch<conv_pointwise_kernel<Cfg128, false>, Cfg128>(grid, p,
                                                         "conv2d_backward_data (native pointwise)");
  } else {
    launch<conv_pointwise_kernel<Cfg64, false>, Cfg64>(grid, p,
                                                       "conv2d_backward_data (native pointwise)");
  }
}

// Patch embeddings (kernel = stride, unpadded, undilated) whose dy and weight rows are whole
// 16-byte vectors of `elems` elements: one GEMM.
bool patch_dgrad_ok(const Conv2dGeometry& g, int64_t elems) {
  return g.stride_h == g.kernel_h && g.stride_w == g.kernel_w && g.pad_h == 0 && g.pad_w == 0 &&
         g.dilation_h == 1 && g.dilation_w == 1 && g.kernel_h * g.kernel_w > 1 &&
         g.out_channels % elems == 0 && (g.in_channels * g.kernel_h * g.kernel_w) % elems == 0;
}

template <typename E>
void backward_data_patch(const Conv2dBackwardDataArgs& args) {
  const Conv2dGeometry& g = args.geom;
  const char* op = "conv2d_backward_data (native patch)";
  const ConvDims d = make_dims(g, op);
  DeviceScratch dy_nhwc(static_cast<size_t>(g.y_numel()) * sizeof(E));
  transpose<E>(args.dy, dy_nhwc.as<void>(), d.N, d.K, d.PQ, op);
  // Rows and columns past the last window get no gradient: zero them first.
  if (d.P * d.R != d.H || d.Q * d.S != d.W)
    DISTILL_CUDA_CHECK(cudaMemsetAsync(args.dx, 0, static_cast<size_t>(g.x_numel()) * sizeof(E),
                                       current_stream()));
  PatchDgradParams p{};
  p.dy = dy_nhwc.as<void>();
  p.w = args.w;
  p.dx = args.dx;
  p.M = d.N * d.PQ;
  p.Ngemm = checked_int(static_cast<int64_t>(d.C) * d.R * d.S, op, "C*R*S");
  p.Kg = d.K;
  p.C = d.C;
  p.H = d.H;
  p.W = d.W;
  p.R = d.R;
  p.S = d.S;
  p.P = d.P;
  p.Q = d.Q;
  p.div_pq = FastDiv(d.PQ);
  p.div_q = FastDiv(d.Q);
  p.div_rs = FastDiv(d.R * d.S);
  p.div_s = FastDiv(d.S);
  // bf16 on tensor cores, f32 on CUDA cores.
  using Cfg = std::conditional_t<std::is_same_v<E, float>, SimtCfg<true, false>,
                                 TcCfg<128, 128, true, false>>;
  const dim3 grid(checked_grid(ceil_div(p.M, Cfg::BM), INT32_MAX, op),
                  checked_grid(ceil_div(p.Ngemm, Cfg::BN), 65535, op), 1);
  launch<conv_dgrad_patch_kernel<Cfg>, Cfg>(grid, p, op);
}

// ---- weight gradient

// Splits of the reduction so that the grid fills the GPU about twice, each split at least 8
// k-tiles long, and the fp32 workspace stays under 256 MiB.
int choose_splits(int64_t tiles, int64_t k_units, int64_t min_units_per_split,
                  int64_t ws_per_split) {
  const int64_t target = 2 * static_cast<int64_t>(sm_count());
  int64_t splits = ceil_div(target, std::max<int64_t>(tiles, 1));
  splits = std::min(splits, std::max<int64_t>(1, k_units / min_units_per_split));
  splits = std::min(splits, std::max<int64_t>(1, (int64_t{256} << 20) / (ws_per_split * 4)));
  return static_cast<int>(std::clamp<int64_t>(splits, 1, 65535));
}

template <typename E>
void reduce_wgrad(const float* ws, void* dw, const ConvDims& d, int splits, const char* op) {
  const int64_t total = static_cast<int64_t>(d.K) * d.C * d.R * d.S;
  wgrad_reduce_kernel<E><<<grid_for(total), kBlockSize, 0, current_stream()>>>(
      ws, static_cast<E*>(dw), d.K, d.C, d.R, d.S, splits);
  check_launch(op);
}

template <class Cfg, bool VEC>
void launch_wgrad(WgradParams p, const char* op, void* dw) {
  const int64_t tiles = ceil_div(p.M, Cfg::BM) * ceil_div(p.Ngemm, Cfg::BN);
  const int64_t k_tiles = ceil_div(p.Kg, Cfg::BK);
  const int splits_wanted = choose_splits(tiles, k_tiles, 8, static_cast<int64_t>(p.M) * p.Ngemm);
  p.tiles_per_split = static_cast<int>(ceil_div(k_tiles, splits_wanted));
  const int splits = static_cast<int>(std::max<int64_t>(1, ceil_div(k_tiles, p.tiles_per_split)));
  DeviceScratch ws(static_cast<size_t>(splits) * p.M * p.Ngemm * sizeof(float));
  p.ws = ws.as<float>();
  const dim3 grid(checked_grid(ceil_div(p.M, Cfg::BM), INT32_MAX, op),
                  checked_grid(ceil_div(p.Ngemm, Cfg::BN), 65535, op),
                  static_cast<unsigned>(splits));
  launch<conv_wgrad_kernel<Cfg, VEC>, Cfg>(grid, p, op);
  reduce_wgrad<typename Cfg::Elem>(ws.as<float>(), dw, p.d, splits, op);
}

template <bool VEC>
void launch_wgrad_bf16(const WgradParams& p, const char* op, void* dw) {
  if (p.M > 64) return launch_wgrad<TcCfg<128, 128, false, false>, VEC>(p, op, dw);
  launch_wgrad<TcCfg<64, 128, false, false>, VEC>(p, op, dw);
}

template <typename E>
void backward_weight_general(const Conv2dBackwardWeightArgs& args, bool tensor_cores) {
  const Conv2dGeometry& g = args.geom;
  const char* op = "conv2d_backward_weight (native)";
  const ConvDims d = make_dims(g, op);
  DeviceScratch dy_nhwc(static_cast<size_t>(g.y_numel()) * sizeof(E));
  DeviceScratch x_nhwc(static_cast<size_t>(g.x_numel()) * sizeof(E));
  transpose<E>(args.dy, dy_nhwc.as<void>(), d.N, d.K, d.PQ, "conv2d_backward_weight (NHWC copy)");
  transpose<E>(args.x, x_nhwc.as<void>(), d.N, d.C, static_cast<int64_t>(d.H) * d.W,
               "conv2d_backward_weight (NHWC copy)");
  WgradParams p{};
  p.d = d;
  p.dy = dy_nhwc.as<void>();
  p.x = x_nhwc.as<void>();
  p.M = d.K;
  p.Ngemm = d.R * d.SC;
  p.Kg = d.N * d.PQ;
  constexpr int elems = 16 / static_cast<int>(sizeof(E));
  const bool vec = d.K % elems == 0 && vector_gather_ok(d, elems);
  if (tensor_cores) {
    vec ? launch_wgrad_bf16<true>(p, op, args.dw) : launch_wgrad_bf16<false>(p, op, args.dw);
  } else {
    vec ? launch_wgrad<SimtCfg<false, false>, true>(p, op, args.dw)
        : launch_wgrad<SimtCfg<false, false>, false>(p, op, args.dw);
  }
}

template <class Cfg>
void launch_wgrad_pointwise(PointwiseParams p, const Conv2dGeometry& g, void* dw, const char* op) {
  const int64_t tiles = ceil_div(p.M, Cfg::BM) * ceil_div(p.Ngemm, Cfg::BN);
  const int splits_wanted = choose_splits(tiles, p.images, 1, static_cast<int64_t>(p.M) * p.Ngemm);
  p.images_per_split = static_cast<int>(ceil_div(p.images, splits_wanted));
  const int splits = static_cast<int>(ceil_div(p.images, p.images_per_split));
  DeviceScratch ws(static_cast<size_t>(splits) * p.M * p.Ngemm * sizeof(float));
  p.ws = ws.as<float>();
  const dim3 grid(checked_grid(ceil_div(p.M, Cfg::BM), INT32_MAX, op),
                  checked_grid(ceil_div(p.Ngemm, Cfg::BN), 65535, op),
                  static_cast<unsigned>(splits));
  launch<conv_pointwise_kernel<Cfg, true>, Cfg>(grid, p, op);
  ConvDims d{};
  d.K = p.M;
  d.C = p.Ngemm;
  d.R = d.S = 1;
  reduce_wgrad<uint16_t>(ws.as<float>(), dw, d, splits, op);
  (void)g;
}

void backward_weight_pointwise_bf16(const Conv2dBackwardWeightArgs& args) {
  const Conv2dGeometry& g = args.geom;
  const char* op = "conv2d_backward_weight (native pointwise)";
  PointwiseParams p{};
  p.M = checked_int(g.out_channels, op, "filters");
  p.Ngemm = checked_int(g.in_channels, op, "channels");
  p.Kg = checked_int(g.out_h * g.out_w, op, "P*Q");
  p.a = args.dy;  // dy[n] as [K, PQ]: element (filter m, pixel kk) at m * PQ + kk
  p.a_batch = static_cast<int64_t>(p.M) * p.Kg;
  p.a_ld = p.Kg;
  p.b = args.x;  // x[n] as [C, PQ]: element (channel n, pixel kk) at n * PQ + kk
  p.b_batch = static_cast<int64_t>(p.Ngemm) * p.Kg;
  p.b_ld = p.Kg;
  p.images = checked_int(g.batch, op, "batch");
  p.tiles_per_image = static_cast<int>(ceil_div(p.Kg, 32));
  if (p.M > 64) return launch_wgrad_pointwise<TcCfg<128, 128, true, true>>(p, g, args.dw, op);
  launch_wgrad_pointwise<TcCfg<64, 128, true, true>>(p, g, args.dw, op);
}

void check_native_dtype(DType t, const char* op) {
  if (t != DType::F32 && t != DType::BF16)
    throw std::invalid_argument(std::string(op) +
                                ": the native CUDA convolution supports f32 and bf16, got " +
                                dtype_name(t));
}

}  // namespace

void conv2d_forward(const Conv2dForwardArgs& args) {
  check_native_dtype(args.dtype, "conv2d");
  if (args.geom.y_numel() == 0) return;
  NvtxRange range("conv2d_forward (native)");
  if (args.dtype == DType::BF16) {
    if (pointwise_vector_ok(args.geom)) return forward_pointwise_bf16(args);
    return forward_general<uint16_t>(args, true);
  }
  forward_general<float>(args, false);
}

void conv2d_backward_data(const Conv2dBackwardDataArgs& args) {
  check_native_dtype(args.dtype, "conv2d_backward_data");
  if (args.geom.x_numel() == 0) return;
  NvtxRange range("conv2d_backward_data (native)");
  if (args.dtype == DType::BF16) {
    if (pointwise_vector_ok(args.geom)) return backward_data_pointwise_bf16(args);
    if (patch_dgrad_ok(args.geom, 8)) return backward_data_patch<uint16_t>(args);
    return backward_data_general<uint16_t>(args, true);
  }
  if (patch_dgrad_ok(args.geom, 4)) return backward_data_patch<float>(args);
  backward_data_general<float>(args, false);
}

void conv2d_backward_weight(const Conv2dBackwardWeightArgs& args) {
  check_native_dtype(args.dtype, "conv2d_backward_weight");
  if (args.geom.w_numel() == 0) return;
  NvtxRange range("conv2d_backward_weight (native)");
  if (args.geom.y_numel() == 0) {
    DISTILL_CUDA_CHECK(cudaMemsetAsync(
        args.dw, 0, static_cast<size_t>(args.geom.w_numel()) * dtype_size(args.dtype),
        current_stream()));
    return;
  }
  if (args.dtype == DType::BF16) {
    if (pointwise_vector_ok(args.geom)) return backward_weight_pointwise_bf16(args);
    return backward_weight_general<uint16_t>(args, true);
  }
  backward_weight_general<float>(args, false);
}

}  // namespace distill::kernels::cuda
