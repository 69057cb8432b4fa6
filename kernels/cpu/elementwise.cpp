// CPU reference for the elementwise family. Floating math runs in double for F64 inputs and in
// float otherwise (bf16/f16 are widened on load, rounded once on store).
#include "kernels/elementwise.h"

#include <array>
#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "kernels/cpu/loops.h"

namespace distill::kernels::cpu {

void copy(const View& src, const View& dst) {
  if (src.dtype == dst.dtype && src.is_contiguous() && dst.is_contiguous()) {
    std::memcpy(dst.data, src.data, static_cast<size_t>(dst.numel() * dtype_size(dst.dtype)));
    return;
  }
  for_each_row<2>(dst, {&src, &dst}, [&](const int64_t* offs, int64_t n, const int64_t* st) {
    for (int64_t i = 0; i < n; ++i) {
      const int64_t si = offs[0] + i * st[0], di = offs[1] + i * st[1];
      if (is_floating(src.dtype) || is_floating(dst.dtype)) {
        store_as<double>(dst.data, di, dst.dtype, load_as<double>(src.data, si, src.dtype));
      } else {
        store_as<int64_t>(dst.data, di, dst.dtype, load_as<int64_t>(src.data, si, src.dtype));
      }
    }
  });
}

void fill(const View& dst, double value) {
  for_each_row<1>(dst, {&dst}, [&](const int64_t* offs, int64_t n, const int64_t* st) {
    for (int64_t i = 0; i < n; ++i)
      store_as<double>(dst.data, offs[0] + i * st[0], dst.dtype, value);
  });
}

void arange(const View& dst, double start, double step) {
  const int64_t n = dst.numel();
  for (int64_t i = 0; i < n; ++i)
    store_as<double>(dst.data, dst.offset_of(i), dst.dtype, start + static_cast<double>(i) * step);
}

// ---- shared element loop

namespace {

// Whether dtype `d` is stored exactly as the compute type T (so raw pointers can be used).
template <typename T>
constexpr bool stored_as(DType d) {
  if constexpr (std::is_same_v<T, float>) return d == DType::F32;
  if constexpr (std::is_same_v<T, double>) return d == DType::F64;
  if constexpr (std::is_same_v<T, int64_t>) return d == DType::I64;
  return false;
}

template <typename T, size_t N, typename F, size_t... K>
T apply_at(F& f, const std::array<const View*, N>& in, const int64_t* idx,
           std::index_sequence<K...>) {
  return f(load_as<T>(in[K]->data, idx[K], in[K]->dtype)...);
}

// out[i] = f(in_0[i], ..., in_{N-1}[i]) with every operand converted to the compute type T.
// All operands share out's logical shape (inputs are pre-broadcast with stride 0).
template <typename T, size_t N, typename F>
void map_elements(const View& out, const std::array<const View*, N>& in, F f) {
  const int64_t n = out.numel();
  if (n == 0) return;
  bool contiguous = out.is_contiguous();
  bool native = stored_as<T>(out.dtype);
  for (const View* v : in) {
    contiguous = contiguous && v->is_contiguous();
    native = native && stored_as<T>(v->dtype);
  }
  const bool parallel = n >= kParallelGrain;
  if (contiguous && native) {
    // Hot path: plain typed pointers, which the compiler can vectorise.
    T* o = static_cast<T*>(out.data);
    std::array<const T*, N> p;
    for (size_t k = 0; k < N; ++k) p[k] = static_cast<const T*>(in[k]->data);
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t i = 0; i < n; ++i) {
      o[i] = [&]<size_t... K>(std::index_sequence<K...>) {
        return f(p[K][i]...);
      }
      (std::make_index_sequence<N>{});
    }
    return;
  }
  if (contiguous) {
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t i = 0; i < n; ++i) {
      int64_t idx[N > 0 ? N : 1];
      for (size_t k = 0; k < N; ++k) idx[k] = i;
      store_as<T>(out.data, i, out.dtype,
                  apply_at<T, N>(f, in, idx, std::make_index_sequence<N>{}));
    }
    return;
  }
  std::array<const View*, N + 1> views;
  for (size_t k = 0; k < N; ++k) views[k] = in[k];
  views[N] = &out;
  for_each_row<static_cast<int>(N + 1)>(
      out, views, [&](const int64_t* offs, int64_t count, const int64_t* st) {
        if (native) {
          // Strided/broadcast rows of native operands (e.g. a bias added to every row).
          T* o = static_cast<T*>(out.data) + offs[N];
          std::array<const T*, N> p;
          for (size_t k = 0; k < N; ++k) p[k] = static_cast<const T*>(in[k]->data) + offs[k];
          for (int64_t i = 0; i < count; ++i) {
            o[i * st[N]] = [&]<size_t... K>(std::index_sequence<K...>) {
              return f(p[K][i * st[K]]...);
            }
            (std::make_index_sequence<N>{});
          }
          return;
        }
        int64_t idx[N + 1];
        for (int64_t i = 0; i < count; ++i) {
          for (size_t k = 0; k <= N; ++k) idx[k] = offs[k] + i * st[k];
          store_as<T>(out.data, idx[N], out.dtype,
                      apply_at<T, N>(f, in, idx, std::make_index_sequence<N>{}));
        }
      });
}

[[noreturn]] void unsupported(const char* kernel, const char* what, DType dtype) {
  static const char* const names[] = {"f32", "f64", "bf16", "f16", "i32", "i64", "u8"};
  throw std::invalid_argument(std::string("cpu::") + kernel + ": " + what +
                              " is not supported for dtype " + names[static_cast<int>(dtype)]);
}

// ---- scalar math shared by forward and backward (T = float or double)

template <typename T>
T sigmoid_of(T x) {
  // Split by sign so exp never overflows: exact 0/1 limits for large |x|, never NaN.
  if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
  const T e = std::exp(x);
  return e / (T(1) + e);
}

template <typename T>
T gelu_cdf(T x) {
  return T(0.5) * (T(1) + std::erf(x * T(0.70710678118654752440)));
}

constexpr double kQuickGeluAlpha = 1.702;

template <typename T>
void unary_float(UnaryOp op, const View& x, const View& out, double scalar) {
  const T s = static_cast<T>(scalar);
  const std::array<const View*, 1> in{&x};
  switch (op) {
    case UnaryOp::Neg:
      return map_elements<T>(out, in, [](T v) { return -v; });
    case UnaryOp::Exp:
      return map_elements<T>(out, in, [](T v) { return std::exp(v); });
    case UnaryOp::Log:
      return map_elements<T>(out, in, [](T v) { return std::log(v); });
    case UnaryOp::Sqrt:
      return map_elements<T>(out, in, [](T v) { return std::sqrt(v); });
    case UnaryOp::Rsqrt:
      return map_elements<T>(out, in, [](T v) { return T(1) / std::sqrt(v); });
    case UnaryOp::Tanh:
      return map_elements<T>(out, in, [](T v) { return std::tanh(v); });
    case UnaryOp::Sigmoid:
      return map_elements<T>(out, in, [](T v) { return sigmoid_of(v); });
    // `v < 0 ? 0 : v` keeps NaN as NaN, like PyTorch.
    case UnaryOp::Relu:
      return map_elements<T>(out, in, [](T v) { return v < T(0) ? T(0) : v; });
    case UnaryOp::Gelu:
      return map_elements<T>(out, in, [](T v) { return v * gelu_cdf(v); });
    case UnaryOp::QuickGelu:
      return map_elements<T>(out, in, [](T v) { return v * sigmoid_of(T(kQuickGeluAlpha) * v); });
    case UnaryOp::Abs:
      return map_elements<T>(out, in, [](T v) { return std::abs(v); });
    case UnaryOp::AddScalar:
      return map_elements<T>(out, in, [s](T v) { return v + s; });
    case UnaryOp::MulScalar:
      return map_elements<T>(out, in, [s](T v) { return v * s; });
    case UnaryOp::PowScalar:
      return map_elements<T>(out, in, [s](T v) { return std::pow(v, s); });
  }
}

void unary_integer(UnaryOp op, const View& x, const View& out, double scalar) {
  using T = int64_t;
  const T s = static_cast<T>(scalar);
  const std::array<const View*, 1> in{&x};
  switch (op) {
    case UnaryOp::Neg:
      return map_elements<T>(out, in, [](T v) { return -v; });
    case UnaryOp::Abs:
      return map_elements<T>(out, in, [](T v) { return v < 0 ? -v : v; });
    case UnaryOp::AddScalar:
      return map_elements<T>(out, in, [s](T v) { return v + s; });
    case UnaryOp::MulScalar:
      return map_elements<T>(out, in, [s](T v) { return v * s; });
    default:
      unsupported("unary", "this op", x.dtype);
  }
}

template <typename T>
void unary_backward_float(UnaryOp op, const View& x, const View& y, const View& grad_out,
                          const View& grad_in, double scalar) {
  const T s = static_cast<T>(scalar);
  // Every derivative takes (x, y, g): the forward input, the forward output, the incoming grad.
  const std::array<const View*, 3> in{&x, &y, &grad_out};
  auto run = [&](auto f) { map_elements<T>(grad_in, in, f); };
  switch (op) {
    case UnaryOp::Neg:
      return run([](T, T, T g) { return -g; });
    case UnaryOp::Exp:
      return run([](T, T yv, T g) { return g * yv; });
    case UnaryOp::Log:
      return run([](T xv, T, T g) { return g / xv; });
    case UnaryOp::Sqrt:
      return run([](T, T yv, T g) { return g * T(0.5) / yv; });
    // d/dx x^(-1/2) = -x^(-3/2) / 2 = -y^3 / 2
    case UnaryOp::Rsqrt:
      return run([](T, T yv, T g) { return g * T(-0.5) * yv * yv * yv; });
    case UnaryOp::Tanh:
      return run([](T, T yv, T g) { return g * (T(1) - yv * yv); });
    case UnaryOp::Sigmoid:
      return run([](T, T yv, T g) { return g * yv * (T(1) - yv); });
    case UnaryOp::Relu:
      return run([](T xv, T, T g) { return xv > T(0) ? g : T(0); });
    case UnaryOp::Gelu:
      return run([](T xv, T, T g) {
        const T pdf = std::exp(T(-0.5) * xv * xv) * T(0.39894228040143267794);  // 1/sqrt(2 pi)
        return g * (gelu_cdf(xv) + xv * pdf);
      });
    case UnaryOp::QuickGelu:
      return run([](T xv, T, T g) {
        const T a = T(kQuickGeluAlpha);
        const T sg = sigmoid_of(a * xv);
        return g * (sg + a * xv * sg * (T(1) - sg));
      });
    // sign(x), with 0 at x == 0 like PyTorch.
    case UnaryOp::Abs:
      return run([](T xv, T, T g) { return xv > T(0) ? g : (xv < T(0) ? -g : T(0)); });
    case UnaryOp::AddScalar:
      return run([](T, T, T g) { return g; });
    case UnaryOp::MulScalar:
      return run([s](T, T, T g) { return g * s; });
    case UnaryOp::PowScalar:
      return run([s](T xv, T, T g) { return s == T(0) ? T(0) : g * s * std::pow(xv, s - T(1)); });
  }
}

// Maximum/minimum propagate NaN from either side, like PyTorch.
// `a != a` is the NaN test (false for integers).
template <typename T>
T max_nan(T a, T b) {
  return (a != a || a > b) ? a : b;
}
template <typename T>
T min_nan(T a, T b) {
  return (a != a || a < b) ? a : b;
}

template <typename T>
void binary_typed(BinaryOp op, const View& a, const View& b, const View& out) {
  const std::array<const View*, 2> in{&a, &b};
  switch (op) {
    case BinaryOp::Add:
      return map_elements<T>(out, in, [](T x, T y) { return x + y; });
    case BinaryOp::Sub:
      return map_elements<T>(out, in, [](T x, T y) { return x - y; });
    case BinaryOp::Mul:
      return map_elements<T>(out, in, [](T x, T y) { return x * y; });
    case BinaryOp::Maximum:
      return map_elements<T>(out, in, [](T x, T y) { return max_nan(x, y); });
    case BinaryOp::Minimum:
      return map_elements<T>(out, in, [](T x, T y) { return min_nan(x, y); });
    case BinaryOp::Div:
      if constexpr (std::is_floating_point_v<T>)
        return map_elements<T>(out, in, [](T x, T y) { return x / y; });
      unsupported("binary", "div", a.dtype);
    case BinaryOp::Pow:
      if constexpr (std::is_floating_point_v<T>)
        return map_elements<T>(out, in, [](T x, T y) { return std::pow(x, y); });
      unsupported("binary", "pow", a.dtype);
  }
}

template <typename T>
void compare_typed(CompareOp op, const View& a, const View& b, const View& out) {
  const std::array<const View*, 2> in{&a, &b};
  // The result (0 or 1) is stored through store_as into the U8 output.
  switch (op) {
    case CompareOp::Eq:
      return map_elements<T>(out, in, [](T x, T y) { return T(x == y); });
    case CompareOp::Ne:
      return map_elements<T>(out, in, [](T x, T y) { return T(x != y); });
    case CompareOp::Lt:
      return map_elements<T>(out, in, [](T x, T y) { return T(x < y); });
    case CompareOp::Le:
      return map_elements<T>(out, in, [](T x, T y) { return T(x <= y); });
    case CompareOp::Gt:
      return map_elements<T>(out, in, [](T x, T y) { return T(x > y); });
    case CompareOp::Ge:
      return map_elements<T>(out, in, [](T x, T y) { return T(x >= y); });
  }
}

// Floating math runs in double for F64 and in float for the rest (bf16/f16 widened on load).
bool computes_in_double(DType t) {
  return t == DType::F64;
}

}  // namespace

void unary(UnaryOp op, const View& x, const View& out, double scalar) {
  if (!is_floating(x.dtype)) return unary_integer(op, x, out, scalar);
  if (computes_in_double(x.dtype)) return unary_float<double>(op, x, out, scalar);
  unary_float<float>(op, x, out, scalar);
}

void unary_backward(UnaryOp op, const View& x, const View& y, const View& grad_out,
                    const View& grad_in, double scalar) {
  if (!is_floating(grad_in.dtype)) unsupported("unary_backward", "a gradient", grad_in.dtype);
  if (computes_in_double(grad_in.dtype))
    return unary_backward_float<double>(op, x, y, grad_out, grad_in, scalar);
  unary_backward_float<float>(op, x, y, grad_out, grad_in, scalar);
}

void binary(BinaryOp op, const View& a, const View& b, const View& out) {
  if (!is_floating(a.dtype)) return binary_typed<int64_t>(op, a, b, out);
  if (computes_in_double(a.dtype)) return binary_typed<double>(op, a, b, out);
  binary_typed<float>(op, a, b, out);
}

void compare(CompareOp op, const View& a, const View& b, const View& out) {
  // Integers compare as int64 (exact); floats in their compute type (widening is exact).
  if (!is_floating(a.dtype)) return compare_typed<int64_t>(op, a, b, out);
  if (computes_in_double(a.dtype)) return compare_typed<double>(op, a, b, out);
  compare_typed<float>(op, a, b, out);
}

void where(const View& cond, const View& a, const View& b, const View& out) {
  const std::array<const View*, 3> in{&cond, &a, &b};
  // Each type below holds its dtype's values exactly, so `where` copies bits unchanged.
  auto select = [](auto c, auto x, auto y) { return c != decltype(c)(0) ? x : y; };
  if (!is_floating(a.dtype)) return map_elements<int64_t>(out, in, select);
  if (computes_in_double(a.dtype)) return map_elements<double>(out, in, select);
  map_elements<float>(out, in, select);
}

}  // namespace distill::kernels::cpu
