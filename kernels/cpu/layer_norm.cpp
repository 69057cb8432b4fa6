// CPU layer norm over the last axis of contiguous [rows, cols] buffers. Row statistics and the
// backward's row sums accumulate in double; mean/rstd are stored in the stats views' dtype.
#include "kernels/layer_norm.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/loops.h"

namespace distill::kernels::cpu {

namespace {
// Columns per task when reducing dgamma/dbeta down the rows: each task owns its columns, so no
// two threads write the same accumulator.
constexpr int64_t kColumnBlock = 64;
}  // namespace

void layer_norm_forward(const View& x, const View& gamma, const View& beta, int64_t rows,
                        int64_t cols, double eps, const View& y, const View& mean,
                        const View& rstd) {
  const bool parallel = rows > 1 && rows * cols >= kParallelGrain;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t base = r * cols;
    double sum = 0;
    for (int64_t c = 0; c < cols; ++c) sum += load_as<double>(x.data, base + c, x.dtype);
    const double mu = sum / static_cast<double>(cols);
    double sq = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const double d = load_as<double>(x.data, base + c, x.dtype) - mu;
      sq += d * d;
    }
    const double inv_std = 1.0 / std::sqrt(sq / static_cast<double>(cols) + eps);
    for (int64_t c = 0; c < cols; ++c) {
      double v = (load_as<double>(x.data, base + c, x.dtype) - mu) * inv_std;
      if (gamma.data) v *= load_as<double>(gamma.data, c, gamma.dtype);
      if (beta.data) v += load_as<double>(beta.data, c, beta.dtype);
      store_as<double>(y.data, base + c, y.dtype, v);
    }
    store_as<double>(mean.data, r, mean.dtype, mu);
    store_as<double>(rstd.data, r, rstd.dtype, inv_std);
  }
}

void layer_norm_backward(const View& x, const View& gamma, const View& mean, const View& rstd,
                         const View& dy, int64_t rows, int64_t cols, const View& dx,
                         const View& dgamma, const View& dbeta) {
  const bool parallel = rows > 1 && rows * cols >= kParallelGrain;
  // dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), with g = dy * gamma.
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t base = r * cols;
    const double mu = load_as<double>(mean.data, r, mean.dtype);
    const double inv_std = load_as<double>(rstd.data, r, rstd.dtype);
    double sum_g = 0, sum_g_xhat = 0;
    for (int64_t c = 0; c < cols; ++c) {
      double g = load_as<double>(dy.data, base + c, dy.dtype);
      if (gamma.data) g *= load_as<double>(gamma.data, c, gamma.dtype);
      const double xhat = (load_as<double>(x.data, base + c, x.dtype) - mu) * inv_std;
      sum_g += g;
      sum_g_xhat += g * xhat;
    }
    const double mean_g = sum_g / static_cast<double>(cols);
    const double mean_g_xhat = sum_g_xhat / static_cast<double>(cols);
    for (int64_t c = 0; c < cols; ++c) {
      double g = load_as<double>(dy.data, base + c, dy.dtype);
      if (gamma.data) g *= load_as<double>(gamma.data, c, gamma.dtype);
      const double xhat = (load_as<double>(x.data, base + c, x.dtype) - mu) * inv_std;
      store_as<double>(dx.data, base + c, dx.dtype, inv_std * (g - mean_g - xhat * mean_g_xhat));
    }
  }
  if (!dgamma.data && !dbeta.data) return;
  // dgamma = sum_rows(dy * xhat), dbeta = sum_rows(dy): parallel over column blocks.
  const int64_t blocks = (cols + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (parallel && blocks > 1)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kColumnBlock, c1 = std::min(cols, c0 + kColumnBlock);
    double acc_gamma[kColumnBlock] = {}, acc_beta[kColumnBlock] = {};
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t base = r * cols;
      const double mu = load_as<double>(mean.data, r, mean.dtype);
      const double inv_std = load_as<double>(rstd.data, r, rstd.dtype);
      for (int64_t c = c0; c < c1; ++c) {
        const double g = load_as<double>(dy.data, base + c, dy.dtype);
        acc_gamma[c - c0] += g * (load_as<double>(x.data, base + c, x.dtype) - mu) * inv_std;
        acc_beta[c - c0] += g;
      }
    }
    for (int64_t c = c0; c < c1; ++c) {
      if (dgamma.data) store_as<double>(dgamma.data, c, dgamma.dtype, acc_gamma[c - c0]);
      if (dbeta.data) store_as<double>(dbeta.data, c, dbeta.dtype, acc_beta[c - c0]);
    }
  }
}

}  // namespace distill::kernels::cpu
