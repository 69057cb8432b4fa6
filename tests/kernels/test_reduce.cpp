// Reductions: float64 gradient checks over many dim sets, values against a double reference,
// argmax and NaN rules, error messages, and every backend against the CPU.
#include <cmath>
#include <limits>
#include <string>

#include "kernels/reduce.h"
#include "tests/kernels/backend_compare.h"
#include "tests/test_util.h"

namespace distill {
namespace {

using testing::all_close;
using testing::f64;
using testing::gradcheck;
using testing::message_has;
using testing::random_tensor;

struct DimCase {
  std::vector<int64_t> dims;
  bool keepdim;
};

std::vector<DimCase> dim_cases() {
  return {{{}, false},     {{}, true},     {{0}, false},       {{1}, true},    {{-1}, false},
          {{0, 2}, false}, {{2, 0}, true}, {{0, 1, 2}, false}, {{1, -1}, true}};
}

std::string describe(const DimCase& c) {
  return "dims " + shape_str(c.dims) + (c.keepdim ? " keepdim" : "");
}

// ---------------------------------------------------------------- float64 gradient checks

TEST(ReduceGrad, SumAndMeanOverDimSets) {
  uint64_t seed = 1;
  for (const DimCase& c : dim_cases()) {
    SCOPED_TRACE(describe(c));
    EXPECT_TRUE(gradcheck([&](const auto& in) { return sum(in[0], c.dims, c.keepdim); },
                          {f64({3, 4, 5}, seed++)}));
    EXPECT_TRUE(gradcheck([&](const auto& in) { return mean(in[0], c.dims, c.keepdim); },
                          {f64({3, 4, 5}, seed++)}));
  }
}

TEST(ReduceGrad, MaxAndMinOverDimSets) {
  // Random inputs have no ties (with probability 1), so max/min are differentiable there.
  uint64_t seed = 100;
  for (const DimCase& c : dim_cases()) {
    SCOPED_TRACE(describe(c));
    EXPECT_TRUE(gradcheck([&](const auto& in) { return max(in[0], c.dims, c.keepdim); },
                          {f64({3, 4, 5}, seed++)}));
    EXPECT_TRUE(gradcheck([&](const auto& in) { return min(in[0], c.dims, c.keepdim); },
                          {f64({3, 4, 5}, seed++)}));
  }
}

TEST(ReduceGrad, VarOverDimSetsAndCorrections) {
  uint64_t seed = 200;
  for (const DimCase& c : dim_cases()) {
    for (int64_t correction : {0, 1}) {
      SCOPED_TRACE(describe(c) + " correction " + std::to_string(correction));
      EXPECT_TRUE(
          gradcheck([&](const auto& in) { return var(in[0], c.dims, correction, c.keepdim); },
                    {f64({3, 4, 5}, seed++)}));
    }
  }
}

TEST(ReduceGrad, NonContiguousInputAndScalar) {
  EXPECT_TRUE(gradcheck([](const auto& in) { return sum(transpose(in[0], 0, 1), {1}); },
                        {f64({4, 3}, 300)}));
  EXPECT_TRUE(gradcheck([](const auto& in) { return max(transpose(in[0], 0, 1), {0}, true); },
                        {f64({4, 3}, 301)}));
  EXPECT_TRUE(gradcheck([](const auto& in) { return mean(reshape(in[0], {})); }, {f64({1}, 302)}));
}

TEST(ReduceGrad, MaxTiesSplitTheGradientEvenly) {
  Tensor x =
      Tensor::from_vector(std::vector<double>{1, 3, 3, 2, 2, 2}, {2, 3}).set_requires_grad(true);
  sum(max(x, {1})).backward();
  EXPECT_EQ(x.grad().to_double_vector(),
            (std::vector<double>{0, 0.5, 0.5, 1.0 / 3, 1.0 / 3, 1.0 / 3}));
  Tensor y = Tensor::from_vector(std::vector<double>{-1, 4, -1}, {3}).set_requires_grad(true);
  sum(min(y)).backward();
  EXPECT_EQ(y.grad().to_double_vector(), (std::vector<double>{0.5, 0, 0.5}));
}

// ---------------------------------------------------------------- values

// Sum over `dims` of a [2, 3, 4] double tensor computed by brute force.
std::vector<double> brute_sum(const std::vector<double>& v, bool r0, bool r1, bool r2) {
  const int64_t n0 = r0 ? 1 : 2, n1 = r1 ? 1 : 3, n2 = r2 ? 1 : 4;
  std::vector<double> out(static_cast<size_t>(n0 * n1 * n2), 0.0);
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 3; ++j)
      for (int64_t k = 0; k < 4; ++k)
        out[((r0 ? 0 : i) * n1 + (r1 ? 0 : j)) * n2 + (r2 ? 0 : k)] += v[(i * 3 + j) * 4 + k];
  return out;
}

TEST(Reduce, SumMatchesBruteForceForEveryDimSubset) {
  const Tensor x = f64({2, 3, 4}, 400);
  const auto v = x.to_double_vector();
  for (int mask = 0; mask < 8; ++mask) {
    std::vector<int64_t> dims;
    for (int d = 0; d < 3; ++d)
      if (mask & (1 << d)) dims.push_back(d);
    if (dims.empty()) continue;  // empty dims means "all", checked below
    SCOPED_TRACE("dims " + shape_str(dims));
    const auto expected = brute_sum(v, mask & 1, mask & 2, mask & 4);
    const auto got = sum(x, dims, true).to_double_vector();
    ASSERT_EQ(got.size(), expected.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], expected[i], 1e-12);
  }
  EXPECT_NEAR(sum(x).item(), brute_sum(v, true, true, true)[0], 1e-12);
}

TEST(Reduce, ShapesWithAndWithoutKeepdim) {
  const Tensor x = random_tensor({2, 3, 4}, 401);
  EXPECT_EQ(sum(x, {1}).shape(), (Shape{2, 4}));
  EXPECT_EQ(sum(x, {1}, true).shape(), (Shape{2, 1, 4}));
  EXPECT_EQ(mean(x, {0, 2}).shape(), (Shape{3}));
  EXPECT_EQ(max(x).shape(), (Shape{}));
  EXPECT_EQ(min(x, {}, true).shape(), (Shape{1, 1, 1}));
  EXPECT_EQ(var(x, {-1}, 1, true).shape(), (Shape{2, 3, 1}));
  EXPECT_EQ(argmax(x, 1).shape(), (Shape{2, 4}));
  EXPECT_EQ(argmax(x, -1, true).shape(), (Shape{2, 3, 1}));
}

TEST(Reduce, MeanVarMaxMinValues) {
  const Tensor x = Tensor::from_vector(std::vector<double>{1, 2, 3, 4, -5, 10}, {2, 3});
  EXPECT_EQ(mean(x, {1}).to_double_vector(), (std::vector<double>{2, 3}));
  // Row 0: deviations -1, 0, 1 -> sum of squares 2; row 1: mean 3, deviations 1, -8, 7 -> 114.
  const auto unbiased = var(x, {1}).to_double_vector();
  EXPECT_DOUBLE_EQ(unbiased[0], 1.0);
  EXPECT_DOUBLE_EQ(unbiased[1], 57.0);
  const auto biased = var(x, {1}, 0).to_double_vector();
  EXPECT_DOUBLE_EQ(biased[0], 2.0 / 3);
  EXPECT_DOUBLE_EQ(biased[1], 38.0);
  EXPECT_EQ(max(x, {0}).to_double_vector(), (std::vector<double>{4, 2, 10}));
  EXPECT_EQ(min(x, {1}).to_double_vector(), (std::vector<double>{1, -5}));
  // A correction >= the count divides by <= 0: inf or nan like PyTorch, no error.
  EXPECT_TRUE(std::isinf(var(Tensor::from_vector(std::vector<double>{1, 2}, {2}), {}, 2).item()));
}

TEST(Reduce, ArgmaxTakesTheFirstMaximum) {
  const Tensor x = Tensor::from_vector(std::vector<float>{1, 7, 7, 0, -3, -2, -2, -9}, {2, 4});
  EXPECT_EQ(argmax(x, 1).dtype(), DType::I64);
  EXPECT_EQ(argmax(x, 1).to_int_vector(), (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(argmax(x, 0).to_int_vector(), (std::vector<int64_t>{0, 0, 0, 0}));
  const Tensor all_equal = full({5}, 3.0);
  EXPECT_EQ(argmax(all_equal, 0).item(), 0);
  const Tensor neg_inf = full({3}, -std::numeric_limits<double>::infinity());
  EXPECT_EQ(argmax(neg_inf, 0).item(), 0);
}

TEST(Reduce, NanPropagatesThroughMaxMinAndArgmax) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const Tensor x = Tensor::from_vector(std::vector<double>{1, nan, 5, 2, 3, 4}, {2, 3});
  const auto mx = max(x, {1}).to_double_vector();
  EXPECT_TRUE(std::isnan(mx[0]));
  EXPECT_EQ(mx[1], 4);
  const auto mn = min(x, {1}).to_double_vector();
  EXPECT_TRUE(std::isnan(mn[0]));
  EXPECT_EQ(mn[1], 2);
  EXPECT_EQ(argmax(x, 1).to_int_vector(), (std::vector<int64_t>{1, 2}));  // NaN counts as max
  EXPECT_TRUE(std::isnan(sum(x).item()));
}

TEST(Reduce, IntegerSumWidensToI64AndIsExact) {
  const Tensor x = Tensor::from_vector(std::vector<int64_t>{(int64_t{1} << 53) + 1, 1, -5, 7}, {4});
  const Tensor s = sum(x);
  EXPECT_EQ(s.dtype(), DType::I64);
  EXPECT_EQ(s.to_int_vector()[0], (int64_t{1} << 53) + 4);
  const Tensor small = Tensor::from_vector(std::vector<int64_t>{3, -4, 10, 5}, {2, 2});
  const Tensor column_sums = sum(small.to(DType::I32), {0});
  EXPECT_EQ(column_sums.dtype(), DType::I64);
  EXPECT_EQ(column_sums.to_int_vector(), (std::vector<int64_t>{13, 1}));
}

TEST(Reduce, Bf16AccumulatesInDoubleAndRoundsOnce) {
  // 4096 copies of 1 + 2^-7: a bf16 accumulator would stall at 256; the exact sum is 4128,
  // which bf16 (8 significant bits) rounds to 4096 + 32 = 4128.
  const Tensor x = full({4096}, 1.0 + 1.0 / 128, TensorOptions(DType::BF16));
  EXPECT_EQ(sum(x).item(), 4128.0);
  EXPECT_EQ(mean(x).item(), 1.0 + 1.0 / 128);
  // Variance of a constant is exactly zero (two-pass in double, no cancellation).
  EXPECT_EQ(var(x).item(), 0.0);
}

TEST(Reduce, EmptyReductions) {
  const Tensor x = Tensor::empty({3, 0});
  EXPECT_EQ(sum(x, {1}).to_double_vector(), (std::vector<double>{0, 0, 0}));
  EXPECT_TRUE(std::isnan(mean(x, {1}).to_double_vector()[0]));
  EXPECT_EQ(sum(x, {0}).shape(), (Shape{0}));
  EXPECT_THROW(max(x, {1}), Error);
  EXPECT_THROW(argmax(x, 1), Error);
  EXPECT_EQ(max(x, {0}).shape(), (Shape{0}));  // nothing to reduce into: no error
}

TEST(Reduce, ErrorsNameTheOpAndArguments) {
  const Tensor x = random_tensor({2, 3}, 402);
  try {
    (void)sum(x, {1, -1});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, "sum")) << e.what();
    EXPECT_TRUE(message_has(e, "repeated")) << e.what();
  }
  try {
    (void)max(x, {2});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, "max")) << e.what();
  }
  EXPECT_THROW(mean(x.to(DType::I32)), Error);
  EXPECT_THROW(var(x, {}, -1), Error);
}

TEST(Reduce, CpuKernelDirectlyOnPoisonedOutput) {
  // rows of [1, 2, 3] and [-4, 0, 4]: every op into an output pre-filled with NaN.
  const std::vector<float> x{1, 2, 3, -4, 0, 4};
  using kernels::ReduceOp;
  const std::pair<ReduceOp, std::vector<double>> cases[] = {{ReduceOp::Sum, {6, 0}},
                                                            {ReduceOp::Mean, {2, 0}},
                                                            {ReduceOp::Max, {3, 4}},
                                                            {ReduceOp::Min, {1, -4}},
                                                            {ReduceOp::Var, {1, 16}}};
  for (const auto& [op, expected] : cases) {
    std::vector<double> out(2, std::numeric_limits<double>::quiet_NaN());
    kernels::cpu::reduce_rows(op, x.data(), DType::F32, 2, 3, out.data(), DType::F64, 1);
    EXPECT_EQ(out, expected) << static_cast<int>(op);
  }
  std::vector<int64_t> idx(2, -7);
  kernels::cpu::reduce_rows(ReduceOp::ArgMax, x.data(), DType::F32, 2, 3, idx.data(), DType::I64,
                            0);
  EXPECT_EQ(idx, (std::vector<int64_t>{2, 2}));
}

// ---------------------------------------------------------------- backends

class ReduceBackend : public testing::BackendTest {};

TEST_P(ReduceBackend, ForwardAndBackwardMatchCpu) {
  // Odd sizes (77 x 197, not multiples of 8) and a non-contiguous (transposed) input.
  const Tensor x = random_tensor({197, 77}, 500);
  const Tensor x3 = random_tensor({5, 7, 9}, 501);
  const std::vector<std::pair<std::string, testing::OpFn>> ops = {
      {"sum last", [](const auto& in) { return sum(in[0], {-1}); }},
      {"sum all", [](const auto& in) { return sum(in[0]); }},
      {"mean dim0 of transpose",
       [](const auto& in) { return mean(transpose(in[0], 0, 1), {0}, true); }},
      {"max last", [](const auto& in) { return max(in[0], {1}); }},
      {"min dim0", [](const auto& in) { return min(in[0], {0}); }},
      {"var last unbiased", [](const auto& in) { return var(in[0], {1}); }},
      {"var of transpose biased",
       [](const auto& in) { return var(transpose(in[0], 0, 1), {1}, 0); }},
  };
  // f32: CPU accumulates in double, CUDA in float: relative 1e-5 covers float accumulation of
  // 197 O(1) terms; absolute 1e-5 covers sums that cancel to near zero.
  // bf16: both round the result once to bf16 (2^-8 relative), so 1e-2 relative, 1e-2 absolute.
  for (const auto& [name, fn] : ops) {
    SCOPED_TRACE(name);
    testing::expect_backend_matches_cpu(fn, {x}, device(), DType::F32, 1e-5, 1e-5);
    testing::expect_backend_matches_cpu(fn, {x}, device(), DType::BF16, 1e-2, 1e-2);
  }
  const testing::OpFn middle = [](const auto& in) { return sum(in[0], {0, 2}); };
  testing::expect_backend_matches_cpu(middle, {x3}, device(), DType::F32, 1e-5, 1e-5);
  testing::expect_backend_matches_cpu(middle, {x3}, device(), DType::BF16, 1e-2, 1e-2);
}

TEST_P(ReduceBackend, ArgmaxMatchesCpu) {
  const Tensor x = random_tensor({77, 197}, 502);
  const Tensor on_device = x.to(device());
  EXPECT_EQ(argmax(on_device, 1).to(Device::cpu()).to_int_vector(), argmax(x, 1).to_int_vector());
  EXPECT_EQ(argmax(transpose(on_device, 0, 1), 1).to(Device::cpu()).to_int_vector(),
            argmax(transpose(x, 0, 1), 1).to_int_vector());
}

INSTANTIATE_TEST_SUITE_P(Backends, ReduceBackend, ::testing::ValuesIn(testing::all_backends()),
                         testing::backend_name);

}  // namespace
}  // namespace distill
