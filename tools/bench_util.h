// Timing for the benchmarks: median wall time per call, synchronising the GPU around each call so
// that asynchronous launches are counted in full.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <stdexcept>
#include <vector>

#include "core/tensor.h"
#include "kernels/device.h"

#if DISTILL_HAS_CUDA
#include <cublas_v2.h>
#include <cuda_runtime.h>
#endif

namespace distill::cli {

inline double median_seconds(const std::function<void()>& fn, bool cuda, int warmup, int iters) {
  using Clock = std::chrono::steady_clock;
  for (int i = 0; i < warmup; ++i) fn();
  if (cuda) kernels::cuda::synchronize();
  std::vector<double> times;
  for (int i = 0; i < std::max(iters, 1); ++i) {
    const auto t0 = Clock::now();
    fn();
    if (cuda) kernels::cuda::synchronize();
    times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// max |a - b| / max |b|: how far our result is from the peer's, relative to its scale.
inline double max_rel_diff(const Tensor& a, const Tensor& b) {
  const auto va = a.to_double_vector(), vb = b.to_double_vector();
  double scale = 0, diff = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    scale = std::max(scale, std::fabs(vb[i]));
    diff = std::max(diff, std::fabs(va[i] - vb[i]));
  }
  return scale > 0 ? diff / scale : diff;
}

#if DISTILL_HAS_CUDA
// One cuBLAS handle for the peers the benchmarks call directly, on the engine's stream.
inline cublasHandle_t cublas_handle() {
  static cublasHandle_t handle = [] {
    cublasHandle_t h;
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS)
      throw std::runtime_error("bench: cublasCreate failed");
    cublasSetStream(h, static_cast<cudaStream_t>(kernels::cuda::stream()));
    return h;
  }();
  return handle;
}
#endif

}  // namespace distill::cli
