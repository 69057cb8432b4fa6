// CPU GEMM through OpenBLAS. f32/f64 call sgemm/dgemm on the caller's memory; bf16/f16 are
// widened into f32 scratch, multiplied with sgemm and rounded once when stored (so the bias is
// added before that single rounding).
#include "kernels/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/cpu/loops.h"

namespace distill::kernels::cpu {

namespace {

blasint to_blas(int64_t v) {
  if (v < 0 || v > static_cast<int64_t>(INT32_MAX))
    throw std::invalid_argument("gemm: dimension " + std::to_string(v) + " does not fit BLAS int");
  return static_cast<blasint>(v);
}

// BLAS demands ld >= max(1, row length) even for empty or single-row operands.
blasint leading_dim(int64_t ld, int64_t row_length) {
  return to_blas(std::max<int64_t>(ld, std::max<int64_t>(row_length, 1)));
}

// Rows and columns of an operand as stored (before the transpose flag is applied).
struct Stored {
  int64_t rows, cols;
};
Stored stored_a(const GemmArgs& g) {
  return g.trans_a ? Stored{g.k, g.m} : Stored{g.m, g.k};
}
Stored stored_b(const GemmArgs& g) {
  return g.trans_b ? Stored{g.n, g.k} : Stored{g.k, g.n};
}

// Copies a strided [rows, cols] matrix of any float dtype into dense f32.
void widen(const void* src, DType dtype, int64_t rows, int64_t cols, int64_t ld, float* dst) {
  const bool parallel = rows > 1 && rows * cols >= kParallelGrain;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[r * cols + c] = load_as<float>(src, r * ld + c, dtype);
}

template <typename T>
void add_bias(T* c, int64_t m, int64_t n, int64_t ldc, const T* bias) {
  const bool parallel = m > 1 && m * n >= kParallelGrain;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) c[i * ldc + j] += bias[j];
}

// C = beta * C for k == 0 (BLAS implementations disagree on empty inner dimensions); beta == 0
// overwrites, so NaN garbage in an uninitialised C does not survive.
template <typename T>
void scale_c(T* c, int64_t m, int64_t n, int64_t ldc, T beta) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == T(0) ? T(0) : beta * c[i * ldc + j];
}

void sgemm(const GemmArgs& g, const float* a, blasint lda, const float* b, blasint ldb, float* c,
           blasint ldc) {
  cblas_sgemm(CblasRowMajor, g.trans_a ? CblasTrans : CblasNoTrans,
              g.trans_b ? CblasTrans : CblasNoTrans, to_blas(g.m), to_blas(g.n), to_blas(g.k),
              static_cast<float>(g.alpha), a, lda, b, ldb, static_cast<float>(g.beta), c, ldc);
}

template <typename T>
void gemm_native(const GemmArgs& g) {
  const T* a = static_cast<const T*>(g.a);
  const T* b = static_cast<const T*>(g.b);
  T* c = static_cast<T*>(g.c);
  const blasint lda = leading_dim(g.lda, stored_a(g).cols);
  const blasint ldb = leading_dim(g.ldb, stored_b(g).cols);
  const blasint ldc = leading_dim(g.ldc, g.n);
  for (int64_t i = 0; i < g.batch; ++i) {
    T* ci = c + i * g.stride_c;
    if (g.k == 0) {
      scale_c<T>(ci, g.m, g.n, ldc, static_cast<T>(g.beta));
    } else if constexpr (std::is_same_v<T, float>) {
      sgemm(g, a + i * g.stride_a, lda, b + i * g.stride_b, ldb, ci, ldc);
    } else {
      cblas_dgemm(CblasRowMajor, g.trans_a ? CblasTrans : CblasNoTrans,
                  g.trans_b ? CblasTrans : CblasNoTrans, to_blas(g.m), to_blas(g.n), to_blas(g.k),
                  g.alpha, a + i * g.stride_a, lda, b + i * g.stride_b, ldb, g.beta, ci, ldc);
    }
    if (g.bias) add_bias<T>(ci, g.m, g.n, ldc, static_cast<const T*>(g.bias));
  }
}

// bf16/f16: per batch, widen A, B (and C when beta reads it) to f32, run sgemm, round back.
void gemm_widened(const GemmArgs& g) {
  const Stored sa = stored_a(g), sb = stored_b(g);
  const int64_t elem = dtype_size(g.dtype);
  std::vector<float> a32(static_cast<size_t>(sa.rows * sa.cols));
  std::vector<float> b32(static_cast<size_t>(sb.rows * sb.cols));
  std::vector<float> c32(static_cast<size_t>(g.m * g.n));
  std::vector<float> bias32;
  if (g.bias) {
    bias32.resize(static_cast<size_t>(g.n));
    for (int64_t j = 0; j < g.n; ++j) bias32[j] = load_as<float>(g.bias, j, g.dtype);
  }
  const auto* a_bytes = static_cast<const char*>(g.a);
  const auto* b_bytes = static_cast<const char*>(g.b);
  auto* c_bytes = static_cast<char*>(g.c);
  for (int64_t i = 0; i < g.batch; ++i) {
    void* ci = c_bytes + i * g.stride_c * elem;
    if (g.beta != 0.0) {
      widen(ci, g.dtype, g.m, g.n, g.ldc, c32.data());
    }
    if (g.k == 0) {
      scale_c<float>(c32.data(), g.m, g.n, g.n, static_cast<float>(g.beta));
    } else {
      widen(a_bytes + i * g.stride_a * elem, g.dtype, sa.rows, sa.cols, g.lda, a32.data());
      widen(b_bytes + i * g.stride_b * elem, g.dtype, sb.rows, sb.cols, g.ldb, b32.data());
      sgemm(g, a32.data(), leading_dim(sa.cols, sa.cols), b32.data(), leading_dim(sb.cols, sb.cols),
            c32.data(), leading_dim(g.n, g.n));
    }
    if (g.bias) add_bias<float>(c32.data(), g.m, g.n, g.n, bias32.data());
    const bool parallel = g.m > 1 && g.m * g.n >= kParallelGrain;
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t r = 0; r < g.m; ++r)
      for (int64_t col = 0; col < g.n; ++col)
        store_as<float>(ci, r * g.ldc + col, g.dtype, c32[r * g.n + col]);
  }
}

}  // namespace

void gemm(const GemmArgs& args) {
  if (args.batch <= 0 || args.m <= 0 || args.n <= 0) return;
  switch (args.dtype) {
    case DType::F32:
      gemm_native<float>(args);
      break;
    case DType::F64:
      gemm_native<double>(args);
      break;
    case DType::BF16:
    case DType::F16:
      gemm_widened(args);
      break;
    default:
      throw std::invalid_argument("gemm: unsupported (non-floating) dtype");
  }
}

const char* blas_name() {
  // Rebuilt on each call: the thread count can change at runtime (set_num_threads).
  thread_local std::string name;
  const int parallel = openblas_get_parallel();
  const char* mode = parallel == 0 ? "sequential" : parallel == 1 ? "pthread" : "openmp";
  name = std::string(openblas_get_config()) + " (" + mode + ", " +
         std::to_string(openblas_get_num_threads()) + " threads)";
  return name.c_str();
}

}  // namespace distill::kernels::cpu
