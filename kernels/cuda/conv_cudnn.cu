// cuDNN backend of conv2d (conv_backend = cudnn): the same three operations as kernels/cuda/conv.cu
// through cuDNN's legacy convolution API, to cross-check the native kernels and to benchmark them
// against the library they replace. Algorithms are chosen once per shape with cudnnFind*
// (measured, fastest first) and cached; the workspace is one cached stream-ordered allocation that
// grows on demand. f32 runs with CUDNN_FMA_MATH (true fp32, no TF32, like the native f32 path);
// bf16 and f16 with tensor-op math and fp32 accumulation.
#include <cudnn.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/conv.h"
#include "kernels/cuda/cuda_utils.cuh"

namespace distill::kernels::cuda {

namespace {

void cudnn_check(cudnnStatus_t status, const char* what, const char* op) {
  if (status != CUDNN_STATUS_SUCCESS)
    throw std::runtime_error(std::string(op) + " (cudnn): " + what +
                             " failed: " + cudnnGetErrorString(status));
}
#define DISTILL_CUDNN_CHECK(expr, op) cudnn_check((expr), #expr, (op))

// The workspace limit for algorithm choice: faster algorithms that need more are skipped.
constexpr size_t kMaxWorkspaceBytes = size_t{1} << 30;

cudnnHandle_t handle_for_stream(const char* op) {
  // One handle per device (the process uses one stream per device, see kernels/device.h).
  static std::mutex mutex;
  static std::map<int, cudnnHandle_t> handles;
  int device = 0;
  DISTILL_CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mutex);
  auto it = handles.find(device);
  if (it == handles.end()) {
    cudnnHandle_t h = nullptr;
    DISTILL_CUDNN_CHECK(cudnnCreate(&h), op);
    it = handles.emplace(device, h).first;
  }
  DISTILL_CUDNN_CHECK(cudnnSetStream(it->second, current_stream()), op);
  return it->second;
}

// Stream-ordered workspace, kept between calls and grown when a larger one is needed.
void* workspace(size_t bytes) {
  static std::mutex mutex;
  static void* ptr = nullptr;
  static size_t size = 0;
  std::lock_guard<std::mutex> lock(mutex);
  if (bytes > size) {
    if (ptr) DISTILL_CUDA_CHECK(cudaFreeAsync(ptr, current_stream()));
    ptr = nullptr;
    DISTILL_CUDA_CHECK(cudaMallocAsync(&ptr, bytes, current_stream()));
    size = bytes;
  }
  return ptr;
}

cudnnDataType_t data_type(DType t, const char* op) {
  switch (t) {
    case DType::F32:
      return CUDNN_DATA_FLOAT;
    case DType::BF16:
      return CUDNN_DATA_BFLOAT16;
    case DType::F16:
      return CUDNN_DATA_HALF;
    default:
      throw std::invalid_argument(std::string(op) +
                                  ": the cuDNN convolution supports f32, bf16 and f16, got " +
                                  dtype_name(t));
  }
}

int to_int(int64_t v, const char* op) {
  if (v < 0 || v > INT32_MAX)
    throw std::invalid_argument(std::string(op) + ": dimension " + std::to_string(v) +
                                " does not fit cuDNN's int descriptors");
  return static_cast<int>(v);
}

// RAII descriptors for one convolution problem.
struct Descriptors {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr, bias = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;

  Descriptors(const Conv2dGeometry& g, DType dtype, const char* op) {
    const cudnnDataType_t t = data_type(dtype, op);
    DISTILL_CUDNN_CHECK(cudnnCreateTensorDescriptor(&x), op);
    DISTILL_CUDNN_CHECK(cudnnCreateTensorDescriptor(&y), op);
    DISTILL_CUDNN_CHECK(cudnnCreateTensorDescriptor(&bias), op);
    DISTILL_CUDNN_CHECK(cudnnCreateFilterDescriptor(&w), op);
    DISTILL_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv), op);
    DISTILL_CUDNN_CHECK(cudnnSetTensor4dDescriptor(x, CUDNN_TENSOR_NCHW, t, to_int(g.batch, op),
                                                   to_int(g.in_channels, op), to_int(g.in_h, op),
                                                   to_int(g.in_w, op)),
                        op);
    DISTILL_CUDNN_CHECK(cudnnSetTensor4dDescriptor(y, CUDNN_TENSOR_NCHW, t, to_int(g.batch, op),
                                                   to_int(g.out_channels, op), to_int(g.out_h, op),
                                                   to_int(g.out_w, op)),
                        op);
    DISTILL_CUDNN_CHECK(
        cudnnSetTensor4dDescriptor(bias, CUDNN_TENSOR_NCHW, t, 1, to_int(g.out_channels, op), 1, 1),
        op);
    DISTILL_CUDNN_CHECK(
        cudnnSetFilter4dDescriptor(w, t, CUDNN_TENSOR_NCHW, to_int(g.out_channels, op),
                                   to_int(g.in_channels, op), to_int(g.kernel_h, op),
                                   to_int(g.kernel_w, op)),
        op);
    DISTILL_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(
                            conv, to_int(g.pad_h, op), to_int(g.pad_w, op), to_int(g.stride_h, op),
                            to_int(g.stride_w, op), to_int(g.dilation_h, op),
                            to_int(g.dilation_w, op), CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
                        op);
    DISTILL_CUDNN_CHECK(cudnnSetConvolutionMathType(
                            conv, dtype == DType::F32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH),
                        op);
  }
  ~Descriptors() {
    if (conv) cudnnDestroyConvolutionDescriptor(conv);
    if (w) cudnnDestroyFilterDescriptor(w);
    if (bias) cudnnDestroyTensorDescriptor(bias);
    if (y) cudnnDestroyTensorDescriptor(y);
    if (x) cudnnDestroyTensorDescriptor(x);
  }
  Descriptors(const Descriptors&) = delete;
  Descriptors& operator=(const Descriptors&) = delete;
};

// Cache of measured algorithm choices, keyed by operation, dtype and geometry.
enum class Pass : int { Forward, Data, Filter };
using AlgoKey = std::array<int64_t, 17>;

AlgoKey make_key(Pass pass, DType dtype, const Conv2dGeometry& g) {
  int device = 0;
  DISTILL_CUDA_CHECK(cudaGetDevice(&device));
  return {static_cast<int64_t>(pass),
          static_cast<int64_t>(dtype),
          device,
          g.batch,
          g.in_channels,
          g.in_h,
          g.in_w,
          g.out_channels,
          g.kernel_h,
          g.kernel_w,
          g.stride_h,
          g.stride_w,
          g.pad_h,
          g.pad_w,
          g.dilation_h,
          g.dilation_w,
          0};
}

struct AlgoChoice {
  int algo = 0;
  size_t workspace = 0;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
};

// The successful algorithms of a cudnnFind* call within the workspace limit, fastest first.
template <typename Perf>
std::vector<AlgoChoice> candidates(const Perf* results, int count) {
  std::vector<AlgoChoice> out;
  for (int i = 0; i < count; ++i) {
    if (results[i].status == CUDNN_STATUS_SUCCESS && results[i].memory <= kMaxWorkspaceBytes)
      out.push_back({static_cast<int>(results[i].algo), results[i].memory, results[i].mathType});
  }
  return out;
}

// Runs the fastest measured algorithm that executes. Find reports the math type each algorithm
// was measured with, which may differ from the descriptor's, so the descriptor takes the
// candidate's math type and the workspace is re-queried for it (as PyTorch does). A candidate that
// cuDNN then rejects is skipped; the list, working choice first, is cached per shape.
//   find() -> std::vector<AlgoChoice>; workspace_size(choice) -> size_t;
//   run(choice, workspace, bytes) -> cudnnStatus_t.
template <typename Find, typename WorkspaceSize, typename Run>
void run_cached(const AlgoKey& key, cudnnConvolutionDescriptor_t conv, const char* op, Find&& find,
                WorkspaceSize&& workspace_size, Run&& run) {
  static std::mutex mutex;
  static std::map<AlgoKey, std::vector<AlgoChoice>> cache;
  std::vector<AlgoChoice> list;
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = cache.find(key);
    if (it != cache.end()) list = it->second;
  }
  if (list.empty()) list = find();
  std::string tried;
  for (size_t i = 0; i < list.size(); ++i) {
    const AlgoChoice& c = list[i];
    DISTILL_CUDNN_CHECK(cudnnSetConvolutionMathType(conv, c.math), op);
    const size_t bytes = std::max(c.workspace, workspace_size(c));
    const cudnnStatus_t status = run(c, workspace(bytes), bytes);
    if (status == CUDNN_STATUS_SUCCESS) {
      list.erase(list.begin(), list.begin() + static_cast<std::ptrdiff_t>(i));
      std::lock_guard<std::mutex> lock(mutex);
      cache[key] = list;
      return;
    }
    if (status != CUDNN_STATUS_BAD_PARAM && status != CUDNN_STATUS_NOT_SUPPORTED &&
        status != CUDNN_STATUS_EXECUTION_FAILED)
      cudnn_check(status, "the algorithm cudnnFind chose", op);
    // (appends, not operator+: GCC 12 reports a false -Wrestrict on "literal" + std::string)
    tried.append(" ").append(std::to_string(c.algo)).append(" (");
    tried.append(cudnnGetErrorString(status)).append(")");
  }
  throw std::runtime_error(std::string(op) + " (cudnn): no algorithm ran within " +
                           std::to_string(kMaxWorkspaceBytes >> 20) +
                           " MiB of workspace; tried:" + (tried.empty() ? " none" : tried));
}

}  // namespace

const char* cudnn_version_string() {
  static const std::string version = [] {
    const size_t v = cudnnGetVersion();
    return "cuDNN " + std::to_string(v / 10000) + "." + std::to_string((v % 10000) / 100) + "." +
           std::to_string(v % 100);
  }();
  return version.c_str();
}

void conv2d_forward_cudnn(const Conv2dForwardArgs& args) {
  const char* op = "conv2d";
  if (args.geom.y_numel() == 0) return;
  NvtxRange range("conv2d_forward (cudnn)");
  cudnnHandle_t h = handle_for_stream(op);
  Descriptors d(args.geom, args.dtype, op);
  const float one = 1.f, zero = 0.f;
  run_cached(
      make_key(Pass::Forward, args.dtype, args.geom), d.conv, op,
      [&] {
        constexpr int kMax = CUDNN_CONVOLUTION_FWD_ALGO_COUNT;
        cudnnConvolutionFwdAlgoPerf_t results[kMax];
        int count = 0;
        DISTILL_CUDNN_CHECK(
            cudnnFindConvolutionForwardAlgorithm(h, d.x, d.w, d.conv, d.y, kMax, &count, results),
            op);
        return candidates(results, count);
      },
      [&](const AlgoChoice& c) {
        size_t bytes = 0;
        // A failed query leaves the measured size; run() reports the real problem.
        if (cudnnGetConvolutionForwardWorkspaceSize(h, d.x, d.w, d.conv, d.y,
                                                    static_cast<cudnnConvolutionFwdAlgo_t>(c.algo),
                                                    &bytes) != CUDNN_STATUS_SUCCESS)
          bytes = 0;
        return bytes;
      },
      [&](const AlgoChoice& c, void* ws, size_t bytes) {
        return cudnnConvolutionForward(h, &one, d.x, args.x, d.w, args.w, d.conv,
                                       static_cast<cudnnConvolutionFwdAlgo_t>(c.algo), ws, bytes,
                                       &zero, d.y, args.y);
      });
  if (args.bias)
    DISTILL_CUDNN_CHECK(cudnnAddTensor(h, &one, d.bias, args.bias, &one, d.y, args.y), op);
}

void conv2d_backward_data_cudnn(const Conv2dBackwardDataArgs& args) {
  const char* op = "conv2d_backward_data";
  if (args.geom.x_numel() == 0) return;
  NvtxRange range("conv2d_backward_data (cudnn)");
  cudnnHandle_t h = handle_for_stream(op);
  Descriptors d(args.geom, args.dtype, op);
  const float one = 1.f, zero = 0.f;
  run_cached(
      make_key(Pass::Data, args.dtype, args.geom), d.conv, op,
      [&] {
        constexpr int kMax = CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT;
        cudnnConvolutionBwdDataAlgoPerf_t results[kMax];
        int count = 0;
        DISTILL_CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithm(h, d.w, d.y, d.conv, d.x,
                                                                      kMax, &count, results),
                            op);
        return candidates(results, count);
      },
      [&](const AlgoChoice& c) {
        size_t bytes = 0;
        // A failed query leaves the measured size; run() reports the real problem.
        if (cudnnGetConvolutionBackwardDataWorkspaceSize(
                h, d.w, d.y, d.conv, d.x, static_cast<cudnnConvolutionBwdDataAlgo_t>(c.algo),
                &bytes) != CUDNN_STATUS_SUCCESS)
          bytes = 0;
        return bytes;
      },
      [&](const AlgoChoice& c, void* ws, size_t bytes) {
        return cudnnConvolutionBackwardData(h, &one, d.w, args.w, d.y, args.dy, d.conv,
                                            static_cast<cudnnConvolutionBwdDataAlgo_t>(c.algo), ws,
                                            bytes, &zero, d.x, args.dx);
      });
}

void conv2d_backward_weight_cudnn(const Conv2dBackwardWeightArgs& args) {
  const char* op = "conv2d_backward_weight";
  if (args.geom.w_numel() == 0) return;
  NvtxRange range("conv2d_backward_weight (cudnn)");
  if (args.geom.y_numel() == 0) {
    DISTILL_CUDA_CHECK(cudaMemsetAsync(
        args.dw, 0, static_cast<size_t>(args.geom.w_numel()) * dtype_size(args.dtype),
        current_stream()));
    return;
  }
  cudnnHandle_t h = handle_for_stream(op);
  Descriptors d(args.geom, args.dtype, op);
  const float one = 1.f, zero = 0.f;
  run_cached(
      make_key(Pass::Filter, args.dtype, args.geom), d.conv, op,
      [&] {
        constexpr int kMax = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT;
        cudnnConvolutionBwdFilterAlgoPerf_t results[kMax];
        int count = 0;
        DISTILL_CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithm(h, d.x, d.y, d.conv, d.w,
                                                                        kMax, &count, results),
                            op);
        return candidates(results, count);
      },
      [&](const AlgoChoice& c) {
        size_t bytes = 0;
        // A failed query leaves the measured size; run() reports the real problem.
        if (cudnnGetConvolutionBackwardFilterWorkspaceSize(
                h, d.x, d.y, d.conv, d.w, static_cast<cudnnConvolutionBwdFilterAlgo_t>(c.algo),
                &bytes) != CUDNN_STATUS_SUCCESS)
          bytes = 0;
        return bytes;
      },
      [&](const AlgoChoice& c, void* ws, size_t bytes) {
        return cudnnConvolutionBackwardFilter(h, &one, d.x, args.x, d.y, args.dy, d.conv,
                                              static_cast<cudnnConvolutionBwdFilterAlgo_t>(c.algo),
                                              ws, bytes, &zero, d.w, args.dw);
      });
}

}  // namespace distill::kernels::cuda
