// CPU reference convolution: im2col + OpenBLAS GEMM, one image at a time (the GEMM itself runs on
// OpenBLAS's threads; im2col/col2im on OpenMP's). f32 and f64 compute in their own type; bf16 and
// f16 are widened to f32 once, computed in f32 and rounded once when stored.
#include "kernels/conv.h"

#include <cblas.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/cpu/loops.h"

namespace distill::kernels::cpu {

namespace {

using Geom = Conv2dGeometry;

blasint blas_dim(int64_t v, const char* op) {
  if (v < 0 || v > static_cast<int64_t>(INT32_MAX))
    throw std::invalid_argument(std::string(op) + ": GEMM dimension " + std::to_string(v) +
                                " does not fit a BLAS int");
  return static_cast<blasint>(v);
}

// C[m, n] = alpha * op(A) @ op(B) + beta * C, row-major and dense.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a, const T* b,
          T beta, T* c) {
  const blasint bm = blas_dim(m, "conv2d"), bn = blas_dim(n, "conv2d"), bk = blas_dim(k, "conv2d");
  const blasint lda = trans_a ? bm : bk, ldb = trans_b ? bk : bn;
  const auto ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, double>) {
    cblas_dgemm(CblasRowMajor, ta, tb, bm, bn, bk, 1.0, a, std::max<blasint>(lda, 1), b,
                std::max<blasint>(ldb, 1), beta, c, std::max<blasint>(bn, 1));
  } else {
    cblas_sgemm(CblasRowMajor, ta, tb, bm, bn, bk, 1.0f, a, std::max<blasint>(lda, 1), b,
                std::max<blasint>(ldb, 1), beta, c, std::max<blasint>(bn, 1));
  }
}

// A read-only operand in the compute type: the caller's memory when the dtype already matches,
// else a widened copy.
template <typename T>
class Input {
 public:
  Input(const void* data, DType dtype, int64_t count) {
    if (dtype == DType::F32 && std::is_same_v<T, float>) {
      ptr_ = static_cast<const T*>(data);
    } else if (dtype == DType::F64 && std::is_same_v<T, double>) {
      ptr_ = static_cast<const T*>(data);
    } else {
      copy_.resize(static_cast<size_t>(count));
      const bool parallel = count >= kParallelGrain;
#pragma omp parallel for schedule(static) if (parallel)
      for (int64_t i = 0; i < count; ++i) copy_[i] = load_as<T>(data, i, dtype);
      ptr_ = copy_.data();
    }
  }
  const T* get() const {
    return ptr_;
  }

 private:
  const T* ptr_ = nullptr;
  std::vector<T> copy_;
};

// A write-only result in the compute type, stored to the caller's dtype by finish().
template <typename T>
class Output {
 public:
  Output(void* data, DType dtype, int64_t count) : data_(data), dtype_(dtype), count_(count) {
    const bool direct = (dtype == DType::F32 && std::is_same_v<T, float>) ||
                        (dtype == DType::F64 && std::is_same_v<T, double>);
    if (direct) {
      ptr_ = static_cast<T*>(data);
    } else {
      copy_.resize(static_cast<size_t>(count));
      ptr_ = copy_.data();
    }
  }
  T* get() const { return ptr_; }
  void finish() {
    if (copy_.empty()) return;
    const bool parallel = count_ >= kParallelGrain;
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t i = 0; i < count_; ++i) store_as<T>(data_, i, dtype_, copy_[i]);
  }

 private:
  void* data_;
  DType dtype_;
  int64_t count_;
  T* ptr_ = nullptr;
  std::vector<T> copy_;
};

// A 1x1, stride-1, unpadded convolution's im2col matrix is the image itself.
bool is_pointwise(const Geom& g) {
  return g.kernel_h == 1 && g.kernel_w == 1 && g.stride_h == 1 && g.stride_w == 1 && g.pad_h == 0 &&
         g.pad_w == 0;
}

// col[(c, r, s), (p, q)] = x[c, p*sh - ph + r*dh, q*sw - pw + s*dw] (0 outside the image).
template <typename T>
void im2col(const Geom& g, const T* x, T* col) {
  const int64_t rows = g.in_channels * g.kernel_h * g.kernel_w;
  const int64_t pq = g.out_h * g.out_w;
  const bool parallel = rows > 1 && rows * pq >= kParallelGrain;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t s = row % g.kernel_w;
    const int64_t r = (row / g.kernel_w) % g.kernel_h;
    const int64_t c = row / (g.kernel_w * g.kernel_h);
    const T* plane = x + c * g.in_h * g.in_w;
    T* out = col + row * pq;
    for (int64_t p = 0; p < g.out_h; ++p) {
      const int64_t h = p * g.stride_h - g.pad_h + r * g.dilation_h;
      T* out_row = out + p * g.out_w;
      if (h < 0 || h >= g.in_h) {
        for (int64_t q = 0; q < g.out_w; ++q) out_row[q] = T(0);
        continue;
      }
      const T* in_row = plane + h * g.in_w;
      for (int64_t q = 0; q < g.out_w; ++q) {
        const int64_t w = q * g.stride_w - g.pad_w + s * g.dilation_w;
        out_row[q] = (w >= 0 && w < g.in_w) ? in_row[w] : T(0);
      }
    }
  }
}

// The adjoint of im2col: dx[c, h, w] = sum of the col entries that read x[c, h, w]. Each channel
// is owned by one thread, so the accumulation needs no atomics.
template <typename T>
void col2im(const Geom& g, const T* col, T* dx) {
  const int64_t pq = g.out_h * g.out_w;
  const int64_t hw = g.in_h * g.in_w;
  const bool parallel =
      g.in_channels > 1 && g.in_channels * g.kernel_h * g.kernel_w * pq >= kParallelGrain;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t c = 0; c < g.in_channels; ++c) {
    T* plane = dx + c * hw;
    for (int64_t i = 0; i < hw; ++i) plane[i] = T(0);
    for (int64_t r = 0; r < g.kernel_h; ++r) {
      for (int64_t s = 0; s < g.kernel_w; ++s) {
        const T* in = col + ((c * g.kernel_h + r) * g.kernel_w + s) * pq;
        for (int64_t p = 0; p < g.out_h; ++p) {
          const int64_t h = p * g.stride_h - g.pad_h + r * g.dilation_h;
          if (h < 0 || h >= g.in_h) continue;
          T* out_row = plane + h * g.in_w;
          const T* in_row = in + p * g.out_w;
          for (int64_t q = 0; q < g.out_w; ++q) {
            const int64_t w = q * g.stride_w - g.pad_w + s * g.dilation_w;
            if (w >= 0 && w < g.in_w) out_row[w] += in_row[q];
          }
        }
      }
    }
  }
}

template <typename T>
void forward_impl(const Conv2dForwardArgs& a) {
  const Geom& g = a.geom;
  const int64_t crs = g.in_channels * g.kernel_h * g.kernel_w;
  const int64_t pq = g.out_h * g.out_w;
  const int64_t chw = g.in_channels * g.in_h * g.in_w;
  Input<T> x(a.x, a.dtype, g.x_numel());
  Input<T> w(a.w, a.dtype, g.w_numel());
  Output<T> y(a.y, a.dtype, g.y_numel());
  std::vector<T> bias;
  if (a.bias) {
    bias.resize(static_cast<size_t>(g.out_channels));
    for (int64_t k = 0; k < g.out_channels; ++k) bias[k] = load_as<T>(a.bias, k, a.dtype);
  }
  const bool pointwise = is_pointwise(g);
  std::vector<T> col(pointwise ? 0 : static_cast<size_t>(crs * pq));
  for (int64_t n = 0; n < g.batch; ++n) {
    const T* x_n = x.get() + n * chw;
    T* y_n = y.get() + n * g.out_channels * pq;
    if (!pointwise) im2col(g, x_n, col.data());
    // y_n [K, PQ] = w [K, CRS] @ col [CRS, PQ]
    gemm<T>(false, false, g.out_channels, pq, crs, w.get(), pointwise ? x_n : col.data(), T(0),
            y_n);
    if (!bias.empty()) {
      for (int64_t k = 0; k < g.out_channels; ++k)
        for (int64_t i = 0; i < pq; ++i) y_n[k * pq + i] += bias[k];
    }
  }
  y.finish();
}

template <typename T>
void backward_data_impl(const Conv2dBackwardDataArgs& a) {
  const Geom& g = a.geom;
  const int64_t crs = g.in_channels * g.kernel_h * g.kernel_w;
  const int64_t pq = g.out_h * g.out_w;
  const int64_t chw = g.in_channels * g.in_h * g.in_w;
  Input<T> dy(a.dy, a.dtype, g.y_numel());
  Input<T> w(a.w, a.dtype, g.w_numel());
  Output<T> dx(a.dx, a.dtype, g.x_numel());
  const bool pointwise = is_pointwise(g);
  std::vector<T> col(pointwise ? 0 : static_cast<size_t>(crs * pq));
  for (int64_t n = 0; n < g.batch; ++n) {
    T* dx_n = dx.get() + n * chw;
    // col [CRS, PQ] = w^T [CRS, K] @ dy_n [K, PQ]; a pointwise conv writes dx_n directly.
    gemm<T>(true, false, crs, pq, g.out_channels, w.get(), dy.get() + n * g.out_channels * pq, T(0),
            pointwise ? dx_n : col.data());
    if (!pointwise) col2im(g, col.data(), dx_n);
  }
  dx.finish();
}

template <typename T>
void backward_weight_impl(const Conv2dBackwardWeightArgs& a) {
  const Geom& g = a.geom;
  const int64_t crs = g.in_channels * g.kernel_h * g.kernel_w;
  const int64_t pq = g.out_h * g.out_w;
  const int64_t chw = g.in_channels * g.in_h * g.in_w;
  Input<T> dy(a.dy, a.dtype, g.y_numel());
  Input<T> x(a.x, a.dtype, g.x_numel());
  Output<T> dw(a.dw, a.dtype, g.w_numel());
  const bool pointwise = is_pointwise(g);
  std::vector<T> col(pointwise ? 0 : static_cast<size_t>(crs * pq));
  if (g.batch == 0) {
    for (int64_t i = 0; i < g.w_numel(); ++i) dw.get()[i] = T(0);
  }
  for (int64_t n = 0; n < g.batch; ++n) {
    const T* x_n = x.get() + n * chw;
    if (!pointwise) im2col(g, x_n, col.data());
    // dw [K, CRS] (+)= dy_n [K, PQ] @ col^T [PQ, CRS]
    gemm<T>(false, true, g.out_channels, crs, pq, dy.get() + n * g.out_channels * pq,
            pointwise ? x_n : col.data(), n == 0 ? T(0) : T(1), dw.get());
  }
  dw.finish();
}

void check_dtype(DType t, const char* op) {
  if (!is_floating(t)) throw std::invalid_argument(std::string(op) + ": needs a floating dtype");
}

}  // namespace

void conv2d_forward(const Conv2dForwardArgs& args) {
  check_dtype(args.dtype, "conv2d");
  if (args.dtype == DType::F64) return forward_impl<double>(args);
  forward_impl<float>(args);
}

void conv2d_backward_data(const Conv2dBackwardDataArgs& args) {
  check_dtype(args.dtype, "conv2d_backward_data");
  if (args.dtype == DType::F64) return backward_data_impl<double>(args);
  backward_data_impl<float>(args);
}

void conv2d_backward_weight(const Conv2dBackwardWeightArgs& args) {
  check_dtype(args.dtype, "conv2d_backward_weight");
  if (args.dtype == DType::F64) return backward_weight_impl<double>(args);
  backward_weight_impl<float>(args);
}

}  // namespace distill::kernels::cpu
