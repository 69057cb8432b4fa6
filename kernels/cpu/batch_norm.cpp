// CPU reference batch norm (kernels/batch_norm.h). Per-channel statistics in double with two
// passes (mean, then centred squares), so large means do not cancel.
#include "kernels/batch_norm.h"

#include <cmath>

#include "kernels/cpu/loops.h"

namespace distill::kernels::cpu {

namespace {

// Calls fn(offset) for every element of channel c, outer-major.
template <typename Fn>
void for_channel(const BatchNormShape& s, int64_t c, Fn&& fn) {
  for (int64_t n = 0; n < s.outer; ++n) {
    const int64_t base = (n * s.channels + c) * s.inner;
    for (int64_t i = 0; i < s.inner; ++i) fn(base + i);
  }
}

double load_or(const View& v, int64_t i, double fallback) {
  return v.data ? load_as<double>(v.data, i, v.dtype) : fallback;
}

bool parallel_channels(const BatchNormShape& s) {
  return s.channels > 1 && s.outer * s.channels * s.inner >= kParallelGrain;
}

}  // namespace

void batch_norm_stats(const View& x, const BatchNormShape& shape, double eps, double momentum,
                      const View& save_mean, const View& save_rstd, const View& running_mean,
                      const View& running_var) {
  const double count = static_cast<double>(shape.outer * shape.inner);
#pragma omp parallel for schedule(static) if (parallel_channels(shape))
  for (int64_t c = 0; c < shape.channels; ++c) {
    double sum = 0;
    for_channel(shape, c, [&](int64_t o) { sum += load_as<double>(x.data, o, x.dtype); });
    const double mean = sum / count;
    double sq = 0;
    for_channel(shape, c, [&](int64_t o) {
      const double d = load_as<double>(x.data, o, x.dtype) - mean;
      sq += d * d;
    });
    const double var = sq / count;
    store_as<double>(save_mean.data, c, save_mean.dtype, mean);
    store_as<double>(save_rstd.data, c, save_rstd.dtype, 1.0 / std::sqrt(var + eps));
    if (running_mean.data) {
      const double rm = load_as<double>(running_mean.data, c, running_mean.dtype);
      store_as<double>(running_mean.data, c, running_mean.dtype,
                       (1 - momentum) * rm + momentum * mean);
    }
    if (running_var.data) {
      const double unbiased = count > 1 ? sq / (count - 1) : var;
      const double rv = load_as<double>(running_var.data, c, running_var.dtype);
      store_as<double>(running_var.data, c, running_var.dtype,
                       (1 - momentum) * rv + momentum * unbiased);
    }
  }
}

void batch_norm_apply(const View& x, const BatchNormShape& shape, const View& mean,
                      const View& rstd_or_var, bool second_is_var, double eps, const View& weight,
                      const View& bias, const View& y) {
  const int64_t planes = shape.outer * shape.channels;
  const bool parallel = planes > 1 && planes * shape.inner >= kParallelGrain;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t p = 0; p < planes; ++p) {
    const int64_t c = p % shape.channels;
    const double mu = load_as<double>(mean.data, c, mean.dtype);
    const double second = load_as<double>(rstd_or_var.data, c, rstd_or_var.dtype);
    const double rstd = second_is_var ? 1.0 / std::sqrt(second + eps) : second;
    const double scale = rstd * load_or(weight, c, 1.0);
    const double shift = load_or(bias, c, 0.0);
    const int64_t base = p * shape.inner;
    for (int64_t i = 0; i < shape.inner; ++i)
      store_as<double>(y.data, base + i, y.dtype,
                       (load_as<double>(x.data, base + i, x.dtype) - mu) * scale + shift);
  }
}

void batch_norm_backward(const View& x, const View& dy, const BatchNormShape& shape,
                         const View& save_mean, const View& save_rstd, const View& weight,
                         const View& dx, const View& dweight, const View& dbias) {
  const double count = static_cast<double>(shape.outer * shape.inner);
#pragma omp parallel for schedule(static) if (parallel_channels(shape))
  for (int64_t c = 0; c < shape.channels; ++c) {
    const double mu = load_as<double>(save_mean.data, c, save_mean.dtype);
    const double rstd = load_as<double>(save_rstd.data, c, save_rstd.dtype);
    double sum_dy = 0, sum_dy_xhat = 0;
    for_channel(shape, c, [&](int64_t o) {
      const double g = load_as<double>(dy.data, o, dy.dtype);
      sum_dy += g;
      sum_dy_xhat += g * (load_as<double>(x.data, o, x.dtype) - mu) * rstd;
    });
    if (dweight.data) store_as<double>(dweight.data, c, dweight.dtype, sum_dy_xhat);
    if (dbias.data) store_as<double>(dbias.data, c, dbias.dtype, sum_dy);
    if (!dx.data) continue;
    const double scale = load_or(weight, c, 1.0) * rstd;
    const double mean_dy = sum_dy / count, mean_dy_xhat = sum_dy_xhat / count;
    for_channel(shape, c, [&](int64_t o) {
      const double xhat = (load_as<double>(x.data, o, x.dtype) - mu) * rstd;
      const double g = load_as<double>(dy.data, o, dy.dtype);
      store_as<double>(dx.data, o, dx.dtype, scale * (g - mean_dy - xhat * mean_dy_xhat));
    });
  }
}

}  // namespace distill::kernels::cpu
