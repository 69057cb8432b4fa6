// Shared test helpers: backend parameterisation, closeness checks and the float64
// finite-difference gradient check.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/error.h"
#include "core/ops.h"

namespace distill::testing {

// Every backend-comparison test is a TEST_P over these; CUDA instances skip without a GPU.
inline std::vector<Device> all_backends() {
  return {Device::cpu(), Device::cuda(0)};
}
inline std::string backend_name(const ::testing::TestParamInfo<Device>& info) {
  return info.param.is_cpu() ? "cpu" : "cuda";
}
#define DISTILL_SKIP_IF_NO_DEVICE(device)                                            \
  do {                                                                               \
    if ((device).is_cuda() && !::distill::cuda_available())                          \
      GTEST_SKIP() << "no CUDA device"                                               \
                   << (::distill::cuda_compiled() ? "" : " (CUDA not compiled in)"); \
  } while (0)

class BackendTest : public ::testing::TestWithParam<Device> {
 protected:
  void SetUp() override { DISTILL_SKIP_IF_NO_DEVICE(GetParam()); }
  Device device() const { return GetParam(); }
};

// Fresh random inputs, never zero: uniform in [low, high) from a seeded generator.
inline Tensor random_tensor(const Shape& shape, uint64_t seed, DType dtype = DType::F32,
                            double low = -2.0, double high = 2.0) {
  Generator g(seed);
  return uniform(shape, low, high, TensorOptions(dtype, Device::cpu()), &g);
}

// Float64 random input for gradient checks.
inline Tensor f64(const Shape& shape, uint64_t seed, double low = -2.0, double high = 2.0) {
  return random_tensor(shape, seed, DType::F64, low, high);
}

// Whether an error message mentions `s` (tests check that errors name the op, shapes, files).
inline bool message_has(const Error& e, const std::string& s) {
  return std::string(e.what()).find(s) != std::string::npos;
}

// Elementwise |a - b| <= atol + rtol * |b|; reports the worst element.
inline ::testing::AssertionResult all_close(const Tensor& a, const Tensor& b, double atol,
                                            double rtol) {
  if (a.shape() != b.shape())
    return ::testing::AssertionFailure()
           << "shape mismatch: " << a.describe() << " vs " << b.describe();
  const auto va = a.to_double_vector();
  const auto vb = b.to_double_vector();
  double worst = 0;
  size_t worst_i = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    const double err = std::fabs(va[i] - vb[i]);
    const double tol = atol + rtol * std::fabs(vb[i]);
    if (std::isnan(va[i]) != std::isnan(vb[i]) || err > tol) {
      if (!(err <= worst) || std::isnan(err)) {
        worst = err;
        worst_i = i;
      }
    }
  }
  if (worst == 0 && !std::isnan(worst)) {
    bool any_bad = false;
    for (size_t i = 0; i < va.size(); ++i)
      if (std::isnan(va[i]) != std::isnan(vb[i])) any_bad = true;
    if (!any_bad) return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << "max error " << worst << " at element " << worst_i << ": " << va[worst_i] << " vs "
         << vb[worst_i] << " (atol " << atol << ", rtol " << rtol << ")";
}

// Finite-difference gradient check in float64 on the CPU. `fn` maps the inputs (F64, CPU,
// requires_grad set) to one output tensor. The scalar checked is sum(fn(x) * w) for a fixed
// random w, so every output element's gradient is exercised. Central differences, step eps.
inline ::testing::AssertionResult gradcheck(
    const std::function<Tensor(const std::vector<Tensor>&)>& fn, std::vector<Tensor> inputs,
    double eps = 1e-6, double atol = 1e-6, double rtol = 1e-5) {
  for (auto& x : inputs) {
    if (x.dtype() != DType::F64 || !x.device().is_cpu())
      return ::testing::AssertionFailure()
             << "gradcheck needs F64 CPU inputs, got " << x.describe();
    x = x.detach().contiguous();
    x.set_requires_grad(true);
  }
  Tensor out = fn(inputs);
  Generator wg(12345);
  Tensor w = uniform(out.shape(), 0.5, 1.5, TensorOptions(DType::F64), &wg);
  Tensor loss = sum(mul(out, w));
  loss.backward();
  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor analytic = inputs[k].grad();
    if (!analytic.defined()) analytic = zeros(inputs[k].shape(), TensorOptions(DType::F64));
    const auto an = analytic.to_double_vector();
    double* p = inputs[k].data<double>();
    for (int64_t i = 0; i < inputs[k].numel(); ++i) {
      const double orig = p[i];
      double plus, minus;
      {
        NoGradGuard ng;
        p[i] = orig + eps;
        plus = sum(mul(fn(inputs), w)).item();
        p[i] = orig - eps;
        minus = sum(mul(fn(inputs), w)).item();
        p[i] = orig;
      }
      const double numeric = (plus - minus) / (2 * eps);
      if (std::fabs(numeric - an[i]) > atol + rtol * std::fabs(numeric))
        return ::testing::AssertionFailure()
               << "input " << k << " element " << i << ": analytic " << an[i] << " vs numeric "
               << numeric << " (atol " << atol << ", rtol " << rtol << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace distill::testing
