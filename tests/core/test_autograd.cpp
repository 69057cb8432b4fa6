// Autograd graph cases: shared subexpressions, accumulation across backward calls, no-grad,
// detach, error cases, and a small MLP whose loss falls under plain gradient descent.
#include "tests/test_util.h"

namespace distill {
namespace {

using testing::all_close;

// A smooth target built from the basic ops: y = tanh(x0 * x1) + x2^2 - 0.5 x3.
Tensor sin_free_target(const Tensor& x) {
  Tensor c0 = slice(x, 1, 0, 1), c1 = slice(x, 1, 1, 2), c2 = slice(x, 1, 2, 3),
         c3 = slice(x, 1, 3, 4);
  return add(sub(add(tanh(mul(c0, c1)), mul(c2, c2)), mul(c3, 0.5)), 0.0);
}
using testing::random_tensor;

TEST(Autograd, TensorUsedTwiceGetsSumOfGradients) {
  Tensor x = Tensor::from_vector(std::vector<double>{1.5, -2.0, 3.0}, {3});
  x.set_requires_grad(true);
  // y = x*x + x  ->  dy/dx = 2x + 1
  Tensor y = sum(add(mul(x, x), x));
  y.backward();
  EXPECT_EQ(x.grad().to_double_vector(), (std::vector<double>{4.0, -3.0, 7.0}));
}

TEST(Autograd, SharedSubexpressionIsBackpropagatedOnce) {
  Tensor x = Tensor::from_vector(std::vector<double>{0.5, 1.0}, {2});
  x.set_requires_grad(true);
  Tensor e = exp(x);                  // shared
  Tensor y = sum(add(mul(e, e), e));  // d/dx = 2 e^2x + e^x
  y.backward();
  const auto g = x.grad().to_double_vector();
  for (int i = 0; i < 2; ++i) {
    const double xv = i == 0 ? 0.5 : 1.0;
    EXPECT_NEAR(g[i], 2 * std::exp(2 * xv) + std::exp(xv), 1e-12);
  }
}

TEST(Autograd, GradientsAccumulateAcrossBackwardCalls) {
  Tensor x = Tensor::from_vector(std::vector<double>{2.0}, {1});
  x.set_requires_grad(true);
  sum(mul(x, x)).backward();
  sum(mul(x, x)).backward();
  EXPECT_DOUBLE_EQ(x.grad().item(), 8.0);
  x.zero_grad();
  sum(mul(x, 3.0)).backward();
  EXPECT_DOUBLE_EQ(x.grad().item(), 3.0);
}

TEST(Autograd, NoGradGuardRecordsNothing) {
  Tensor x = random_tensor({4}, 1, DType::F64);
  x.set_requires_grad(true);
  Tensor y;
  {
    NoGradGuard guard;
    y = mul(x, x);
  }
  EXPECT_FALSE(y.requires_grad());
  EXPECT_EQ(y.grad_fn(), nullptr);
  EXPECT_TRUE(grad_enabled());
  EXPECT_THROW(sum(y).backward(), Error);
}

TEST(Autograd, DetachCutsTheGraph) {
  Tensor x = random_tensor({3}, 2, DType::F64);
  x.set_requires_grad(true);
  Tensor y = mul(x, x);
  Tensor z = add(y.detach(), x);  // only the direct path reaches x
  sum(z).backward();
  EXPECT_TRUE(all_close(x.grad(), ones({3}, DType::F64), 0, 0));
  EXPECT_EQ(y.detach().storage(), y.storage());
}

TEST(Autograd, OnlyInputsThatRequireGradReceiveOne) {
  Tensor a = random_tensor({2, 2}, 3, DType::F64);
  Tensor b = random_tensor({2, 2}, 4, DType::F64);
  a.set_requires_grad(true);
  sum(mul(a, b)).backward();
  EXPECT_TRUE(a.grad().defined());
  EXPECT_FALSE(b.grad().defined());
  EXPECT_TRUE(all_close(a.grad(), b, 0, 0));
}

TEST(Autograd, NonScalarBackwardNeedsAGradient) {
  Tensor x = random_tensor({3}, 5, DType::F64);
  x.set_requires_grad(true);
  Tensor y = mul(x, 2.0);
  EXPECT_THROW(y.backward(), Error);
  y.backward(ones({3}, DType::F64));
  EXPECT_TRUE(all_close(x.grad(), full({3}, 2.0, DType::F64), 0, 0));
  EXPECT_THROW(y.backward(ones({4}, DType::F64)), Error);
}

TEST(Autograd, ViewsPropagateGradients) {
  Tensor x = random_tensor({2, 3, 4}, 6, DType::F64);
  EXPECT_TRUE(testing::gradcheck(
      [](const std::vector<Tensor>& in) {
        Tensor t = in[0].transpose(0, 2);                // [4, 3, 2]
        Tensor s = slice(t, 0, 1, 4, 2);                 // [2, 3, 2]
        Tensor r = reshape(s, {3, 4});                   // copy (non-contiguous)
        Tensor u = unsqueeze(select(r, 1, 2), 0);        // [1, 3]
        return add(flatten(r), sum(expand(u, {5, 3})));  // broadcast scalar-ish sum
      },
      {x}));
}

TEST(Autograd, DeepChainDoesNotOverflowTheStack) {
  Tensor x = Tensor::from_vector(std::vector<double>{1.0}, {1});
  x.set_requires_grad(true);
  Tensor y = x;
  for (int i = 0; i < 20000; ++i) y = add(y, 0.0);
  sum(y).backward();
  EXPECT_DOUBLE_EQ(x.grad().item(), 1.0);
}

TEST(Autograd, ANodeThatNoGradientReachesStillReleasesItsInputs) {
  // h feeds two consumers; one of them (a custom node) returns no gradient for it. h's node must
  // still run once, with the other consumer's gradient only.
  Tensor x = Tensor::from_vector(std::vector<double>{2.0}, {1});
  x.set_requires_grad(true);
  Tensor h = mul(x, 3.0);
  Tensor blocked = mul(h, 1.0).detach();
  record_fn(blocked, "blocked", {mul(h, 5.0)},
            [](const Tensor&) { return std::vector<Tensor>{Tensor()}; });
  sum(add(blocked, h)).backward();
  EXPECT_DOUBLE_EQ(x.grad().item(), 3.0);
}

TEST(Autograd, DroppingAVeryDeepGraphDoesNotRecurse) {
  // A recursive release would need about a million stack frames here.
  Tensor x = Tensor::from_vector(std::vector<double>{1.0}, {1});
  x.set_requires_grad(true);
  Tensor y = x;
  for (int i = 0; i < 300000; ++i) y = add(y, 0.0);
  y = Tensor();  // frees the whole chain
  EXPECT_FALSE(y.defined());
}

TEST(Autograd, SmallMlpLossFalls) {
  // Regression of a fixed nonlinear function with a 2-layer MLP and plain SGD.
  Generator g(7);
  const int64_t n = 64, in = 4, hidden = 16;
  Tensor x = uniform({n, in}, -1, 1, {}, &g);
  Tensor target = sin_free_target(x);
  Tensor w1 = mul(randn({hidden, in}, {}, &g), 0.5).detach().set_requires_grad(true);
  Tensor b1 = zeros({hidden}).set_requires_grad(true);
  Tensor w2 = mul(randn({1, hidden}, {}, &g), 0.25).detach().set_requires_grad(true);
  Tensor b2 = zeros({1}).set_requires_grad(true);
  auto loss_fn = [&] {
    Tensor h = gelu(linear(x, w1, b1));
    Tensor y = linear(h, w2, b2);
    Tensor d = sub(y, target);
    return mean(mul(d, d));
  };
  const double first = loss_fn().item();
  double last = first;
  for (int step = 0; step < 200; ++step) {
    Tensor loss = loss_fn();
    for (Tensor* p : {&w1, &b1, &w2, &b2}) p->zero_grad();
    loss.backward();
    NoGradGuard ng;
    for (Tensor* p : {&w1, &b1, &w2, &b2}) p->copy_(sub(*p, mul(p->grad(), 0.2)));
    last = loss.item();
  }
  EXPECT_LT(last, first * 0.3) << "first " << first << " last " << last;
}

}  // namespace
}  // namespace distill
