// The distillation loss (DESIGN.md section 1) against a float64 hand computation, its alpha
// mixing and tau^2 scaling, a float64 finite-difference gradient check, and bad input.
#include <cmath>
#include <vector>

#include "tests/test_util.h"
#include "train/losses.h"

namespace distill::train {
namespace {

using testing::f64;
using testing::gradcheck;
using testing::message_has;
using testing::random_tensor;

// alpha tau^2 CE(softmax(z_t / tau), softmax(z_s / tau)) + (1 - alpha) CE(y, z_s), by hand.
double hand_loss(const std::vector<double>& zs, const std::vector<double>& zt,
                 const std::vector<int64_t>& y, int64_t n, int64_t c, double alpha, double tau) {
  auto log_softmax_row = [&](const double* z, double t) {
    std::vector<double> out(c);
    double m = -1e300;
    for (int64_t j = 0; j < c; ++j) m = std::max(m, z[j] / t);
    double s = 0;
    for (int64_t j = 0; j < c; ++j) s += std::exp(z[j] / t - m);
    for (int64_t j = 0; j < c; ++j) out[j] = z[j] / t - m - std::log(s);
    return out;
  };
  double soft = 0, hard = 0;
  for (int64_t i = 0; i < n; ++i) {
    const auto ls = log_softmax_row(zs.data() + i * c, tau);
    const auto lt = log_softmax_row(zt.data() + i * c, tau);
    for (int64_t j = 0; j < c; ++j) soft -= std::exp(lt[j]) * ls[j];
    hard -= log_softmax_row(zs.data() + i * c, 1.0)[y[i]];
  }
  return alpha * tau * tau * soft / n + (1 - alpha) * hard / n;
}

TEST(TrainDistillationLoss, MatchesFloat64HandComputation) {
  const int64_t n = 6, c = 5;
  const Tensor zs = f64({n, c}, 1, -4, 4), zt = f64({n, c}, 2, -4, 4);
  const std::vector<int64_t> y{0, 4, 2, 2, 1, 3};
  const Tensor labels = Tensor::from_vector(y, {n});
  for (double alpha : {0.0, 0.3, 1.0})
    for (double tau : {1.0, 2.0, 4.5}) {
      const DistillationLoss l = distillation_loss(zs, zt, labels, {alpha, tau});
      EXPECT_EQ(l.total.dtype(), DType::F64);
      EXPECT_NEAR(l.total.item(),
                  hand_loss(zs.to_double_vector(), zt.to_double_vector(), y, n, c, alpha, tau),
                  1e-12)
          << "alpha " << alpha << " tau " << tau;
    }
}

TEST(TrainDistillationLoss, AlphaMixesTheTermsAndTauSquaredScalesTheSoftOne) {
  const Tensor zs = random_tensor({8, 10}, 3, DType::F32, -3, 3);
  const Tensor zt = random_tensor({8, 10}, 4, DType::F32, -3, 3);
  const Tensor labels = Tensor::from_vector(std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8}, {8});
  const double tau = 3.0;
  const DistillationLoss soft_only = distillation_loss(zs, zt, labels, {1.0, tau});
  const DistillationLoss hard_only = distillation_loss(zs, zt, labels, {0.0, tau});
  const DistillationLoss mixed = distillation_loss(zs, zt, labels, {0.25, tau});
  const double soft = soft_only.soft.item(), hard = hard_only.hard.item();
  // The unweighted terms do not depend on alpha (and are there for logging at alpha 0 and 1).
  EXPECT_NEAR(mixed.soft.item(), soft, 1e-6);
  EXPECT_NEAR(mixed.hard.item(), hard, 1e-6);
  EXPECT_NEAR(soft_only.total.item(), tau * tau * soft, 1e-5);
  EXPECT_NEAR(hard_only.total.item(), hard, 1e-6);
  EXPECT_NEAR(mixed.total.item(), 0.25 * tau * tau * soft + 0.75 * hard, 1e-5);
  // Thesis default alpha = 1, tau = 1: soft-target CE with the teacher's plain softmax.
  const DistillationLoss thesis = distillation_loss(zs, zt, Tensor());
  EXPECT_NEAR(thesis.total.item(), soft_cross_entropy(zs, softmax(zt, -1)).item(), 1e-6);
  EXPECT_FALSE(thesis.hard.defined());
}

TEST(TrainDistillationLoss, Float64GradientCheck) {
  const Tensor zt = f64({4, 6}, 5, -3, 3);
  const Tensor labels = Tensor::from_vector(std::vector<int64_t>{5, 0, 3, 3}, {4});
  for (double tau : {1.0, 2.5}) {
    EXPECT_TRUE(gradcheck(
        [&](const std::vector<Tensor>& in) {
          return distillation_loss(in[0], zt, labels, {0.3, tau}).total;
        },
        {f64({4, 6}, 6, -3, 3)}))
        << "tau " << tau;
  }
}

TEST(TrainDistillationLoss, NoGradientReachesTheTeacher) {
  Tensor zs = random_tensor({3, 4}, 7), zt = random_tensor({3, 4}, 8);
  zs.set_requires_grad(true);
  zt.set_requires_grad(true);
  distillation_loss(zs, zt, Tensor(), {1.0, 2.0}).total.backward();
  EXPECT_TRUE(zs.grad().defined());
  EXPECT_FALSE(zt.grad().defined());
}

TEST(TrainDistillationLoss, BadInputIsAClearError) {
  const Tensor zs = random_tensor({3, 4}, 9), zt = random_tensor({3, 4}, 10);
  const Tensor labels = Tensor::from_vector(std::vector<int64_t>{0, 1, 2}, {3});
  auto expect_error = [](const std::function<void()>& f, const std::string& text) {
    try {
      f();
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_TRUE(message_has(e, "distillation_loss")) << e.what();
      EXPECT_TRUE(message_has(e, text)) << e.what();
    }
  };
  expect_error([&] { distillation_loss(zs, zt, labels, {1.5, 1.0}); }, "alpha");
  expect_error([&] { distillation_loss(zs, zt, labels, {0.5, 0.0}); }, "temperature");
  expect_error([&] { distillation_loss(zs, Tensor(), labels, {0.5, 1.0}); }, "teacher");
  expect_error([&] { distillation_loss(zs, zt, Tensor(), {0.5, 1.0}); }, "labels");
  expect_error([&] { distillation_loss(zs, random_tensor({3, 5}, 11), labels); }, "[3, 5]");
}

}  // namespace
}  // namespace distill::train
