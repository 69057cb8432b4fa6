// Batch norm: float64 gradient checks (training with batch statistics, eval with running ones,
// with and without affine parameters, 2-D to 4-D inputs), values and running-statistics updates
// against PyTorch's formulas written out in double, error messages, and every backend against
// the CPU kernels (odd channel counts and plane sizes, f32 and bf16) with poisoned outputs.
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "core/ops/dispatch.h"
#include "kernels/batch_norm.h"
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

TEST(BatchNormGrad, TrainingWithAffineAndRunningStats) {
  const Tensor running_mean = f64({4}, 1), running_var = f64({4}, 2, 0.5, 1.5);
  EXPECT_TRUE(gradcheck(
      [&](const auto& in) {
        return batch_norm(in[0], in[1], in[2], running_mean, running_var, true, 0.1, 1e-5);
      },
      {f64({3, 4, 2, 3}, 3), f64({4}, 4), f64({4}, 5)}));
}

TEST(BatchNormGrad, TrainingWithoutAffineOrRunningStats) {
  EXPECT_TRUE(gradcheck(
      [&](const auto& in) {
        return batch_norm(in[0], Tensor(), Tensor(), Tensor(), Tensor(), true);
      },
      {f64({2, 3, 5}, 6)}));
  // [N, C]: one element per sample and channel (BatchNorm1d).
  EXPECT_TRUE(gradcheck(
      [&](const auto& in) { return batch_norm(in[0], in[1], in[2], Tensor(), Tensor(), true); },
      {f64({5, 3}, 7), f64({3}, 8), f64({3}, 9)}));
}

TEST(BatchNormGrad, EvalUsesRunningStats) {
  const Tensor running_mean = f64({3}, 10), running_var = f64({3}, 11, 0.5, 1.5);
  EXPECT_TRUE(gradcheck(
      [&](const auto& in) {
        return batch_norm(in[0], in[1], in[2], running_mean, running_var, false, 0.1, 1e-3);
      },
      {f64({2, 3, 3, 2}, 12), f64({3}, 13), f64({3}, 14)}));
}

TEST(BatchNormGrad, NonContiguousInput) {
  EXPECT_TRUE(gradcheck(
      [&](const auto& in) {
        return batch_norm(permute(in[0], {1, 0, 2}), in[1], Tensor(), Tensor(), Tensor(), true);
      },
      {f64({3, 2, 4}, 15), f64({3}, 16)}));
}

// ---------------------------------------------------------------- values

struct ChannelStats {
  std::vector<double> mean, biased_var, unbiased_var;
};

ChannelStats channel_stats(const Tensor& x) {
  const auto v = x.to_double_vector();
  const int64_t n = x.size(0), c = x.size(1), inner = x.numel() / (n * c);
  ChannelStats s;
  for (int64_t ch = 0; ch < c; ++ch) {
    double sum = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < inner; ++j) sum += v[(i * c + ch) * inner + j];
    const double count = static_cast<double>(n * inner), mean = sum / count;
    double sq = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < inner; ++j) sq += std::pow(v[(i * c + ch) * inner + j] - mean, 2);
    s.mean.push_back(mean);
    s.biased_var.push_back(sq / count);
    s.unbiased_var.push_back(sq / (count - 1));
  }
  return s;
}

// (x - mean) / sqrt(var + eps) * w + b, per channel, in double.
Tensor normalise_by_hand(const Tensor& x, const std::vector<double>& mean,
                         const std::vector<double>& var, const std::vector<double>& w,
                         const std::vector<double>& b, double eps) {
  auto v = x.to_double_vector();
  const int64_t n = x.size(0), c = x.size(1), inner = x.numel() / (n * c);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t j = 0; j < inner; ++j) {
        double& e = v[(i * c + ch) * inner + j];
        e = (e - mean[ch]) / std::sqrt(var[ch] + eps) * w[ch] + b[ch];
      }
  return Tensor::from_vector(v, x.shape());
}

TEST(BatchNorm, TrainingMatchesPyTorchAndUpdatesRunningStats) {
  const Tensor x = f64({4, 3, 5, 2}, 20, -3, 5);
  const Tensor w = f64({3}, 21), b = f64({3}, 22);
  const auto rm0 = f64({3}, 23).to_double_vector(), rv0 = f64({3}, 24, 0.5, 2).to_double_vector();
  Tensor running_mean = Tensor::from_vector(rm0, {3}), running_var = Tensor::from_vector(rv0, {3});
  const double momentum = 0.3, eps = 1e-4;
  const Tensor y = batch_norm(x, w, b, running_mean, running_var, true, momentum, eps);
  const ChannelStats s = channel_stats(x);
  EXPECT_TRUE(all_close(
      y,
      normalise_by_hand(x, s.mean, s.biased_var, w.to_double_vector(), b.to_double_vector(), eps),
      1e-12, 1e-12));
  const auto rm = running_mean.to_double_vector(), rv = running_var.to_double_vector();
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(rm[c], (1 - momentum) * rm0[c] + momentum * s.mean[c], 1e-12);
    // PyTorch updates running_var with the unbiased variance.
    EXPECT_NEAR(rv[c], (1 - momentum) * rv0[c] + momentum * s.unbiased_var[c], 1e-12);
  }
  // A second step compounds.
  const Tensor x2 = f64({4, 3, 5, 2}, 25);
  batch_norm(x2, w, b, running_mean, running_var, true, momentum, eps);
  const ChannelStats s2 = channel_stats(x2);
  for (int c = 0; c < 3; ++c)
    EXPECT_NEAR(running_mean.to_double_vector()[c], (1 - momentum) * rm[c] + momentum * s2.mean[c],
                1e-12);
}

TEST(BatchNorm, EvalUsesRunningStatsAndLeavesThemAlone) {
  const Tensor x = f64({2, 3, 4, 4}, 30);
  const Tensor w = f64({3}, 31), b = f64({3}, 32);
  const auto rm0 = f64({3}, 33).to_double_vector(), rv0 = f64({3}, 34, 0.5, 2).to_double_vector();
  const Tensor running_mean = Tensor::from_vector(rm0, {3}),
               running_var = Tensor::from_vector(rv0, {3});
  const Tensor y = batch_norm(x, w, b, running_mean, running_var, false, 0.1, 1e-5);
  EXPECT_TRUE(
      all_close(y, normalise_by_hand(x, rm0, rv0, w.to_double_vector(), b.to_double_vector(), 1e-5),
                1e-12, 1e-12));
  EXPECT_EQ(running_mean.to_double_vector(), rm0);
  EXPECT_EQ(running_var.to_double_vector(), rv0);
}

TEST(BatchNorm, Bf16InputWithFp32Parameters) {
  const Tensor x = random_tensor({3, 4, 5, 5}, 40).to(DType::BF16);
  const Tensor w = random_tensor({4}, 41), b = random_tensor({4}, 42);
  const Tensor y = batch_norm(x, w, b, Tensor(), Tensor(), true);
  EXPECT_EQ(y.dtype(), DType::BF16);
  const ChannelStats s = channel_stats(x.to(DType::F64));
  const Tensor expected = normalise_by_hand(x.to(DType::F64), s.mean, s.biased_var,
                                            w.to_double_vector(), b.to_double_vector(), 1e-5);
  // One bf16 rounding of the output: relative 2^-8.
  EXPECT_TRUE(all_close(y, expected, 1e-2, 4e-3));
}

TEST(BatchNorm, ErrorsNameTheOpAndShapes) {
  const Tensor x = random_tensor({2, 3, 4, 4}, 50);
  const auto expect_error = [](const std::function<void()>& fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "expected an error mentioning '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_TRUE(message_has(e, "batch_norm")) << e.what();
      EXPECT_TRUE(message_has(e, needle)) << e.what();
    }
  };
  expect_error([&] { batch_norm(x, random_tensor({4}, 51), Tensor(), Tensor(), Tensor(), true); },
               "[3]");
  expect_error(
      [&] {
        batch_norm(x, random_tensor({3}, 52, DType::F64), Tensor(), Tensor(), Tensor(), true);
      },
      "f32");
  expect_error([&] { batch_norm(x, Tensor(), Tensor(), Tensor(), Tensor(), false); }, "eval");
  expect_error(
      [&] {
        batch_norm(random_tensor({1, 3}, 53), Tensor(), Tensor(), Tensor(), Tensor(), true);
      },
      "more than one value per channel");
  expect_error(
      [&] { batch_norm(random_tensor({6}, 54), Tensor(), Tensor(), Tensor(), Tensor(), true); },
      "[N, C, ...]");
  expect_error([&] { batch_norm(x, Tensor(), Tensor(), zeros({3}), Tensor(), true); }, "both");
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

// max |a - b| <= tol * (max |b| over the tensor).
// |actual - expected| <= tol * max(|expected|, floor) elementwise. `floor` is for results that
// are differences of larger terms (dx of a channel with two values cancels to rounding noise).
::testing::AssertionResult close_to(const Tensor& actual, const Tensor& expected, double tol,
                                    double floor = 0) {
  const auto a = actual.to_double_vector(), b = expected.to_double_vector();
  if (a.size() != b.size()) return ::testing::AssertionFailure() << "size mismatch";
  double scale = floor;
  for (double v : b) scale = std::max(scale, std::fabs(v));
  for (size_t i = 0; i < a.size(); ++i)
    if (!(std::fabs(a[i] - b[i]) <= tol * scale))
      return ::testing::AssertionFailure() << "element " << i << ": " << a[i] << " vs " << b[i]
                                           << " (tol " << tol << " x scale " << scale << ")";
  return ::testing::AssertionSuccess();
}

kernels::View view_or_empty(const Tensor& t) {
  return t.defined() ? t.view_desc() : kernels::View{};
}

struct KernelRun {
  Tensor save_mean, save_rstd, running_mean, running_var;  // statistics kernel
  Tensor y_train, y_eval;                                  // apply kernel, both modes
  Tensor dx, dweight, dbias;                               // backward kernel
};

// All kernels on `device` with poisoned outputs. The apply and backward kernels get the CPU's
// statistics (`ref`, when given) so each comparison isolates one kernel.
KernelRun run_kernels(const Tensor& x, const Tensor& dy, const Tensor& w, const Tensor& b,
                      const Tensor& rm, const Tensor& rv, Device device, const KernelRun* ref) {
  const int64_t channels = x.size(1);
  kernels::BatchNormShape shape{x.size(0), channels, x.numel() / (x.size(0) * channels)};
  const DType acc = x.dtype() == DType::F64 ? DType::F64 : DType::F32;
  const double eps = 1e-5, momentum = 0.2;
  const Tensor xd = x.to(device), dyd = dy.to(device);
  const Tensor wd = w.defined() ? w.to(device) : Tensor(),
               bd = b.defined() ? b.to(device) : Tensor();
  KernelRun r;
  r.save_mean = poisoned({channels}, acc, device);
  r.save_rstd = poisoned({channels}, acc, device);
  r.running_mean = rm.to(device).clone();
  r.running_var = rv.to(device).clone();
  DISTILL_DISPATCH(device, batch_norm_stats, xd.view_desc(), shape, eps, momentum,
                   r.save_mean.view_desc(), r.save_rstd.view_desc(), r.running_mean.view_desc(),
                   r.running_var.view_desc());
  const Tensor mean = ref ? ref->save_mean.to(device) : r.save_mean;
  const Tensor rstd = ref ? ref->save_rstd.to(device) : r.save_rstd;
  r.y_train = poisoned(x.shape(), x.dtype(), device);
  DISTILL_DISPATCH(device, batch_norm_apply, xd.view_desc(), shape, mean.view_desc(),
                   rstd.view_desc(), false, eps, view_or_empty(wd), view_or_empty(bd),
                   r.y_train.view_desc());
  r.y_eval = poisoned(x.shape(), x.dtype(), device);
  const Tensor rmd = rm.to(device), rvd = rv.to(device);
  DISTILL_DISPATCH(device, batch_norm_apply, xd.view_desc(), shape, rmd.view_desc(),
                   rvd.view_desc(), true, eps, view_or_empty(wd), view_or_empty(bd),
                   r.y_eval.view_desc());
  r.dx = poisoned(x.shape(), x.dtype(), device);
  r.dweight = poisoned({channels}, acc, device);
  r.dbias = poisoned({channels}, acc, device);
  DISTILL_DISPATCH(device, batch_norm_backward, xd.view_desc(), dyd.view_desc(), shape,
                   mean.view_desc(), rstd.view_desc(), view_or_empty(wd), r.dx.view_desc(),
                   r.dweight.view_desc(), r.dbias.view_desc());
  for (Tensor* t : {&r.save_mean, &r.save_rstd, &r.running_mean, &r.running_var, &r.y_train,
                    &r.y_eval, &r.dx, &r.dweight, &r.dbias})
    *t = t->to(Device::cpu());
  return r;
}

class BatchNormBackend : public testing::BackendTest {};

void expect_kernels_match_cpu(Device device, DType dtype, const Shape& shape, double offset,
                              bool affine, uint64_t seed, double stat_tol, double out_tol) {
  SCOPED_TRACE(std::string(dtype_name(dtype)) + " " + shape_str(shape) + " offset " +
               std::to_string(offset) + (affine ? " affine" : ""));
  const int64_t channels = shape[1];
  const DType acc = dtype == DType::F64 ? DType::F64 : DType::F32;
  const Tensor x = random_tensor(shape, seed, DType::F32, offset - 2, offset + 2).to(dtype);
  const Tensor dy = random_tensor(shape, seed + 1).to(dtype);
  const Tensor w = affine ? random_tensor({channels}, seed + 2).to(acc) : Tensor();
  const Tensor b = affine ? random_tensor({channels}, seed + 3).to(acc) : Tensor();
  const Tensor rm = random_tensor({channels}, seed + 4).to(acc);
  const Tensor rv = random_tensor({channels}, seed + 5, DType::F32, 0.5, 2).to(acc);
  const KernelRun ref = run_kernels(x, dy, w, b, rm, rv, Device::cpu(), nullptr);
  const KernelRun got = run_kernels(x, dy, w, b, rm, rv, device, &ref);
  for (const Tensor* t : {&ref.save_mean, &ref.save_rstd, &ref.y_train, &ref.y_eval, &ref.dx,
                          &ref.dweight, &ref.dbias})
    ASSERT_TRUE(all_finite(*t));
  EXPECT_TRUE(all_close(got.save_mean, ref.save_mean, stat_tol, stat_tol)) << "mean";
  EXPECT_TRUE(all_close(got.save_rstd, ref.save_rstd, stat_tol, stat_tol)) << "rstd";
  EXPECT_TRUE(all_close(got.running_mean, ref.running_mean, stat_tol, stat_tol)) << "running mean";
  EXPECT_TRUE(all_close(got.running_var, ref.running_var, stat_tol, stat_tol)) << "running var";
  EXPECT_TRUE(close_to(got.y_train, ref.y_train, out_tol)) << "y (training)";
  EXPECT_TRUE(close_to(got.y_eval, ref.y_eval, out_tol)) << "y (eval)";
  // dx = w*rstd/N * (N*dy - sum(dy) - xhat*sum(dy*xhat)): its terms are of size |w|*rstd*|dy|,
  // and with few values per channel they cancel to rounding noise far below that.
  double dx_terms = 0;
  {
    const auto rstd = ref.save_rstd.to_double_vector(), dyv = dy.to_double_vector();
    const auto wv = affine ? w.to_double_vector() : std::vector<double>(rstd.size(), 1.0);
    double dy_max = 0;
    for (double v : dyv) dy_max = std::max(dy_max, std::fabs(v));
    for (size_t c = 0; c < rstd.size(); ++c)
      dx_terms = std::max(dx_terms, std::fabs(wv[c]) * rstd[c] * dy_max);
  }
  EXPECT_TRUE(close_to(got.dx, ref.dx, out_tol, dx_terms)) << "dx";
  EXPECT_TRUE(close_to(got.dweight, ref.dweight, stat_tol)) << "dweight";
  EXPECT_TRUE(close_to(got.dbias, ref.dbias, stat_tol)) << "dbias";
}

std::vector<Shape> backend_shapes() {
  return {{3, 5, 7, 9},     // plane of 63: scalar elementwise path
          {4, 13, 8, 8},    // plane of 64: 4-wide path, 13 channels
          {2, 3, 1, 1},     // two values per channel
          {33, 7},          // [N, C]
          {64, 3, 32, 32},  // 65536 values per channel: several blocks per channel
          {5, 6, 49}};      // 3-D, CLIP RN50's 7x7 plane
}

TEST_P(BatchNormBackend, F32KernelsMatchCpu) {
  // fp32 shifted sums per block, combined in double, vs the CPU's double two-pass statistics:
  // relative differences of order 1e-7 on values with |mean| up to ~1000 x std; 1e-5 for
  // statistics and for outputs relative to their scale.
  uint64_t seed = 100;
  for (const Shape& s : backend_shapes())
    for (double offset : {0.0, 1000.0})
      expect_kernels_match_cpu(device(), DType::F32, s, offset, offset == 0, seed += 6, 1e-5, 1e-5);
}

TEST_P(BatchNormBackend, Bf16KernelsMatchCpu) {
  // Same bf16 inputs, fp32 statistics (1e-5); y and dx are rounded to bf16 on both sides
  // (relative step 4e-3), at most one rounding apart: 1e-2 of the scale. dweight/dbias are fp32
  // sums of bf16 products: 1e-5.
  uint64_t seed = 500;
  for (const Shape& s : backend_shapes())
    expect_kernels_match_cpu(device(), DType::BF16, s, 0.0, true, seed += 6, 1e-5, 1e-2);
}

TEST_P(BatchNormBackend, OpMatchesCpuThroughAutograd) {
  const Shape shape{6, 5, 7, 3};
  const Tensor x = random_tensor(shape, 900), w = random_tensor({5}, 901),
               b = random_tensor({5}, 902);
  const Tensor rm = random_tensor({5}, 903), rv = random_tensor({5}, 904, DType::F32, 0.5, 2);
  const Tensor seed_grad = random_tensor(shape, 905);
  struct Result {
    Tensor y, dx, dw, db, rm, rv;
  };
  const auto run = [&](Device d, bool training) {
    Tensor xd = x.to(d).detach(), wd = w.to(d).detach(), bd = b.to(d).detach();
    for (Tensor* t : {&xd, &wd, &bd}) t->set_requires_grad(true);
    Result r{Tensor(), Tensor(), Tensor(), Tensor(), rm.to(d).clone(), rv.to(d).clone()};
    r.y = batch_norm(xd, wd, bd, r.rm, r.rv, training, 0.1, 1e-5);
    r.y.backward(seed_grad.to(d));
    r.dx = xd.grad();
    r.dw = wd.grad();
    r.db = bd.grad();
    for (Tensor* t : {&r.y, &r.dx, &r.dw, &r.db, &r.rm, &r.rv}) *t = t->to(Device::cpu());
    return r;
  };
  for (bool training : {true, false}) {
    SCOPED_TRACE(training ? "training" : "eval");
    const Result ref = run(Device::cpu(), training), got = run(device(), training);
    EXPECT_TRUE(close_to(got.y, ref.y, 1e-5));
    EXPECT_TRUE(close_to(got.dx, ref.dx, 1e-5));
    EXPECT_TRUE(close_to(got.dw, ref.dw, 1e-5));
    EXPECT_TRUE(close_to(got.db, ref.db, 1e-5));
    EXPECT_TRUE(all_close(got.rm, ref.rm, 1e-6, 1e-5));
    EXPECT_TRUE(all_close(got.rv, ref.rv, 1e-6, 1e-5));
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, BatchNormBackend, ::testing::ValuesIn(testing::all_backends()),
                         testing::backend_name);

}  // namespace
}  // namespace distill
