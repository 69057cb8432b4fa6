// Fused softmax-cross-entropy: float64 gradient checks (hard labels with ignore_index and label
// smoothing, soft targets, temperature, every reduction), values against PyTorch's formulas
// written out in double, stability for logits of magnitude 1e4, error messages, and every
// backend against the CPU kernels (f32 and bf16 logits, C = 10, 1000, 50000 with odd N) with
// outputs poisoned (NaN) before each launch.
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "core/ops/dispatch.h"
#include "kernels/cross_entropy.h"
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

Tensor labels_of(const std::vector<int64_t>& v) {
  return Tensor::from_vector(v, {static_cast<int64_t>(v.size())});
}

// Random class indices in [0, classes), with every `ignore_every`-th row set to `ignore`.
Tensor random_labels(int64_t rows, int64_t classes, uint64_t seed, int64_t ignore_every = 0,
                     int64_t ignore = -100) {
  Generator g(seed);
  const auto u = rand({rows}, TensorOptions(DType::F64), &g).to_double_vector();
  std::vector<int64_t> v(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    v[r] =
        std::min<int64_t>(classes - 1, static_cast<int64_t>(u[r] * static_cast<double>(classes)));
    if (ignore_every > 0 && r % ignore_every == 1) v[r] = ignore;
  }
  return labels_of(v);
}

// Random probability rows (a softmax of random logits), F64 on the CPU.
Tensor random_probs(const Shape& shape, uint64_t seed) {
  NoGradGuard no_grad;
  return softmax(f64(shape, seed, -3, 3), -1);
}

// ---------------------------------------------------------------- PyTorch's formulas in double

std::vector<double> log_softmax_row(const std::vector<double>& z, int64_t row, int64_t cols,
                                    double temperature) {
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t c = 0; c < cols; ++c) m = std::max(m, z[row * cols + c] / temperature);
  double s = 0;
  for (int64_t c = 0; c < cols; ++c) s += std::exp(z[row * cols + c] / temperature - m);
  std::vector<double> out(static_cast<size_t>(cols));
  for (int64_t c = 0; c < cols; ++c) out[c] = z[row * cols + c] / temperature - m - std::log(s);
  return out;
}

// torch.nn.functional.cross_entropy(z / T, y, ignore_index, label_smoothing, reduction):
// per row (1 - eps) * nll + eps * mean_c(-log p_c), ignored rows 0; mean over non-ignored rows.
std::vector<double> reference_hard_rows(const Tensor& logits, const std::vector<int64_t>& labels,
                                        int64_t ignore, double eps, double temperature) {
  const auto z = logits.to_double_vector();
  const int64_t rows = logits.size(0), cols = logits.size(1);
  std::vector<double> out(static_cast<size_t>(rows), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    if (labels[r] == ignore) continue;
    const auto lp = log_softmax_row(z, r, cols, temperature);
    double smooth = 0;
    for (double v : lp) smooth -= v;
    out[r] = (1 - eps) * -lp[labels[r]] + eps * smooth / static_cast<double>(cols);
  }
  return out;
}

std::vector<double> reference_soft_rows(const Tensor& logits, const Tensor& target,
                                        double temperature) {
  const auto z = logits.to_double_vector();
  const auto t = target.to_double_vector();
  const int64_t rows = logits.size(0), cols = logits.size(1);
  std::vector<double> out(static_cast<size_t>(rows), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    const auto lp = log_softmax_row(z, r, cols, temperature);
    for (int64_t c = 0; c < cols; ++c) out[r] -= t[r * cols + c] * lp[c];
  }
  return out;
}

// ---------------------------------------------------------------- gradient checks

TEST(CrossEntropyGrad, HardLabelsEveryReductionWithIgnoreSmoothingAndTemperature) {
  const Tensor labels = labels_of({2, -100, 0, 6, 3, -100, 5});
  for (Reduction red : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
    for (double smoothing : {0.0, 0.15}) {
      for (double temperature : {1.0, 2.5, 0.6}) {
        SCOPED_TRACE("reduction " + std::to_string(static_cast<int>(red)) + " smoothing " +
                     std::to_string(smoothing) + " T " + std::to_string(temperature));
        const CrossEntropyOptions opt{red, -100, smoothing, temperature};
        EXPECT_TRUE(gradcheck([&](const auto& in) { return cross_entropy(in[0], labels, opt); },
                              {f64({7, 7}, 11)}));
      }
    }
  }
}

TEST(CrossEntropyGrad, CustomIgnoreIndexAndI32Labels) {
  const Tensor labels = labels_of({1, 4, 4, 0, 2}).to(DType::I32);
  const CrossEntropyOptions opt{Reduction::Mean, 4, 0.05, 1.3};
  EXPECT_TRUE(gradcheck([&](const auto& in) { return cross_entropy(in[0], labels, opt); },
                        {f64({5, 6}, 12)}));
}

TEST(CrossEntropyGrad, SoftTargetsEveryReductionAndTemperature) {
  const Tensor target = random_probs({6, 9}, 13);
  // Unnormalised targets too: the gradient is exact for any target, not only for sum(t) = 1.
  const Tensor loose_target = f64({6, 9}, 14, 0.0, 1.0);
  for (Reduction red : {Reduction::Mean, Reduction::Sum, Reduction::None}) {
    for (double temperature : {1.0, 4.0, 0.7}) {
      SCOPED_TRACE("reduction " + std::to_string(static_cast<int>(red)) + " T " +
                   std::to_string(temperature));
      EXPECT_TRUE(gradcheck(
          [&](const auto& in) { return soft_cross_entropy(in[0], target, temperature, red); },
          {f64({6, 9}, 15)}));
      EXPECT_TRUE(gradcheck(
          [&](const auto& in) { return soft_cross_entropy(in[0], loose_target, temperature, red); },
          {f64({6, 9}, 16)}));
    }
  }
}

TEST(CrossEntropyGrad, NonContiguousLogits) {
  const Tensor labels = labels_of({0, 3, 1, 2});
  EXPECT_TRUE(gradcheck(
      [&](const auto& in) {
        return cross_entropy(transpose(in[0], 0, 1), labels, {Reduction::Sum, -100, 0.1, 1.0});
      },
      {f64({5, 4}, 17)}));
}

// ---------------------------------------------------------------- values

TEST(CrossEntropy, HardLabelsMatchPyTorchFormula) {
  const Tensor logits = f64({9, 6}, 20, -4, 4);
  const std::vector<int64_t> y = {0, 5, -1, 3, 2, -1, 1, 4, 5};
  for (double eps : {0.0, 0.2}) {
    for (double temperature : {1.0, 3.0}) {
      const auto rows = reference_hard_rows(logits, y, -1, eps, temperature);
      double total = 0;
      for (double v : rows) total += v;
      const CrossEntropyOptions none{Reduction::None, -1, eps, temperature};
      EXPECT_TRUE(all_close(cross_entropy(logits, labels_of(y), none),
                            Tensor::from_vector(rows, {9}), 1e-12, 1e-12));
      CrossEntropyOptions sum_opt = none;
      sum_opt.reduction = Reduction::Sum;
      EXPECT_NEAR(cross_entropy(logits, labels_of(y), sum_opt).item(), total, 1e-12);
      CrossEntropyOptions mean_opt = none;
      mean_opt.reduction = Reduction::Mean;
      // 7 of the 9 rows are not ignored: PyTorch divides by 7, not 9.
      EXPECT_NEAR(cross_entropy(logits, labels_of(y), mean_opt).item(), total / 7.0, 1e-12);
    }
  }
}

TEST(CrossEntropy, GradientIsSoftmaxMinusTargetOverTemperature) {
  // dlogits = (softmax(z / T) - q) / T / count for Mean, by hand.
  const Tensor logits = f64({3, 4}, 21);
  const std::vector<int64_t> y = {2, -100, 0};
  const double eps = 0.1, temperature = 2.0;
  Tensor z = logits.detach();
  z.set_requires_grad(true);
  cross_entropy(z, labels_of(y), {Reduction::Mean, -100, eps, temperature}).backward();
  const auto g = z.grad().to_double_vector();
  const auto zv = logits.to_double_vector();
  for (int64_t r = 0; r < 3; ++r) {
    const auto lp = log_softmax_row(zv, r, 4, temperature);
    for (int64_t c = 0; c < 4; ++c) {
      double expected = 0;
      if (y[r] != -100) {
        const double q = (c == y[r] ? 1 - eps : 0.0) + eps / 4;
        expected = (std::exp(lp[c]) - q) / temperature / 2.0;  // 2 rows count
      }
      EXPECT_NEAR(g[r * 4 + c], expected, 1e-14) << "row " << r << " class " << c;
    }
  }
}

TEST(CrossEntropy, SoftTargetsMatchPyTorchFormula) {
  const Tensor logits = f64({5, 8}, 22, -4, 4);
  const Tensor target = random_probs({5, 8}, 23);
  for (double temperature : {1.0, 2.0}) {
    const auto rows = reference_soft_rows(logits, target, temperature);
    double total = 0;
    for (double v : rows) total += v;
    EXPECT_TRUE(all_close(soft_cross_entropy(logits, target, temperature, Reduction::None),
                          Tensor::from_vector(rows, {5}), 1e-12, 1e-12));
    EXPECT_NEAR(soft_cross_entropy(logits, target, temperature, Reduction::Sum).item(), total,
                1e-12);
    EXPECT_NEAR(soft_cross_entropy(logits, target, temperature).item(), total / 5, 1e-12);
  }
}

TEST(CrossEntropy, SoftTargetIsNotDifferentiated) {
  const Tensor logits = f64({2, 3}, 24);
  Tensor target = random_probs({2, 3}, 25);
  target.set_requires_grad(true);
  Tensor z = logits.detach();
  z.set_requires_grad(true);
  soft_cross_entropy(z, target).backward();
  EXPECT_TRUE(z.grad().defined());
  EXPECT_FALSE(target.grad().defined());
}

TEST(CrossEntropy, OneHotSoftTargetEqualsHardLabel) {
  const Tensor logits = f64({4, 5}, 26);
  const std::vector<int64_t> y = {4, 0, 2, 2};
  std::vector<double> onehot(20, 0.0);
  for (int r = 0; r < 4; ++r) onehot[r * 5 + y[r]] = 1.0;
  const double hard = cross_entropy(logits, labels_of(y), {Reduction::Mean, -100, 0.0, 1.5}).item();
  const double soft = soft_cross_entropy(logits, Tensor::from_vector(onehot, {4, 5}), 1.5).item();
  EXPECT_NEAR(hard, soft, 1e-13);
}

TEST(CrossEntropy, AllRowsIgnoredGivesNanMeanAndZeroGradient) {
  Tensor z = f64({2, 3}, 27).detach();
  z.set_requires_grad(true);
  const Tensor loss = cross_entropy(z, labels_of({-100, -100}));
  EXPECT_TRUE(std::isnan(loss.item()));  // 0 / 0, like PyTorch
  const Tensor sum_loss = cross_entropy(z, labels_of({-100, -100}), {Reduction::Sum});
  EXPECT_EQ(sum_loss.item(), 0.0);
  sum_loss.backward();
  for (double v : z.grad().to_double_vector()) EXPECT_EQ(v, 0.0);
}

TEST(CrossEntropy, StableForLogitsOfMagnitude1e4) {
  // f32 logits in [-1e4, 1e4] and one row with every logit equal to 1e4: a naive
  // exp(z) overflows; a naive z / T - lse in fp32 loses every digit of the softmax.
  Tensor logits = random_tensor({6, 50}, 28, DType::F32, -1e4, 1e4);
  {
    float* p = logits.data<float>();
    for (int c = 0; c < 50; ++c) p[5 * 50 + c] = 1e4f;
  }
  const std::vector<int64_t> y = {3, 17, 0, 49, 25, 7};
  for (double temperature : {1.0, 3.0}) {
    SCOPED_TRACE("T " + std::to_string(temperature));
    Tensor z = logits.detach();
    z.set_requires_grad(true);
    const Tensor loss = cross_entropy(z, labels_of(y), {Reduction::None, -100, 0.1, temperature});
    // The reference sees exactly the same f32 values, in double.
    const auto expected = reference_hard_rows(logits.to(DType::F64), y, -100, 0.1, temperature);
    EXPECT_TRUE(all_close(loss, Tensor::from_vector(expected, {6}), 1e-6, 1e-6));
    EXPECT_NEAR(loss.to_double_vector()[5], std::log(50.0), 1e-5);  // uniform row
    sum(loss).backward();
    const auto g = z.grad().to_double_vector();
    for (double v : g) ASSERT_TRUE(std::isfinite(v));
    // Uniform row: (1/50 - q) / T.
    EXPECT_NEAR(g[5 * 50 + 7], (1.0 / 50 - 0.9 - 0.1 / 50) / temperature, 1e-6);
    EXPECT_NEAR(g[5 * 50 + 8], (1.0 / 50 - 0.1 / 50) / temperature, 1e-6);
  }
  // Soft targets at the same magnitude.
  const Tensor target = random_probs({6, 50}, 29).to(DType::F32);
  const Tensor soft = soft_cross_entropy(logits, target, 1.0, Reduction::None);
  const auto expected = reference_soft_rows(logits.to(DType::F64), target.to(DType::F64), 1.0);
  EXPECT_TRUE(all_close(soft, Tensor::from_vector(expected, {6}), 1e-6, 1e-6));
}

TEST(CrossEntropy, NanLogitPoisonsOnlyItsRow) {
  Tensor logits = f64({3, 4}, 33);
  logits.data<double>()[1 * 4 + 2] = kNaN;
  Tensor z = logits.detach();
  z.set_requires_grad(true);
  const Tensor loss = cross_entropy(z, labels_of({0, 1, 3}), {Reduction::None});
  const auto l = loss.to_double_vector();
  EXPECT_TRUE(std::isfinite(l[0]) && std::isnan(l[1]) && std::isfinite(l[2]));
  sum(loss).backward();
  const auto g = z.grad().to_double_vector();
  for (int c = 0; c < 4; ++c) {
    EXPECT_TRUE(std::isfinite(g[c]) && std::isnan(g[4 + c]) && std::isfinite(g[8 + c])) << c;
  }
}

TEST(CrossEntropy, LossIsFp32ForBf16Logits) {
  const Tensor logits = random_tensor({3, 5}, 30).to(DType::BF16);
  const Tensor loss = cross_entropy(logits, labels_of({0, 1, 2}));
  EXPECT_EQ(loss.dtype(), DType::F32);
  const double expected = [&] {
    const auto rows = reference_hard_rows(logits.to(DType::F64), {0, 1, 2}, -100, 0, 1);
    return (rows[0] + rows[1] + rows[2]) / 3;
  }();
  EXPECT_NEAR(loss.item(), expected, 1e-6);
}

TEST(CrossEntropy, ErrorsNameTheOpAndShapes) {
  const Tensor logits = random_tensor({4, 5}, 31);
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
  expect_error(
      [&] {
        cross_entropy(logits, labels_of({0, 1, 5, 2}));
      },
      "cross_entropy", "label 5 at row 2");
  expect_error(
      [&] {
        cross_entropy(logits, labels_of({0, 1, -3, 2}));
      },
      "cross_entropy", "label -3");
  expect_error([&] { cross_entropy(logits, labels_of({0, 1, 2})); }, "cross_entropy", "[3]");
  expect_error([&] { cross_entropy(reshape(logits, {20}), labels_of({0})); }, "cross_entropy",
               "[N, C]");
  expect_error(
      [&] {
        cross_entropy(logits, labels_of({0, 1, 2, 3}).to(DType::F32));
      },
      "cross_entropy", "I64 or I32");
  expect_error(
      [&] {
        cross_entropy(logits, labels_of({0, 1, 2, 3}), {Reduction::Mean, -100, 1.5});
      },
      "cross_entropy", "label_smoothing");
  expect_error(
      [&] {
        cross_entropy(logits, labels_of({0, 1, 2, 3}), {Reduction::Mean, -100, 0.0, 0.0});
      },
      "cross_entropy", "temperature");
  expect_error(
      [&] {
        soft_cross_entropy(logits, random_tensor({4, 6}, 32));
      },
      "soft_cross_entropy", "[4, 6]");
  expect_error([&] { soft_cross_entropy(logits, logits, -1.0); }, "soft_cross_entropy",
               "temperature");
}

// ---------------------------------------------------------------- backends

// max |a - b| <= tol * (max |b| over the tensor): errors measured against the tensor's scale.
::testing::AssertionResult close_to(const Tensor& actual, const Tensor& expected, double tol) {
  const auto a = actual.to_double_vector(), b = expected.to_double_vector();
  if (a.size() != b.size()) return ::testing::AssertionFailure() << "size mismatch";
  double scale = 0;
  for (double v : b) scale = std::max(scale, std::fabs(v));
  for (size_t i = 0; i < a.size(); ++i) {
    if (!(std::fabs(a[i] - b[i]) <= tol * scale))
      return ::testing::AssertionFailure() << "element " << i << ": " << a[i] << " vs " << b[i]
                                           << " (tol " << tol << " x scale " << scale << ")";
  }
  return ::testing::AssertionSuccess();
}

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

struct KernelRun {
  Tensor loss, stats, extra, dlogits;
};

// Direct kernel calls on `device` with every output pre-filled with NaN. `labels` (I64) for
// hard labels or `target` (accumulation dtype) for soft ones; `grad` [N] per row, or a
// single-element tensor broadcast with stride 0.
KernelRun run_kernels(const Tensor& logits, const Tensor& labels, const Tensor& target,
                      const Tensor& grad, const kernels::CrossEntropyArgs& args, Device device) {
  const DType acc = logits.dtype() == DType::F64 ? DType::F64 : DType::F32;
  const int64_t rows = logits.size(0);
  const Tensor z = logits.to(device);
  KernelRun r;
  r.loss = poisoned({rows}, acc, device);
  r.stats = poisoned({rows, 2}, acc, device);
  r.extra = poisoned({rows}, acc, device);  // valid (hard) or target_sum (soft)
  r.dlogits = poisoned(logits.shape(), logits.dtype(), device);
  const Tensor g = grad.numel() == 1 ? expand(grad.to(device), {rows}) : grad.to(device);
  if (target.defined()) {
    const Tensor t = target.to(device);
    DISTILL_DISPATCH(device, soft_cross_entropy_forward, z.view_desc(), t.view_desc(), args,
                     r.loss.view_desc(), r.stats.view_desc(), r.extra.view_desc());
    DISTILL_DISPATCH(device, soft_cross_entropy_backward, z.view_desc(), t.view_desc(),
                     r.stats.view_desc(), r.extra.view_desc(), g.view_desc(), args,
                     r.dlogits.view_desc());
  } else {
    const Tensor y = labels.to(device);
    DISTILL_DISPATCH(device, cross_entropy_forward, z.view_desc(), y.view_desc(), args,
                     r.loss.view_desc(), r.stats.view_desc(), r.extra.view_desc());
    DISTILL_DISPATCH(device, cross_entropy_backward, z.view_desc(), y.view_desc(),
                     r.stats.view_desc(), g.view_desc(), args, r.dlogits.view_desc());
  }
  r.loss = r.loss.to(Device::cpu());
  r.stats = r.stats.to(Device::cpu());
  r.extra = r.extra.to(Device::cpu());
  r.dlogits = r.dlogits.to(Device::cpu());
  return r;
}

class CrossEntropyBackend : public testing::BackendTest {};

struct BackendCase {
  int64_t rows, cols;
  bool soft;
  double smoothing, temperature;
  bool scalar_grad;  // stride-0 grad (Sum/Mean) instead of one per row
};

std::vector<BackendCase> backend_cases() {
  std::vector<BackendCase> cases;
  for (int64_t cols : {10, 1000, 50000}) {
    const int64_t rows = cols == 50000 ? 5 : (cols == 1000 ? 67 : 131);
    cases.push_back({rows, cols, false, 0.0, 1.0, false});
    cases.push_back({rows, cols, false, 0.1, 2.0, true});
    cases.push_back({rows, cols, true, 0.0, 1.0, false});
    cases.push_back({rows, cols, true, 0.0, 0.5, true});
  }
  // Odd class counts: every row starts at a different 16-byte alignment.
  cases.push_back({9, 1999, false, 0.05, 1.0, false});
  cases.push_back({9, 4097, true, 0.0, 1.0, false});
  cases.push_back({3, 1, false, 0.0, 1.0, false});
  return cases;
}

void expect_kernels_match_cpu(Device device, DType dtype, const BackendCase& c, uint64_t seed,
                              double loss_tol, double grad_tol) {
  SCOPED_TRACE(std::string(dtype_name(dtype)) + " N " + std::to_string(c.rows) + " C " +
               std::to_string(c.cols) + (c.soft ? " soft" : " hard") + " smoothing " +
               std::to_string(c.smoothing) + " T " + std::to_string(c.temperature));
  const DType acc = dtype == DType::F64 ? DType::F64 : DType::F32;
  const Tensor logits = random_tensor({c.rows, c.cols}, seed, DType::F32, -8, 8).to(dtype);
  kernels::CrossEntropyArgs args;
  args.rows = c.rows;
  args.cols = c.cols;
  args.inv_temperature = 1.0 / c.temperature;
  args.label_smoothing = c.smoothing;
  Tensor labels, target;
  if (c.soft) {
    NoGradGuard no_grad;
    target = softmax(random_tensor({c.rows, c.cols}, seed + 1, DType::F32, -3, 3), -1).to(acc);
  } else {
    labels = random_labels(c.rows, c.cols, seed + 2, c.cols > 1 ? 4 : 0);
  }
  const Tensor grad = random_tensor({c.scalar_grad ? 1 : c.rows}, seed + 3, acc, 0.5, 1.5);
  const KernelRun ref = run_kernels(logits, labels, target, grad, args, Device::cpu());
  const KernelRun got = run_kernels(logits, labels, target, grad, args, device);
  for (const Tensor* t : {&ref.loss, &ref.stats, &ref.extra, &ref.dlogits})
    ASSERT_TRUE(all_finite(*t));
  EXPECT_TRUE(all_close(got.loss, ref.loss, loss_tol, loss_tol)) << "loss";
  EXPECT_TRUE(all_close(got.stats, ref.stats, loss_tol, loss_tol)) << "row stats";
  EXPECT_TRUE(all_close(got.extra, ref.extra, loss_tol, loss_tol)) << "valid / target sum";
  EXPECT_TRUE(close_to(got.dlogits, ref.dlogits, grad_tol)) << "dlogits";
}

TEST_P(CrossEntropyBackend, F32KernelsMatchCpu) {
  // fp32 online sums (per-thread, then a tree) vs the CPU's double sums of the same f32 inputs:
  // relative differences of a few 1e-7 for C = 50000; 1e-5 leaves a margin. Gradients are
  // compared against the tensor's largest element (softmax - target is O(1) there).
  uint64_t seed = 100;
  for (const BackendCase& c : backend_cases())
    expect_kernels_match_cpu(device(), DType::F32, c, seed += 4, 1e-5, 1e-5);
}

TEST_P(CrossEntropyBackend, Bf16KernelsMatchCpu) {
  // Same bf16 logits on both sides and fp32 statistics, so loss and row stats agree to fp32
  // accuracy (1e-5); dlogits are rounded to bf16 (relative step 2^-8 = 4e-3) by both sides, one
  // rounding apart at most: 1e-2 of the scale.
  uint64_t seed = 500;
  for (const BackendCase& c : backend_cases())
    expect_kernels_match_cpu(device(), DType::BF16, c, seed += 4, 1e-5, 1e-2);
}

TEST_P(CrossEntropyBackend, F64KernelsMatchCpu) {
  // Double on both sides: only summation order differs.
  uint64_t seed = 900;
  for (const BackendCase& c : backend_cases())
    if (c.cols <= 1000) expect_kernels_match_cpu(device(), DType::F64, c, seed += 4, 1e-12, 1e-12);
}

TEST_P(CrossEntropyBackend, StableAtMagnitude1e4) {
  // All f32 logits in [-1e4, 1e4] (block-per-row and warp-per-row paths), one row constant.
  for (int64_t cols : {777, 20000}) {
    SCOPED_TRACE("C " + std::to_string(cols));
    Tensor logits = random_tensor({7, cols}, 1300 + cols, DType::F32, -1e4, 1e4);
    float* p = logits.data<float>();
    for (int64_t c = 0; c < cols; ++c) p[3 * cols + c] = -1e4f;
    kernels::CrossEntropyArgs args;
    args.rows = 7;
    args.cols = cols;
    args.label_smoothing = 0.1;
    args.inv_temperature = 1.0 / 3.0;
    const Tensor labels = random_labels(7, cols, 1400 + cols);
    const Tensor grad = random_tensor({7}, 1500, DType::F32, 0.5, 1.5);
    const KernelRun ref = run_kernels(logits, labels, Tensor(), grad, args, Device::cpu());
    const KernelRun got = run_kernels(logits, labels, Tensor(), grad, args, device());
    for (double v : got.loss.to_double_vector()) ASSERT_TRUE(std::isfinite(v));
    EXPECT_TRUE(all_close(got.loss, ref.loss, 1e-5, 1e-5));
    EXPECT_TRUE(close_to(got.dlogits, ref.dlogits, 1e-5));
  }
}

TEST_P(CrossEntropyBackend, OpsMatchCpuThroughAutograd) {
  // The public ops (reduction, Mean's count of non-ignored rows, the stride-0 gradient) on the
  // device against the CPU: f32 tolerance as above.
  const Tensor logits = random_tensor({37, 300}, 1600);
  const Tensor labels = random_labels(37, 300, 1601, 5);
  const CrossEntropyOptions opt{Reduction::Mean, -100, 0.1, 1.5};
  testing::expect_backend_matches_cpu(
      [&](const std::vector<Tensor>& in) { return cross_entropy(in[0], in[1], opt); },
      {logits, labels}, device(), DType::F32, 1e-6, 1e-5);
  const Tensor target = random_probs({37, 300}, 1602).to(DType::F32);
  testing::expect_backend_matches_cpu(
      [&](const std::vector<Tensor>& in) {
        return soft_cross_entropy(in[0], in[1].detach(), 2.0, Reduction::Sum);
      },
      {logits, target}, device(), DType::F32, 1e-5, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Backends, CrossEntropyBackend,
                         ::testing::ValuesIn(testing::all_backends()), testing::backend_name);

}  // namespace
}  // namespace distill
