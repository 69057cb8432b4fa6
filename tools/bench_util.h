// Timing for the benchmarks: median wall time per call, synchronising the GPU around each call so
// that asynchronous launches are counted in full.
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

#include "kernels/device.h"

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

}  // namespace distill::cli
