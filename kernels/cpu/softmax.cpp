// CPU softmax / log-softmax over the last axis of contiguous [rows, cols] buffers. Stable: each
// row subtracts its max before exponentiating. Elementwise math runs in float (double for F64),
// row sums accumulate in double.
#include "kernels/softmax.h"

#include <cmath>
#include <limits>

#include "kernels/cpu/loops.h"

namespace distill::kernels::cpu {

namespace {

template <typename T>
void softmax_rows(const View& x, int64_t rows, int64_t cols, bool log, const View& y) {
  const bool parallel = rows > 1 && rows * cols >= kParallelGrain;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t base = r * cols;
    T row_max = -std::numeric_limits<T>::infinity();
    for (int64_t c = 0; c < cols; ++c) {
      const T v = load_as<T>(x.data, base + c, x.dtype);
      // NaN must win so that it propagates to the whole row like PyTorch.
      if (v > row_max || std::isnan(v)) row_max = v;
      if (std::isnan(v)) break;
    }
    double sum = 0;
    for (int64_t c = 0; c < cols; ++c)
      sum += std::exp(load_as<T>(x.data, base + c, x.dtype) - row_max);
    if (log) {
      const T log_sum = static_cast<T>(std::log(sum));
      for (int64_t c = 0; c < cols; ++c)
        store_as<T>(y.data, base + c, y.dtype,
                    load_as<T>(x.data, base + c, x.dtype) - row_max - log_sum);
    } else {
      const T inv_sum = static_cast<T>(1.0 / sum);
      for (int64_t c = 0; c < cols; ++c)
        store_as<T>(y.data, base + c, y.dtype,
                    std::exp(load_as<T>(x.data, base + c, x.dtype) - row_max) * inv_sum);
    }
  }
}

template <typename T>
void softmax_backward_rows(const View& y, const View& dy, int64_t rows, int64_t cols, bool log,
                           const View& dx) {
  const bool parallel = rows > 1 && rows * cols >= kParallelGrain;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t base = r * cols;
    double acc = 0;  // sum(dy * y) for softmax, sum(dy) for log-softmax
    for (int64_t c = 0; c < cols; ++c) {
      const double g = load_as<double>(dy.data, base + c, dy.dtype);
      acc += log ? g : g * load_as<double>(y.data, base + c, y.dtype);
    }
    const T row_term = static_cast<T>(acc);
    for (int64_t c = 0; c < cols; ++c) {
      const T yv = load_as<T>(y.data, base + c, y.dtype);
      const T g = load_as<T>(dy.data, base + c, dy.dtype);
      store_as<T>(dx.data, base + c, dx.dtype,
                  log ? g - std::exp(yv) * row_term : yv * (g - row_term));
    }
  }
}

}  // namespace

void softmax_forward(const View& x, int64_t rows, int64_t cols, bool log, const View& y) {
  if (x.dtype == DType::F64) {
    softmax_rows<double>(x, rows, cols, log, y);
  } else {
    softmax_rows<float>(x, rows, cols, log, y);
  }
}

void softmax_backward(const View& y, const View& dy, int64_t rows, int64_t cols, bool log,
                      const View& dx) {
  if (y.dtype == DType::F64) {
    softmax_backward_rows<double>(y, dy, rows, cols, log, dx);
  } else {
    softmax_backward_rows<float>(y, dy, rows, cols, log, dx);
  }
}

}  // namespace distill::kernels::cpu
