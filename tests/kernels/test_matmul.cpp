// Matrix products: the GEMM kernel against a naive triple loop in double, torch.matmul shape
// rules, float64 gradient checks, error messages, and every backend against the CPU.
#include <cmath>
#include <limits>
#include <string>

#include "kernels/matmul.h"
#include "tests/kernels/backend_compare.h"
#include "tests/test_util.h"

namespace distill {
namespace {

using testing::all_close;
using testing::f64;
using testing::gradcheck;
using testing::message_has;
using testing::random_tensor;

// Naive reference: a [..., m, k] @ b [..., k, n] with equal (already broadcast) batch sizes,
// in double, on values read back from the tensors.
Tensor naive_bmm(const Tensor& a, const Tensor& b, int64_t batch, int64_t m, int64_t k, int64_t n) {
  const auto va = a.contiguous().to_double_vector();
  const auto vb = b.contiguous().to_double_vector();
  std::vector<double> c(static_cast<size_t>(batch * m * n), 0.0);
  for (int64_t p = 0; p < batch; ++p)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t q = 0; q < k; ++q) acc += va[(p * m + i) * k + q] * vb[(p * k + q) * n + j];
        c[(p * m + i) * n + j] = acc;
      }
  return Tensor::from_vector(c, {batch, m, n});
}

// ---------------------------------------------------------------- values against a triple loop

TEST(Matmul, TwoDMatchesNaiveLoopWithOddSizes) {
  const Tensor a = random_tensor({37, 53}, 1), b = random_tensor({53, 29}, 2);
  const Tensor expected = reshape(naive_bmm(a, b, 1, 37, 53, 29), {37, 29});
  // f32 GEMM vs a double loop: 53 products of magnitude <= 4, rounding ~ 53 * 2^-24 * 4.
  EXPECT_TRUE(all_close(matmul(a, b), expected, 1e-4, 1e-5));
  const Tensor a64 = a.to(DType::F64), b64 = b.to(DType::F64);
  EXPECT_TRUE(all_close(matmul(a64, b64), expected, 1e-12, 1e-12));  // dgemm: exact to rounding
}

TEST(Matmul, TransposedAndStridedOperandsNeedNoCopyAndMatch) {
  // b^T and a column slice exercise the trans flags and lda > row length.
  const Tensor a_store = random_tensor({41, 60}, 3), b_store = random_tensor({23, 41}, 4);
  const Tensor a = slice(a_store, 1, 5, 36);   // [41, 31] with lda 60
  const Tensor at = transpose(a, 0, 1);        // [31, 41], read transposed
  const Tensor bt = transpose(b_store, 0, 1);  // [41, 23]
  EXPECT_TRUE(
      all_close(matmul(at, bt), reshape(naive_bmm(at, bt, 1, 31, 41, 23), {31, 23}), 1e-4, 1e-5));
  EXPECT_TRUE(all_close(matmul(transpose(bt, 0, 1), a),
                        reshape(naive_bmm(b_store, a, 1, 23, 41, 31), {23, 31}), 1e-4, 1e-5));
  // A stride-0 (expanded) operand has to be materialised; the result must still be right.
  const Tensor row = random_tensor({1, 41}, 5);
  const Tensor repeated = expand(row, {7, 41});
  EXPECT_TRUE(all_close(matmul(repeated, bt),
                        reshape(naive_bmm(repeated, bt, 1, 7, 41, 23), {7, 23}), 1e-4, 1e-5));
}

TEST(Matmul, BatchedBroadcastMatchesNaiveLoop) {
  const Tensor a = random_tensor({2, 1, 5, 7}, 6), b = random_tensor({3, 7, 4}, 7);
  const Tensor c = matmul(a, b);
  ASSERT_EQ(c.shape(), (Shape{2, 3, 5, 4}));
  const Tensor ab = expand(a, {2, 3, 5, 7}), bb = expand(b, {2, 3, 7, 4});
  EXPECT_TRUE(all_close(c, reshape(naive_bmm(ab, bb, 6, 5, 7, 4), {2, 3, 5, 4}), 1e-5, 1e-5));
  // [..., m, k] @ [k, n] folds the batch into rows.
  const Tensor x = random_tensor({2, 3, 5, 7}, 8), w = random_tensor({7, 4}, 9);
  EXPECT_TRUE(all_close(matmul(x, w),
                        reshape(naive_bmm(reshape(x, {1, 30, 7}), w, 1, 30, 7, 4), {2, 3, 5, 4}),
                        1e-5, 1e-5));
}

TEST(Matmul, OneDimensionalRules) {
  const Tensor v = random_tensor({7}, 10), u = random_tensor({7}, 11);
  const Tensor m = random_tensor({7, 3}, 12), mt = random_tensor({4, 7}, 13);
  const Tensor batch = random_tensor({2, 7, 3}, 14);
  EXPECT_EQ(matmul(v, u).shape(), (Shape{}));
  EXPECT_EQ(matmul(v, m).shape(), (Shape{3}));
  EXPECT_EQ(matmul(mt, v).shape(), (Shape{4}));
  EXPECT_EQ(matmul(v, batch).shape(), (Shape{2, 3}));
  EXPECT_EQ(matmul(transpose(batch, 1, 2), v).shape(), (Shape{2, 3}));
  double dot = 0;
  const auto vv = v.to_double_vector(), uv = u.to_double_vector();
  for (size_t i = 0; i < vv.size(); ++i) dot += vv[i] * uv[i];
  EXPECT_NEAR(matmul(v, u).item(), dot, 1e-5);
}

TEST(Matmul, Bf16WidensToF32AndRoundsOnce) {
  // Inputs exactly representable in bf16, so the f32 product of them is the reference.
  const Tensor a = random_tensor({19, 45}, 15).to(DType::BF16),
               b = random_tensor({45, 33}, 16).to(DType::BF16);
  const Tensor reference = matmul(a.to(DType::F32), b.to(DType::F32)).to(DType::BF16);
  // Same products and accumulation in f32, one rounding to bf16 on store: identical bits
  // except where the f32 sums differ in the last place across a rounding boundary (rare).
  EXPECT_TRUE(all_close(matmul(a, b), reference, 0.0, 1.0 / 128));
  EXPECT_TRUE(all_close(matmul(a.to(DType::F16), b.to(DType::F16)),
                        matmul(a.to(DType::F32), b.to(DType::F32)), 1e-2, 1.0 / 1024));
}

TEST(Matmul, EmptyInnerDimensionGivesZeros) {
  const Tensor a = Tensor::empty({3, 0}), b = Tensor::empty({0, 4});
  EXPECT_EQ(matmul(a, b).to_double_vector(), std::vector<double>(12, 0.0));
  EXPECT_EQ(matmul(Tensor::empty({0, 5}), random_tensor({5, 2}, 17)).shape(), (Shape{0, 2}));
  EXPECT_EQ(matmul(Tensor::empty({2, 3, 0}), b).to_double_vector(), std::vector<double>(24, 0.0));
  EXPECT_EQ(linear(Tensor::empty({2, 0}), Tensor::empty({3, 0})).to_double_vector(),
            std::vector<double>(6, 0.0));
}

// ---------------------------------------------------------------- the kernel itself

TEST(Gemm, BiasAlphaBetaAndPoisonedOutput) {
  const int64_t m = 5, n = 6, k = 3;
  const auto a = random_tensor({m, k}, 20).to_float_vector();
  const auto b = random_tensor({k, n}, 21).to_float_vector();
  const auto bias = random_tensor({n}, 22).to_float_vector();
  kernels::GemmArgs args;
  args.m = m;
  args.n = n;
  args.k = k;
  args.a = a.data();
  args.lda = k;
  args.b = b.data();
  args.ldb = n;
  args.ldc = n;
  args.bias = bias.data();
  // beta = 0 must overwrite, never read: NaN garbage in C must not survive.
  std::vector<float> c(static_cast<size_t>(m * n), std::numeric_limits<float>::quiet_NaN());
  args.c = c.data();
  args.alpha = 2.0;
  kernels::cpu::gemm(args);
  std::vector<float> previous = c;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t q = 0; q < k; ++q) acc += a[i * k + q] * b[q * n + j];
      EXPECT_NEAR(c[i * n + j], 2 * acc + bias[j], 1e-5) << i << "," << j;
    }
  // beta = 1 accumulates into C (and the bias is added again).
  args.alpha = 1.0;
  args.beta = 1.0;
  kernels::cpu::gemm(args);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t q = 0; q < k; ++q) acc += a[i * k + q] * b[q * n + j];
      EXPECT_NEAR(c[i * n + j], previous[i * n + j] + acc + bias[j], 1e-5);
    }
}

TEST(Gemm, Bf16BatchedWithBiasAndBroadcastBatch) {
  // Batch of 3 with B shared (stride 0), bf16 in and out, bias in the epilogue.
  const int64_t batch = 3, m = 4, n = 5, k = 6;
  const Tensor a = random_tensor({batch, m, k}, 23).to(DType::BF16);
  const Tensor b = random_tensor({k, n}, 24).to(DType::BF16);
  const Tensor bias = random_tensor({n}, 25).to(DType::BF16);
  Tensor c =
      full({batch, m, n}, std::numeric_limits<double>::quiet_NaN(), TensorOptions(DType::BF16));
  kernels::GemmArgs args;
  args.dtype = DType::BF16;
  args.batch = batch;
  args.m = m;
  args.n = n;
  args.k = k;
  args.a = a.data_ptr();
  args.lda = k;
  args.stride_a = m * k;
  args.b = b.data_ptr();
  args.ldb = n;
  args.stride_b = 0;
  args.c = c.data_ptr();
  args.ldc = n;
  args.stride_c = m * n;
  args.bias = bias.data_ptr();
  kernels::cpu::gemm(args);
  const Tensor expected = add(matmul(a.to(DType::F32), b.to(DType::F32)), bias.to(DType::F32));
  // One bf16 rounding of an f32 result: 2^-8 relative.
  EXPECT_TRUE(all_close(c, expected, 1e-6, 1.0 / 256));
}

TEST(Gemm, BlasNameReportsOpenBlas) {
  const std::string name = kernels::cpu::blas_name();
  EXPECT_NE(name.find("OpenBLAS"), std::string::npos) << name;
  EXPECT_NE(name.find("threads"), std::string::npos) << name;
}

// ---------------------------------------------------------------- float64 gradient checks

TEST(MatmulGrad, AllShapeRules) {
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{4}, {4}},                 // dot
      {{4}, {4, 3}},              // vector @ matrix
      {{3, 4}, {4}},              // matrix @ vector
      {{3, 4}, {4, 2}},           // matrix @ matrix
      {{2, 3, 4}, {4, 2}},        // batch folded into rows
      {{4}, {2, 4, 3}},           // vector @ batch
      {{2, 3, 4}, {4}},           // batch @ vector
      {{2, 1, 3, 4}, {3, 4, 2}},  // broadcast batch dims on both sides
      {{3, 4}, {2, 4, 2}},        // matrix broadcast against a batch
  };
  uint64_t seed = 30;
  for (const auto& [sa, sb] : cases) {
    SCOPED_TRACE(shape_str(sa) + " @ " + shape_str(sb));
    EXPECT_TRUE(gradcheck([](const auto& in) { return matmul(in[0], in[1]); },
                          {f64(sa, seed++), f64(sb, seed++)}));
  }
}

TEST(MatmulGrad, TransposedOperandsAndBmm) {
  EXPECT_TRUE(gradcheck(
      [](const auto& in) { return matmul(transpose(in[0], 0, 1), transpose(in[1], 0, 1)); },
      {f64({4, 3}, 40), f64({2, 4}, 41)}));
  EXPECT_TRUE(gradcheck([](const auto& in) { return bmm(in[0], in[1]); },
                        {f64({2, 3, 4}, 42), f64({2, 4, 5}, 43)}));
  EXPECT_TRUE(gradcheck([](const auto& in) { return bmm(in[0], transpose(in[1], 1, 2)); },
                        {f64({2, 3, 4}, 44), f64({2, 5, 4}, 45)}));
  // The same tensor on both sides: the two gradient contributions must add.
  EXPECT_TRUE(gradcheck([](const auto& in) { return matmul(in[0], in[0]); }, {f64({3, 3}, 46)}));
}

TEST(LinearGrad, WithAndWithoutBiasAndAnyLeadingShape) {
  EXPECT_TRUE(gradcheck([](const auto& in) { return linear(in[0], in[1], in[2]); },
                        {f64({5, 4}, 50), f64({3, 4}, 51), f64({3}, 52)}));
  EXPECT_TRUE(gradcheck([](const auto& in) { return linear(in[0], in[1]); },
                        {f64({5, 4}, 53), f64({3, 4}, 54)}));
  EXPECT_TRUE(gradcheck([](const auto& in) { return linear(in[0], in[1], in[2]); },
                        {f64({2, 3, 4}, 55), f64({3, 4}, 56), f64({3}, 57)}));
  EXPECT_TRUE(gradcheck([](const auto& in) { return linear(in[0], in[1], in[2]); },
                        {f64({4}, 58), f64({3, 4}, 59), f64({3}, 60)}));
  // Non-contiguous input (a transpose) goes through a copy in reshape.
  EXPECT_TRUE(gradcheck([](const auto& in) { return linear(transpose(in[0], 0, 1), in[1]); },
                        {f64({4, 5}, 61), f64({3, 4}, 62)}));
}

TEST(Linear, MatchesMatmulPlusBias) {
  const Tensor x = random_tensor({2, 7, 9}, 63), w = random_tensor({5, 9}, 64),
               b = random_tensor({5}, 65);
  const Tensor y = linear(x, w, b);
  EXPECT_EQ(y.shape(), (Shape{2, 7, 5}));
  EXPECT_TRUE(all_close(y, add(matmul(x, transpose(w, 0, 1)), b), 1e-5, 1e-5));
  EXPECT_EQ(linear(random_tensor({9}, 66), w).shape(), (Shape{5}));
}

// ---------------------------------------------------------------- errors

TEST(Matmul, ShapeMismatchNamesBothShapes) {
  try {
    (void)matmul(random_tensor({2, 3}, 70), random_tensor({4, 5}, 71));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, "matmul")) << e.what();
    EXPECT_TRUE(message_has(e, "[2, 3]")) << e.what();
    EXPECT_TRUE(message_has(e, "[4, 5]")) << e.what();
  }
  try {
    (void)matmul(random_tensor({2, 2, 3}, 72), random_tensor({3, 3, 5}, 73));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, "[2]") && message_has(e, "[3]")) << e.what();  // batch dims
  }
  try {
    (void)bmm(random_tensor({2, 3, 4}, 74), random_tensor({3, 4, 5}, 75));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, "bmm") && message_has(e, "[2, 3, 4]") && message_has(e, "[3, 4, 5]"))
        << e.what();
  }
  EXPECT_THROW(matmul(random_tensor({2, 3}, 76), random_tensor({3, 2}, 77).to(DType::F64)), Error);
  EXPECT_THROW(
      matmul(random_tensor({2, 3}, 78).to(DType::I32), random_tensor({3, 2}, 79).to(DType::I32)),
      Error);
  EXPECT_THROW(linear(random_tensor({2, 3}, 80), random_tensor({4, 5}, 81)), Error);
  EXPECT_THROW(linear(random_tensor({2, 3}, 82), random_tensor({4, 3}, 83), random_tensor({5}, 84)),
               Error);
}

// ---------------------------------------------------------------- backends

class MatmulBackend : public testing::BackendTest {};

TEST_P(MatmulBackend, ForwardAndBackwardMatchCpu) {
  struct Case {
    std::string name;
    testing::OpFn fn;
    std::vector<Tensor> inputs;
  };
  // Odd sizes (77, 197, 45: not multiples of 8), transposed operands, broadcast batch dims.
  const std::vector<Case> cases = {
      {"77x197 @ 197x45",
       [](const auto& in) { return matmul(in[0], in[1]); },
       {random_tensor({77, 197}, 90), random_tensor({197, 45}, 91)}},
      {"transposed both",
       [](const auto& in) { return matmul(transpose(in[0], 0, 1), transpose(in[1], 0, 1)); },
       {random_tensor({197, 77}, 92), random_tensor({45, 197}, 93)}},
      {"broadcast batch",
       [](const auto& in) { return matmul(in[0], in[1]); },
       {random_tensor({3, 1, 13, 33}, 94), random_tensor({2, 33, 17}, 95)}},
      {"bmm",
       [](const auto& in) { return bmm(in[0], transpose(in[1], 1, 2)); },
       {random_tensor({4, 21, 35}, 96), random_tensor({4, 19, 35}, 97)}},
      {"linear bias",
       [](const auto& in) { return linear(in[0], in[1], in[2]); },
       {random_tensor({3, 77, 65}, 98), random_tensor({45, 65}, 99), random_tensor({45}, 100)}},
      {"linear no bias",
       [](const auto& in) { return linear(in[0], in[1]); },
       {random_tensor({77, 65}, 101), random_tensor({45, 65}, 102)}},
      {"vector",
       [](const auto& in) { return matmul(in[0], in[1]); },
       {random_tensor({197}, 103), random_tensor({197, 45}, 104)}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    // f32: different summation orders over k <= 197 products of magnitude <= 4 differ by up to
    // ~k * 2^-24 * 4 = 5e-5 absolute (TF32 must be off); 1e-5 relative for the large values.
    testing::expect_backend_matches_cpu(c.fn, c.inputs, device(), DType::F32, 1e-4, 1e-5);
    // bf16: the same bf16 operands, fp32 accumulation on both sides, one rounding on store:
    // at most one bf16 ulp (2^-8 relative) apart, so 1e-2 relative and 1e-2 absolute.
    testing::expect_backend_matches_cpu(c.fn, c.inputs, device(), DType::BF16, 1e-2, 1e-2);
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, MatmulBackend, ::testing::ValuesIn(testing::all_backends()),
                         testing::backend_name);

}  // namespace
}  // namespace distill
