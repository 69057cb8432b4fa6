// conv2d and its two backward halves. Inputs are made contiguous (NCHW / KCRS) and handed to the
// CPU reference, the native CUDA implicit GEMM or cuDNN (kernels/conv.h), chosen by device and by
// the conv backend setting.
#include "kernels/conv.h"

#include <atomic>

#include "core/autocast.h"
#include "core/error.h"
#include "core/flops.h"
#include "core/ops.h"
#include "core/ops/dispatch.h"

namespace distill {

namespace {

std::atomic<ConvBackend> g_conv_backend{ConvBackend::Native};

ConvBackend resolve(std::optional<ConvBackend> backend) {
  return backend.value_or(conv_backend());
}

void check_params(const Conv2dParams& p, const char* op) {
  DISTILL_CHECK(p.stride_h >= 1 && p.stride_w >= 1, op, ": stride must be >= 1, got (", p.stride_h,
                ", ", p.stride_w, ")");
  DISTILL_CHECK(p.pad_h >= 0 && p.pad_w >= 0, op, ": padding must be >= 0, got (", p.pad_h, ", ",
                p.pad_w, ")");
  DISTILL_CHECK(p.dilation_h >= 1 && p.dilation_w >= 1, op, ": dilation must be >= 1, got (",
                p.dilation_h, ", ", p.dilation_w, ")");
}

// Output size of one spatial dim; fails when the dilated kernel does not fit the padded input.
int64_t out_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation,
                 const char* op, const Shape& x_shape, const Shape& w_shape) {
  const int64_t span = dilation * (kernel - 1) + 1;
  DISTILL_CHECK(in + 2 * pad >= span, op, ": kernel of ", shape_str(w_shape), " (dilated extent ",
                span, ") is larger than the padded input ", shape_str(x_shape), " (padding ", pad,
                ")");
  return (in + 2 * pad - span) / stride + 1;
}

kernels::Conv2dGeometry make_geometry(const Shape& x_shape, const Shape& w_shape,
                                      const Conv2dParams& p, const char* op) {
  check_params(p, op);
  DISTILL_CHECK(x_shape.size() == 4, op, ": input must be 4-D [N, C, H, W], got ",
                shape_str(x_shape));
  DISTILL_CHECK(w_shape.size() == 4, op, ": weight must be 4-D [K, C, R, S], got ",
                shape_str(w_shape));
  DISTILL_CHECK(x_shape[1] == w_shape[1], op, ": input ", shape_str(x_shape), " has ", x_shape[1],
                " channels but weight ", shape_str(w_shape), " expects ", w_shape[1],
                " (groups > 1 is not supported)");
  DISTILL_CHECK(w_shape[0] > 0 && w_shape[1] > 0 && w_shape[2] > 0 && w_shape[3] > 0, op,
                ": weight ", shape_str(w_shape), " has an empty dimension");
  kernels::Conv2dGeometry g;
  g.batch = x_shape[0];
  g.in_channels = x_shape[1];
  g.in_h = x_shape[2];
  g.in_w = x_shape[3];
  g.out_channels = w_shape[0];
  g.kernel_h = w_shape[2];
  g.kernel_w = w_shape[3];
  g.stride_h = p.stride_h;
  g.stride_w = p.stride_w;
  g.pad_h = p.pad_h;
  g.pad_w = p.pad_w;
  g.dilation_h = p.dilation_h;
  g.dilation_w = p.dilation_w;
  g.out_h = out_size(g.in_h, g.kernel_h, p.stride_h, p.pad_h, p.dilation_h, op, x_shape, w_shape);
  g.out_w = out_size(g.in_w, g.kernel_w, p.stride_w, p.pad_w, p.dilation_w, op, x_shape, w_shape);
  return g;
}

Shape output_shape(const kernels::Conv2dGeometry& g) {
  return {g.batch, g.out_channels, g.out_h, g.out_w};
}

// Dtypes each implementation accepts; checked here so that the error names shapes and backend.
void check_dtype_supported(const Tensor& t, ConvBackend backend, const char* op) {
  DISTILL_CHECK(is_floating(t.dtype()), op, ": needs floating tensors, got ", t.describe());
  if (!t.device().is_cuda()) return;
  if (backend == ConvBackend::Native) {
    DISTILL_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::BF16, op,
                  ": the native CUDA convolution supports f32 and bf16, got ", t.describe(),
                  " (use conv backend cudnn for f16)");
  } else {
    DISTILL_CHECK(t.dtype() != DType::F64, op,
                  ": the cuDNN convolution supports f32, bf16 and f16, got ", t.describe());
  }
}

void check_same_dtype(const char* op, const Tensor& a, const Tensor& b) {
  DISTILL_CHECK(a.dtype() == b.dtype(), op, ": dtype mismatch between ", a.describe(), " and ",
                b.describe());
}

#if DISTILL_HAS_CUDA
#define DISTILL_CONV_CALL(device, backend, fn, args) \
  do {                                               \
    if ((device).is_cpu()) {                         \
      kernels::cpu::fn(args);                        \
    } else if ((backend) == ConvBackend::Cudnn) {    \
      kernels::cuda::fn##_cudnn(args);               \
    } else {                                         \
      kernels::cuda::fn(args);                       \
    }                                                \
  } while (0)
#else
#define DISTILL_CONV_CALL(device, backend, fn, args) \
  do {                                               \
    if ((device).is_cuda()) detail::no_cuda(#fn);    \
    (void)(backend);                                 \
    kernels::cpu::fn(args);                          \
  } while (0)
#endif

}  // namespace

void set_conv_backend(ConvBackend backend) {
  g_conv_backend.store(backend);
}
ConvBackend conv_backend() {
  return g_conv_backend.load();
}

const char* conv_backend_name(ConvBackend backend) {
  return backend == ConvBackend::Cudnn ? "cudnn" : "native";
}

ConvBackend conv_backend_from_name(const std::string& name) {
  if (name == "native") return ConvBackend::Native;
  if (name == "cudnn") return ConvBackend::Cudnn;
  fail("conv_backend: unknown backend '", name, "' (expected native or cudnn)");
}

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& params,
              std::optional<ConvBackend> backend) {
  if (auto c = autocast_to_low({x, weight, bias}))
    return conv2d((*c)[0], (*c)[1], (*c)[2], params, backend);
  constexpr const char* op = "conv2d";
  check_defined(op, x, "x");
  check_defined(op, weight, "weight");
  check_same_device(op, {&x, &weight, &bias});
  check_same_dtype(op, x, weight);
  const ConvBackend be = resolve(backend);
  check_dtype_supported(x, be, op);
  const kernels::Conv2dGeometry g = make_geometry(x.shape(), weight.shape(), params, op);
  if (bias.defined()) {
    check_same_dtype(op, x, bias);
    DISTILL_CHECK(bias.dim() == 1 && bias.size(0) == g.out_channels, op, ": bias ", bias.describe(),
                  " must be [", g.out_channels, "] for weight ", weight.describe());
  }
  Tensor y = Tensor::empty(output_shape(g), TensorOptions(x.dtype(), x.device()));
  if (y.numel() > 0) {
    const Tensor xc = x.contiguous(), wc = weight.contiguous();
    const Tensor bc = bias.defined() ? bias.contiguous() : Tensor();
    kernels::Conv2dForwardArgs args;
    args.dtype = x.dtype();
    args.geom = g;
    args.x = xc.data_ptr();
    args.w = wc.data_ptr();
    args.bias = bc.defined() ? bc.data_ptr() : nullptr;
    args.y = y.data_ptr();
    NoGradGuard no_grad;
    DISTILL_CONV_CALL(x.device(), be, conv2d_forward, args);
    flops::add(2.0 * static_cast<double>(g.y_numel()) * g.in_channels * g.kernel_h * g.kernel_w);
  }
  const bool has_bias = bias.defined();
  record_fn(y, "conv2d", {x, weight, bias},
            [x, weight, has_bias, params, backend](const Tensor& grad) {
              Tensor gx, gw, gb;
              if (x.requires_grad())
                gx = conv2d_backward_input(grad, weight, x.shape(), params, backend);
              if (weight.requires_grad())
                gw = conv2d_backward_weight(grad, x, weight.shape(), params, backend);
              if (has_bias) gb = sum(grad, {0, 2, 3});
              return std::vector<Tensor>{gx, gw, gb};
            });
  return y;
}

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride,
              int64_t padding, int64_t dilation, std::optional<ConvBackend> backend) {
  return conv2d(x, weight, bias, Conv2dParams::square(stride, padding, dilation), backend);
}

Tensor conv2d_backward_input(const Tensor& grad_out, const Tensor& weight, const Shape& input_shape,
                             const Conv2dParams& params, std::optional<ConvBackend> backend) {
  constexpr const char* op = "conv2d_backward_input";
  check_defined(op, grad_out, "grad_out");
  check_defined(op, weight, "weight");
  check_same_device(op, {&grad_out, &weight});
  check_same_dtype(op, grad_out, weight);
  const ConvBackend be = resolve(backend);
  check_dtype_supported(grad_out, be, op);
  const kernels::Conv2dGeometry g = make_geometry(input_shape, weight.shape(), params, op);
  DISTILL_CHECK(grad_out.shape() == output_shape(g), op, ": grad_out ", grad_out.describe(),
                " does not match the output shape ", shape_str(output_shape(g)), " of input ",
                shape_str(input_shape), " and weight ", weight.describe());
  Tensor dx = Tensor::empty(input_shape, TensorOptions(grad_out.dtype(), grad_out.device()));
  if (dx.numel() == 0) return dx;
  if (grad_out.numel() == 0) return dx.fill_(0.0);
  const Tensor dyc = grad_out.contiguous(), wc = weight.contiguous();
  kernels::Conv2dBackwardDataArgs args;
  args.dtype = grad_out.dtype();
  args.geom = g;
  args.dy = dyc.data_ptr();
  args.w = wc.data_ptr();
  args.dx = dx.data_ptr();
  DISTILL_CONV_CALL(grad_out.device(), be, conv2d_backward_data, args);
  return dx;
}

Tensor conv2d_backward_weight(const Tensor& grad_out, const Tensor& x, const Shape& weight_shape,
                              const Conv2dParams& params, std::optional<ConvBackend> backend) {
  constexpr const char* op = "conv2d_backward_weight";
  check_defined(op, grad_out, "grad_out");
  check_defined(op, x, "x");
  check_same_device(op, {&grad_out, &x});
  check_same_dtype(op, grad_out, x);
  const ConvBackend be = resolve(backend);
  check_dtype_supported(grad_out, be, op);
  const kernels::Conv2dGeometry g = make_geometry(x.shape(), weight_shape, params, op);
  DISTILL_CHECK(grad_out.shape() == output_shape(g), op, ": grad_out ", grad_out.describe(),
                " does not match the output shape ", shape_str(output_shape(g)), " of input ",
                x.describe(), " and weight ", shape_str(weight_shape));
  Tensor dw = Tensor::empty(weight_shape, TensorOptions(grad_out.dtype(), grad_out.device()));
  if (grad_out.numel() == 0) return dw.fill_(0.0);
  const Tensor dyc = grad_out.contiguous(), xc = x.contiguous();
  kernels::Conv2dBackwardWeightArgs args;
  args.dtype = grad_out.dtype();
  args.geom = g;
  args.dy = dyc.data_ptr();
  args.x = xc.data_ptr();
  args.dw = dw.data_ptr();
  DISTILL_CONV_CALL(grad_out.device(), be, conv2d_backward_weight, args);
  return dw;
}

}  // namespace distill
