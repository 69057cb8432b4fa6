// CUDA elementwise family: copy/cast, fill, arange, unary (+ backward), binary, compare, where.
//
// Semantics follow kernels/cpu/elementwise.cpp: floating math in double for F64 and in float
// otherwise (16-bit types widened on load, rounded once on store), integers in int64. Every op
// goes through one of two kernels: a vectorised one (16-byte loads/stores, grid-stride) when all
// operands are contiguous and aligned, and a strided one driven by OffsetCalc otherwise.
#include <type_traits>
#include <utility>

#include "kernels/cuda/cuda_utils.cuh"
#include "kernels/elementwise.h"

namespace distill::kernels::cuda {

namespace {

// ---- vector access

template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) AlignedVec {
  T v[kVec];
};

// Elements per thread in the vectorised kernel: 16 bytes of the widest operand.
template <typename... Ts>
constexpr int vec_width() {
  constexpr size_t widest = std::max({sizeof(Ts)...});
  return widest >= 16 ? 1 : static_cast<int>(16 / widest);
}

template <int kVec, typename T>
__device__ __forceinline__ AlignedVec<T, kVec> load_vec(const T* p, int64_t vi) {
  return reinterpret_cast<const AlignedVec<T, kVec>*>(p)[vi];
}

template <typename C, int kVec, typename F, typename Out, typename... In>
__device__ __forceinline__ void compute_store_vec(const F& f, Out* out, int64_t vi,
                                                  const AlignedVec<In, kVec>&... in) {
  AlignedVec<Out, kVec> result;
#pragma unroll
  for (int k = 0; k < kVec; ++k) result.v[k] = from_acc<Out>(f(to_acc<C>(in.v[k])...));
  reinterpret_cast<AlignedVec<Out, kVec>*>(out)[vi] = result;
}

// out[i] = f(in...[i]) over contiguous, kVec-aligned operands; the tail past the last full
// vector is done element by element.
template <typename C, int kVec, typename F, typename Out, typename... In>
__global__ void map_contiguous_kernel(F f, int64_t n, Out* out, const In*... in) {
  const int64_t num_vec = n / kVec;
  for (int64_t vi = global_thread_id(); vi < num_vec; vi += grid_stride())
    compute_store_vec<C, kVec>(f, out, vi, load_vec<kVec>(in, vi)...);
  for (int64_t i = num_vec * kVec + global_thread_id(); i < n; i += grid_stride())
    out[i] = from_acc<Out>(f(to_acc<C>(in[i])...));
}

template <typename C, typename F, typename Out, size_t... K, typename... In>
__device__ __forceinline__ void apply_strided(const F& f, const int64_t* off, Out* out,
                                              std::index_sequence<K...>, const In*... in) {
  out[off[0]] = from_acc<Out>(f(to_acc<C>(in[off[K + 1]])...));
}

// Any strides (0 on broadcast dims). Operand 0 of `calc` is the output.
template <typename C, typename F, typename Out, typename... In>
__global__ void map_strided_kernel(F f, int64_t n, OffsetCalc<sizeof...(In) + 1> calc, Out* out,
                                   const In*... in) {
  for (int64_t i = global_thread_id(); i < n; i += grid_stride()) {
    int64_t off[sizeof...(In) + 1];
    calc.get(i, off);
    apply_strided<C>(f, off, out, std::index_sequence_for<In...>{}, in...);
  }
}

template <typename C, typename Out, typename... In, typename F, size_t... K>
void launch_map_impl(const char* op, const F& f, const View& out,
                     const std::array<const View*, sizeof...(In)>& ins, std::index_sequence<K...>) {
  const int64_t n = out.numel();
  if (n == 0) return;
  for (const View* v : ins)
    if (v->ndim != out.ndim)
      throw std::runtime_error(std::string(op) + ": operand rank " + std::to_string(v->ndim) +
                               " differs from the output's " + std::to_string(out.ndim));
  constexpr int kVec = vec_width<Out, In...>();
  const bool contiguous = out.is_contiguous() && (ins[K]->is_contiguous() && ... && true);
  const bool aligned = is_aligned(out.data, kVec * sizeof(Out)) &&
                       (is_aligned(ins[K]->data, kVec * sizeof(In)) && ... && true);
  Out* o = static_cast<Out*>(out.data);
  if (contiguous && aligned) {
    map_contiguous_kernel<C, kVec>
        <<<grid_for((n + kVec - 1) / kVec), kBlockSize, 0, current_stream()>>>(
            f, n, o, static_cast<const In*>(ins[K]->data)...);
  } else {
    const std::array<const View*, sizeof...(In) + 1> views{&out, ins[K]...};
    const auto calc = make_offset_calc<sizeof...(In) + 1>(out, views);
    map_strided_kernel<C><<<grid_for(n), kBlockSize, 0, current_stream()>>>(
        f, n, calc, o, static_cast<const In*>(ins[K]->data)...);
  }
  check_launch(op);
}

// out = f(ins...) with operand storage types Out / In... and compute type C.
template <typename C, typename Out, typename... In, typename F>
void launch_map(const char* op, const F& f, const View& out,
                const std::array<const View*, sizeof...(In)>& ins) {
  launch_map_impl<C, Out, In...>(op, f, out, ins, std::index_sequence_for<In...>{});
}

void require_dtype(const char* op, const char* what, DType got, DType want) {
  if (got != want)
    throw std::runtime_error(std::string(op) + ": " + what + " has dtype " + dtype_name(got) +
                             ", expected " + dtype_name(want));
}

// ---- scalar math (overloads pick the float or double device function; no fast-math intrinsics,
// so results stay within an ulp or two of the CPU's libm)

__device__ __forceinline__ float d_exp(float v) {
  return expf(v);
}
__device__ __forceinline__ double d_exp(double v) {
  return exp(v);
}
__device__ __forceinline__ float d_log(float v) {
  return logf(v);
}
__device__ __forceinline__ double d_log(double v) {
  return log(v);
}
__device__ __forceinline__ float d_sqrt(float v) {
  return sqrtf(v);
}
__device__ __forceinline__ double d_sqrt(double v) {
  return sqrt(v);
}
__device__ __forceinline__ float d_tanh(float v) {
  return tanhf(v);
}
__device__ __forceinline__ double d_tanh(double v) {
  return tanh(v);
}
__device__ __forceinline__ float d_erf(float v) {
  return erff(v);
}
__device__ __forceinline__ double d_erf(double v) {
  return erf(v);
}
__device__ __forceinline__ float d_pow(float a, float b) {
  return powf(a, b);
}
__device__ __forceinline__ double d_pow(double a, double b) {
  return pow(a, b);
}
__device__ __forceinline__ float d_abs(float v) {
  return fabsf(v);
}
__device__ __forceinline__ double d_abs(double v) {
  return fabs(v);
}

template <typename T>
__device__ __forceinline__ T sigmoid_of(T x) {
  // Split by sign so exp never overflows: exact 0/1 limits for large |x|, never NaN.
  if (x >= T(0)) return T(1) / (T(1) + d_exp(-x));
  const T e = d_exp(x);
  return e / (T(1) + e);
}

template <typename T>
__device__ __forceinline__ T gelu_cdf(T x) {
  return T(0.5) * (T(1) + d_erf(x * T(0.70710678118654752440)));
}

constexpr double kQuickGeluAlpha = 1.702;

template <UnaryOp kOp, typename C>
struct UnaryFn {
  C s;
  __device__ __forceinline__ C operator()(C v) const {
    if constexpr (kOp == UnaryOp::Neg) return -v;
    if constexpr (kOp == UnaryOp::Exp) return d_exp(v);
    if constexpr (kOp == UnaryOp::Log) return d_log(v);
    if constexpr (kOp == UnaryOp::Sqrt) return d_sqrt(v);
    if constexpr (kOp == UnaryOp::Rsqrt) return C(1) / d_sqrt(v);
    if constexpr (kOp == UnaryOp::Tanh) return d_tanh(v);
    if constexpr (kOp == UnaryOp::Sigmoid) return sigmoid_of(v);
    if constexpr (kOp == UnaryOp::Relu) return v < C(0) ? C(0) : v;  // keeps NaN
    if constexpr (kOp == UnaryOp::Gelu) return v * gelu_cdf(v);
    if constexpr (kOp == UnaryOp::QuickGelu) return v * sigmoid_of(C(kQuickGeluAlpha) * v);
    if constexpr (kOp == UnaryOp::Abs) return d_abs(v);
    if constexpr (kOp == UnaryOp::AddScalar) return v + s;
    if constexpr (kOp == UnaryOp::MulScalar) return v * s;
    if constexpr (kOp == UnaryOp::PowScalar) return d_pow(v, s);
  }
};

template <UnaryOp kOp>
struct IntUnaryFn {
  int64_t s;
  __device__ __forceinline__ int64_t operator()(int64_t v) const {
    if constexpr (kOp == UnaryOp::Neg) return -v;
    if constexpr (kOp == UnaryOp::Abs) return v < 0 ? -v : v;
    if constexpr (kOp == UnaryOp::AddScalar) return v + s;
    if constexpr (kOp == UnaryOp::MulScalar) return v * s;
    return v;
  }
};

// grad_in = f(x, y, g): forward input, forward output, incoming gradient.
template <UnaryOp kOp, typename C>
struct UnaryBackwardFn {
  C s;
  __device__ __forceinline__ C operator()(C x, C y, C g) const {
    if constexpr (kOp == UnaryOp::Neg) return -g;
    if constexpr (kOp == UnaryOp::Exp) return g * y;
    if constexpr (kOp == UnaryOp::Log) return g / x;
    if constexpr (kOp == UnaryOp::Sqrt) return g * C(0.5) / y;
    if constexpr (kOp == UnaryOp::Rsqrt) return g * C(-0.5) * y * y * y;  // -y^3 / 2
    if constexpr (kOp == UnaryOp::Tanh) return g * (C(1) - y * y);
    if constexpr (kOp == UnaryOp::Sigmoid) return g * y * (C(1) - y);
    if constexpr (kOp == UnaryOp::Relu) return x > C(0) ? g : C(0);
    if constexpr (kOp == UnaryOp::Gelu) {
      const C pdf = d_exp(C(-0.5) * x * x) * C(0.39894228040143267794);  // 1/sqrt(2 pi)
      return g * (gelu_cdf(x) + x * pdf);
    }
    if constexpr (kOp == UnaryOp::QuickGelu) {
      const C a = C(kQuickGeluAlpha);
      const C sg = sigmoid_of(a * x);
      return g * (sg + a * x * sg * (C(1) - sg));
    }
    if constexpr (kOp == UnaryOp::Abs) return x > C(0) ? g : (x < C(0) ? -g : C(0));
    if constexpr (kOp == UnaryOp::AddScalar) return g;
    if constexpr (kOp == UnaryOp::MulScalar) return g * s;
    if constexpr (kOp == UnaryOp::PowScalar) return s == C(0) ? C(0) : g * s * d_pow(x, s - C(1));
  }
};

// Calls launch(Fn<op, C>{s}) for the runtime op.
template <template <UnaryOp, typename> class Fn, typename C, typename Launch>
void with_unary_op(UnaryOp op, C s, Launch&& launch) {
  switch (op) {
    case UnaryOp::Neg:
      return launch(Fn<UnaryOp::Neg, C>{s});
    case UnaryOp::Exp:
      return launch(Fn<UnaryOp::Exp, C>{s});
    case UnaryOp::Log:
      return launch(Fn<UnaryOp::Log, C>{s});
    case UnaryOp::Sqrt:
      return launch(Fn<UnaryOp::Sqrt, C>{s});
    case UnaryOp::Rsqrt:
      return launch(Fn<UnaryOp::Rsqrt, C>{s});
    case UnaryOp::Tanh:
      return launch(Fn<UnaryOp::Tanh, C>{s});
    case UnaryOp::Sigmoid:
      return launch(Fn<UnaryOp::Sigmoid, C>{s});
    case UnaryOp::Relu:
      return launch(Fn<UnaryOp::Relu, C>{s});
    case UnaryOp::Gelu:
      return launch(Fn<UnaryOp::Gelu, C>{s});
    case UnaryOp::QuickGelu:
      return launch(Fn<UnaryOp::QuickGelu, C>{s});
    case UnaryOp::Abs:
      return launch(Fn<UnaryOp::Abs, C>{s});
    case UnaryOp::AddScalar:
      return launch(Fn<UnaryOp::AddScalar, C>{s});
    case UnaryOp::MulScalar:
      return launch(Fn<UnaryOp::MulScalar, C>{s});
    case UnaryOp::PowScalar:
      return launch(Fn<UnaryOp::PowScalar, C>{s});
  }
  throw std::runtime_error("unary: unknown op");
}

// ---- binary / compare / where

template <typename T>
__device__ __forceinline__ bool is_nan(T v) {
  return v != v;  // false for integers
}

template <BinaryOp kOp, typename C>
struct BinaryFn {
  __device__ __forceinline__ C operator()(C x, C y) const {
    if constexpr (kOp == BinaryOp::Add) return x + y;
    if constexpr (kOp == BinaryOp::Sub) return x - y;
    if constexpr (kOp == BinaryOp::Mul) return x * y;
    if constexpr (kOp == BinaryOp::Div) return x / y;
    if constexpr (kOp == BinaryOp::Pow) return d_pow(x, y);
    // Maximum/minimum propagate NaN from either side, like PyTorch.
    if constexpr (kOp == BinaryOp::Maximum) return (is_nan(x) || x > y) ? x : y;
    if constexpr (kOp == BinaryOp::Minimum) return (is_nan(x) || x < y) ? x : y;
  }
};

template <CompareOp kOp, typename C>
struct CompareFn {
  __device__ __forceinline__ C operator()(C x, C y) const {
    if constexpr (kOp == CompareOp::Eq) return C(x == y);
    if constexpr (kOp == CompareOp::Ne) return C(x != y);
    if constexpr (kOp == CompareOp::Lt) return C(x < y);
    if constexpr (kOp == CompareOp::Le) return C(x <= y);
    if constexpr (kOp == CompareOp::Gt) return C(x > y);
    if constexpr (kOp == CompareOp::Ge) return C(x >= y);
  }
};

template <typename C>
struct WhereFn {
  __device__ __forceinline__ C operator()(C c, C x, C y) const { return c != C(0) ? x : y; }
};

template <typename C>
struct IdentityFn {
  __device__ __forceinline__ C operator()(C v) const { return v; }
};

// Compute type of the integer/floating families: int64 for integers, else float/double.
template <typename T>
using compute_t = std::conditional_t<std::is_integral_v<T>, int64_t, acc_t<T>>;

template <typename T>
constexpr bool is_float_storage() {
  return !std::is_integral_v<T>;
}

// Fill/arange: a value already rounded to the destination dtype on the host, written as raw
// bits of the element's width.
template <typename W>
__global__ void fill_contiguous_kernel(W* dst, int64_t n, W value) {
  for (int64_t i = global_thread_id(); i < n; i += grid_stride()) dst[i] = value;
}
template <typename W>
__global__ void fill_strided_kernel(W* dst, int64_t n, OffsetCalc<1> calc, W value) {
  for (int64_t i = global_thread_id(); i < n; i += grid_stride()) {
    int64_t off[1];
    calc.get(i, off);
    dst[off[0]] = value;
  }
}

template <typename T>
__global__ void arange_kernel(T* dst, int64_t n, OffsetCalc<1> calc, double start, double step) {
  for (int64_t i = global_thread_id(); i < n; i += grid_stride()) {
    int64_t off[1];
    calc.get(i, off);
    // Explicit round-to-nearest ops: no fma contraction, so the value equals the CPU's
    // start + i * step exactly.
    dst[off[0]] = from_acc<T>(__dadd_rn(start, __dmul_rn(static_cast<double>(i), step)));
  }
}

template <typename Fn>
void dispatch_word_of(DType t, Fn&& fn) {
  switch (dtype_size(t)) {
    case 1:
      fn(TypeTag<uint8_t>{});
      return;
    case 2:
      fn(TypeTag<uint16_t>{});
      return;
    case 4:
      fn(TypeTag<uint32_t>{});
      return;
    default:
      fn(TypeTag<uint64_t>{});
      return;
  }
}

}  // namespace

void copy(const View& src, const View& dst) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  if (src.ndim != dst.ndim || src.numel() != n)
    throw std::runtime_error("copy: source and destination shapes differ");
  NvtxRange range("copy");
  if (src.dtype == dst.dtype) {
    if (src.is_contiguous() && dst.is_contiguous()) {
      DISTILL_CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data,
                                         static_cast<size_t>(n * dtype_size(dst.dtype)),
                                         cudaMemcpyDeviceToDevice, current_stream()));
      return;
    }
    // Same dtype: move raw bits of the element width.
    dispatch_word_of(dst.dtype, [&](auto tag) {
      using W = typename decltype(tag)::type;
      launch_map<W, W, W>("copy", IdentityFn<W>{}, dst, {&src});
    });
    return;
  }
  // Casts go through the CPU's intermediate type where it matters: int64 between integers,
  // double when an F64 or an integer meets a floating type (int64 -> float must not be rounded
  // twice differently), float between the 32/16-bit floating types (exact either way).
  dispatch_all(src.dtype, "copy", [&](auto stag) {
    using S = typename decltype(stag)::type;
    dispatch_all(dst.dtype, "copy", [&](auto dtag) {
      using D = typename decltype(dtag)::type;
      if constexpr (!std::is_same_v<S, D>) {
        constexpr bool s_float = is_float_storage<S>(), d_float = is_float_storage<D>();
        using C = std::conditional_t < !s_float && !d_float, int64_t,
              std::conditional_t < s_float && d_float && !std::is_same_v<S, double> &&
                  !std::is_same_v<D, double>,
              float, double >>
            ;
        launch_map<C, D, S>("copy", IdentityFn<C>{}, dst, {&src});
      }
    });
  });
}

void fill(const View& dst, double value) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  NvtxRange range("fill");
  // Round once on the host exactly as the CPU's store_as<double> does.
  uint64_t bits = 0;
  store_as<double>(&bits, 0, dst.dtype, value);
  if (bits == 0 && dst.is_contiguous()) {
    DISTILL_CUDA_CHECK(cudaMemsetAsync(dst.data, 0, static_cast<size_t>(n * dtype_size(dst.dtype)),
                                       current_stream()));
    return;
  }
  dispatch_word_of(dst.dtype, [&](auto tag) {
    using W = typename decltype(tag)::type;
    W word;
    std::memcpy(&word, &bits, sizeof(W));  // little-endian: the value sits in the low bytes
    if (dst.is_contiguous()) {
      fill_contiguous_kernel<W>
          <<<grid_for(n), kBlockSize, 0, current_stream()>>>(static_cast<W*>(dst.data), n, word);
    } else {
      const auto calc = make_offset_calc<1>(dst, {&dst});
      fill_strided_kernel<W><<<grid_for(n), kBlockSize, 0, current_stream()>>>(
          static_cast<W*>(dst.data), n, calc, word);
    }
    check_launch("fill");
  });
}

void arange(const View& dst, double start, double step) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  NvtxRange range("arange");
  dispatch_all(dst.dtype, "arange", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const auto calc = make_offset_calc<1>(dst, {&dst});
    arange_kernel<T><<<grid_for(n), kBlockSize, 0, current_stream()>>>(static_cast<T*>(dst.data), n,
                                                                       calc, start, step);
    check_launch("arange");
  });
}

void unary(UnaryOp op, const View& x, const View& out, double scalar) {
  require_dtype("unary", "output", out.dtype, x.dtype);
  if (out.numel() == 0) return;
  NvtxRange range("unary");
  if (!is_floating(x.dtype)) {
    dispatch_all(x.dtype, "unary", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (std::is_integral_v<T>) {
        const int64_t s = static_cast<int64_t>(scalar);
        const auto launch = [&](auto fn) { launch_map<int64_t, T, T>("unary", fn, out, {&x}); };
        switch (op) {
          case UnaryOp::Neg:
            return launch(IntUnaryFn<UnaryOp::Neg>{s});
          case UnaryOp::Abs:
            return launch(IntUnaryFn<UnaryOp::Abs>{s});
          case UnaryOp::AddScalar:
            return launch(IntUnaryFn<UnaryOp::AddScalar>{s});
          case UnaryOp::MulScalar:
            return launch(IntUnaryFn<UnaryOp::MulScalar>{s});
          default:
            throw std::runtime_error(std::string("unary: this op is not supported for dtype ") +
                                     dtype_name(x.dtype));
        }
      }
    });
    return;
  }
  dispatch_floating(x.dtype, "unary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using C = acc_t<T>;
    with_unary_op<UnaryFn>(op, static_cast<C>(scalar),
                           [&](auto fn) { launch_map<C, T, T>("unary", fn, out, {&x}); });
  });
}

void unary_backward(UnaryOp op, const View& x, const View& y, const View& grad_out,
                    const View& grad_in, double scalar) {
  require_dtype("unary_backward", "x", x.dtype, grad_in.dtype);
  require_dtype("unary_backward", "y", y.dtype, grad_in.dtype);
  require_dtype("unary_backward", "grad_out", grad_out.dtype, grad_in.dtype);
  if (grad_in.numel() == 0) return;
  NvtxRange range("unary_backward");
  dispatch_floating(grad_in.dtype, "unary_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using C = acc_t<T>;
    with_unary_op<UnaryBackwardFn>(op, static_cast<C>(scalar), [&](auto fn) {
      launch_map<C, T, T, T, T>("unary_backward", fn, grad_in, {&x, &y, &grad_out});
    });
  });
}

void binary(BinaryOp op, const View& a, const View& b, const View& out) {
  require_dtype("binary", "b", b.dtype, a.dtype);
  require_dtype("binary", "output", out.dtype, a.dtype);
  if (out.numel() == 0) return;
  NvtxRange range("binary");
  dispatch_all(a.dtype, "binary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using C = compute_t<T>;
    const auto launch = [&](auto fn) { launch_map<C, T, T, T>("binary", fn, out, {&a, &b}); };
    switch (op) {
      case BinaryOp::Add:
        return launch(BinaryFn<BinaryOp::Add, C>{});
      case BinaryOp::Sub:
        return launch(BinaryFn<BinaryOp::Sub, C>{});
      case BinaryOp::Mul:
        return launch(BinaryFn<BinaryOp::Mul, C>{});
      case BinaryOp::Maximum:
        return launch(BinaryFn<BinaryOp::Maximum, C>{});
      case BinaryOp::Minimum:
        return launch(BinaryFn<BinaryOp::Minimum, C>{});
      case BinaryOp::Div:
      case BinaryOp::Pow:
        if constexpr (std::is_floating_point_v<C>) {
          return op == BinaryOp::Div ? launch(BinaryFn<BinaryOp::Div, C>{})
                                     : launch(BinaryFn<BinaryOp::Pow, C>{});
        }
        throw std::runtime_error(std::string("binary: div/pow are not supported for dtype ") +
                                 dtype_name(a.dtype));
    }
  });
}

void compare(CompareOp op, const View& a, const View& b, const View& out) {
  require_dtype("compare", "b", b.dtype, a.dtype);
  require_dtype("compare", "output", out.dtype, DType::U8);
  if (out.numel() == 0) return;
  NvtxRange range("compare");
  dispatch_all(a.dtype, "compare", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using C = compute_t<T>;  // widening to the compute type is exact
    const auto launch = [&](auto fn) {
      launch_map<C, uint8_t, T, T>("compare", fn, out, {&a, &b});
    };
    switch (op) {
      case CompareOp::Eq:
        return launch(CompareFn<CompareOp::Eq, C>{});
      case CompareOp::Ne:
        return launch(CompareFn<CompareOp::Ne, C>{});
      case CompareOp::Lt:
        return launch(CompareFn<CompareOp::Lt, C>{});
      case CompareOp::Le:
        return launch(CompareFn<CompareOp::Le, C>{});
      case CompareOp::Gt:
        return launch(CompareFn<CompareOp::Gt, C>{});
      case CompareOp::Ge:
        return launch(CompareFn<CompareOp::Ge, C>{});
    }
  });
}

void where(const View& cond, const View& a, const View& b, const View& out) {
  require_dtype("where", "cond", cond.dtype, DType::U8);
  require_dtype("where", "b", b.dtype, a.dtype);
  require_dtype("where", "output", out.dtype, a.dtype);
  if (out.numel() == 0) return;
  NvtxRange range("where");
  dispatch_all(a.dtype, "where", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using C = compute_t<T>;  // holds every value of T exactly, so bits pass through unchanged
    launch_map<C, T, uint8_t, T, T>("where", WhereFn<C>{}, out, {&cond, &a, &b});
  });
}

}  // namespace distill::kernels::cuda
