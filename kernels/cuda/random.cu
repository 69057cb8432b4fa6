// CUDA random fills and dropout. Element i uses Philox counter offset + i (kernels/philox.h, shared
// with the CPU), so both backends draw the same stream for the same (seed, offset).
#include "kernels/cuda/cuda_utils.cuh"
#include "kernels/philox.h"
#include "kernels/random.h"

namespace distill::kernels::cuda {

namespace {

// Values are formed in double by the shared philox helpers and rounded once to T, exactly as the
// CPU's store_as<double> does (double -> float -> 16-bit for the half types).
template <typename T, RandomKind kKind>
__global__ void random_fill_kernel(T* dst, int64_t n, uint64_t seed, uint64_t offset, double a,
                                   double b) {
  for (int64_t i = global_thread_id(); i < n; i += grid_stride()) {
    const uint64_t counter = offset + static_cast<uint64_t>(i);
    const double v = kKind == RandomKind::Uniform ? philox_uniform_in(seed, counter, a, b)
                                                  : philox_normal_with(seed, counter, a, b);
    dst[i] = from_acc<T>(v);
  }
}

// A = float, or double for F64 inputs, as on the CPU: out = x * keep * scale in that order.
template <typename T>
__global__ void dropout_kernel(const T* x, int64_t n, double p, acc_t<T> scale, uint64_t seed,
                               uint64_t offset, T* out, uint8_t* mask) {
  using A = acc_t<T>;
  for (int64_t i = global_thread_id(); i < n; i += grid_stride()) {
    // Compared in double, as the CPU does (not against p rounded to float).
    const uint8_t keep =
        static_cast<double>(philox_uniform(seed, offset + static_cast<uint64_t>(i))) >= p ? 1 : 0;
    mask[i] = keep;
    out[i] = from_acc<T>(to_acc<A>(x[i]) * A(keep) * scale);
  }
}

void require_contiguous(const char* op, const View& v, const char* name) {
  if (!v.is_contiguous())
    throw std::runtime_error(std::string(op) + ": " + name + " must be contiguous");
}

}  // namespace

void random_fill(RandomKind kind, const View& dst, uint64_t seed, uint64_t offset, double a,
                 double b) {
  require_contiguous("random_fill", dst, "dst");
  const int64_t n = dst.numel();
  if (n == 0) return;
  NvtxRange range("random_fill");
  dispatch_all(dst.dtype, "random_fill", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* out = static_cast<T*>(dst.data);
    if (kind == RandomKind::Uniform) {
      random_fill_kernel<T, RandomKind::Uniform>
          <<<grid_for(n), kBlockSize, 0, current_stream()>>>(out, n, seed, offset, a, b);
    } else {
      random_fill_kernel<T, RandomKind::Normal>
          <<<grid_for(n), kBlockSize, 0, current_stream()>>>(out, n, seed, offset, a, b);
    }
    check_launch("random_fill");
  });
}

void dropout(const View& x, double p, uint64_t seed, uint64_t offset, const View& out,
             const View& mask) {
  require_contiguous("dropout", x, "x");
  require_contiguous("dropout", out, "out");
  require_contiguous("dropout", mask, "mask");
  if (out.dtype != x.dtype || mask.dtype != DType::U8)
    throw std::runtime_error(std::string("dropout: expected out dtype ") + dtype_name(x.dtype) +
                             " and mask u8, got " + dtype_name(out.dtype) + " and " +
                             dtype_name(mask.dtype));
  const int64_t n = x.numel();
  if (n == 0) return;
  NvtxRange range("dropout");
  dispatch_floating(x.dtype, "dropout", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    // p == 1 drops everything; the scale is then irrelevant (and would be infinite).
    const A scale = p < 1.0 ? static_cast<A>(1.0 / (1.0 - p)) : A(0);
    dropout_kernel<T><<<grid_for(n), kBlockSize, 0, current_stream()>>>(
        static_cast<const T*>(x.data), n, p, scale, seed, offset, static_cast<T*>(out.data),
        static_cast<uint8_t*>(mask.data));
    check_launch("dropout");
  });
}

}  // namespace distill::kernels::cuda
