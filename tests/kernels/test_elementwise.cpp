// Elementwise ops: float64 gradient checks (with broadcasting), every backend against the CPU,
// the low-precision CPU paths against a float64 reference, integer dtypes, numerical edge cases
// and error messages.
#include <cmath>
#include <limits>
#include <string>

#include "tests/test_util.h"

namespace distill {
namespace {

using testing::all_close;
using testing::f64;
using testing::gradcheck;
using testing::message_has;
using testing::random_tensor;

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

// Random F64 values with |v| in [0.2, 2): keeps relu/abs/maximum tests away from their kinks.
Tensor away_from_zero(const Shape& shape, uint64_t seed) {
  std::vector<double> v = random_tensor(shape, seed, DType::F64, -1.8, 1.8).to_double_vector();
  for (double& x : v) x += x < 0 ? -0.2 : 0.2;
  return Tensor::from_vector(v, shape);
}

Tensor positive(const Shape& shape, uint64_t seed) {
  return random_tensor(shape, seed, DType::F64, 0.5, 2.0);
}

// ---------------------------------------------------------------- float64 gradient checks

TEST(ElementwiseGrad, AddSubMulDivSameShapeAndBroadcast) {
  const std::vector<std::pair<Shape, Shape>> shape_pairs = {
      {{2, 3}, {2, 3}}, {{3, 1, 4}, {2, 4}}, {{4}, {3, 1}}, {{2, 3}, {}}};
  uint64_t seed = 1;
  for (const auto& [sa, sb] : shape_pairs) {
    SCOPED_TRACE(shape_str(sa) + " op " + shape_str(sb));
    EXPECT_TRUE(gradcheck([](const auto& in) { return add(in[0], in[1]); },
                          {f64(sa, seed++), f64(sb, seed++)}));
    EXPECT_TRUE(gradcheck([](const auto& in) { return sub(in[0], in[1]); },
                          {f64(sa, seed++), f64(sb, seed++)}));
    EXPECT_TRUE(gradcheck([](const auto& in) { return mul(in[0], in[1]); },
                          {f64(sa, seed++), f64(sb, seed++)}));
    // Divisor kept in [0.5, 2) so 1/b stays well conditioned.
    EXPECT_TRUE(gradcheck([](const auto& in) { return div(in[0], in[1]); },
                          {f64(sa, seed++), positive(sb, seed++)}));
  }
}

TEST(ElementwiseGrad, PowTensorGradientsForBaseAndExponent) {
  // Positive base so a^b and log(a) are smooth; exponent of either sign.
  EXPECT_TRUE(gradcheck([](const auto& in) { return pow(in[0], in[1]); },
                        {positive({2, 3}, 11), f64({2, 3}, 12)}));
  EXPECT_TRUE(gradcheck([](const auto& in) { return pow(in[0], in[1]); },
                        {positive({3, 1, 4}, 13), f64({2, 4}, 14)}));
  EXPECT_TRUE(gradcheck([](const auto& in) { return pow(in[0], in[1]); },
                        {positive({4}, 15), f64({3, 1}, 16)}));
}

TEST(ElementwiseGrad, PowExponentGradientIsZeroAtZeroBase) {
  // d/db 0^b = 0^b log 0 is defined as 0 for b >= 0 (PyTorch's convention), not NaN.
  Tensor a = Tensor::from_vector(std::vector<double>{0.0, 2.0}, {2}).set_requires_grad(true);
  Tensor b = Tensor::from_vector(std::vector<double>{2.0, 3.0}, {2}).set_requires_grad(true);
  sum(pow(a, b)).backward();
  const auto gb = b.grad().to_double_vector();
  EXPECT_EQ(gb[0], 0.0);
  EXPECT_NEAR(gb[1], 8.0 * std::log(2.0), 1e-12);
  const auto ga = a.grad().to_double_vector();
  EXPECT_EQ(ga[0], 0.0);  // 2 * 0^1
  EXPECT_NEAR(ga[1], 12.0, 1e-12);
}

TEST(ElementwiseGrad, MaximumMinimumWithBroadcast) {
  EXPECT_TRUE(gradcheck([](const auto& in) { return maximum(in[0], in[1]); },
                        {f64({2, 3}, 21), f64({2, 3}, 22)}));
  EXPECT_TRUE(gradcheck([](const auto& in) { return minimum(in[0], in[1]); },
                        {f64({3, 1, 4}, 23), f64({2, 4}, 24)}));
  EXPECT_TRUE(gradcheck([](const auto& in) { return maximum(in[0], in[1]); },
                        {f64({4}, 25), f64({3, 1}, 26)}));
}

TEST(ElementwiseGrad, MaximumTiesSplitTheGradientEvenly) {
  Tensor a = Tensor::from_vector(std::vector<double>{1.0, 5.0, 3.0}, {3}).set_requires_grad(true);
  Tensor b = Tensor::from_vector(std::vector<double>{1.0, 2.0, 4.0}, {3}).set_requires_grad(true);
  sum(maximum(a, b)).backward();
  EXPECT_EQ(a.grad().to_double_vector(), (std::vector<double>{0.5, 1.0, 0.0}));
  EXPECT_EQ(b.grad().to_double_vector(), (std::vector<double>{0.5, 0.0, 1.0}));
  // maximum(x, x) is x, so the two halves add back up to 1.
  Tensor x = Tensor::from_vector(std::vector<double>{-1.0, 2.0}, {2}).set_requires_grad(true);
  sum(minimum(x, x)).backward();
  EXPECT_EQ(x.grad().to_double_vector(), (std::vector<double>{1.0, 1.0}));
}

TEST(ElementwiseGrad, ScalarOps) {
  EXPECT_TRUE(gradcheck([](const auto& in) { return add(in[0], 1.5); }, {f64({2, 3}, 31)}));
  EXPECT_TRUE(gradcheck([](const auto& in) { return mul(in[0], -2.5); }, {f64({2, 3}, 32)}));
  EXPECT_TRUE(gradcheck([](const auto& in) { return pow(in[0], 3.0); }, {f64({2, 3}, 33)}));
  EXPECT_TRUE(gradcheck([](const auto& in) { return pow(in[0], 0.5); }, {positive({2, 3}, 34)}));
  EXPECT_TRUE(gradcheck([](const auto& in) { return pow(in[0], -1.5); }, {positive({2, 3}, 35)}));
  EXPECT_TRUE(gradcheck([](const auto& in) { return pow(in[0], 0.0); }, {f64({4}, 36)}));
}

TEST(ElementwiseGrad, UnaryOps) {
  const std::vector<std::pair<const char*, Fn>> smooth = {
      {"neg", [](const auto& in) { return neg(in[0]); }},
      {"exp", [](const auto& in) { return exp(in[0]); }},
      {"tanh", [](const auto& in) { return tanh(in[0]); }},
      {"sigmoid", [](const auto& in) { return sigmoid(in[0]); }},
      {"gelu", [](const auto& in) { return gelu(in[0]); }},
      {"quick_gelu", [](const auto& in) { return quick_gelu(in[0]); }},
  };
  uint64_t seed = 40;
  for (const auto& [name, fn] : smooth) {
    SCOPED_TRACE(name);
    EXPECT_TRUE(gradcheck(fn, {f64({3, 4}, seed++)}));
  }
  // Defined or smooth only on x > 0.
  const std::vector<std::pair<const char*, Fn>> positive_only = {
      {"log", [](const auto& in) { return log(in[0]); }},
      {"sqrt", [](const auto& in) { return sqrt(in[0]); }},
      {"rsqrt", [](const auto& in) { return rsqrt(in[0]); }},
  };
  for (const auto& [name, fn] : positive_only) {
    SCOPED_TRACE(name);
    EXPECT_TRUE(gradcheck(fn, {positive({3, 4}, seed++)}));
  }
  // Kinked at 0: inputs kept at |x| >= 0.2.
  const std::vector<std::pair<const char*, Fn>> kinked = {
      {"relu", [](const auto& in) { return relu(in[0]); }},
      {"abs", [](const auto& in) { return abs(in[0]); }},
  };
  for (const auto& [name, fn] : kinked) {
    SCOPED_TRACE(name);
    EXPECT_TRUE(gradcheck(fn, {away_from_zero({3, 4}, seed++)}));
  }
}

TEST(ElementwiseGrad, UnaryOpsOnNonContiguousInput) {
  auto t = [](const Tensor& x) { return transpose(x, 0, 1); };
  EXPECT_TRUE(gradcheck([&](const auto& in) { return gelu(t(in[0])); }, {f64({3, 4}, 50)}));
  EXPECT_TRUE(gradcheck([&](const auto& in) { return sqrt(t(in[0])); }, {positive({3, 4}, 51)}));
  EXPECT_TRUE(gradcheck([&](const auto& in) { return mul(t(in[0]), in[1]); },
                        {f64({3, 4}, 52), f64({3}, 53)}));
}

TEST(ElementwiseGrad, WhereAndMaskedFill) {
  Generator g(60);
  const Tensor cond = lt(rand({2, 1}, {}, &g), full({}, 0.5));
  const Tensor cond_full = Tensor::from_vector(std::vector<float>{1, 0, 0, 1, 1, 0}, {2, 3});
  const Tensor mask = gt(cond_full, zeros({}));  // u8 with both values present
  EXPECT_TRUE(gradcheck([&](const auto& in) { return where(mask, in[0], in[1]); },
                        {f64({2, 3}, 61), f64({2, 3}, 62)}));
  EXPECT_TRUE(gradcheck([&](const auto& in) { return where(cond, in[0], in[1]); },
                        {f64({2, 3}, 63), f64({3}, 64)}));
  EXPECT_TRUE(
      gradcheck([&](const auto& in) { return masked_fill(in[0], mask, -7.0); }, {f64({2, 3}, 65)}));
  // The filled positions receive no gradient.
  Tensor x = f64({2, 3}, 66).set_requires_grad(true);
  sum(masked_fill(x, mask, 3.0)).backward();
  EXPECT_EQ(x.grad().to_double_vector(), (std::vector<double>{0, 1, 1, 0, 0, 1}));
}

TEST(ElementwiseGrad, SumTo) {
  EXPECT_TRUE(gradcheck(
      [](const auto& in) {
        return sum_to(in[0], {3, 1});
      },
      {f64({2, 3, 4}, 70)}));
  EXPECT_TRUE(gradcheck([](const auto& in) { return sum_to(in[0], {4}); }, {f64({2, 3, 4}, 71)}));
  EXPECT_TRUE(gradcheck([](const auto& in) { return sum_to(in[0], {}); }, {f64({2, 3}, 72)}));
  // Only a leading size-1 dim to drop: a reshape, no reduction.
  EXPECT_TRUE(gradcheck([](const auto& in) { return sum_to(in[0], {3}); }, {f64({1, 3}, 73)}));
}

TEST(Elementwise, SumToValuesAndErrors) {
  Tensor x = arange(0, 24, 1, DType::F64).reshape({2, 3, 4});
  Tensor s = sum_to(x, {3, 1});
  EXPECT_EQ(s.shape(), (Shape{3, 1}));
  // Row r of slab k holds 12k + 4r + {0, 1, 2, 3}: (16r + 6) + (16r + 54) = 32r + 60.
  EXPECT_EQ(s.to_double_vector(), (std::vector<double>{60, 92, 124}));
  EXPECT_THROW(sum_to(x, {5}), Error);
  EXPECT_THROW(sum_to(x, {2, 2, 3, 4}), Error);
}

// ---------------------------------------------------------------- backends against the CPU

// One op under test: a function of its inputs (which it may transpose or slice to make them
// non-contiguous), the input shapes and the range of the inputs' values.
struct OpCase {
  std::string name;
  Fn fn;
  std::vector<Shape> shapes;
  double low = -2.0, high = 2.0;
};

std::vector<OpCase> backend_cases() {
  auto tr = [](const Tensor& x) { return transpose(x, 0, 1); };
  return {
      {"add_broadcast", [](const auto& in) { return add(in[0], in[1]); }, {{3, 1, 4}, {2, 4}}},
      {"sub", [](const auto& in) { return sub(in[0], in[1]); }, {{4, 5}, {4, 5}}},
      {"mul_transposed", [=](const auto& in) { return mul(tr(in[0]), in[1]); }, {{5, 4}, {4, 1}}},
      {"div", [](const auto& in) { return div(in[0], in[1]); }, {{3, 4}, {4}}, 0.5, 2.0},
      {"pow", [](const auto& in) { return pow(in[0], in[1]); }, {{3, 4}, {3, 4}}, 0.5, 2.0},
      {"maximum", [](const auto& in) { return maximum(in[0], in[1]); }, {{3, 4}, {1, 4}}},
      {"minimum_sliced",
       [](const auto& in) { return minimum(slice(in[0], 1, 0, 8, 2), in[1]); },
       {{3, 8}, {3, 4}}},
      {"add_scalar", [](const auto& in) { return add(in[0], 0.75); }, {{3, 4}}},
      {"mul_scalar", [](const auto& in) { return mul(in[0], -1.25); }, {{3, 4}}},
      {"pow_scalar", [](const auto& in) { return pow(in[0], 1.5); }, {{3, 4}}, 0.5, 2.0},
      {"neg", [](const auto& in) { return neg(in[0]); }, {{3, 4}}},
      {"exp_transposed", [=](const auto& in) { return exp(tr(in[0])); }, {{3, 4}}},
      {"log", [](const auto& in) { return log(in[0]); }, {{3, 4}}, 0.5, 2.0},
      {"sqrt", [](const auto& in) { return sqrt(in[0]); }, {{3, 4}}, 0.5, 2.0},
      {"rsqrt", [](const auto& in) { return rsqrt(in[0]); }, {{3, 4}}, 0.5, 2.0},
      {"tanh", [](const auto& in) { return tanh(in[0]); }, {{3, 4}}},
      {"sigmoid", [](const auto& in) { return sigmoid(in[0]); }, {{3, 4}}},
      {"relu_sliced", [](const auto& in) { return relu(slice(in[0], 0, 1, 4)); }, {{4, 6}}},
      {"gelu", [](const auto& in) { return gelu(in[0]); }, {{3, 4}}},
      {"quick_gelu_transposed", [=](const auto& in) { return quick_gelu(tr(in[0])); }, {{4, 3}}},
      {"abs", [](const auto& in) { return abs(in[0]); }, {{3, 4}}},
      {"where",
       [](const auto& in) { return where(gt(in[0], in[1]), in[0], in[1]); },
       {{3, 4}, {4}}},
      {"masked_fill",
       [](const auto& in) {
         const Tensor zero = zeros({}, TensorOptions(in[0].dtype(), in[0].device()));
         return masked_fill(in[0], lt(in[0], zero), 0.5);
       },
       {{3, 4}}},
  };
}

// Runs `c` on `device` in `dtype` with inputs made from fixed seeds; returns the output and the
// inputs' gradients for a fixed output gradient, all as f32 on the CPU.
std::vector<Tensor> run_case(const OpCase& c, Device device, DType dtype) {
  std::vector<Tensor> inputs;
  uint64_t seed = 100;
  for (const Shape& s : c.shapes) {
    Tensor x = to_device(random_tensor(s, seed++, DType::F32, c.low, c.high).to(dtype), device);
    inputs.push_back(x.detach().set_requires_grad(true));
  }
  Tensor out = c.fn(inputs);
  Tensor w = to_device(random_tensor(out.shape(), 999, DType::F32, 0.5, 1.5).to(dtype), device);
  out.backward(w);
  std::vector<Tensor> results{to_device(out.detach(), Device::cpu()).to(DType::F32)};
  for (const Tensor& x : inputs)
    results.push_back(to_device(x.grad(), Device::cpu()).to(DType::F32));
  return results;
}

class ElementwiseBackend : public testing::BackendTest {};

TEST_P(ElementwiseBackend, ForwardAndBackwardMatchCpu) {
  struct Tolerance {
    DType dtype;
    double atol, rtol;
  };
  // f32: both sides compute in float; differences are last-bit math-library ones.
  // bf16: both sides compute in float and round once to bf16 (8 mantissa bits, 2^-8 = 0.4%),
  // so a one-ulp disagreement is possible: 1e-2 relative, and 1e-2 absolute for O(1) values
  // whose gradients cancel in broadcast sums.
  for (const Tolerance& tol :
       {Tolerance{DType::F32, 1e-5, 1e-5}, Tolerance{DType::BF16, 1e-2, 1e-2}}) {
    for (const OpCase& c : backend_cases()) {
      SCOPED_TRACE(c.name + " " + dtype_name(tol.dtype));
      const auto expected = run_case(c, Device::cpu(), tol.dtype);
      const auto actual = run_case(c, device(), tol.dtype);
      ASSERT_EQ(expected.size(), actual.size());
      EXPECT_TRUE(all_close(actual[0], expected[0], tol.atol, tol.rtol)) << "forward";
      for (size_t i = 1; i < actual.size(); ++i)
        EXPECT_TRUE(all_close(actual[i], expected[i], tol.atol, tol.rtol))
            << "grad of input " << i - 1;
    }
  }
}

TEST_P(ElementwiseBackend, ComparisonsAndIntegerOpsMatchCpu) {
  Tensor a = random_tensor({4, 5}, 1);
  Tensor b = random_tensor({5}, 2);
  Tensor ia = Tensor::from_vector(std::vector<int64_t>{-3, 7, 0, 9, 4, -1}, {2, 3}).to(DType::I32);
  Tensor ib = Tensor::from_vector(std::vector<int64_t>{2, 7, -5}, {3}).to(DType::I32);
  auto on = [&](const Tensor& t) { return to_device(t, device()); };
  auto back = [](const Tensor& t) { return to_device(t, Device::cpu()); };
  const std::vector<std::function<Tensor(const Tensor&, const Tensor&)>> compares = {
      [](auto& x, auto& y) { return eq(x, y); }, [](auto& x, auto& y) { return ne(x, y); },
      [](auto& x, auto& y) { return lt(x, y); }, [](auto& x, auto& y) { return le(x, y); },
      [](auto& x, auto& y) { return gt(x, y); }, [](auto& x, auto& y) { return ge(x, y); }};
  for (const auto& cmp : compares) {
    EXPECT_EQ(back(cmp(on(a), on(b))).to_int_vector(), cmp(a, b).to_int_vector());
    EXPECT_EQ(back(cmp(on(ia), on(ib))).to_int_vector(), cmp(ia, ib).to_int_vector());
  }
  EXPECT_EQ(back(add(on(ia), on(ib))).to_int_vector(), add(ia, ib).to_int_vector());
  EXPECT_EQ(back(mul(on(ia), on(ib))).to_int_vector(), mul(ia, ib).to_int_vector());
  EXPECT_EQ(back(maximum(on(ia), on(ib))).to_int_vector(), maximum(ia, ib).to_int_vector());
  EXPECT_EQ(back(abs(on(ia))).to_int_vector(), abs(ia).to_int_vector());
  EXPECT_EQ(back(where(on(gt(ia, ib)), on(ia), on(ib))).to_int_vector(),
            where(gt(ia, ib), ia, ib).to_int_vector());
}

INSTANTIATE_TEST_SUITE_P(Backends, ElementwiseBackend, ::testing::ValuesIn(testing::all_backends()),
                         testing::backend_name);

// ---------------------------------------------------------------- CPU low-precision paths

TEST(Elementwise, LowPrecisionCpuMatchesFloat64Reference) {
  // The same inputs (rounded to the low dtype first) through the low-precision path and through
  // float64. f32 forward and backward: 1e-5 relative and absolute (float vs double math). bf16
  // and f16 forward: one rounding of the result (2^-9 and 2^-11 relative) plus float math:
  // 1e-2 and 2e-3 relative.
  for (const OpCase& c : backend_cases()) {
    SCOPED_TRACE(c.name);
    std::vector<Tensor> reference_inputs;
    for (DType dtype : {DType::F32, DType::BF16, DType::F16}) {
      std::vector<Tensor> low, wide;
      uint64_t seed = 100;
      for (const Shape& s : c.shapes) {
        Tensor x = random_tensor(s, seed++, DType::F32, c.low, c.high).to(dtype);
        low.push_back(x.detach().set_requires_grad(true));
        wide.push_back(x.to(DType::F64).detach().set_requires_grad(true));
      }
      Tensor out_low = c.fn(low), out_wide = c.fn(wide);
      const double rtol = dtype == DType::F32 ? 1e-5 : dtype == DType::BF16 ? 1e-2 : 2e-3;
      const double atol = dtype == DType::F32 ? 1e-5 : 1e-6;
      EXPECT_TRUE(all_close(out_low, out_wide, atol, rtol)) << dtype_name(dtype) << " forward";
      if (dtype != DType::F32) continue;
      Tensor w = random_tensor(out_low.shape(), 999, DType::F32, 0.5, 1.5);
      out_low.backward(w);
      out_wide.backward(w.to(DType::F64));
      for (size_t i = 0; i < low.size(); ++i)
        EXPECT_TRUE(all_close(low[i].grad(), wide[i].grad(), 1e-5, 1e-5)) << "grad " << i;
    }
  }
}

// ---------------------------------------------------------------- values and edge cases

TEST(Elementwise, KnownValues) {
  Tensor x = Tensor::from_vector(std::vector<double>{-1.0, 0.0, 1.0, 2.0}, {4});
  // Exact (erf) GELU, as torch.nn.functional.gelu(approximate='none').
  const std::vector<double> gelu_ref = {-0.15865525393145707, 0.0, 0.8413447460685429,
                                        1.9544997361036416};
  const auto g = gelu(x).to_double_vector();
  for (size_t i = 0; i < g.size(); ++i) EXPECT_NEAR(g[i], gelu_ref[i], 1e-15);
  const auto q = quick_gelu(x).to_double_vector();
  for (size_t i = 0; i < q.size(); ++i) {
    const double v = x.to_double_vector()[i];
    EXPECT_NEAR(q[i], v / (1.0 + std::exp(-1.702 * v)), 1e-15);
  }
  EXPECT_EQ(relu(x).to_double_vector(), (std::vector<double>{0, 0, 1, 2}));
  EXPECT_EQ(abs(x).to_double_vector(), (std::vector<double>{1, 0, 1, 2}));
  EXPECT_EQ(pow(x, 2.0).to_double_vector(), (std::vector<double>{1, 0, 1, 4}));
  EXPECT_NEAR(rsqrt(full({1}, 4.0, DType::F64)).item(), 0.5, 1e-16);
}

TEST(Elementwise, LargeMagnitudesStayFinite) {
  const float big = 1000.0f;
  Tensor x = Tensor::from_vector(std::vector<float>{-big, -100.0f, 100.0f, big}, {4});
  for (DType dtype : {DType::F32, DType::BF16, DType::F64}) {
    SCOPED_TRACE(dtype_name(dtype));
    Tensor xd = x.to(dtype).detach().set_requires_grad(true);
    Tensor s = sigmoid(xd), t = tanh(xd), gl = gelu(xd), qg = quick_gelu(xd);
    const auto sv = s.to_double_vector();
    EXPECT_EQ(sv[0], 0.0);
    EXPECT_GE(sv[1], 0.0);  // e^-100: subnormal in f32, 0 in bf16, 3.7e-44 in f64
    EXPECT_LT(sv[1], 1e-40);
    EXPECT_EQ(sv[2], 1.0);
    EXPECT_EQ(sv[3], 1.0);
    EXPECT_EQ(t.to_double_vector(), (std::vector<double>{-1, -1, 1, 1}));
    for (const Tensor& act : {gl, qg}) {
      const auto v = act.to_double_vector();
      EXPECT_NEAR(v[0], 0.0, 1e-30);
      EXPECT_NEAR(v[1], 0.0, 1e-30);
      EXPECT_EQ(v[2], 100.0);
      EXPECT_EQ(v[3], 1000.0);
    }
    // Gradients at saturation are 0 (or 1 for the GELUs on the right), never NaN.
    add(add(sum(s), sum(t)), add(sum(gl), sum(qg))).backward();
    const auto grad = xd.grad().to_double_vector();
    EXPECT_NEAR(grad[0], 0.0, 1e-30);
    EXPECT_NEAR(grad[3], 2.0, 1e-30);
    for (double v : grad) EXPECT_FALSE(std::isnan(v));
  }
  // exp overflows to +inf and underflows to 0 (no NaN).
  const auto e = exp(x).to_double_vector();
  EXPECT_EQ(e[0], 0.0);
  EXPECT_TRUE(std::isinf(e[3]));
}

TEST(Elementwise, MaximumMinimumPropagateNaN) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Tensor a = Tensor::from_vector(std::vector<double>{nan, 1.0, 2.0}, {3});
  Tensor b = Tensor::from_vector(std::vector<double>{0.0, nan, 3.0}, {3});
  for (const Tensor& r : {maximum(a, b), minimum(a, b), maximum(b, a)}) {
    const auto v = r.to_double_vector();
    EXPECT_TRUE(std::isnan(v[0]));
    EXPECT_TRUE(std::isnan(v[1]));
  }
  EXPECT_EQ(maximum(a, b).to_double_vector()[2], 3.0);
  EXPECT_EQ(minimum(a, b).to_double_vector()[2], 2.0);
  EXPECT_TRUE(std::isnan(relu(a).to_double_vector()[0]));
}

TEST(Elementwise, IntegerDtypes) {
  for (DType dtype : {DType::I32, DType::I64}) {
    SCOPED_TRACE(dtype_name(dtype));
    Tensor a = Tensor::from_vector(std::vector<int64_t>{-3, 7, 0, 9, 4, -1}, {2, 3}).to(dtype);
    Tensor b = Tensor::from_vector(std::vector<int64_t>{2, 7, -5}, {3}).to(dtype);
    EXPECT_EQ(add(a, b).dtype(), dtype);
    EXPECT_EQ(add(a, b).to_int_vector(), (std::vector<int64_t>{-1, 14, -5, 11, 11, -6}));
    EXPECT_EQ(sub(a, b).to_int_vector(), (std::vector<int64_t>{-5, 0, 5, 7, -3, 4}));
    EXPECT_EQ(mul(a, b).to_int_vector(), (std::vector<int64_t>{-6, 49, 0, 18, 28, 5}));
    EXPECT_EQ(maximum(a, b).to_int_vector(), (std::vector<int64_t>{2, 7, 0, 9, 7, -1}));
    EXPECT_EQ(minimum(a, b).to_int_vector(), (std::vector<int64_t>{-3, 7, -5, 2, 4, -5}));
    EXPECT_EQ(neg(b).to_int_vector(), (std::vector<int64_t>{-2, -7, 5}));
    EXPECT_EQ(abs(b).to_int_vector(), (std::vector<int64_t>{2, 7, 5}));
    EXPECT_EQ(add(b, 3.0).to_int_vector(), (std::vector<int64_t>{5, 10, -2}));
    EXPECT_EQ(mul(b, -2.0).to_int_vector(), (std::vector<int64_t>{-4, -14, 10}));
    EXPECT_EQ(ge(a, b).to_int_vector(), (std::vector<int64_t>{0, 1, 1, 1, 0, 1}));
    EXPECT_EQ(where(ge(a, b), a, b).to_int_vector(), maximum(a, b).to_int_vector());
    EXPECT_THROW(div(a, b), Error);
    EXPECT_THROW(pow(a, b), Error);
    EXPECT_THROW(exp(a), Error);
    EXPECT_THROW(add(a, 0.5), Error);  // a fractional scalar has no integer result
  }
  // U8 arithmetic wraps like the C type.
  Tensor u = Tensor::from_vector(std::vector<int64_t>{250, 3}, {2}).to(DType::U8);
  EXPECT_EQ(add(u, u).to_int_vector(), (std::vector<int64_t>{244, 6}));
  // I64 compares exactly beyond 2^53, where a double could not tell the values apart.
  const int64_t big = (int64_t{1} << 53) + 1;
  Tensor p = Tensor::from_vector(std::vector<int64_t>{big}, {1});
  Tensor q = Tensor::from_vector(std::vector<int64_t>{big - 1}, {1});
  EXPECT_EQ(gt(p, q).to_int_vector(), (std::vector<int64_t>{1}));
  EXPECT_EQ(where(gt(p, q), p, q).to_int_vector(), (std::vector<int64_t>{big}));
}

TEST(Elementwise, BroadcastViewsAndZeroSizedTensors) {
  // An expanded (stride-0) input and a 0-dim scalar operand.
  Tensor row = Tensor::from_vector(std::vector<float>{1, 2, 3}, {1, 3});
  Tensor e = expand(row, {2, 3});
  EXPECT_EQ(mul(e, full({}, 2.0)).to_float_vector(), (std::vector<float>{2, 4, 6, 2, 4, 6}));
  Tensor empty = zeros({0, 3});
  EXPECT_EQ(add(empty, row).shape(), (Shape{0, 3}));
  EXPECT_EQ(exp(empty).numel(), 0);
}

TEST(Elementwise, ErrorsNameOpShapesAndDtypes) {
  try {
    (void)add(zeros({2, 3}), zeros({4}));
    FAIL() << "expected a broadcast error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, "add")) << e.what();
    EXPECT_TRUE(message_has(e, "[2, 3]")) << e.what();
    EXPECT_TRUE(message_has(e, "[4]")) << e.what();
  }
  try {
    // Floating dtypes promote (PyTorch's rule); an integer meeting a float is an error.
    (void)mul(zeros({2}), zeros({2}, DType::I64));
    FAIL() << "expected a dtype error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, "mul")) << e.what();
    EXPECT_TRUE(message_has(e, "f32[2]")) << e.what();
    EXPECT_TRUE(message_has(e, "i64[2]")) << e.what();
  }
  try {
    (void)where(zeros({2}), zeros({2}), zeros({2}));
    FAIL() << "expected a condition dtype error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, "where")) << e.what();
    EXPECT_TRUE(message_has(e, "u8")) << e.what();
  }
  try {
    (void)log(zeros({3}, DType::I64));
    FAIL() << "expected a dtype error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, "log")) << e.what();
    EXPECT_TRUE(message_has(e, "i64[3]")) << e.what();
  }
  EXPECT_THROW(masked_fill(zeros({3}), gt(zeros({2, 3}), zeros({})), 1.0), Error);
  EXPECT_THROW(add(Tensor(), zeros({1})), Error);
  if (cuda_available()) {
    try {
      (void)sub(zeros({2}), zeros({2}, Device::cuda()));
      FAIL() << "expected a device error";
    } catch (const Error& e) {
      EXPECT_TRUE(message_has(e, "sub")) << e.what();
      EXPECT_TRUE(message_has(e, "cuda")) << e.what();
    }
  }
}

}  // namespace
}  // namespace distill
