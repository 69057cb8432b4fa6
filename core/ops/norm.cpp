// Batch norm (kernels/batch_norm.h). Training mode runs a statistics kernel (which also updates
// the running buffers) and a normalise kernel; its backward is one fused kernel family. Eval mode
// normalises with the running statistics and writes its simple backward with public ops.
#include <cmath>

#include "core/autocast.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/ops/dispatch.h"
#include "kernels/batch_norm.h"

namespace distill {

namespace {

kernels::View view_or_empty(const Tensor& t) {
  return t.defined() ? t.view_desc() : kernels::View{};
}

void check_channel_tensor(const Tensor& t, const char* name, const Tensor& x, DType dtype) {
  if (!t.defined()) return;
  const int64_t channels = x.size(1);
  DISTILL_CHECK(t.dim() == 1 && t.size(0) == channels, "batch_norm: ", name, " ", t.describe(),
                " must be [", channels, "] for input ", x.describe());
  DISTILL_CHECK(t.dtype() == dtype, "batch_norm: ", name, " ", t.describe(), " must be ",
                dtype_name(dtype), " for input ", x.describe());
  DISTILL_CHECK(t.device() == x.device(), "batch_norm: ", name, " ", t.describe(),
                " is not on the device of input ", x.describe());
}

kernels::BatchNormShape bn_shape(const Tensor& x) {
  kernels::BatchNormShape s;
  s.outer = x.size(0);
  s.channels = x.size(1);
  s.inner = 1;
  for (int64_t d = 2; d < x.dim(); ++d) s.inner *= x.size(d);
  return s;
}

// [C] -> [1, C, 1, ...] so that it broadcasts against x.
Tensor per_channel(const Tensor& t, int64_t ndim) {
  Shape shape(static_cast<size_t>(ndim), 1);
  shape[1] = t.size(0);
  return reshape(t, shape);
}

std::vector<int64_t> non_channel_dims(int64_t ndim) {
  std::vector<int64_t> dims{0};
  for (int64_t d = 2; d < ndim; ++d) dims.push_back(d);
  return dims;
}

}  // namespace

Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias,
                  const Tensor& running_mean, const Tensor& running_var, bool training,
                  double momentum, double eps) {
  // Running statistics are updated in place, so only the input and the affine parameters are
  // cast; the statistics keep their dtype.
  if (auto c = autocast_to_fp32({x, weight, bias}))
    return batch_norm((*c)[0], (*c)[1], (*c)[2], running_mean, running_var, training, momentum,
                      eps);
  const char* op = "batch_norm";
  check_defined(op, x, "x");
  DISTILL_CHECK(is_floating(x.dtype()), op, ": input must be floating, got ", x.describe());
  DISTILL_CHECK(x.dim() >= 2, op, ": input must be [N, C, ...], got ", x.describe());
  DISTILL_CHECK(eps > 0 && std::isfinite(eps), op, ": eps must be positive, got ", eps);
  const DType stat_dtype = x.dtype() == DType::F64 ? DType::F64 : DType::F32;
  check_channel_tensor(weight, "weight", x, stat_dtype);
  check_channel_tensor(bias, "bias", x, stat_dtype);
  check_channel_tensor(running_mean, "running_mean", x, stat_dtype);
  check_channel_tensor(running_var, "running_var", x, stat_dtype);
  DISTILL_CHECK(running_mean.defined() == running_var.defined(), op,
                ": give both running_mean and running_var or neither");
  for (const Tensor* t : {&running_mean, &running_var})
    DISTILL_CHECK(!t->defined() || t->is_contiguous(), op, ": running statistics ", t->describe(),
                  " must be contiguous (they are updated in place)");

  const kernels::BatchNormShape shape = bn_shape(x);
  const int64_t per_channel_count = shape.outer * shape.inner;
  Tensor xc, w, b;
  {
    NoGradGuard no_grad;
    xc = contiguous(x.detach());
    if (weight.defined()) w = contiguous(weight.detach());
    if (bias.defined()) b = contiguous(bias.detach());
  }
  Tensor y = Tensor::empty(x.shape(), TensorOptions(x.dtype(), x.device()));
  const Device device = x.device();

  if (!training) {
    DISTILL_CHECK(running_mean.defined(), op,
                  ": eval mode needs running_mean and running_var, got undefined tensors");
    const Tensor rm = running_mean.detach(), rv = running_var.detach();
    if (y.numel() > 0) {
      DISTILL_DISPATCH(device, batch_norm_apply, xc.view_desc(), shape, rm.view_desc(),
                       rv.view_desc(), /*second_is_var=*/true, eps, view_or_empty(w),
                       view_or_empty(b), y.view_desc());
    }
    // Snapshot the statistics: a later training step updates the buffers in place.
    Tensor mean_snapshot, rstd_snapshot;
    if (any_requires_grad({&x, &weight, &bias})) {
      NoGradGuard no_grad;
      mean_snapshot = clone(rm);
      rstd_snapshot = rsqrt(add(rv, eps));
    }
    const int64_t ndim = x.dim();
    record_fn(y, op, {x, weight, bias},
              [xc, w, mean_snapshot, rstd_snapshot, ndim, has_w = weight.defined(),
               has_b = bias.defined()](const Tensor& grad) {
                // Statistics-dtype math (fp32 for 16-bit inputs), dx cast back to x's dtype.
                const Tensor rstd = per_channel(rstd_snapshot, ndim);
                const Tensor g = to_dtype(grad, rstd.dtype());
                const Tensor scale = has_w ? mul(rstd, per_channel(w, ndim)) : rstd;
                const Tensor dx = to_dtype(mul(g, scale), xc.dtype());
                Tensor dw, db;
                const auto dims = non_channel_dims(ndim);
                if (has_w) {
                  const Tensor centered =
                      sub(to_dtype(xc, rstd.dtype()), per_channel(mean_snapshot, ndim));
                  dw = sum(mul(g, mul(centered, rstd)), dims);
                }
                if (has_b) db = sum(g, dims);
                return std::vector<Tensor>{dx, dw, db};
              });
    return y;
  }

  DISTILL_CHECK(per_channel_count > 1, op,
                ": training needs more than one value per channel, got input ", x.describe());
  Tensor save_mean = Tensor::empty({shape.channels}, TensorOptions(stat_dtype, device));
  Tensor save_rstd = Tensor::empty({shape.channels}, TensorOptions(stat_dtype, device));
  if (shape.channels > 0) {
    DISTILL_DISPATCH(device, batch_norm_stats, xc.view_desc(), shape, eps, momentum,
                     save_mean.view_desc(), save_rstd.view_desc(), view_or_empty(running_mean),
                     view_or_empty(running_var));
  }
  if (y.numel() > 0) {
    DISTILL_DISPATCH(device, batch_norm_apply, xc.view_desc(), shape, save_mean.view_desc(),
                     save_rstd.view_desc(), /*second_is_var=*/false, eps, view_or_empty(w),
                     view_or_empty(b), y.view_desc());
  }
  record_fn(y, op, {x, weight, bias},
            [xc, w, save_mean, save_rstd, shape, stat_dtype, has_w = weight.defined(),
             has_b = bias.defined()](const Tensor& grad) {
              const Tensor g = contiguous(to_dtype(grad, xc.dtype()));
              Tensor dx = Tensor::empty(xc.shape(), TensorOptions(xc.dtype(), xc.device()));
              Tensor dw, db;
              if (has_w)
                dw = Tensor::empty({shape.channels}, TensorOptions(stat_dtype, xc.device()));
              if (has_b)
                db = Tensor::empty({shape.channels}, TensorOptions(stat_dtype, xc.device()));
              if (shape.channels > 0) {
                DISTILL_DISPATCH(xc.device(), batch_norm_backward, xc.view_desc(), g.view_desc(),
                                 shape, save_mean.view_desc(), save_rstd.view_desc(),
                                 view_or_empty(w), dx.view_desc(), view_or_empty(dw),
                                 view_or_empty(db));
              }
              return std::vector<Tensor>{dx, dw, db};
            });
  return y;
}

}  // namespace distill
