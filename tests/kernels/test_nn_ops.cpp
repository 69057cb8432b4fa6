// Softmax family, layer norm, indexing (embedding, index_select, gather) and concat/stack:
// float64 gradient checks, values against references, stability, error messages, and every
// backend against the CPU.
#include <cmath>
#include <limits>
#include <string>

#include "tests/kernels/backend_compare.h"
#include "tests/test_util.h"

namespace distill {
namespace {

using testing::all_close;
using testing::f64;
using testing::gradcheck;
using testing::message_has;
using testing::random_tensor;

Tensor ids(const std::vector<int64_t>& v, const Shape& shape) {
  return Tensor::from_vector(v, shape);
}

// Runs `fn`, expecting a distill::Error whose message contains every fragment.
template <typename Fn>
void expect_error(Fn&& fn, const std::vector<std::string>& fragments) {
  try {
    fn();
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    for (const std::string& f : fragments) EXPECT_TRUE(message_has(e, f)) << e.what();
  }
}

// ---------------------------------------------------------------- softmax family

TEST(SoftmaxGrad, OverFirstLastAndMiddleDims) {
  for (int64_t dim : {0, -1, 1}) {
    SCOPED_TRACE("dim " + std::to_string(dim));
    EXPECT_TRUE(gradcheck([dim](const auto& in) { return softmax(in[0], dim); },
                          {f64({3, 4, 5}, 1 + dim)}));
    EXPECT_TRUE(gradcheck([dim](const auto& in) { return log_softmax(in[0], dim); },
                          {f64({3, 4, 5}, 10 + dim)}));
  }
  EXPECT_TRUE(gradcheck([](const auto& in) { return softmax(transpose(in[0], 0, 1), -1); },
                        {f64({4, 3}, 20)}));
  EXPECT_TRUE(gradcheck([](const auto& in) { return log_softmax(in[0], 0); }, {f64({6}, 21)}));
}

TEST(Softmax, RowsSumToOneAndMatchTheDefinition) {
  const Tensor x = f64({4, 7}, 22);
  const Tensor y = softmax(x, -1);
  const auto v = x.to_double_vector(), yv = y.to_double_vector();
  for (int64_t r = 0; r < 4; ++r) {
    double z = 0;
    for (int64_t c = 0; c < 7; ++c) z += std::exp(v[r * 7 + c]);
    for (int64_t c = 0; c < 7; ++c) EXPECT_NEAR(yv[r * 7 + c], std::exp(v[r * 7 + c]) / z, 1e-15);
  }
  EXPECT_TRUE(all_close(sum(softmax(x, 0), {0}), ones({7}, DType::F64), 1e-15, 0));
  EXPECT_TRUE(all_close(exp(log_softmax(x, 0)), softmax(x, 0), 1e-15, 1e-14));
}

TEST(Softmax, StableForLogitsOfMagnitude1e4) {
  // exp(1e4) overflows even double; the max subtraction must keep everything finite.
  const Tensor x = Tensor::from_vector(std::vector<float>{1e4f, 1e4f - 1, -1e4f, 1e4f}, {1, 4});
  const auto y = softmax(x, -1).to_double_vector();
  const double e1 = std::exp(-1.0), z = 2 + e1;
  EXPECT_NEAR(y[0], 1 / z, 1e-6);
  EXPECT_NEAR(y[1], e1 / z, 1e-6);
  EXPECT_EQ(y[2], 0.0);
  EXPECT_NEAR(y[3], 1 / z, 1e-6);
  const auto ly = log_softmax(x, -1).to_double_vector();
  EXPECT_NEAR(ly[0], -std::log(z), 1e-5);
  EXPECT_NEAR(ly[1], -1 - std::log(z), 1e-5);
  EXPECT_NEAR(ly[2], -2e4 - std::log(z), 1e-1);  // finite, not -inf
  const Tensor negative = mul(x, -1.0);
  for (double v : softmax(negative, -1).to_double_vector()) EXPECT_TRUE(std::isfinite(v));
  for (double v : log_softmax(negative.to(DType::BF16), -1).to_double_vector())
    EXPECT_TRUE(std::isfinite(v));
}

TEST(Softmax, MaskedAndNanRows) {
  const double inf = std::numeric_limits<double>::infinity();
  const Tensor x = Tensor::from_vector(std::vector<double>{0, -inf, 1, -inf}, {1, 4});
  const auto y = softmax(x).to_double_vector();
  EXPECT_EQ(y[1], 0.0);
  EXPECT_EQ(y[3], 0.0);
  EXPECT_NEAR(y[0] + y[2], 1.0, 1e-15);
  const Tensor with_nan =
      Tensor::from_vector(std::vector<double>{1, std::nan(""), 2, 3, 4, 5}, {2, 3});
  const auto yn = softmax(with_nan).to_double_vector();
  for (int c = 0; c < 3; ++c) EXPECT_TRUE(std::isnan(yn[c]));  // NaN spreads over its row only
  for (int c = 3; c < 6; ++c) EXPECT_FALSE(std::isnan(yn[c]));
}

// ---------------------------------------------------------------- layer norm

TEST(LayerNormGrad, AffineNoAffineAndTwoDims) {
  EXPECT_TRUE(gradcheck([](const auto& in) { return layer_norm(in[0], in[1], in[2]); },
                        {f64({3, 6}, 30), f64({6}, 31), f64({6}, 32)}));
  EXPECT_TRUE(gradcheck([](const auto& in) { return layer_norm(in[0], Tensor(), Tensor()); },
                        {f64({2, 3, 5}, 33)}));
  EXPECT_TRUE(gradcheck([](const auto& in) { return layer_norm(in[0], in[1], in[2]); },
                        {f64({2, 3, 4}, 34), f64({3, 4}, 35), f64({3, 4}, 36)}));
  EXPECT_TRUE(
      gradcheck([](const auto& in) { return layer_norm(in[0], Tensor(), Tensor(), 1e-5, 2); },
                {f64({2, 3, 4}, 37)}));
  EXPECT_TRUE(gradcheck([](const auto& in) { return layer_norm(in[0], in[1], Tensor()); },
                        {f64({4, 5}, 38), f64({5}, 39)}));
  EXPECT_TRUE(
      gradcheck([](const auto& in) { return layer_norm(transpose(in[0], 0, 1), in[1], in[2]); },
                {f64({5, 4}, 40), f64({5}, 41), f64({5}, 42)}));
}

TEST(LayerNorm, MatchesMeanAndBiasedVariance) {
  const Tensor x = f64({3, 4, 5}, 43), w = f64({4, 5}, 44), b = f64({4, 5}, 45);
  const double eps = 1e-3;
  const Tensor mu = mean(x, {1, 2}, true);
  const Tensor sigma2 = var(x, {1, 2}, 0, true);
  const Tensor expected = add(mul(div(sub(x, mu), sqrt(add(sigma2, eps))), w), b);
  EXPECT_TRUE(all_close(layer_norm(x, w, b, eps), expected, 1e-12, 1e-12));
  // bf16 in, bf16 out, statistics in f32: within one bf16 rounding of the f32 result.
  const Tensor x32 = x.to(DType::F32), w32 = w.to(DType::F32), b32 = b.to(DType::F32);
  const Tensor ref =
      layer_norm(x32.to(DType::BF16).to(DType::F32), w32.to(DType::BF16).to(DType::F32),
                 b32.to(DType::BF16).to(DType::F32), eps);
  EXPECT_TRUE(
      all_close(layer_norm(x32.to(DType::BF16), w32.to(DType::BF16), b32.to(DType::BF16), eps), ref,
                1e-2, 1.0 / 128));
}

TEST(LayerNorm, Errors) {
  const Tensor x = random_tensor({2, 3}, 46);
  expect_error([&] { (void)layer_norm(x, random_tensor({4}, 47), Tensor()); },
               {"layer_norm", "[4]", "[2, 3]"});
  expect_error([&] { (void)layer_norm(x, Tensor(), Tensor(), 1e-5, 3); }, {"layer_norm", "3"});
  EXPECT_THROW(layer_norm(x, random_tensor({3}, 48).to(DType::F64), Tensor()), Error);
}

// ---------------------------------------------------------------- indexing

TEST(EmbeddingGrad, RepeatedIdsAccumulate) {
  const Tensor token_ids = ids({1, 3, 1, 0, 3, 3}, {2, 3});
  EXPECT_TRUE(
      gradcheck([&](const auto& in) { return embedding(in[0], token_ids); }, {f64({5, 4}, 50)}));
  Tensor weight = random_tensor({5, 2}, 51, DType::F64).set_requires_grad(true);
  sum(embedding(weight, token_ids)).backward();
  // Row r's gradient is the number of times r occurs; row 2 and 4 never occur.
  EXPECT_EQ(weight.grad().to_double_vector(), (std::vector<double>{1, 1, 2, 2, 0, 0, 3, 3, 0, 0}));
}

TEST(Embedding, LooksUpRowsForAnyIdShapeAndI32) {
  const Tensor weight = random_tensor({6, 3}, 52);
  const Tensor out = embedding(weight, ids({5, 0, 2, 2}, {2, 1, 2}).to(DType::I32));
  EXPECT_EQ(out.shape(), (Shape{2, 1, 2, 3}));
  const auto w = weight.to_double_vector(), o = out.to_double_vector();
  const int64_t expect_rows[] = {5, 0, 2, 2};
  for (int i = 0; i < 4; ++i)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(o[i * 3 + c], w[expect_rows[i] * 3 + c]);
  EXPECT_EQ(embedding(weight, ids({4}, {})).shape(), (Shape{3}));  // scalar id
}

TEST(IndexSelectGrad, Dims0And1WithRepeats) {
  const Tensor idx = ids({2, 0, 2, 1}, {4});
  EXPECT_TRUE(
      gradcheck([&](const auto& in) { return index_select(in[0], 0, idx); }, {f64({3, 4}, 53)}));
  EXPECT_TRUE(gradcheck([&](const auto& in) { return index_select(in[0], 1, idx.to(DType::I32)); },
                        {f64({2, 3, 5}, 54)}));
  EXPECT_TRUE(
      gradcheck([&](const auto& in) { return index_select(in[0], -1, idx); }, {f64({2, 3}, 55)}));
}

TEST(IndexSelect, Values) {
  const Tensor x = arange(0, 12, 1, DType::F32).reshape({3, 4});
  EXPECT_EQ(index_select(x, 1, ids({3, 0}, {2})).to_double_vector(),
            (std::vector<double>{3, 0, 7, 4, 11, 8}));
  EXPECT_EQ(index_select(x, 0, ids({}, {0})).shape(), (Shape{0, 4}));
}

TEST(GatherGrad, WithRepeatsAndSmallerIndex) {
  // Like torch.gather: index may be smaller than x on the other dims.
  const Tensor idx = ids({0, 2, 2, 1, 1, 1}, {2, 3});
  EXPECT_TRUE(gradcheck([&](const auto& in) { return gather(in[0], 1, idx); }, {f64({3, 4}, 56)}));
  EXPECT_TRUE(gradcheck([&](const auto& in) { return gather(in[0], 0, idx); }, {f64({3, 4}, 57)}));
  const Tensor idx3 = ids({1, 0, 0, 1, 1, 1, 0, 0}, {2, 2, 2}).to(DType::I32);
  EXPECT_TRUE(
      gradcheck([&](const auto& in) { return gather(in[0], 2, idx3); }, {f64({2, 3, 4}, 58)}));
}

TEST(Gather, Values) {
  const Tensor x = arange(0, 12, 1, DType::F32).reshape({3, 4});
  EXPECT_EQ(gather(x, 1, ids({3, 0, 1, 1}, {2, 2})).to_double_vector(),
            (std::vector<double>{3, 0, 5, 5}));
  EXPECT_EQ(gather(x, 0, ids({2, 0, 1}, {1, 3})).to_double_vector(),
            (std::vector<double>{8, 1, 6}));
}

TEST(Indexing, OutOfRangeIndicesNameTheOpValueAndRange) {
  const Tensor weight = random_tensor({5, 3}, 59);
  expect_error(
      [&] {
        (void)embedding(weight, ids({1, 7, 2}, {3}));
      },
      {"embedding", "7", "[0, 5)", "position 1"});
  expect_error([&] { (void)embedding(weight, ids({-1}, {1}).to(DType::I32)); },
               {"embedding", "-1", "[0, 5)"});
  expect_error(
      [&] {
        (void)index_select(weight, 1, ids({0, 3}, {2}));
      },
      {"index_select", "3", "[0, 3)"});
  expect_error([&] { (void)gather(weight, 0, ids({0, 1, 9}, {1, 3})); }, {"gather", "9", "[0, 5)"});
  expect_error([&] { (void)embedding(weight, ids({0}, {1}).to(DType::F32)); },
               {"embedding", "i64"});
  expect_error([&] { (void)gather(weight, 1, ids({0, 1, 0, 1}, {1, 1, 4})); }, {"gather", "rank"});
  expect_error(
      [&] {
        (void)gather(weight, 1, ids({0, 0, 0, 0, 0, 0, 0}, {7, 1}));
      },
      {"gather", "larger"});
}

// ---------------------------------------------------------------- concat / stack

TEST(ConcatGrad, ThreeTensorsAlongEachDim) {
  EXPECT_TRUE(gradcheck(
      [](const auto& in) {
        return concat({in[0], in[1], in[2]}, 1);
      },
      {f64({2, 1, 3}, 60), f64({2, 4, 3}, 61), f64({2, 2, 3}, 62)}));
  EXPECT_TRUE(gradcheck(
      [](const auto& in) {
        return concat({in[0], in[1]}, 0);
      },
      {f64({1, 3}, 63), f64({2, 3}, 64)}));
  EXPECT_TRUE(gradcheck(
      [](const auto& in) {
        return concat({in[0], transpose(in[1], 0, 1)}, -1);
      },
      {f64({3, 2}, 65), f64({4, 3}, 66)}));
  // One input used twice: both gradient slices land on it.
  EXPECT_TRUE(gradcheck(
      [](const auto& in) {
        return concat({in[0], in[0]}, 0);
      },
      {f64({2, 2}, 67)}));
}

TEST(StackGrad, NewDimFirstAndLast) {
  EXPECT_TRUE(gradcheck(
      [](const auto& in) {
        return stack({in[0], in[1], in[2]}, 0);
      },
      {f64({2, 3}, 68), f64({2, 3}, 69), f64({2, 3}, 70)}));
  EXPECT_TRUE(gradcheck(
      [](const auto& in) {
        return stack({in[0], in[1]}, -1);
      },
      {f64({2, 3}, 71), f64({2, 3}, 72)}));
}

TEST(Concat, ValuesShapesAndErrors) {
  const Tensor a = arange(0, 4, 1, DType::F32).reshape({2, 2});
  const Tensor b = arange(10, 12, 1, DType::F32).reshape({2, 1});
  EXPECT_EQ(concat({a, b}, 1).to_double_vector(), (std::vector<double>{0, 1, 10, 2, 3, 11}));
  EXPECT_EQ(stack({a, a}, 1).shape(), (Shape{2, 2, 2}));
  EXPECT_EQ(stack({a, a}, 1).to_double_vector(), (std::vector<double>{0, 1, 0, 1, 2, 3, 2, 3}));
  EXPECT_EQ(concat({a, Tensor::empty({2, 0})}, 1).to_double_vector(),
            (std::vector<double>{0, 1, 2, 3}));
  expect_error([&] { (void)concat({a, b}, 0); }, {"concat", "[2, 1]", "[2, 2]"});
  expect_error([&] { (void)concat({a, a.to(DType::F64)}, 0); }, {"concat", "f64"});
  expect_error([&] { (void)stack({a, b}, 0); }, {"stack", "[2, 1]"});
  EXPECT_THROW(concat({}, 0), Error);
}

// ---------------------------------------------------------------- backends

class NnOpsBackend : public testing::BackendTest {};

TEST_P(NnOpsBackend, ForwardAndBackwardMatchCpu) {
  struct Case {
    std::string name;
    testing::OpFn fn;
    std::vector<Tensor> inputs;
  };
  const Tensor token_ids =
      Tensor::from_vector(std::vector<int64_t>{0, 76, 3, 3, 50, 0, 12, 3, 76, 1, 5, 9, 3}, {13});
  Tensor gather_index = argmax(random_tensor({77, 11, 197}, 200), 2, true);  // values in [0, 197)
  gather_index = reshape(gather_index, {77, 11});
  // Odd sizes (77, 197: not multiples of 8) and non-contiguous (transposed) inputs.
  const std::vector<Case> cases = {
      {"softmax last",
       [](const auto& in) { return softmax(in[0], -1); },
       {random_tensor({77, 197}, 201)}},
      {"softmax dim0",
       [](const auto& in) { return softmax(in[0], 0); },
       {random_tensor({77, 197}, 202)}},
      {"log_softmax last of transpose",
       [](const auto& in) { return log_softmax(transpose(in[0], 0, 1), -1); },
       {random_tensor({197, 77}, 203)}},
      {"log_softmax dim0",
       [](const auto& in) { return log_softmax(in[0], 0); },
       {random_tensor({77, 197}, 204)}},
      {"layer_norm affine",
       [](const auto& in) { return layer_norm(in[0], in[1], in[2]); },
       {random_tensor({77, 197}, 205), random_tensor({197}, 206), random_tensor({197}, 207)}},
      {"layer_norm plain of transpose",
       [](const auto& in) { return layer_norm(transpose(in[0], 0, 1), Tensor(), Tensor()); },
       {random_tensor({197, 77}, 208)}},
      {"embedding",
       [token_ids](const auto& in) { return embedding(in[0], token_ids.to(in[0].device())); },
       {random_tensor({77, 197}, 209)}},
      {"index_select dim1 of transpose",
       [token_ids](const auto& in) {
         return index_select(transpose(in[0], 0, 1), 1, token_ids.to(in[0].device()));
       },
       {random_tensor({77, 33}, 210)}},
      {"gather",
       [gather_index](const auto& in) { return gather(in[0], 1, gather_index.to(in[0].device())); },
       {random_tensor({77, 197}, 211)}},
      {"concat",
       [](const auto& in) {
         return concat({in[0], transpose(in[1], 0, 1)}, 1);
       },
       {random_tensor({77, 5}, 212), random_tensor({197, 77}, 213)}},
      {"stack",
       [](const auto& in) {
         return stack({in[0], in[1]}, 1);
       },
       {random_tensor({77, 13}, 214), random_tensor({77, 13}, 215)}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    // f32: float math on both sides (CPU sums in double): relative and absolute 1e-5.
    testing::expect_backend_matches_cpu(c.fn, c.inputs, device(), DType::F32, 1e-5, 1e-5);
    // bf16: both compute in f32 and round once to bf16 (2^-8 relative): 1e-2 relative and
    // 1e-2 absolute (softmax outputs are small; one ulp of them is well below 1e-2).
    testing::expect_backend_matches_cpu(c.fn, c.inputs, device(), DType::BF16, 1e-2, 1e-2);
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, NnOpsBackend, ::testing::ValuesIn(testing::all_backends()),
                         testing::backend_name);

}  // namespace
}  // namespace distill
