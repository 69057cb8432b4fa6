// 2-D pooling ops (kernels/pool.h): argument checks, output shapes, dispatch and autograd.
#include "kernels/pool.h"

#include "core/error.h"
#include "core/ops.h"
#include "core/ops/dispatch.h"

namespace distill {

namespace {

// Input geometry: x is [N, C, H, W] or [C, H, W]; every leading dim is a plane.
kernels::Pool2dArgs plane_geometry(const char* op, const Tensor& x) {
  check_defined(op, x, "x");
  DISTILL_CHECK(x.dim() == 3 || x.dim() == 4, op, ": input must be [N, C, H, W] or [C, H, W], got ",
                x.describe());
  DISTILL_CHECK(is_floating(x.dtype()), op, ": input must be floating, got ", x.describe());
  kernels::Pool2dArgs a;
  a.in_h = x.size(-2);
  a.in_w = x.size(-1);
  a.planes = x.dim() == 4 ? x.size(0) * x.size(1) : x.size(0);
  DISTILL_CHECK(a.in_h > 0 && a.in_w > 0, op, ": input ", x.describe(), " has an empty plane");
  return a;
}

kernels::Pool2dArgs fixed_window_geometry(const char* op, const Tensor& x,
                                          std::array<int64_t, 2> kernel,
                                          std::array<int64_t, 2> stride,
                                          std::array<int64_t, 2> padding) {
  kernels::Pool2dArgs a = plane_geometry(op, x);
  if (stride[0] == 0 && stride[1] == 0) stride = kernel;
  for (int i = 0; i < 2; ++i) {
    DISTILL_CHECK(kernel[i] > 0 && stride[i] > 0 && padding[i] >= 0, op, ": kernel (", kernel[0],
                  ", ", kernel[1], ") and stride (", stride[0], ", ", stride[1],
                  ") must be positive and padding (", padding[0], ", ", padding[1],
                  ") non-negative");
    DISTILL_CHECK(2 * padding[i] <= kernel[i], op, ": padding (", padding[0], ", ", padding[1],
                  ") must be at most half the kernel (", kernel[0], ", ", kernel[1], ")");
  }
  a.kernel_h = kernel[0];
  a.kernel_w = kernel[1];
  a.stride_h = stride[0];
  a.stride_w = stride[1];
  a.pad_h = padding[0];
  a.pad_w = padding[1];
  const int64_t span_h = a.in_h + 2 * a.pad_h - a.kernel_h;
  const int64_t span_w = a.in_w + 2 * a.pad_w - a.kernel_w;
  DISTILL_CHECK(span_h >= 0 && span_w >= 0, op, ": kernel (", kernel[0], ", ", kernel[1],
                ") is larger than the padded input ", x.describe());
  a.out_h = span_h / a.stride_h + 1;
  a.out_w = span_w / a.stride_w + 1;
  return a;
}

Shape output_shape(const Tensor& x, const kernels::Pool2dArgs& a) {
  Shape s = x.shape();
  s[s.size() - 2] = a.out_h;
  s[s.size() - 1] = a.out_w;
  return s;
}

// The incoming gradient as a contiguous tensor of x's dtype.
Tensor grad_as(const Tensor& g, DType dtype) {
  return contiguous(to_dtype(g, dtype));
}

}  // namespace

Tensor avg_pool2d(const Tensor& x, std::array<int64_t, 2> kernel_size,
                  std::array<int64_t, 2> stride, std::array<int64_t, 2> padding,
                  bool count_include_pad) {
  const char* op = "avg_pool2d";
  kernels::Pool2dArgs a = fixed_window_geometry(op, x, kernel_size, stride, padding);
  a.count_include_pad = count_include_pad;
  Tensor xc;
  {
    NoGradGuard no_grad;
    xc = contiguous(x.detach());
  }
  Tensor y = Tensor::empty(output_shape(x, a), TensorOptions(x.dtype(), x.device()));
  if (y.numel() > 0)
    DISTILL_DISPATCH(x.device(), avg_pool2d_forward, xc.view_desc(), a, y.view_desc());
  const Shape in_shape = x.shape();
  record_fn(y, op, {x}, [a, in_shape, dtype = x.dtype()](const Tensor& grad) {
    const Tensor g = grad_as(grad, dtype);
    Tensor dx = Tensor::empty(in_shape, TensorOptions(dtype, g.device()));
    if (dx.numel() > 0)
      DISTILL_DISPATCH(g.device(), avg_pool2d_backward, g.view_desc(), a, dx.view_desc());
    return std::vector<Tensor>{dx};
  });
  return y;
}

Tensor max_pool2d(const Tensor& x, std::array<int64_t, 2> kernel_size,
                  std::array<int64_t, 2> stride, std::array<int64_t, 2> padding) {
  const char* op = "max_pool2d";
  const kernels::Pool2dArgs a = fixed_window_geometry(op, x, kernel_size, stride, padding);
  Tensor xc;
  {
    NoGradGuard no_grad;
    xc = contiguous(x.detach());
  }
  const Shape out_shape = output_shape(x, a);
  Tensor y = Tensor::empty(out_shape, TensorOptions(x.dtype(), x.device()));
  Tensor indices = Tensor::empty(out_shape, TensorOptions(DType::I64, x.device()));
  if (y.numel() > 0) {
    DISTILL_DISPATCH(x.device(), max_pool2d_forward, xc.view_desc(), a, y.view_desc(),
                     indices.view_desc());
  }
  const Shape in_shape = x.shape();
  record_fn(y, op, {x}, [a, in_shape, indices, dtype = x.dtype()](const Tensor& grad) {
    const Tensor g = grad_as(grad, dtype);
    Tensor dx = Tensor::empty(in_shape, TensorOptions(dtype, g.device()));
    if (dx.numel() > 0) {
      DISTILL_DISPATCH(g.device(), max_pool2d_backward, g.view_desc(), indices.view_desc(), a,
                       dx.view_desc());
    }
    return std::vector<Tensor>{dx};
  });
  return y;
}

Tensor adaptive_avg_pool2d(const Tensor& x, std::array<int64_t, 2> output_size) {
  const char* op = "adaptive_avg_pool2d";
  kernels::Pool2dArgs a = plane_geometry(op, x);
  DISTILL_CHECK(output_size[0] > 0 && output_size[1] > 0, op, ": output size (", output_size[0],
                ", ", output_size[1], ") must be positive");
  a.out_h = output_size[0];
  a.out_w = output_size[1];
  Tensor xc;
  {
    NoGradGuard no_grad;
    xc = contiguous(x.detach());
  }
  Tensor y = Tensor::empty(output_shape(x, a), TensorOptions(x.dtype(), x.device()));
  if (y.numel() > 0) {
    DISTILL_DISPATCH(x.device(), adaptive_avg_pool2d_forward, xc.view_desc(), a, y.view_desc());
  }
  const Shape in_shape = x.shape();
  record_fn(y, op, {x}, [a, in_shape, dtype = x.dtype()](const Tensor& grad) {
    const Tensor g = grad_as(grad, dtype);
    Tensor dx = Tensor::empty(in_shape, TensorOptions(dtype, g.device()));
    if (dx.numel() > 0) {
      DISTILL_DISPATCH(g.device(), adaptive_avg_pool2d_backward, g.view_desc(), a, dx.view_desc());
    }
    return std::vector<Tensor>{dx};
  });
  return y;
}

}  // namespace distill
