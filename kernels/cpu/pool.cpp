// CPU reference pooling (kernels/pool.h): one output (forward) or input (backward) row per task,
// sums in double.
#include "kernels/pool.h"

#include <cmath>
#include <limits>

#include "kernels/cpu/loops.h"

namespace distill::kernels::cpu {

namespace {

// Runs fn(plane, row) over planes x rows, in parallel when the whole job is large enough.
template <typename Fn>
void for_rows(int64_t planes, int64_t rows, int64_t row_len, Fn&& fn) {
  const int64_t tasks = planes * rows;
  const bool parallel = tasks > 1 && tasks * row_len >= kParallelGrain;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t t = 0; t < tasks; ++t) fn(t / rows, t % rows);
}

}  // namespace

void avg_pool2d_forward(const View& x, const Pool2dArgs& a, const View& y) {
  for_rows(a.planes, a.out_h, a.out_w, [&](int64_t plane, int64_t oh) {
    const int64_t in_base = plane * a.in_h * a.in_w;
    for (int64_t ow = 0; ow < a.out_w; ++ow) {
      const PoolWindow win = pool_window(a, oh, ow);
      double sum = 0;
      for (int64_t h = win.h0; h < win.h1; ++h)
        for (int64_t w = win.w0; w < win.w1; ++w)
          sum += load_as<double>(x.data, in_base + h * a.in_w + w, x.dtype);
      store_as<double>(y.data, (plane * a.out_h + oh) * a.out_w + ow, y.dtype,
                       sum / static_cast<double>(win.divisor));
    }
  });
}

void avg_pool2d_backward(const View& dy, const Pool2dArgs& a, const View& dx) {
  for_rows(a.planes, a.in_h, a.in_w, [&](int64_t plane, int64_t h) {
    const int64_t out_base = plane * a.out_h * a.out_w;
    int64_t oh0, oh1;
    covering_outputs(h, a.pad_h, a.kernel_h, a.stride_h, a.out_h, &oh0, &oh1);
    for (int64_t w = 0; w < a.in_w; ++w) {
      int64_t ow0, ow1;
      covering_outputs(w, a.pad_w, a.kernel_w, a.stride_w, a.out_w, &ow0, &ow1);
      double sum = 0;
      for (int64_t oh = oh0; oh <= oh1; ++oh)
        for (int64_t ow = ow0; ow <= ow1; ++ow)
          sum += load_as<double>(dy.data, out_base + oh * a.out_w + ow, dy.dtype) /
                 static_cast<double>(pool_window(a, oh, ow).divisor);
      store_as<double>(dx.data, (plane * a.in_h + h) * a.in_w + w, dx.dtype, sum);
    }
  });
}

void max_pool2d_forward(const View& x, const Pool2dArgs& a, const View& y, const View& indices) {
  for_rows(a.planes, a.out_h, a.out_w, [&](int64_t plane, int64_t oh) {
    const int64_t in_base = plane * a.in_h * a.in_w;
    for (int64_t ow = 0; ow < a.out_w; ++ow) {
      const PoolWindow win = pool_window(a, oh, ow);
      double best = -std::numeric_limits<double>::infinity();
      int64_t best_index = win.h0 * a.in_w + win.w0;
      for (int64_t h = win.h0; h < win.h1; ++h) {
        for (int64_t w = win.w0; w < win.w1; ++w) {
          const double v = load_as<double>(x.data, in_base + h * a.in_w + w, x.dtype);
          if (v > best || std::isnan(v)) {
            best = v;
            best_index = h * a.in_w + w;
          }
        }
      }
      const int64_t o = (plane * a.out_h + oh) * a.out_w + ow;
      store_as<double>(y.data, o, y.dtype, best);
      static_cast<int64_t*>(indices.data)[o] = best_index;
    }
  });
}

void max_pool2d_backward(const View& dy, const View& indices, const Pool2dArgs& a, const View& dx) {
  const int64_t* idx = static_cast<const int64_t*>(indices.data);
  for_rows(a.planes, a.in_h, a.in_w, [&](int64_t plane, int64_t h) {
    const int64_t out_base = plane * a.out_h * a.out_w;
    int64_t oh0, oh1;
    covering_outputs(h, a.pad_h, a.kernel_h, a.stride_h, a.out_h, &oh0, &oh1);
    for (int64_t w = 0; w < a.in_w; ++w) {
      int64_t ow0, ow1;
      covering_outputs(w, a.pad_w, a.kernel_w, a.stride_w, a.out_w, &ow0, &ow1);
      const int64_t self = h * a.in_w + w;
      double sum = 0;
      for (int64_t oh = oh0; oh <= oh1; ++oh)
        for (int64_t ow = ow0; ow <= ow1; ++ow)
          if (idx[out_base + oh * a.out_w + ow] == self)
            sum += load_as<double>(dy.data, out_base + oh * a.out_w + ow, dy.dtype);
      store_as<double>(dx.data, (plane * a.in_h + h) * a.in_w + w, dx.dtype, sum);
    }
  });
}

void adaptive_avg_pool2d_forward(const View& x, const Pool2dArgs& a, const View& y) {
  for_rows(a.planes, a.out_h, a.out_w, [&](int64_t plane, int64_t oh) {
    const int64_t in_base = plane * a.in_h * a.in_w;
    const int64_t h0 = adaptive_start(oh, a.in_h, a.out_h), h1 = adaptive_end(oh, a.in_h, a.out_h);
    for (int64_t ow = 0; ow < a.out_w; ++ow) {
      const int64_t w0 = adaptive_start(ow, a.in_w, a.out_w),
                    w1 = adaptive_end(ow, a.in_w, a.out_w);
      double sum = 0;
      for (int64_t h = h0; h < h1; ++h)
        for (int64_t w = w0; w < w1; ++w)
          sum += load_as<double>(x.data, in_base + h * a.in_w + w, x.dtype);
      store_as<double>(y.data, (plane * a.out_h + oh) * a.out_w + ow, y.dtype,
                       sum / static_cast<double>((h1 - h0) * (w1 - w0)));
    }
  });
}

void adaptive_avg_pool2d_backward(const View& dy, const Pool2dArgs& a, const View& dx) {
  for_rows(a.planes, a.in_h, a.in_w, [&](int64_t plane, int64_t h) {
    const int64_t out_base = plane * a.out_h * a.out_w;
    int64_t oh0, oh1;
    adaptive_covering_outputs(h, a.in_h, a.out_h, &oh0, &oh1);
    for (int64_t w = 0; w < a.in_w; ++w) {
      int64_t ow0, ow1;
      adaptive_covering_outputs(w, a.in_w, a.out_w, &ow0, &ow1);
      double sum = 0;
      for (int64_t oh = oh0; oh <= oh1; ++oh) {
        const int64_t rows =
            adaptive_end(oh, a.in_h, a.out_h) - adaptive_start(oh, a.in_h, a.out_h);
        for (int64_t ow = ow0; ow <= ow1; ++ow) {
          const int64_t cols =
              adaptive_end(ow, a.in_w, a.out_w) - adaptive_start(ow, a.in_w, a.out_w);
          sum += load_as<double>(dy.data, out_base + oh * a.out_w + ow, dy.dtype) /
                 static_cast<double>(rows * cols);
        }
      }
      store_as<double>(dx.data, (plane * a.in_h + h) * a.in_w + w, dx.dtype, sum);
    }
  });
}

}  // namespace distill::kernels::cpu
