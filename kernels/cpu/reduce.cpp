// CPU reductions over the last axis of a contiguous [rows, cols] buffer. Every row accumulates in
// double whatever the storage dtype, so this is the accuracy reference for the CUDA kernels.
#include "kernels/reduce.h"

#include <cmath>
#include <limits>

#include "kernels/cpu/loops.h"

namespace distill::kernels::cpu {

namespace {

// Max/min that propagate NaN like PyTorch: once a NaN is seen the result stays NaN.
double reduce_extreme(const void* x, DType dtype, int64_t base, int64_t cols, bool want_max) {
  double best =
      want_max ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity();
  for (int64_t c = 0; c < cols; ++c) {
    const double v = load_as<double>(x, base + c, dtype);
    if (std::isnan(v)) return v;
    if (want_max ? v > best : v < best) best = v;
  }
  return best;
}

// Index of the first maximum; a NaN counts as larger than everything (PyTorch's rule).
int64_t reduce_argmax(const void* x, DType dtype, int64_t base, int64_t cols) {
  int64_t best_index = 0;
  double best = -std::numeric_limits<double>::infinity();
  for (int64_t c = 0; c < cols; ++c) {
    const double v = load_as<double>(x, base + c, dtype);
    if (std::isnan(v)) return c;
    if (v > best || c == 0) {
      best = v;
      best_index = c;
    }
  }
  return best_index;
}

// Integer sums stay integral so they are exact beyond 2^53.
int64_t reduce_sum_int(const void* x, DType dtype, int64_t base, int64_t cols) {
  int64_t acc = 0;
  for (int64_t c = 0; c < cols; ++c) acc += load_as<int64_t>(x, base + c, dtype);
  return acc;
}

double reduce_sum(const void* x, DType dtype, int64_t base, int64_t cols) {
  double acc = 0;
  for (int64_t c = 0; c < cols; ++c) acc += load_as<double>(x, base + c, dtype);
  return acc;
}

// Two passes (mean, then squared deviations) in double: stable without Welford's bookkeeping.
double reduce_var(const void* x, DType dtype, int64_t base, int64_t cols, int64_t correction) {
  const double mean = reduce_sum(x, dtype, base, cols) / static_cast<double>(cols);
  double sq = 0;
  for (int64_t c = 0; c < cols; ++c) {
    const double d = load_as<double>(x, base + c, dtype) - mean;
    sq += d * d;
  }
  // Like PyTorch, a non-positive divisor gives inf/nan rather than an error.
  return sq / static_cast<double>(cols - correction);
}

}  // namespace

void reduce_rows(ReduceOp op, const void* x, DType dtype, int64_t rows, int64_t cols, void* out,
                 DType out_dtype, int64_t correction) {
  const bool parallel = rows > 1 && rows * cols >= kParallelGrain;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t base = r * cols;
    switch (op) {
      case ReduceOp::Sum:
        if (is_floating(dtype)) {
          store_as<double>(out, r, out_dtype, reduce_sum(x, dtype, base, cols));
        } else {
          store_as<int64_t>(out, r, out_dtype, reduce_sum_int(x, dtype, base, cols));
        }
        break;
      case ReduceOp::Mean:
        store_as<double>(out, r, out_dtype,
                         reduce_sum(x, dtype, base, cols) / static_cast<double>(cols));
        break;
      case ReduceOp::Max:
        store_as<double>(out, r, out_dtype, reduce_extreme(x, dtype, base, cols, true));
        break;
      case ReduceOp::Min:
        store_as<double>(out, r, out_dtype, reduce_extreme(x, dtype, base, cols, false));
        break;
      case ReduceOp::ArgMax:
        store_as<int64_t>(out, r, out_dtype, reduce_argmax(x, dtype, base, cols));
        break;
      case ReduceOp::Var:
        store_as<double>(out, r, out_dtype, reduce_var(x, dtype, base, cols, correction));
        break;
    }
  }
}

}  // namespace distill::kernels::cpu
