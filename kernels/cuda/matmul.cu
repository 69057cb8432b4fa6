// Batched GEMM through cuBLASLt (F32, BF16, F16 with fp32 accumulation) and cuBLAS (F64).
//
// The arguments are row-major; cuBLAS is column-major. A row-major [r, c] matrix with leading
// dimension ld is the column-major [c, r] matrix with the same ld, so C = op(A) op(B) is computed
// as C^T = op(B)^T op(A)^T: cuBLAS's "A" is our B, its "B" is our A, and its m/n are our n/m.
// The bias [n] is added to every row of C, i.e. to every column of C^T: that is one value per
// row of the column-major result, exactly CUBLASLT_EPILOGUE_BIAS's broadcast.
//
// F32 runs in true fp32 by default so results track the CPU reference; set the environment
// variable DISTILL_ALLOW_TF32=1 to let cuBLASLt use TF32 tensor cores for F32 inputs.
#include <cublasLt.h>
#include <cublas_v2.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "kernels/cuda/cuda_utils.cuh"
#include "kernels/matmul.h"

namespace distill::kernels::cuda {

namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;  // cuBLASLt's recommendation for Hopper
constexpr int64_t kMaxBatchPerCall = 65535;           // keep cuBLAS's batch grid dim in range
constexpr int kMaxDevices = 16;

[[noreturn]] void throw_cublas(cublasStatus_t status, const char* call, const GemmArgs& g) {
  throw std::runtime_error(std::string("gemm: ") + call + " failed with " +
                           cublasGetStatusString(status) + " (dtype " + dtype_name(g.dtype) +
                           ", batch " + std::to_string(g.batch) + ", m " + std::to_string(g.m) +
                           ", n " + std::to_string(g.n) + ", k " + std::to_string(g.k) + ")");
}

#define DISTILL_CUBLAS_CHECK(expr, args)                \
  do {                                                  \
    const cublasStatus_t distill_blas_status_ = (expr); \
    if (distill_blas_status_ != CUBLAS_STATUS_SUCCESS)  \
      throw_cublas(distill_blas_status_, #expr, args);  \
  } while (0)

bool tf32_allowed() {
  static const bool allowed = [] {
    const char* v = std::getenv("DISTILL_ALLOW_TF32");
    return v != nullptr && std::strcmp(v, "0") != 0 && v[0] != '\0';
  }();
  return allowed;
}

// The algorithm chosen for one problem description, cached so the heuristic (tens of
// microseconds of host time) runs once per distinct shape.
struct AlgoKey {
  int64_t v[20];
  bool operator==(const AlgoKey& o) const { return std::memcmp(v, o.v, sizeof(v)) == 0; }
};
struct AlgoKeyHash {
  size_t operator()(const AlgoKey& k) const {
    size_t h = 1469598103934665603ull;
    for (int64_t x : k.v) h = (h ^ static_cast<size_t>(x)) * 1099511628211ull;
    return h;
  }
};
struct CachedAlgo {
  bool found = false;  // false: no algorithm supports this problem (with this epilogue)
  cublasLtMatmulAlgo_t algo{};
};

struct BlasState {
  std::once_flag once;
  cublasLtHandle_t lt = nullptr;
  cublasHandle_t blas = nullptr;
  void* workspace = nullptr;
  std::mutex mutex;  // guards `algos`
  std::unordered_map<AlgoKey, CachedAlgo, AlgoKeyHash> algos;
};
BlasState g_blas[kMaxDevices];

// Handles and workspace are created lazily, once per device, and live for the process.
BlasState& blas_state(const GemmArgs& g) {
  int device = 0;
  DISTILL_CUDA_CHECK(cudaGetDevice(&device));
  if (device < 0 || device >= kMaxDevices)
    throw std::runtime_error(std::string("gemm: device index ") + std::to_string(device) +
                             " out of range");
  BlasState& s = g_blas[device];
  std::call_once(s.once, [&s, &g] {
    DISTILL_CUBLAS_CHECK(cublasLtCreate(&s.lt), g);
    DISTILL_CUBLAS_CHECK(cublasCreate(&s.blas), g);
    DISTILL_CUBLAS_CHECK(cublasSetStream(s.blas, current_stream()), g);
    DISTILL_CUDA_CHECK(cudaMalloc(&s.workspace, kWorkspaceBytes));
  });
  return s;
}

// Largest power of two (up to 256) dividing the address: cuBLASLt assumes 256-byte aligned
// operands unless told otherwise, and picks kernels that rely on it.
uint32_t pointer_alignment(const void* p) {
  const uintptr_t addr = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && addr % a != 0) a >>= 1;
  return a;
}

// ---- C = beta * C + bias for the k == 0 case, and the bias add when the epilogue cannot be
// used (F64, or a bias pointer cuBLASLt will not accept).
template <typename T>
__global__ void gemm_scale_bias_kernel(T* c, const T* bias, int64_t batch, int64_t m, int64_t n,
                                       int64_t ldc, int64_t stride_c, acc_t<T> beta, bool read_c) {
  using A = acc_t<T>;
  const int64_t total = batch * m * n;
  for (int64_t i = global_thread_id(); i < total; i += grid_stride()) {
    const int64_t col = i % n;
    const int64_t row = (i / n) % m;
    const int64_t b = i / (m * n);
    T* p = c + b * stride_c + row * ldc + col;
    A v = read_c ? beta * to_acc<A>(*p) : A(0);
    if (bias != nullptr) v += to_acc<A>(bias[col]);
    *p = from_acc<T>(v);
  }
}

// Applies the kernel to batches [b0, b0 + count).
void scale_bias(const GemmArgs& g, int64_t b0, int64_t count, double beta, bool read_c,
                const void* bias) {
  dispatch_floating(g.dtype, "gemm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int64_t total = count * g.m * g.n;
    gemm_scale_bias_kernel<T><<<grid_for(total), kBlockSize, 0, current_stream()>>>(
        static_cast<T*>(g.c) + b0 * g.stride_c, static_cast<const T*>(bias), count, g.m, g.n,
        std::max(g.ldc, g.n), g.stride_c, static_cast<acc_t<T>>(beta), read_c);
    check_launch("gemm (bias/scale kernel)");
  });
}

// Column-major description of one operand: `rows` x `cols` stored with leading dimension `ld`.
// cuBLAS insists on ld >= max(1, rows) even where ld is never used (a single column); like the
// CPU reference, smaller values are raised to that.
struct ColMajor {
  int64_t rows, cols, ld;
};
ColMajor col_major(int64_t rows, int64_t cols, int64_t ld) {
  return {rows, cols, std::max<int64_t>(ld, std::max<int64_t>(rows, 1))};
}

// ---- F64 through cublasDgemmStridedBatched.
void gemm_f64(const GemmArgs& g, BlasState& s) {
  const cublasOperation_t op_b = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_a = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const ColMajor lb = g.trans_b ? col_major(g.k, g.n, g.ldb) : col_major(g.n, g.k, g.ldb);
  const ColMajor la = g.trans_a ? col_major(g.m, g.k, g.lda) : col_major(g.k, g.m, g.lda);
  const ColMajor lc = col_major(g.n, g.m, g.ldc);
  for (int64_t v : {g.m, g.n, g.k, lb.ld, la.ld, lc.ld})
    if (v > INT_MAX)
      throw std::runtime_error(std::string("gemm: f64 problem dimension ") + std::to_string(v) +
                               " exceeds cuBLAS's int range");
  const double alpha = g.alpha, beta = g.beta;
  for (int64_t b0 = 0; b0 < g.batch; b0 += kMaxBatchPerCall) {
    const int count = static_cast<int>(std::min(kMaxBatchPerCall, g.batch - b0));
    DISTILL_CUBLAS_CHECK(
        cublasDgemmStridedBatched(
            s.blas, op_b, op_a, static_cast<int>(g.n), static_cast<int>(g.m), static_cast<int>(g.k),
            &alpha, static_cast<const double*>(g.b) + b0 * g.stride_b, static_cast<int>(lb.ld),
            g.stride_b, static_cast<const double*>(g.a) + b0 * g.stride_a, static_cast<int>(la.ld),
            g.stride_a, &beta, static_cast<double*>(g.c) + b0 * g.stride_c, static_cast<int>(lc.ld),
            g.stride_c, count),
        g);
  }
  if (g.bias != nullptr) scale_bias(g, 0, g.batch, 1.0, /*read_c=*/true, g.bias);
}

// ---- F32 / BF16 / F16 through cuBLASLt.

// RAII owners for the cuBLASLt descriptors of one call.
struct LtDescs {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~LtDescs() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

void make_layout(cublasLtMatrixLayout_t* layout, cudaDataType_t type, const ColMajor& cm,
                 int32_t batch, int64_t stride, const GemmArgs& g) {
  DISTILL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(layout, type, static_cast<uint64_t>(cm.rows),
                                                  static_cast<uint64_t>(cm.cols), cm.ld),
                       g);
  if (batch > 1) {
    DISTILL_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
                             *layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof(batch)),
                         g);
    DISTILL_CUBLAS_CHECK(
        cublasLtMatrixLayoutSetAttribute(*layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                         &stride, sizeof(stride)),
        g);
  }
}

// Runs one cuBLASLt matmul over `count` batches starting at b0. Returns false (and does nothing)
// when cuBLASLt offers no algorithm for the problem (with the requested bias epilogue).
bool lt_matmul(const GemmArgs& g, BlasState& s, int64_t b0, int32_t count, bool use_bias_epilogue) {
  cudaDataType_t type = CUDA_R_32F;
  if (g.dtype == DType::BF16) type = CUDA_R_16BF;
  if (g.dtype == DType::F16) type = CUDA_R_16F;
  const cublasComputeType_t compute =
      (g.dtype == DType::F32 && tf32_allowed()) ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const int64_t esize = dtype_size(g.dtype);
  const char* a_ptr = static_cast<const char*>(g.b) + b0 * g.stride_b * esize;  // cuBLAS's A
  const char* b_ptr = static_cast<const char*>(g.a) + b0 * g.stride_a * esize;  // cuBLAS's B
  char* c_ptr = static_cast<char*>(g.c) + b0 * g.stride_c * esize;

  const cublasOperation_t op_a = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const ColMajor la = g.trans_b ? col_major(g.k, g.n, g.ldb) : col_major(g.n, g.k, g.ldb);
  const ColMajor lb = g.trans_a ? col_major(g.m, g.k, g.lda) : col_major(g.k, g.m, g.lda);
  const ColMajor lc = col_major(g.n, g.m, g.ldc);

  LtDescs d;
  DISTILL_CUBLAS_CHECK(cublasLtMatmulDescCreate(&d.op, compute, CUDA_R_32F), g);
  DISTILL_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)), g);
  DISTILL_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)), g);
  if (use_bias_epilogue) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    DISTILL_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                        &epilogue, sizeof(epilogue)),
                         g);
    // The bias has C's dtype and is shared by every batch (bias batch stride stays 0).
    DISTILL_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                        &g.bias, sizeof(g.bias)),
                         g);
  }
  make_layout(&d.a, type, la, count, g.stride_b, g);
  make_layout(&d.b, type, lb, count, g.stride_a, g);
  make_layout(&d.c, type, lc, count, g.stride_c, g);

  const uint32_t align_a = pointer_alignment(a_ptr), align_b = pointer_alignment(b_ptr),
                 align_c = pointer_alignment(c_ptr);
  const AlgoKey key{{static_cast<int64_t>(g.dtype),
                     static_cast<int64_t>(compute),
                     g.m,
                     g.n,
                     g.k,
                     g.lda,
                     g.ldb,
                     g.ldc,
                     g.stride_a,
                     g.stride_b,
                     g.stride_c,
                     count,
                     (g.trans_a ? 1 : 0) | (g.trans_b ? 2 : 0),
                     use_bias_epilogue ? 1 : 0,
                     align_a,
                     align_b,
                     align_c,
                     use_bias_epilogue ? static_cast<int64_t>(pointer_alignment(g.bias)) : 0,
                     g.beta != 0.0 ? 1 : 0,
                     0}};
  CachedAlgo chosen;
  bool cached = false;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    auto it = s.algos.find(key);
    if (it != s.algos.end()) {
      chosen = it->second;
      cached = true;
    }
  }
  if (!cached) {
    DISTILL_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&d.pref), g);
    const uint64_t workspace = kWorkspaceBytes;
    DISTILL_CUBLAS_CHECK(
        cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                             &workspace, sizeof(workspace)),
        g);
    const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> aligns[] = {
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_a},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_b},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_c},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_c}};
    for (const auto& [attr, value] : aligns)
      DISTILL_CUBLAS_CHECK(
          cublasLtMatmulPreferenceSetAttribute(d.pref, attr, &value, sizeof(value)), g);
    cublasLtMatmulHeuristicResult_t result{};
    int returned = 0;
    const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(s.lt, d.op, d.a, d.b, d.c, d.c,
                                                                 d.pref, 1, &result, &returned);
    if (status == CUBLAS_STATUS_SUCCESS && returned > 0) {
      chosen.found = true;
      chosen.algo = result.algo;
    } else if (status != CUBLAS_STATUS_SUCCESS && status != CUBLAS_STATUS_NOT_SUPPORTED) {
      throw_cublas(status, "cublasLtMatmulAlgoGetHeuristic", g);
    }
    std::lock_guard<std::mutex> lock(s.mutex);
    s.algos.emplace(key, chosen);
  }
  if (!chosen.found) return false;
  const float alpha = static_cast<float>(g.alpha), beta = static_cast<float>(g.beta);
  DISTILL_CUBLAS_CHECK(
      cublasLtMatmul(s.lt, d.op, &alpha, a_ptr, d.a, b_ptr, d.b, &beta, c_ptr, d.c, c_ptr, d.c,
                     &chosen.algo, s.workspace, kWorkspaceBytes, current_stream()),
      g);
  return true;
}

// Fallback for layouts cuBLASLt declines: classic cuBLAS with the same fp32 compute (the
// handle's default math mode never uses TF32 for CUBLAS_COMPUTE_32F).
void gemm_ex(const GemmArgs& g, BlasState& s, int64_t b0, int32_t count) {
  cudaDataType_t type = CUDA_R_32F;
  if (g.dtype == DType::BF16) type = CUDA_R_16BF;
  if (g.dtype == DType::F16) type = CUDA_R_16F;
  const cublasComputeType_t compute =
      (g.dtype == DType::F32 && tf32_allowed()) ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const ColMajor la = g.trans_b ? col_major(g.k, g.n, g.ldb) : col_major(g.n, g.k, g.ldb);
  const ColMajor lb = g.trans_a ? col_major(g.m, g.k, g.lda) : col_major(g.k, g.m, g.lda);
  const ColMajor lc = col_major(g.n, g.m, g.ldc);
  for (int64_t v : {g.m, g.n, g.k, la.ld, lb.ld, lc.ld})
    if (v > INT_MAX)
      throw std::runtime_error(std::string("gemm: problem dimension ") + std::to_string(v) +
                               " exceeds cuBLAS's int range");
  const int64_t esize = dtype_size(g.dtype);
  const float alpha = static_cast<float>(g.alpha), beta = static_cast<float>(g.beta);
  DISTILL_CUBLAS_CHECK(
      cublasGemmStridedBatchedEx(
          s.blas, g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
          static_cast<int>(g.n), static_cast<int>(g.m), static_cast<int>(g.k), &alpha,
          static_cast<const char*>(g.b) + b0 * g.stride_b * esize, type, static_cast<int>(la.ld),
          g.stride_b, static_cast<const char*>(g.a) + b0 * g.stride_a * esize, type,
          static_cast<int>(lb.ld), g.stride_a, &beta,
          static_cast<char*>(g.c) + b0 * g.stride_c * esize, type, static_cast<int>(lc.ld),
          g.stride_c, count, compute, CUBLAS_GEMM_DEFAULT),
      g);
}

void gemm_lt(const GemmArgs& g, BlasState& s) {
  // The bias epilogue wants an aligned vector; otherwise (or if no algorithm offers the
  // epilogue for this shape) the bias is added by a separate kernel. Layouts cuBLASLt has no
  // algorithm for at all go to cublasGemmStridedBatchedEx.
  const bool want_epilogue = g.bias != nullptr && pointer_alignment(g.bias) >= 16;
  for (int64_t b0 = 0; b0 < g.batch; b0 += kMaxBatchPerCall) {
    const int32_t count = static_cast<int32_t>(std::min(kMaxBatchPerCall, g.batch - b0));
    if (want_epilogue && lt_matmul(g, s, b0, count, /*use_bias_epilogue=*/true)) continue;
    if (!lt_matmul(g, s, b0, count, /*use_bias_epilogue=*/false)) gemm_ex(g, s, b0, count);
    if (g.bias != nullptr) scale_bias(g, b0, count, 1.0, /*read_c=*/true, g.bias);
  }
}

}  // namespace

void gemm(const GemmArgs& g) {
  if (g.batch < 0 || g.m < 0 || g.n < 0 || g.k < 0)
    throw std::runtime_error(std::string("gemm: negative size (batch ") + std::to_string(g.batch) +
                             ", m " + std::to_string(g.m) + ", n " + std::to_string(g.n) + ", k " +
                             std::to_string(g.k) + ")");
  if (g.batch == 0 || g.m == 0 || g.n == 0) return;
  if (g.dtype != DType::F32 && g.dtype != DType::F64 && g.dtype != DType::BF16 &&
      g.dtype != DType::F16)
    unsupported_dtype("gemm", g.dtype);
  NvtxRange range("gemm");
  if (g.k == 0) {  // empty inner product: C = beta * C + bias (C is not read when beta == 0)
    scale_bias(g, 0, g.batch, g.beta, /*read_c=*/g.beta != 0.0, g.bias);
    return;
  }
  // A batch that shares one B (stride 0, e.g. activations [B, m, k] @ weight [k, n]) with
  // evenly stacked A and C rows is one [B * m, k] @ [k, n] product: fewer, larger launches.
  GemmArgs folded = g;
  if (g.batch > 1 && g.stride_b == 0 && !g.trans_a && g.stride_a == g.m * g.lda &&
      g.stride_c == g.m * g.ldc) {
    folded.m = g.batch * g.m;
    folded.batch = 1;
  }
  BlasState& s = blas_state(folded);
  if (folded.dtype == DType::F64) {
    gemm_f64(folded, s);
  } else {
    gemm_lt(folded, s);
  }
}

}  // namespace distill::kernels::cuda
