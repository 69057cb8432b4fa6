// conv2d: the CPU im2col reference against a naive direct convolution, float64 gradient checks for
// every kernel kind (with and without bias), argument errors, and the CUDA native and cuDNN
// backends against the CPU (forward, data gradient, weight gradient; f32 and bf16; channel counts
// that are not a multiple of 8; odd spatial sizes) with every output poisoned before the launch.
#include <algorithm>
#include <cmath>
#include <exception>
#include <limits>
#include <string>
#include <vector>

#include "kernels/conv.h"
#include "kernels/device.h"
#include "tests/kernels/backend_compare.h"
#include "tests/test_util.h"

namespace distill {
namespace {

using testing::all_close;
using testing::gradcheck;
using testing::message_has;
using testing::random_tensor;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct ConvCase {
  std::string name;
  int64_t n, c, h, w, k, r, s;
  Conv2dParams params;
  bool bias;
};

Shape x_shape(const ConvCase& c) {
  return {c.n, c.c, c.h, c.w};
}
Shape w_shape(const ConvCase& c) {
  return {c.k, c.c, c.r, c.s};
}

kernels::Conv2dGeometry geometry(const ConvCase& c) {
  kernels::Conv2dGeometry g;
  g.batch = c.n;
  g.in_channels = c.c;
  g.in_h = c.h;
  g.in_w = c.w;
  g.out_channels = c.k;
  g.kernel_h = c.r;
  g.kernel_w = c.s;
  g.stride_h = c.params.stride_h;
  g.stride_w = c.params.stride_w;
  g.pad_h = c.params.pad_h;
  g.pad_w = c.params.pad_w;
  g.dilation_h = c.params.dilation_h;
  g.dilation_w = c.params.dilation_w;
  g.out_h = (c.h + 2 * g.pad_h - g.dilation_h * (c.r - 1) - 1) / g.stride_h + 1;
  g.out_w = (c.w + 2 * g.pad_w - g.dilation_w * (c.s - 1) - 1) / g.stride_w + 1;
  return g;
}

Shape y_shape(const ConvCase& c) {
  const auto g = geometry(c);
  return {g.batch, g.out_channels, g.out_h, g.out_w};
}

// ---------------------------------------------------------------- naive direct convolution

// The definition, one output element at a time, in double: the reference im2col is checked against.
std::vector<double> naive_forward(const kernels::Conv2dGeometry& g, const std::vector<double>& x,
                                  const std::vector<double>& w, const std::vector<double>* bias) {
  std::vector<double> y(static_cast<size_t>(g.y_numel()));
  for (int64_t n = 0; n < g.batch; ++n)
    for (int64_t k = 0; k < g.out_channels; ++k)
      for (int64_t p = 0; p < g.out_h; ++p)
        for (int64_t q = 0; q < g.out_w; ++q) {
          double acc = bias ? (*bias)[k] : 0.0;
          for (int64_t c = 0; c < g.in_channels; ++c)
            for (int64_t r = 0; r < g.kernel_h; ++r)
              for (int64_t s = 0; s < g.kernel_w; ++s) {
                const int64_t h = p * g.stride_h - g.pad_h + r * g.dilation_h;
                const int64_t wi = q * g.stride_w - g.pad_w + s * g.dilation_w;
                if (h < 0 || h >= g.in_h || wi < 0 || wi >= g.in_w) continue;
                acc += x[((n * g.in_channels + c) * g.in_h + h) * g.in_w + wi] *
                       w[((k * g.in_channels + c) * g.kernel_h + r) * g.kernel_w + s];
              }
          y[((n * g.out_channels + k) * g.out_h + p) * g.out_w + q] = acc;
        }
  return y;
}

// Data and weight gradients by scattering each output gradient back along the same index map.
void naive_backward(const kernels::Conv2dGeometry& g, const std::vector<double>& x,
                    const std::vector<double>& w, const std::vector<double>& dy,
                    std::vector<double>& dx, std::vector<double>& dw) {
  dx.assign(static_cast<size_t>(g.x_numel()), 0.0);
  dw.assign(static_cast<size_t>(g.w_numel()), 0.0);
  for (int64_t n = 0; n < g.batch; ++n)
    for (int64_t k = 0; k < g.out_channels; ++k)
      for (int64_t p = 0; p < g.out_h; ++p)
        for (int64_t q = 0; q < g.out_w; ++q) {
          const double gy = dy[((n * g.out_channels + k) * g.out_h + p) * g.out_w + q];
          for (int64_t c = 0; c < g.in_channels; ++c)
            for (int64_t r = 0; r < g.kernel_h; ++r)
              for (int64_t s = 0; s < g.kernel_w; ++s) {
                const int64_t h = p * g.stride_h - g.pad_h + r * g.dilation_h;
                const int64_t wi = q * g.stride_w - g.pad_w + s * g.dilation_w;
                if (h < 0 || h >= g.in_h || wi < 0 || wi >= g.in_w) continue;
                const int64_t xi = ((n * g.in_channels + c) * g.in_h + h) * g.in_w + wi;
                const int64_t wj = ((k * g.in_channels + c) * g.kernel_h + r) * g.kernel_w + s;
                dx[xi] += gy * w[wj];
                dw[wj] += gy * x[xi];
              }
        }
}

Tensor from_doubles(const std::vector<double>& v, const Shape& shape) {
  return Tensor::from_vector(v, shape);
}

// Shapes that exercise every kernel kind and every path of the native CUDA kernels: pointwise
// (NCHW batched GEMM when rows are 16-byte multiples, the general path otherwise), 3x3 and 7x7
// with stride and padding, patch embeddings (vector gathers across kernel columns when S*C is a
// multiple of 8, scalar gathers otherwise), dilation, channel counts that are not a multiple of 8,
// odd spatial sizes, several M/N tiles, and a weight-gradient reduction split over many CTAs.
std::vector<ConvCase> conv_cases() {
  return {
      {"pointwise_c16_k24", 2, 16, 8, 8, 24, 1, 1, Conv2dParams::square(1, 0), true},
      {"pointwise_c13_k10_odd", 2, 13, 7, 5, 10, 1, 1, Conv2dParams::square(1, 0), false},
      {"pointwise_stride2", 2, 16, 9, 7, 16, 1, 1, Conv2dParams::square(2, 0), true},
      {"3x3_s1_p1", 2, 16, 11, 13, 32, 3, 3, Conv2dParams::square(1, 1), true},
      {"3x3_s2_p1_c13", 2, 13, 15, 17, 8, 3, 3, Conv2dParams::square(2, 1), false},
      {"3x3_s2_p1_c16", 3, 16, 15, 9, 24, 3, 3, Conv2dParams::square(2, 1), true},
      {"7x7_s2_p3_c3", 2, 3, 23, 21, 16, 7, 7, Conv2dParams::square(2, 3), true},
      {"patch16_c3", 2, 3, 32, 48, 32, 16, 16, Conv2dParams::square(16, 0), true},
      {"patch4_c3_uncovered_edges", 2, 3, 13, 14, 8, 4, 4, Conv2dParams::square(4, 0), false},
      {"dilated_3x3", 2, 8, 9, 10, 8, 3, 3, Conv2dParams::square(1, 2, 2), true},
      {"asymmetric", 1, 5, 10, 9, 6, 3, 2, Conv2dParams{2, 1, 1, 0, 1, 1}, true},
      {"3x3_tiles_k136", 2, 24, 19, 19, 136, 3, 3, Conv2dParams::square(1, 1), true},
      {"3x3_wgrad_splits", 4, 16, 32, 32, 16, 3, 3, Conv2dParams::square(1, 1), false},
      {"pointwise_wgrad_splits_k80", 6, 32, 16, 16, 80, 1, 1, Conv2dParams::square(1, 0), true},
  };
}

// ---------------------------------------------------------------- CPU reference vs naive

TEST(ConvCpu, Im2colMatchesNaiveDirect) {
  uint64_t seed = 1;
  for (const ConvCase& c : conv_cases()) {
    SCOPED_TRACE(c.name);
    const auto g = geometry(c);
    const Tensor x = random_tensor(x_shape(c), seed++, DType::F64, -1, 1);
    const Tensor w = random_tensor(w_shape(c), seed++, DType::F64, -1, 1);
    const Tensor b = random_tensor({c.k}, seed++, DType::F64, -1, 1);
    const Tensor dy = random_tensor(y_shape(c), seed++, DType::F64, -1, 1);
    const auto bv = b.to_double_vector();
    const auto y_ref =
        naive_forward(g, x.to_double_vector(), w.to_double_vector(), c.bias ? &bv : nullptr);
    std::vector<double> dx_ref, dw_ref;
    naive_backward(g, x.to_double_vector(), w.to_double_vector(), dy.to_double_vector(), dx_ref,
                   dw_ref);
    // f64: the same sums in another order, so agreement to rounding.
    for (DType dt : {DType::F64, DType::F32}) {
      SCOPED_TRACE(dtype_name(dt));
      // f32: sums of up to 1224 products of magnitude <= 1 (values up to ~30), in another order.
      const double atol = dt == DType::F64 ? 1e-12 : 1e-4, rtol = dt == DType::F64 ? 1e-12 : 1e-5;
      const Tensor y = conv2d(x.to(dt), w.to(dt), c.bias ? b.to(dt) : Tensor(), c.params);
      EXPECT_TRUE(all_close(y, from_doubles(y_ref, y_shape(c)), atol, rtol)) << "forward";
      const Tensor dx = conv2d_backward_input(dy.to(dt), w.to(dt), x_shape(c), c.params);
      EXPECT_TRUE(all_close(dx, from_doubles(dx_ref, x_shape(c)), atol, rtol)) << "data gradient";
      const Tensor dw = conv2d_backward_weight(dy.to(dt), x.to(dt), w_shape(c), c.params);
      // The weight gradient sums over N*P*Q (up to 4096 terms here).
      EXPECT_TRUE(
          all_close(dw, from_doubles(dw_ref, w_shape(c)), dt == DType::F64 ? 1e-12 : 1e-4, rtol))
          << "weight gradient";
    }
  }
}

TEST(ConvCpu, Bf16IsWidenedComputedInF32AndRoundedOnce) {
  const ConvCase c{"3x3", 2, 5, 9, 8, 7, 3, 3, Conv2dParams::square(1, 1), true};
  const Tensor x = random_tensor(x_shape(c), 11, DType::F32, -1, 1).to(DType::BF16);
  const Tensor w = random_tensor(w_shape(c), 12, DType::F32, -1, 1).to(DType::BF16);
  const Tensor b = random_tensor({c.k}, 13, DType::F32, -1, 1).to(DType::BF16);
  const Tensor y = conv2d(x, w, b, c.params);
  ASSERT_EQ(y.dtype(), DType::BF16);
  // The f32 convolution of the same (bf16-representable) values, rounded once, is bit-identical.
  const Tensor expected =
      conv2d(x.to(DType::F32), w.to(DType::F32), b.to(DType::F32), c.params).to(DType::BF16);
  EXPECT_TRUE(all_close(y, expected, 0, 0));
}

// ---------------------------------------------------------------- float64 gradient checks

struct GradCase {
  std::string name;
  Shape x, w;
  Conv2dParams params;
};

TEST(ConvGrad, EveryKernelKindWithAndWithoutBias) {
  const std::vector<GradCase> cases = {
      {"1x1", {2, 3, 5, 4}, {4, 3, 1, 1}, Conv2dParams::square(1, 0)},
      {"3x3_pad1_stride2", {2, 3, 7, 6}, {4, 3, 3, 3}, Conv2dParams::square(2, 1)},
      {"7x7_stride2_pad3", {1, 2, 9, 9}, {3, 2, 7, 7}, Conv2dParams::square(2, 3)},
      {"patch4_stride4", {2, 3, 8, 12}, {5, 3, 4, 4}, Conv2dParams::square(4, 0)},
      {"dilated_3x3", {1, 2, 7, 7}, {2, 2, 3, 3}, Conv2dParams::square(1, 2, 2)},
  };
  uint64_t seed = 500;
  for (const GradCase& c : cases) {
    SCOPED_TRACE(c.name);
    const Tensor x = random_tensor(c.x, seed++, DType::F64);
    const Tensor w = random_tensor(c.w, seed++, DType::F64);
    const Tensor b = random_tensor({c.w[0]}, seed++, DType::F64);
    EXPECT_TRUE(
        gradcheck([&](const auto& in) { return conv2d(in[0], in[1], in[2], c.params); }, {x, w, b}))
        << "with bias";
    EXPECT_TRUE(
        gradcheck([&](const auto& in) { return conv2d(in[0], in[1], Tensor(), c.params); }, {x, w}))
        << "without bias";
  }
}

TEST(ConvGrad, OnlyWeightRequiresGrad) {
  // A frozen input (the first layer of a network) gets no gradient; the weight still does.
  const Tensor x = random_tensor({1, 2, 6, 6}, 31, DType::F64);
  Tensor w = random_tensor({3, 2, 3, 3}, 32, DType::F64);
  w.set_requires_grad(true);
  sum(conv2d(x, w, Tensor(), 1, 1)).backward();
  EXPECT_FALSE(x.grad().defined());
  ASSERT_TRUE(w.grad().defined());
  EXPECT_EQ(w.grad().shape(), w.shape());
}

// ---------------------------------------------------------------- errors and settings

TEST(ConvErrors, BadArgumentsNameTheOpAndShapes) {
  const Tensor x = random_tensor({2, 3, 8, 8}, 1);
  try {
    conv2d(x, random_tensor({4, 5, 3, 3}, 2));
    FAIL() << "channel mismatch accepted";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, "conv2d")) << e.what();
    EXPECT_TRUE(message_has(e, "[4, 5, 3, 3]")) << e.what();
  }
  EXPECT_THROW(conv2d(x, random_tensor({4, 3, 3, 3}, 3), random_tensor({5}, 4)), Error);  // bias
  EXPECT_THROW(conv2d(x, random_tensor({4, 3, 9, 9}, 5)), Error);                         // too big
  EXPECT_THROW(conv2d(x, random_tensor({4, 3, 3, 3}, 6, DType::F64)), Error);             // dtype
  EXPECT_THROW(conv2d(random_tensor({3, 8, 8}, 7), random_tensor({4, 3, 3, 3}, 8)), Error);  // rank
  EXPECT_THROW(conv2d(x, random_tensor({4, 3, 3, 3}, 9), Tensor(), 0), Error);       // stride 0
  EXPECT_THROW(conv2d(x, random_tensor({4, 3, 3, 3}, 10), Tensor(), 1, -1), Error);  // padding
  EXPECT_THROW(
      conv2d_backward_input(random_tensor({2, 4, 5, 5}, 11), random_tensor({4, 3, 3, 3}, 12),
                            {2, 3, 8, 8}, Conv2dParams::square(1, 0)),
      Error);  // grad_out is [2, 4, 6, 6] for this input
}

TEST(ConvSettings, BackendNamesAndProcessWideSetting) {
  EXPECT_EQ(conv_backend_from_name("native"), ConvBackend::Native);
  EXPECT_EQ(conv_backend_from_name("cudnn"), ConvBackend::Cudnn);
  EXPECT_STREQ(conv_backend_name(ConvBackend::Cudnn), "cudnn");
  EXPECT_THROW(conv_backend_from_name("winograd"), Error);
  const ConvBackend before = conv_backend();
  set_conv_backend(ConvBackend::Cudnn);
  EXPECT_EQ(conv_backend(), ConvBackend::Cudnn);
  // CPU tensors use the CPU reference whatever the setting.
  const Tensor x = random_tensor({1, 2, 5, 5}, 1), w = random_tensor({3, 2, 3, 3}, 2);
  EXPECT_TRUE(all_close(conv2d(x, w), conv2d(x, w, Tensor(), 1, 0, 1, ConvBackend::Native), 0, 0));
  set_conv_backend(before);
}

// ---------------------------------------------------------------- backends against the CPU

class ConvBackendTest : public testing::BackendTest {};

struct Outputs {
  Tensor y, dx, dw;
};

// Runs the three kernels directly on `device` (backend `be` on CUDA) into outputs pre-filled with
// NaN, so an element a kernel fails to write shows up. Inputs are CPU tensors of `dtype`.
Outputs run_kernels(const ConvCase& c, const Tensor& x, const Tensor& w, const Tensor& b,
                    const Tensor& dy, Device device, ConvBackend be) {
  const auto g = geometry(c);
  const DType dt = x.dtype();
  const Tensor xd = x.to(device), wd = w.to(device), dyd = dy.to(device);
  const Tensor bd = c.bias ? b.to(device) : Tensor();
  Outputs out;
  out.y = full(y_shape(c), kNaN, TensorOptions(dt, device));
  out.dx = full(x_shape(c), kNaN, TensorOptions(dt, device));
  out.dw = full(w_shape(c), kNaN, TensorOptions(dt, device));
  kernels::Conv2dForwardArgs fa{
      dt, g, xd.data_ptr(), wd.data_ptr(), c.bias ? bd.data_ptr() : nullptr, out.y.data_ptr()};
  kernels::Conv2dBackwardDataArgs da{dt, g, dyd.data_ptr(), wd.data_ptr(), out.dx.data_ptr()};
  kernels::Conv2dBackwardWeightArgs wa{dt, g, dyd.data_ptr(), xd.data_ptr(), out.dw.data_ptr()};
  if (device.is_cpu()) {
    kernels::cpu::conv2d_forward(fa);
    kernels::cpu::conv2d_backward_data(da);
    kernels::cpu::conv2d_backward_weight(wa);
  } else {
#if DISTILL_HAS_CUDA
    if (be == ConvBackend::Native) {
      kernels::cuda::conv2d_forward(fa);
      kernels::cuda::conv2d_backward_data(da);
      kernels::cuda::conv2d_backward_weight(wa);
    } else {
      kernels::cuda::conv2d_forward_cudnn(fa);
      kernels::cuda::conv2d_backward_data_cudnn(da);
      kernels::cuda::conv2d_backward_weight_cudnn(wa);
    }
    kernels::cuda::synchronize();
#endif
  }
  return {out.y.to(Device::cpu()), out.dx.to(Device::cpu()), out.dw.to(Device::cpu())};
}

// Tolerances. f32: sums of up to 4096 products of magnitude <= 1 accumulated in another order
// (and, for cuDNN, possibly by another algorithm) — atol 2e-4 on values of magnitude ~10-60,
// rtol 1e-5. bf16, native and CPU: both accumulate in fp32 and round once to bf16, so they differ
// by at most about one bf16 ulp (2^-8 relative): rtol 1e-2, atol 1e-2. bf16, cuDNN: its algorithms
// round intermediate results to bf16, so its error scales with the size of the sums, not with each
// output (on an H100: up to 0.094 on outputs of ~1 whose tensor reaches ~15, about 0.6% of the
// largest output): atol 1.5e-2 * max |expected|, rtol 1e-2. This bounds the peer, not our kernels.
struct Tolerance {
  double atol, rtol;
};
Tolerance tolerance(DType dt, ConvBackend backend, const Tensor& expected) {
  if (dt != DType::BF16) return {2e-4, 1e-5};
  if (backend == ConvBackend::Native) return {1e-2, 1e-2};
  double scale = 0;
  for (double v : expected.to_double_vector()) scale = std::max(scale, std::fabs(v));
  return {1.5e-2 * scale, 1e-2};
}

::testing::AssertionResult close_for(DType dt, ConvBackend be, const Tensor& got,
                                     const Tensor& expected) {
  const Tolerance tol = tolerance(dt, be, expected);
  return all_close(got, expected, tol.atol, tol.rtol);
}

// Every case in f32 and bf16 through one implementation, against the CPU kernels.
void expect_kernels_match_cpu(Device device, ConvBackend be) {
  uint64_t seed = 1000;
  for (const ConvCase& c : conv_cases()) {
    for (DType dt : {DType::F32, DType::BF16}) {
      const Tensor x = random_tensor(x_shape(c), seed++, DType::F32, -1, 1).to(dt);
      const Tensor w = random_tensor(w_shape(c), seed++, DType::F32, -1, 1).to(dt);
      const Tensor b = random_tensor({c.k}, seed++, DType::F32, -1, 1).to(dt);
      const Tensor dy = random_tensor(y_shape(c), seed++, DType::F32, -1, 1).to(dt);
      SCOPED_TRACE(c.name + " " + dtype_name(dt) + " " + conv_backend_name(be));
      const Outputs expected = run_kernels(c, x, w, b, dy, Device::cpu(), ConvBackend::Native);
      Outputs got;
      try {
        got = run_kernels(c, x, w, b, dy, device, be);
      } catch (const std::exception& e) {
        ADD_FAILURE() << "threw: " << e.what();  // report and go on with the other cases
        continue;
      }
      EXPECT_TRUE(close_for(dt, be, got.y, expected.y)) << "forward";
      EXPECT_TRUE(close_for(dt, be, got.dx, expected.dx)) << "data gradient";
      EXPECT_TRUE(close_for(dt, be, got.dw, expected.dw)) << "weight gradient";
    }
  }
}

// On the CPU instance: the CPU kernels against themselves, poisoned outputs included.
TEST_P(ConvBackendTest, NativeKernelsMatchCpuWithPoisonedOutputs) {
  expect_kernels_match_cpu(device(), ConvBackend::Native);
}

TEST_P(ConvBackendTest, CudnnKernelsMatchCpuWithPoisonedOutputs) {
  if (device().is_cpu()) GTEST_SKIP() << "cuDNN is a CUDA backend";
  expect_kernels_match_cpu(device(), ConvBackend::Cudnn);
}

// The differentiable op end to end (forward, input/weight/bias gradients through autograd) on
// each backend against the CPU, through both CUDA implementations.
TEST_P(ConvBackendTest, OpAndAutogradMatchCpu) {
  const std::vector<ConvCase> cases = {
      {"3x3_s2_p1_c13", 2, 13, 9, 11, 16, 3, 3, Conv2dParams::square(2, 1), true},
      {"pointwise", 2, 16, 8, 8, 24, 1, 1, Conv2dParams::square(1, 0), true},
      {"patch16", 2, 3, 32, 32, 16, 16, 16, Conv2dParams::square(16, 0), true},
  };
  for (ConvBackend be : {ConvBackend::Native, ConvBackend::Cudnn}) {
    for (const ConvCase& c : cases) {
      for (DType dt : {DType::F32, DType::BF16}) {
        SCOPED_TRACE(c.name + " " + dtype_name(dt) + " " + conv_backend_name(be));
        // cuDNN bf16 on these small sums (<= 117 products per output, outputs up to ~5): a fixed
        // 3e-2 covers its bf16 intermediates (see tolerance()).
        const Tolerance tol = dt == DType::BF16 && be == ConvBackend::Cudnn
                                  ? Tolerance{3e-2, 3e-2}
                                  : tolerance(dt, ConvBackend::Native, Tensor());
        testing::expect_backend_matches_cpu(
            [&](const std::vector<Tensor>& in) {
              return conv2d(in[0], in[1], in[2], c.params, be);
            },
            {random_tensor(x_shape(c), 1, DType::F32, -1, 1),
             random_tensor(w_shape(c), 2, DType::F32, -1, 1),
             random_tensor({c.k}, 3, DType::F32, -1, 1)},
            device(), dt, tol.atol, tol.rtol);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, ConvBackendTest, ::testing::ValuesIn(testing::all_backends()),
                         testing::backend_name);

}  // namespace
}  // namespace distill
