// Optimizers: AdamW, SGD (momentum, dampening, Nesterov, weight decay) and global-norm clipping
// against PyTorch's update rules computed by hand in double, lazy state creation, skipped
// params, error messages, and the multi-tensor CUDA kernels against the CPU reference over many
// tensors of odd sizes (misaligned ones and mixed F32/BF16 gradients in one launch).
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace distill {
namespace {

using testing::all_close;
using testing::message_has;
using testing::random_tensor;

std::vector<double> as_double(const Tensor& t) {
  return t.to_double_vector();
}

// ---------------------------------------------------------------- by-hand references

TEST(Optim, AdamWTwoStepsMatchHandComputation) {
  const AdamWConfig cfg{0.01, 0.9, 0.99, 1e-8, 0.1};
  const Tensor p0 = random_tensor({3, 5}, 1), g1 = random_tensor({3, 5}, 2),
               g2 = random_tensor({3, 5}, 3);
  std::vector<Tensor> params{p0.clone()}, exp_avg, exp_avg_sq;  // state created on first use
  adamw_step(params, {g1}, exp_avg, exp_avg_sq, cfg, 1);
  adamw_step(params, {g2}, exp_avg, exp_avg_sq, cfg, 2);

  // The textbook form (Loshchilov & Hutter with PyTorch's placement of eps), in double.
  std::vector<double> p = as_double(p0), m(15, 0.0), v(15, 0.0);
  const std::vector<std::vector<double>> grads{as_double(g1), as_double(g2)};
  for (int t = 1; t <= 2; ++t) {
    for (size_t i = 0; i < p.size(); ++i) {
      const double g = grads[t - 1][i];
      p[i] *= 1 - cfg.lr * cfg.weight_decay;
      m[i] = cfg.beta1 * m[i] + (1 - cfg.beta1) * g;
      v[i] = cfg.beta2 * v[i] + (1 - cfg.beta2) * g * g;
      const double m_hat = m[i] / (1 - std::pow(cfg.beta1, t));
      const double v_hat = v[i] / (1 - std::pow(cfg.beta2, t));
      p[i] -= cfg.lr * m_hat / (std::sqrt(v_hat) + cfg.eps);
    }
  }
  // fp32 storage of p, m and v: a few fp32 ulps of values of order 1.
  EXPECT_TRUE(all_close(params[0], Tensor::from_vector(p, {3, 5}), 1e-6, 1e-6));
  EXPECT_TRUE(all_close(exp_avg[0], Tensor::from_vector(m, {3, 5}), 1e-7, 1e-6));
  EXPECT_TRUE(all_close(exp_avg_sq[0], Tensor::from_vector(v, {3, 5}), 1e-7, 1e-6));
}

// PyTorch's torch.optim.SGD step, in double; `buf` empty means "no buffer yet".
void sgd_by_hand(std::vector<double>& p, const std::vector<double>& grad, std::vector<double>& buf,
                 const SGDConfig& cfg) {
  const bool first = buf.empty();
  if (first) buf.resize(p.size());
  for (size_t i = 0; i < p.size(); ++i) {
    double g = grad[i] + cfg.weight_decay * p[i];
    if (cfg.momentum != 0) {
      buf[i] = first ? g : cfg.momentum * buf[i] + (1 - cfg.dampening) * g;
      g = cfg.nesterov ? g + cfg.momentum * buf[i] : buf[i];
    }
    p[i] -= cfg.lr * g;
  }
}

TEST(Optim, SgdVariantsMatchHandComputation) {
  const std::vector<SGDConfig> configs{
      {0.1, 0.0, 0.0, 0.0, false}, {0.05, 0.9, 0.0, 0.01, true}, {0.05, 0.8, 0.3, 0.02, false}};
  for (const SGDConfig& cfg : configs) {
    SCOPED_TRACE("momentum " + std::to_string(cfg.momentum) + " dampening " +
                 std::to_string(cfg.dampening) + (cfg.nesterov ? " nesterov" : ""));
    const Tensor p0 = random_tensor({7}, 10);
    std::vector<Tensor> params{p0.clone()}, buffers;
    std::vector<double> p = as_double(p0), buf;
    for (int step = 0; step < 3; ++step) {
      const Tensor g = random_tensor({7}, 11 + step);
      sgd_step(params, {g}, buffers, cfg);
      sgd_by_hand(p, as_double(g), buf, cfg);
    }
    EXPECT_TRUE(all_close(params[0], Tensor::from_vector(p, {7}), 1e-6, 1e-6));
    if (cfg.momentum != 0) {
      EXPECT_TRUE(all_close(buffers[0], Tensor::from_vector(buf, {7}), 1e-6, 1e-6));
    }
  }
}

TEST(Optim, ClipGradNormMatchesHandComputation) {
  const Tensor a0 = random_tensor({3, 4}, 20), b0 = random_tensor({5}, 21);
  double sum_sq = 0;
  for (const Tensor& t : {a0, b0})
    for (double v : as_double(t)) sum_sq += v * v;
  const double total = std::sqrt(sum_sq);
  {
    std::vector<Tensor> grads{a0.clone(), Tensor(), b0.clone()};  // undefined grads are skipped
    const Tensor norm = clip_grad_norm(grads, total / 3);
    EXPECT_EQ(norm.dim(), 0);
    EXPECT_NEAR(norm.item(), total, 1e-5 * total);
    const double coef = (total / 3) / (total + 1e-6);
    for (size_t k : {size_t(0), size_t(2)}) {
      const Tensor original = k == 0 ? a0 : b0;
      auto expected = as_double(original);
      for (double& v : expected) v *= coef;
      EXPECT_TRUE(all_close(grads[k], Tensor::from_vector(expected, original.shape()), 1e-7, 1e-6));
    }
  }
  {
    // Below the threshold: the grads are left exactly as they were.
    std::vector<Tensor> grads{a0.clone(), b0.clone()};
    EXPECT_NEAR(clip_grad_norm(grads, 2 * total).item(), total, 1e-5 * total);
    EXPECT_EQ(as_double(grads[0]), as_double(a0));
    EXPECT_EQ(as_double(grads[1]), as_double(b0));
  }
}

TEST(Optim, Bf16GradientsAndSkippedParams) {
  const Tensor p0 = random_tensor({6}, 30), g = random_tensor({6}, 31).to(DType::BF16);
  const AdamWConfig cfg;
  std::vector<Tensor> a{p0.clone(), p0.clone()}, m1, v1;
  adamw_step(a, {g, Tensor()}, m1, v1, cfg, 1);
  std::vector<Tensor> b{p0.clone()}, m2, v2;
  adamw_step(b, {g.to(DType::F32)}, m2, v2, cfg, 1);  // bf16 values are exact in f32
  EXPECT_EQ(as_double(a[0]), as_double(b[0]));
  EXPECT_EQ(as_double(a[1]), as_double(p0));  // no grad: untouched, like PyTorch
  EXPECT_FALSE(m1.size() > 1 && m1[1].defined());
}

TEST(Optim, ErrorsNameTheOpAndTensors) {
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
  std::vector<Tensor> params{random_tensor({4}, 40)}, s1, s2;
  expect_error([&] { adamw_step(params, {random_tensor({5}, 41)}, s1, s2, {}, 1); }, "adamw_step",
               "[5]");
  expect_error([&] { adamw_step(params, {random_tensor({4}, 42)}, s1, s2, {}, 0); }, "adamw_step",
               "step");
  expect_error([&] { adamw_step(params, {}, s1, s2, {}, 1); }, "adamw_step", "0 grads");
  std::vector<Tensor> f64_params{random_tensor({4}, 43, DType::F64)};
  expect_error([&] { adamw_step(f64_params, {random_tensor({4}, 44)}, s1, s2, {}, 1); },
               "adamw_step", "F32");
  expect_error(
      [&] {
        sgd_step(params, {random_tensor({4}, 45)}, s1, {0.1, 0.0, 0.0, 0.0, true});
      },
      "sgd_step", "Nesterov");
  std::vector<Tensor> strided{transpose(random_tensor({3, 2}, 46), 0, 1)};
  expect_error([&] { clip_grad_norm(strided, 1.0); }, "clip_grad_norm", "contiguous");
  std::vector<Tensor> ok{random_tensor({3}, 47)};
  expect_error([&] { clip_grad_norm(ok, -1.0); }, "clip_grad_norm", "max_norm");
}

// ---------------------------------------------------------------- backends

// Many tensors of odd sizes (below, at and across the 4096-element chunk size), one of them a
// view at a 4-byte offset (not 16-byte aligned: the scalar path), grads alternating F32/BF16.
struct TensorSet {
  std::vector<Tensor> params, grads;
};

TensorSet make_set(uint64_t seed, bool mixed_grads) {
  std::vector<int64_t> sizes{1, 3, 4, 5, 17, 64, 255, 1000, 4095, 4096, 4097, 9999, 70001};
  Generator g(seed);
  const auto u = rand({40}, TensorOptions(DType::F64), &g).to_double_vector();
  for (double x : u) sizes.push_back(1 + static_cast<int64_t>(x * 3000));
  TensorSet s;
  for (size_t i = 0; i < sizes.size(); ++i) {
    s.params.push_back(random_tensor({sizes[i]}, seed + 10 + i));
    Tensor grad = random_tensor({sizes[i]}, seed + 1000 + i);
    if (mixed_grads && i % 2 == 1) grad = grad.to(DType::BF16);
    s.grads.push_back(grad);
  }
  // A misaligned param (element offset 1 into a larger buffer) with a misaligned grad.
  s.params.push_back(slice(random_tensor({1031}, seed + 5000), 0, 1, 1031));
  s.grads.push_back(slice(random_tensor({1031}, seed + 5001), 0, 1, 1031));
  return s;
}

std::vector<Tensor> to_device(const std::vector<Tensor>& ts, Device d) {
  std::vector<Tensor> out;
  for (const Tensor& t : ts) {
    // Keep the misaligned view misaligned on the device: move its whole buffer, then slice.
    if (t.offset() != 0) {
      const Tensor base =
          Tensor::make_view(t.storage(), {t.numel() + t.offset()}, {1}, 0, t.dtype());
      out.push_back(slice(base.to(d).clone(), 0, t.offset(), t.offset() + t.numel()));
    } else {
      out.push_back(t.to(d).clone());
    }
  }
  return out;
}

class OptimBackend : public testing::BackendTest {};

::testing::AssertionResult lists_close(const std::vector<Tensor>& got,
                                       const std::vector<Tensor>& want, double atol, double rtol) {
  for (size_t i = 0; i < want.size(); ++i) {
    auto r = all_close(got[i].to(Device::cpu()), want[i], atol, rtol);
    if (!r)
      return r << " (tensor " << i << " of " << want.size() << ", " << want[i].describe() << ")";
  }
  return ::testing::AssertionSuccess();
}

TEST_P(OptimBackend, MultiTensorAdamWMatchesCpu) {
  // fp32 arithmetic on the device vs double on the CPU, both stored as fp32: a few ulps of
  // values of order 1 after three steps, 1e-6.
  const TensorSet s = make_set(100, true);
  const AdamWConfig cfg{3e-3, 0.9, 0.95, 1e-6, 0.05};
  std::vector<Tensor> cpu_params = to_device(s.params, Device::cpu()), cpu_m, cpu_v;
  std::vector<Tensor> dev_params = to_device(s.params, device()), dev_m, dev_v;
  const std::vector<Tensor> dev_grads = to_device(s.grads, device());
  for (int64_t step = 1; step <= 3; ++step) {
    adamw_step(cpu_params, s.grads, cpu_m, cpu_v, cfg, step);
    adamw_step(dev_params, dev_grads, dev_m, dev_v, cfg, step);
  }
  EXPECT_TRUE(lists_close(dev_params, cpu_params, 1e-6, 1e-6)) << "params";
  EXPECT_TRUE(lists_close(dev_m, cpu_m, 1e-6, 1e-6)) << "exp_avg";
  EXPECT_TRUE(lists_close(dev_v, cpu_v, 1e-6, 1e-6)) << "exp_avg_sq";
}

TEST_P(OptimBackend, MultiTensorSgdMatchesCpu) {
  const TensorSet s = make_set(200, true);
  for (const SGDConfig& cfg : std::vector<SGDConfig>{{0.05, 0.9, 0.0, 1e-3, true},
                                                     {0.05, 0.8, 0.2, 0.0, false},
                                                     {0.1, 0.0, 0.0, 1e-2, false}}) {
    SCOPED_TRACE("momentum " + std::to_string(cfg.momentum) + (cfg.nesterov ? " nesterov" : ""));
    std::vector<Tensor> cpu_params = to_device(s.params, Device::cpu()), cpu_buf;
    std::vector<Tensor> dev_params = to_device(s.params, device()), dev_buf;
    const std::vector<Tensor> dev_grads = to_device(s.grads, device());
    for (int step = 0; step < 3; ++step) {
      sgd_step(cpu_params, s.grads, cpu_buf, cfg);
      sgd_step(dev_params, dev_grads, dev_buf, cfg);
    }
    EXPECT_TRUE(lists_close(dev_params, cpu_params, 1e-6, 1e-6)) << "params";
    if (cfg.momentum != 0) {
      EXPECT_TRUE(lists_close(dev_buf, cpu_buf, 1e-6, 1e-6)) << "buffers";
    }
  }
}

TEST_P(OptimBackend, ClipGradNormMatchesCpu) {
  // The norm: fp32 per-block sums added in double vs all-double, 1e-5 relative. Scaled grads:
  // one fp32 multiply (bf16 grads: one bf16 rounding, 2^-8 relative, on both sides).
  const TensorSet s = make_set(300, true);
  for (double max_norm : {1.0, 1e9}) {
    SCOPED_TRACE("max_norm " + std::to_string(max_norm));
    std::vector<Tensor> cpu_grads = to_device(s.grads, Device::cpu());
    std::vector<Tensor> dev_grads = to_device(s.grads, device());
    const double cpu_norm = clip_grad_norm(cpu_grads, max_norm).item();
    const double dev_norm = clip_grad_norm(dev_grads, max_norm).item();
    EXPECT_NEAR(dev_norm, cpu_norm, 1e-5 * cpu_norm);
    for (size_t i = 0; i < cpu_grads.size(); ++i) {
      const double tol = cpu_grads[i].dtype() == DType::BF16 ? 8e-3 : 1e-6;
      EXPECT_TRUE(all_close(dev_grads[i].to(Device::cpu()), cpu_grads[i], tol * 1e-3, tol))
          << "grad " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, OptimBackend, ::testing::ValuesIn(testing::all_backends()),
                         testing::backend_name);

}  // namespace
}  // namespace distill
