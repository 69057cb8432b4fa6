// Creation, device/dtype movement and in-place fills.
#include <cmath>

#include "core/error.h"
#include "core/ops.h"
#include "core/ops/dispatch.h"
#include "kernels/device.h"
#include "kernels/elementwise.h"
#include "kernels/random.h"

namespace distill {

Tensor full(const Shape& shape, double value, TensorOptions opts) {
  Tensor t = Tensor::empty(shape, TensorOptions(opts.dtype, opts.device));
  t.fill_(value);
  if (opts.requires_grad) t.set_requires_grad(true);
  return t;
}
Tensor zeros(const Shape& shape, TensorOptions opts) {
  return full(shape, 0.0, opts);
}
Tensor ones(const Shape& shape, TensorOptions opts) {
  return full(shape, 1.0, opts);
}
Tensor zeros_like(const Tensor& t) {
  return zeros(t.shape(), TensorOptions(t.dtype(), t.device()));
}
Tensor ones_like(const Tensor& t) {
  return ones(t.shape(), TensorOptions(t.dtype(), t.device()));
}

Tensor arange(double start, double end, double step, TensorOptions opts) {
  DISTILL_CHECK(step != 0, "arange: step must be nonzero");
  const double count = std::ceil((end - start) / step);
  const int64_t n = count > 0 ? static_cast<int64_t>(count) : 0;
  Tensor t = Tensor::empty({n}, TensorOptions(opts.dtype, opts.device));
  if (n > 0) DISTILL_DISPATCH(t.device(), arange, t.view_desc(), start, step);
  if (opts.requires_grad) t.set_requires_grad(true);
  return t;
}

namespace {
Tensor random_tensor(kernels::RandomKind kind, const Shape& shape, double a, double b,
                     TensorOptions opts, Generator* gen, const char* op) {
  DISTILL_CHECK(is_floating(opts.dtype), op, ": needs a floating dtype, got ",
                dtype_name(opts.dtype));
  Tensor t = Tensor::empty(shape, TensorOptions(opts.dtype, opts.device));
  Generator& g = gen ? *gen : default_generator();
  const uint64_t offset = g.advance(static_cast<uint64_t>(t.numel()));
  if (t.numel() > 0)
    DISTILL_DISPATCH(t.device(), random_fill, kind, t.view_desc(), g.seed(), offset, a, b);
  if (opts.requires_grad) t.set_requires_grad(true);
  return t;
}
}  // namespace

Tensor rand(const Shape& shape, TensorOptions opts, Generator* gen) {
  return random_tensor(kernels::RandomKind::Uniform, shape, 0.0, 1.0, opts, gen, "rand");
}
Tensor randn(const Shape& shape, TensorOptions opts, Generator* gen) {
  return random_tensor(kernels::RandomKind::Normal, shape, 0.0, 1.0, opts, gen, "randn");
}
Tensor uniform(const Shape& shape, double low, double high, TensorOptions opts, Generator* gen) {
  return random_tensor(kernels::RandomKind::Uniform, shape, low, high, opts, gen, "uniform");
}
Tensor normal(const Shape& shape, double mean_v, double std_v, TensorOptions opts, Generator* gen) {
  return random_tensor(kernels::RandomKind::Normal, shape, mean_v, std_v, opts, gen, "normal");
}

// ---- movement
namespace {
// Copies between devices: both sides contiguous, so one memcpy.
Tensor transfer(const Tensor& x, Device device) {
  Tensor src = x.contiguous();
  Tensor out = Tensor::empty(x.shape(), TensorOptions(x.dtype(), device));
  const size_t bytes = out.nbytes();
  if (bytes == 0) return out;
  if (src.device().is_cpu() && device.is_cuda()) {
    kernels::cuda::memcpy_h2d(out.data_ptr(), src.data_ptr(), bytes);
  } else if (src.device().is_cuda() && device.is_cpu()) {
    kernels::cuda::memcpy_d2h(out.data_ptr(), src.data_ptr(), bytes);
  } else {
    kernels::cuda::memcpy_d2d(out.data_ptr(), src.data_ptr(), bytes);
  }
  return out;
}
}  // namespace

Tensor to_device(const Tensor& x, Device device) {
  check_defined("to_device", x, "x");
  if (x.device() == device) return x;
  DISTILL_CHECK(cuda_compiled(), "to_device: cannot move ", x.describe(), " to ", device.str(),
                ": this build has no CUDA support");
  Tensor y = transfer(x, device);
  const Device from = x.device();
  record_fn(y, "to_device", {x},
            [from](const Tensor& g) { return std::vector<Tensor>{to_device(g, from)}; });
  return y;
}

Tensor to_dtype(const Tensor& x, DType dtype) {
  check_defined("to_dtype", x, "x");
  if (x.dtype() == dtype) return x;
  Tensor y = Tensor::empty(x.shape(), TensorOptions(dtype, x.device()));
  if (y.numel() > 0) DISTILL_DISPATCH(x.device(), copy, x.view_desc(), y.view_desc());
  const DType from = x.dtype();
  if (is_floating(dtype) && is_floating(from)) {
    record_fn(y, "to_dtype", {x},
              [from](const Tensor& g) { return std::vector<Tensor>{to_dtype(g, from)}; });
  }
  return y;
}

Tensor contiguous(const Tensor& x) {
  check_defined("contiguous", x, "x");
  if (x.is_contiguous()) return x;
  return clone(x);
}

Tensor clone(const Tensor& x) {
  check_defined("clone", x, "x");
  Tensor y = Tensor::empty(x.shape(), TensorOptions(x.dtype(), x.device()));
  if (y.numel() > 0) DISTILL_DISPATCH(x.device(), copy, x.view_desc(), y.view_desc());
  record_fn(y, "clone", {x}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
  return y;
}

Tensor& Tensor::copy_(const Tensor& src) {
  check_defined("copy_", *this, "self");
  check_defined("copy_", src, "src");
  DISTILL_CHECK(!(grad_enabled() && requires_grad() && !is_leaf()), "copy_: in-place copy into ",
                describe(), " which is part of an autograd graph");
  Tensor s = src;
  if (s.shape() != shape()) {
    NoGradGuard guard;
    s = expand(src, shape());
  }
  if (s.device() != device()) {
    NoGradGuard guard;
    s = to_device(s, device());
  }
  if (numel() > 0) DISTILL_DISPATCH(device(), copy, s.view_desc(), view_desc());
  return *this;
}

Tensor& Tensor::fill_(double value) {
  check_defined("fill_", *this, "self");
  if (numel() > 0) DISTILL_DISPATCH(device(), fill, view_desc(), value);
  return *this;
}

}  // namespace distill
