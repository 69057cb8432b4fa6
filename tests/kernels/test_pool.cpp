// Pooling: float64 gradient checks (avg with and without count_include_pad, max, adaptive
// including output sizes larger than the input), values against PyTorch's window formulas
// written out by hand, max-pool NaN rule, error messages, and every backend against the CPU
// kernels (odd plane sizes, f32 and bf16) with poisoned outputs.
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "core/ops/dispatch.h"
#include "kernels/pool.h"
#include "tests/kernels/backend_compare.h"
#include "tests/test_util.h"

namespace distill {
namespace {

using testing::all_close;
using testing::f64;
using testing::gradcheck;
using testing::message_has;
using testing::random_tensor;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// ---------------------------------------------------------------- gradient checks

TEST(PoolGrad, AvgPool) {
  for (bool include_pad : {true, false}) {
    SCOPED_TRACE(include_pad ? "count_include_pad" : "in-bounds count");
    EXPECT_TRUE(gradcheck(
        [&](const auto& in) {
          return avg_pool2d(in[0], {3, 3}, {2, 2}, {1, 1}, include_pad);
        },
        {f64({2, 2, 7, 6}, 1)}));
    EXPECT_TRUE(gradcheck(
        [&](const auto& in) {
          return avg_pool2d(in[0], {2, 3}, {1, 2}, {1, 0}, include_pad);
        },
        {f64({1, 3, 5, 7}, 2)}));
  }
  EXPECT_TRUE(gradcheck(
      [&](const auto& in) {
        return avg_pool2d(in[0], {2, 2});
      },
      {f64({3, 4, 6}, 3)}));  // [C, H, W], stride = kernel
}

TEST(PoolGrad, MaxPool) {
  // Random inputs have no ties, so the argmax is locally constant and max is differentiable.
  EXPECT_TRUE(gradcheck(
      [&](const auto& in) {
        return max_pool2d(in[0], {3, 3}, {2, 2}, {1, 1});
      },
      {f64({2, 2, 7, 6}, 4)}));
  EXPECT_TRUE(gradcheck(
      [&](const auto& in) {
        return max_pool2d(in[0], {2, 2});
      },
      {f64({1, 3, 6, 5}, 5)}));
  // Overlapping windows (stride 1): an input can be the argmax of several outputs.
  EXPECT_TRUE(gradcheck(
      [&](const auto& in) {
        return max_pool2d(in[0], {3, 2}, {1, 1}, {1, 1});
      },
      {f64({1, 2, 5, 4}, 6)}));
}

TEST(PoolGrad, AdaptiveAvgPool) {
  for (auto out : std::vector<std::array<int64_t, 2>>{{3, 2}, {1, 1}, {5, 7}, {9, 4}}) {
    SCOPED_TRACE("output " + std::to_string(out[0]) + "x" + std::to_string(out[1]));
    EXPECT_TRUE(gradcheck([&](const auto& in) { return adaptive_avg_pool2d(in[0], out); },
                          {f64({2, 2, 7, 5}, 7)}));
  }
}

TEST(PoolGrad, NonContiguousInput) {
  EXPECT_TRUE(gradcheck(
      [&](const auto& in) {
        return max_pool2d(transpose(in[0], 2, 3), {2, 2}, {1, 1});
      },
      {f64({1, 2, 4, 5}, 8)}));
}

// ---------------------------------------------------------------- values

// PyTorch's avg_pool2d, written out: windows over the zero-padded input; divisor = kernel area
// (count_include_pad) or the number of in-bounds elements.
std::vector<double> avg_pool_by_hand(const std::vector<double>& x, int64_t h, int64_t w, int64_t k,
                                     int64_t s, int64_t p, bool include_pad) {
  const int64_t oh = (h + 2 * p - k) / s + 1, ow = (w + 2 * p - k) / s + 1;
  std::vector<double> out;
  for (int64_t i = 0; i < oh; ++i)
    for (int64_t j = 0; j < ow; ++j) {
      double sum = 0;
      int64_t inside = 0;
      for (int64_t di = 0; di < k; ++di)
        for (int64_t dj = 0; dj < k; ++dj) {
          const int64_t r = i * s - p + di, c = j * s - p + dj;
          if (r < 0 || r >= h || c < 0 || c >= w) continue;
          sum += x[r * w + c];
          ++inside;
        }
      out.push_back(sum / static_cast<double>(include_pad ? k * k : inside));
    }
  return out;
}

TEST(Pool, AvgPoolMatchesPyTorchFormula) {
  const Tensor x = f64({1, 1, 6, 5}, 20);
  const auto xv = x.to_double_vector();
  for (bool include_pad : {true, false}) {
    const auto expected = avg_pool_by_hand(xv, 6, 5, 3, 2, 1, include_pad);
    const Tensor y = avg_pool2d(x, {3, 3}, {2, 2}, {1, 1}, include_pad);
    EXPECT_EQ(y.shape(), (Shape{1, 1, 3, 3}));
    EXPECT_TRUE(all_close(y, Tensor::from_vector(expected, {1, 1, 3, 3}), 1e-14, 1e-14));
  }
}

TEST(Pool, AdaptiveAvgPoolUsesPyTorchIndexFormula) {
  // Input 5 -> output 3: windows [0, 2), [1, 4), [3, 5) (start floor(i*5/3), end ceil((i+1)*5/3)).
  std::vector<double> xv(25);
  for (int i = 0; i < 25; ++i) xv[i] = i * i * 0.25 - i;
  const Tensor x = Tensor::from_vector(xv, {1, 1, 5, 5});
  const int64_t bounds[3][2] = {{0, 2}, {1, 4}, {3, 5}};
  std::vector<double> expected;
  for (auto& rb : bounds)
    for (auto& cb : bounds) {
      double sum = 0;
      for (int64_t r = rb[0]; r < rb[1]; ++r)
        for (int64_t c = cb[0]; c < cb[1]; ++c) sum += xv[r * 5 + c];
      expected.push_back(sum / static_cast<double>((rb[1] - rb[0]) * (cb[1] - cb[0])));
    }
  EXPECT_TRUE(all_close(adaptive_avg_pool2d(x, {3, 3}), Tensor::from_vector(expected, {1, 1, 3, 3}),
                        1e-14, 1e-14));
  // Global average pooling.
  double mean = 0;
  for (double v : xv) mean += v / 25;
  EXPECT_NEAR(adaptive_avg_pool2d(x, {1, 1}).item(), mean, 1e-14);
}

TEST(Pool, MaxPoolValuesGradientRoutingAndNan) {
  const Tensor x = Tensor::from_vector(std::vector<double>{1, 5, 2, 0,  //
                                                           3, 4, 9, 8,  //
                                                           7, 6, -1, -2},
                                       {1, 1, 3, 4});
  Tensor xg = x.detach();
  xg.set_requires_grad(true);
  const Tensor y = max_pool2d(xg, {2, 2}, {1, 2});  // windows at rows 0-1 and 1-2
  EXPECT_EQ(y.to_double_vector(), (std::vector<double>{5, 9, 7, 9}));
  sum(y).backward();
  // 9 is the max of two windows and receives both gradients.
  EXPECT_EQ(xg.grad().to_double_vector(),
            (std::vector<double>{0, 1, 0, 0, 0, 0, 2, 0, 1, 0, 0, 0}));
  // Padding never wins, even against negative values.
  const Tensor neg = Tensor::from_vector(std::vector<double>{-5, -6, -7, -8}, {1, 1, 2, 2});
  EXPECT_EQ(max_pool2d(neg, {2, 2}, {1, 1}, {1, 1}).to_double_vector(),
            (std::vector<double>{-5, -5, -6, -5, -5, -6, -7, -7, -8}));
  // NaN propagates like PyTorch.
  const Tensor with_nan = Tensor::from_vector(std::vector<double>{1, kNaN, 3, 4}, {1, 1, 2, 2});
  EXPECT_TRUE(std::isnan(max_pool2d(with_nan, {2, 2}).item()));
}

TEST(Pool, ErrorsNameTheOpAndShapes) {
  const Tensor x = random_tensor({2, 3, 5, 5}, 30);
  const auto expect_error = [](const std::function<void()>& fn, const std::string& op,
                               const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "expected an error mentioning '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_TRUE(message_has(e, op)) << e.what();
      EXPECT_TRUE(message_has(e, needle)) << e.what();
    }
  };
  expect_error([&] { avg_pool2d(x, {2, 2}, {2, 2}, {2, 0}); }, "avg_pool2d", "half the kernel");
  expect_error([&] { max_pool2d(x, {6, 6}); }, "max_pool2d", "larger than the padded input");
  expect_error([&] { max_pool2d(x, {0, 2}); }, "max_pool2d", "positive");
  expect_error([&] { max_pool2d(reshape(x, {150}), {2, 2}); }, "max_pool2d", "[N, C, H, W]");
  expect_error([&] { adaptive_avg_pool2d(x, {0, 3}); }, "adaptive_avg_pool2d", "positive");
  expect_error([&] { avg_pool2d(x.to(DType::I32), {2, 2}); }, "avg_pool2d", "floating");
}

// ---------------------------------------------------------------- backends

// Every element finite: the reference run wrote all of its (NaN-poisoned) outputs.
::testing::AssertionResult all_finite(const Tensor& t) {
  const auto v = t.to_double_vector();
  for (size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i]))
      return ::testing::AssertionFailure() << "element " << i << " is " << v[i];
  return ::testing::AssertionSuccess();
}

Tensor poisoned(const Shape& shape, DType dtype, Device device) {
  return full(shape, kNaN, TensorOptions(dtype, device));
}

enum class Kind { Avg, Max, Adaptive };

struct PoolCase {
  Kind kind;
  int64_t k, s, p;       // fixed windows
  int64_t out_h, out_w;  // adaptive
  bool include_pad;
};

std::string describe(const PoolCase& c) {
  if (c.kind == Kind::Adaptive)
    return "adaptive " + std::to_string(c.out_h) + "x" + std::to_string(c.out_w);
  return std::string(c.kind == Kind::Avg ? "avg" : "max") + " k" + std::to_string(c.k) + " s" +
         std::to_string(c.s) + " p" + std::to_string(c.p) + (c.include_pad ? "" : " exclude-pad");
}

kernels::Pool2dArgs pool_args(const PoolCase& c, const Shape& shape) {
  kernels::Pool2dArgs a;
  a.planes = shape[0] * shape[1];
  a.in_h = shape[2];
  a.in_w = shape[3];
  a.kernel_h = a.kernel_w = c.k;
  a.stride_h = a.stride_w = c.s;
  a.pad_h = a.pad_w = c.p;
  a.count_include_pad = c.include_pad;
  if (c.kind == Kind::Adaptive) {
    a.out_h = c.out_h;
    a.out_w = c.out_w;
  } else {
    a.out_h = (a.in_h + 2 * c.p - c.k) / c.s + 1;
    a.out_w = (a.in_w + 2 * c.p - c.k) / c.s + 1;
  }
  return a;
}

// Forward and backward kernels on `device` with poisoned outputs; the backward of max pooling
// uses the given (CPU) indices so that it is compared on its own.
std::vector<Tensor> run_kernels(const PoolCase& c, const kernels::Pool2dArgs& a, const Tensor& x,
                                const Tensor& dy_full, const Tensor& ref_indices, Device device) {
  const Shape out_shape{x.size(0), x.size(1), a.out_h, a.out_w};
  const Tensor xd = x.to(device);
  const Tensor dy = dy_full.to(device);
  Tensor y = poisoned(out_shape, x.dtype(), device);
  Tensor indices = full(out_shape, -7, TensorOptions(DType::I64, device));
  Tensor dx = poisoned(x.shape(), x.dtype(), device);
  switch (c.kind) {
    case Kind::Avg:
      DISTILL_DISPATCH(device, avg_pool2d_forward, xd.view_desc(), a, y.view_desc());
      DISTILL_DISPATCH(device, avg_pool2d_backward, dy.view_desc(), a, dx.view_desc());
      break;
    case Kind::Max: {
      DISTILL_DISPATCH(device, max_pool2d_forward, xd.view_desc(), a, y.view_desc(),
                       indices.view_desc());
      const Tensor idx = ref_indices.defined() ? ref_indices.to(device) : indices;
      DISTILL_DISPATCH(device, max_pool2d_backward, dy.view_desc(), idx.view_desc(), a,
                       dx.view_desc());
      break;
    }
    case Kind::Adaptive:
      DISTILL_DISPATCH(device, adaptive_avg_pool2d_forward, xd.view_desc(), a, y.view_desc());
      DISTILL_DISPATCH(device, adaptive_avg_pool2d_backward, dy.view_desc(), a, dx.view_desc());
      break;
  }
  return {y.to(Device::cpu()), indices.to(Device::cpu()), dx.to(Device::cpu())};
}

std::vector<PoolCase> backend_cases() {
  return {{Kind::Avg, 3, 2, 1, 0, 0, true},      {Kind::Avg, 3, 2, 1, 0, 0, false},
          {Kind::Avg, 2, 2, 0, 0, 0, true},      {Kind::Avg, 3, 1, 1, 0, 0, false},
          {Kind::Max, 3, 2, 1, 0, 0, true},      {Kind::Max, 2, 2, 0, 0, 0, true},
          {Kind::Max, 3, 1, 1, 0, 0, true},      {Kind::Adaptive, 0, 0, 0, 3, 4, true},
          {Kind::Adaptive, 0, 0, 0, 1, 1, true}, {Kind::Adaptive, 0, 0, 0, 9, 11, true},
          {Kind::Adaptive, 0, 0, 0, 7, 7, true}};
}

class PoolBackend : public testing::BackendTest {};

void expect_kernels_match_cpu(Device device, DType dtype, double tol) {
  uint64_t seed = dtype == DType::BF16 ? 300 : 100;
  for (const PoolCase& c : backend_cases()) {
    for (const Shape& shape : std::vector<Shape>{{2, 3, 7, 9}, {1, 5, 14, 13}, {3, 2, 1, 1}}) {
      if (c.kind != Kind::Adaptive && (shape[2] + 2 * c.p < c.k || shape[3] + 2 * c.p < c.k))
        continue;
      SCOPED_TRACE(std::string(dtype_name(dtype)) + " " + describe(c) + " " + shape_str(shape));
      const Tensor x = random_tensor(shape, seed += 2).to(dtype);
      const kernels::Pool2dArgs a = pool_args(c, shape);
      const Tensor dy = random_tensor({shape[0], shape[1], a.out_h, a.out_w}, seed + 1).to(dtype);
      const auto ref = run_kernels(c, a, x, dy, Tensor(), Device::cpu());
      const auto got = run_kernels(c, a, x, dy, ref[1], device);
      ASSERT_TRUE(all_finite(ref[0]) && all_finite(ref[2]));
      if (c.kind == Kind::Max) {
        for (int64_t i : ref[1].to_int_vector()) ASSERT_GE(i, 0);
      }
      EXPECT_TRUE(all_close(got[0], ref[0], tol, tol)) << "forward";
      if (c.kind == Kind::Max) {
        EXPECT_EQ(got[1].to_int_vector(), ref[1].to_int_vector()) << "argmax";
      }
      EXPECT_TRUE(all_close(got[2], ref[2], tol, tol)) << "backward";
    }
  }
}

TEST_P(PoolBackend, F32KernelsMatchCpu) {
  // fp32 window sums of at most 9 terms vs double: ~1e-7 relative; 1e-5 with margin.
  expect_kernels_match_cpu(device(), DType::F32, 1e-5);
}

TEST_P(PoolBackend, Bf16KernelsMatchCpu) {
  // Same bf16 inputs; fp32 sums on both sides then one bf16 rounding (relative 2^-8): outputs
  // may sit one rounding apart, 1e-2 relative (and absolute, for values near 0).
  expect_kernels_match_cpu(device(), DType::BF16, 1e-2);
}

TEST_P(PoolBackend, OpsMatchCpuThroughAutograd) {
  const Tensor x = random_tensor({2, 3, 11, 10}, 700);
  testing::expect_backend_matches_cpu(
      [](const std::vector<Tensor>& in) {
        return max_pool2d(in[0], {3, 3}, {2, 2}, {1, 1});
      },
      {x}, device(), DType::F32, 1e-6, 1e-5);
  testing::expect_backend_matches_cpu(
      [](const std::vector<Tensor>& in) {
        return avg_pool2d(in[0], {3, 3}, {2, 2}, {1, 1}, false);
      },
      {x}, device(), DType::F32, 1e-6, 1e-5);
  testing::expect_backend_matches_cpu(
      [](const std::vector<Tensor>& in) {
        return adaptive_avg_pool2d(in[0], {4, 3});
      },
      {x}, device(), DType::F32, 1e-6, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Backends, PoolBackend, ::testing::ValuesIn(testing::all_backends()),
                         testing::backend_name);

}  // namespace
}  // namespace distill
