// Batched GEMM on row-major matrices: C[b] = alpha * op(A[b]) @ op(B[b]) + beta * C[b] (+ bias).
// CPU: OpenBLAS (bf16/f16 inputs are widened to f32). CUDA: cuBLASLt with fp32 accumulation.
#pragma once

#include "kernels/common.h"

namespace distill::kernels {

struct GemmArgs {
  DType dtype = DType::F32;  // dtype of A, B and C
  int64_t batch = 1, m = 0, n = 0, k = 0;
  const void* a = nullptr;  // [m, k] (or [k, m] when trans_a), row-major, leading dim lda
  int64_t lda = 0, stride_a = 0;
  bool trans_a = false;
  const void* b = nullptr;  // [k, n] (or [n, k] when trans_b)
  int64_t ldb = 0, stride_b = 0;
  bool trans_b = false;
  void* c = nullptr;  // [m, n]
  int64_t ldc = 0, stride_c = 0;
  double alpha = 1.0, beta = 0.0;
  const void* bias = nullptr;  // optional [n], same dtype as C, added to every row
};

namespace cpu {
void gemm(const GemmArgs& args);
const char* blas_name();  // e.g. "OpenBLAS 0.3.21 (pthread, 2 threads)"
}  // namespace cpu

namespace cuda {
void gemm(const GemmArgs& args);
}  // namespace cuda

}  // namespace distill::kernels
