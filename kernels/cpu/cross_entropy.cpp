// CPU reference for the fused softmax-cross-entropy (see kernels/cross_entropy.h for the math).
// One row per iteration, rows in parallel. Elementwise math runs in the compute type (float, or
// double for F64 logits) through typed pointers; row sums accumulate in double.
#include "kernels/cross_entropy.h"

#include <cmath>
#include <limits>

#include "kernels/cpu/loops.h"

namespace distill::kernels::cpu {

namespace {

// Element access for one buffer: plain pointer reads/writes for F32 and F64 (the common cases,
// so the inner loops vectorise), the generic dtype switch otherwise.
template <typename S, typename A>
struct TypedIo {
  S* p;
  A get(int64_t i) const { return static_cast<A>(p[i]); }
  void set(int64_t i, A v) const { p[i] = static_cast<S>(v); }
};
template <typename A>
struct GenericIo {
  void* p;
  DType t;
  A get(int64_t i) const { return load_as<A>(p, i, t); }
  void set(int64_t i, A v) const { store_as<A>(p, i, t, v); }
};

// fn(io) with the compute type A = double for F64 data, float otherwise.
template <typename Fn>
void with_io(const View& v, Fn&& fn) {
  switch (v.dtype) {
    case DType::F32:
      fn(TypedIo<float, float>{static_cast<float*>(v.data)});
      return;
    case DType::F64:
      fn(TypedIo<double, double>{static_cast<double*>(v.data)});
      return;
    default:
      fn(GenericIo<float>{v.data, v.dtype});
      return;
  }
}

struct RowStats {
  double max = 0;      // m: max of the raw logits
  double log_sum = 0;  // log(sum_c exp((z_c - m) / T))
};

// Max first, then the shifted exponential sum. A NaN logit is skipped by the max but makes the
// sum (hence the loss and the whole gradient row) NaN, as in PyTorch.
template <typename Io>
RowStats row_stats_of(const Io& z, int64_t base, int64_t cols, double inv_t) {
  using A = decltype(z.get(0));
  A m = -std::numeric_limits<A>::infinity();
  for (int64_t c = 0; c < cols; ++c) {
    const A v = z.get(base + c);
    m = v > m ? v : m;
  }
  const A scale = static_cast<A>(inv_t);
  double sum = 0;
  for (int64_t c = 0; c < cols; ++c) sum += std::exp((z.get(base + c) - m) * scale);
  return {static_cast<double>(m), std::log(sum)};
}

void store_stats(const View& row_stats, int64_t r, const RowStats& s) {
  store_as<double>(row_stats.data, 2 * r, row_stats.dtype, s.max);
  store_as<double>(row_stats.data, 2 * r + 1, row_stats.dtype, s.log_sum);
}

RowStats load_stats(const View& row_stats, int64_t r) {
  return {load_as<double>(row_stats.data, 2 * r, row_stats.dtype),
          load_as<double>(row_stats.data, 2 * r + 1, row_stats.dtype)};
}

bool parallel_rows(const CrossEntropyArgs& a) {
  return a.rows > 1 && a.rows * a.cols >= kParallelGrain;
}

}  // namespace

void cross_entropy_forward(const View& logits, const View& labels, const CrossEntropyArgs& args,
                           const View& loss, const View& row_stats, const View& valid) {
  const int64_t cols = args.cols;
  const double inv_t = args.inv_temperature;
  const double eps = args.label_smoothing;
  with_io(logits, [&](auto z) {
#pragma omp parallel for schedule(static) if (parallel_rows(args))
    for (int64_t r = 0; r < args.rows; ++r) {
      const int64_t base = r * cols;
      const RowStats s = row_stats_of(z, base, cols, inv_t);
      store_stats(row_stats, r, s);
      const int64_t y = static_cast<const int64_t*>(labels.data)[r];
      double row_loss = 0;
      const bool ignored = y == args.ignore_index;
      if (!ignored) {
        if (y < 0 || y >= cols) {
          row_loss = std::numeric_limits<double>::quiet_NaN();
        } else {
          const double nll = (s.max - static_cast<double>(z.get(base + y))) * inv_t + s.log_sum;
          row_loss = (1 - eps) * nll;
          if (eps > 0) {
            // mean_c (lse - u_c) = log_sum + mean_c (m - z_c) / T: all terms non-negative.
            double below_max = 0;
            for (int64_t c = 0; c < cols; ++c)
              below_max += s.max - static_cast<double>(z.get(base + c));
            row_loss += eps * (s.log_sum + below_max * inv_t / static_cast<double>(cols));
          }
        }
      }
      store_as<double>(loss.data, r, loss.dtype, row_loss);
      if (valid.data) store_as<double>(valid.data, r, valid.dtype, ignored ? 0.0 : 1.0);
    }
  });
}

void cross_entropy_backward(const View& logits, const View& labels, const View& row_stats,
                            const View& grad_loss, const CrossEntropyArgs& args,
                            const View& dlogits) {
  const int64_t cols = args.cols;
  const int64_t g_stride = grad_loss.strides[0];
  with_io(logits, [&](auto z) {
    with_io(dlogits, [&](auto dz) {
      using A = decltype(z.get(0));
      const A inv_t = static_cast<A>(args.inv_temperature);
      const A eps = static_cast<A>(args.label_smoothing);
      const A smooth = eps / static_cast<A>(cols);
#pragma omp parallel for schedule(static) if (parallel_rows(args))
      for (int64_t r = 0; r < args.rows; ++r) {
        const int64_t base = r * cols;
        const int64_t y = static_cast<const int64_t*>(labels.data)[r];
        if (y == args.ignore_index) {
          for (int64_t c = 0; c < cols; ++c) dz.set(base + c, A(0));
          continue;
        }
        const RowStats s = load_stats(row_stats, r);
        const A m = static_cast<A>(s.max), log_sum = static_cast<A>(s.log_sum);
        A scale =
            static_cast<A>(load_as<double>(grad_loss.data, r * g_stride, grad_loss.dtype)) * inv_t;
        if (y < 0 || y >= cols) scale = std::numeric_limits<A>::quiet_NaN();
        for (int64_t c = 0; c < cols; ++c) {
          const A p = std::exp((z.get(base + c) - m) * inv_t - log_sum);
          dz.set(base + c, (p - smooth) * scale);
        }
        if (y >= 0 && y < cols) {
          const A p = std::exp((z.get(base + y) - m) * inv_t - log_sum);
          dz.set(base + y, (p - smooth - (A(1) - eps)) * scale);
        }
      }
    });
  });
}

void soft_cross_entropy_forward(const View& logits, const View& target,
                                const CrossEntropyArgs& args, const View& loss,
                                const View& row_stats, const View& target_sum) {
  const int64_t cols = args.cols;
  const double inv_t = args.inv_temperature;
  with_io(logits, [&](auto z) {
    with_io(target, [&](auto t) {
#pragma omp parallel for schedule(static) if (parallel_rows(args))
      for (int64_t r = 0; r < args.rows; ++r) {
        const int64_t base = r * cols;
        const RowStats s = row_stats_of(z, base, cols, inv_t);
        store_stats(row_stats, r, s);
        // sum_c t_c (lse - u_c) = sum(t) log_sum + sum_c t_c (m - z_c) / T.
        double t_sum = 0, t_below_max = 0;
        for (int64_t c = 0; c < cols; ++c) {
          const double tc = static_cast<double>(t.get(base + c));
          t_sum += tc;
          t_below_max += tc * (s.max - static_cast<double>(z.get(base + c)));
        }
        store_as<double>(loss.data, r, loss.dtype, t_sum * s.log_sum + t_below_max * inv_t);
        store_as<double>(target_sum.data, r, target_sum.dtype, t_sum);
      }
    });
  });
}

void soft_cross_entropy_backward(const View& logits, const View& target, const View& row_stats,
                                 const View& target_sum, const View& grad_loss,
                                 const CrossEntropyArgs& args, const View& dlogits) {
  const int64_t cols = args.cols;
  const int64_t g_stride = grad_loss.strides[0];
  with_io(logits, [&](auto z) {
    with_io(target, [&](auto t) {
      with_io(dlogits, [&](auto dz) {
        using A = decltype(z.get(0));
        const A inv_t = static_cast<A>(args.inv_temperature);
#pragma omp parallel for schedule(static) if (parallel_rows(args))
        for (int64_t r = 0; r < args.rows; ++r) {
          const int64_t base = r * cols;
          const RowStats s = load_stats(row_stats, r);
          const A m = static_cast<A>(s.max), log_sum = static_cast<A>(s.log_sum);
          const A t_sum = static_cast<A>(load_as<double>(target_sum.data, r, target_sum.dtype));
          const A scale =
              static_cast<A>(load_as<double>(grad_loss.data, r * g_stride, grad_loss.dtype)) *
              inv_t;
          for (int64_t c = 0; c < cols; ++c) {
            const A p = std::exp((z.get(base + c) - m) * inv_t - log_sum);
            dz.set(base + c, (p * t_sum - static_cast<A>(t.get(base + c))) * scale);
          }
        }
      });
    });
  });
}

}  // namespace distill::kernels::cpu
