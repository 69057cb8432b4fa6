// Runs an op on one backend in one dtype and returns its output and input gradients as F32 CPU
// tensors, so the same test body can compare any backend with the CPU reference.
#pragma once

#include <functional>
#include <vector>

#include "tests/test_util.h"

namespace distill::testing {

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;

// `inputs` are CPU tensors: floating ones are cast to `dtype`, moved to `device` and marked
// requires_grad (they are the leaves, contiguous; `fn` may take non-contiguous views of them);
// integer ones (indices) are only moved. The backward pass is seeded with a fixed random
// gradient so every output element matters. Returns {output, grad of each floating input}.
inline std::vector<Tensor> run_on_backend(const OpFn& fn, const std::vector<Tensor>& inputs,
                                          Device device, DType dtype) {
  std::vector<Tensor> leaves;
  for (const Tensor& x : inputs) {
    // detach(): a fresh leaf per run, even when the cast and the move are no-ops.
    Tensor leaf = (is_floating(x.dtype()) ? x.detach().to(dtype) : x).to(device).detach();
    if (is_floating(x.dtype())) leaf.set_requires_grad(true);
    leaves.push_back(leaf);
  }
  Tensor out = fn(leaves);
  const Tensor seed_grad = random_tensor(out.shape(), 777).to(out.dtype()).to(device);
  out.backward(seed_grad);
  std::vector<Tensor> results{out.detach().to(Device::cpu()).to(DType::F32)};
  for (const Tensor& leaf : leaves) {
    if (!is_floating(leaf.dtype())) continue;
    const Tensor g = leaf.grad();
    results.push_back(g.defined() ? g.to(Device::cpu()).to(DType::F32)
                                  : zeros(leaf.shape(), TensorOptions(DType::F32)));
  }
  return results;
}

// Compares `device` with the CPU for one op in one dtype: forward output and every gradient.
inline void expect_backend_matches_cpu(const OpFn& fn, const std::vector<Tensor>& inputs,
                                       Device device, DType dtype, double atol, double rtol) {
  const auto expected = run_on_backend(fn, inputs, Device::cpu(), dtype);
  const auto actual = run_on_backend(fn, inputs, device, dtype);
  ASSERT_EQ(expected.size(), actual.size());
  EXPECT_TRUE(all_close(actual[0], expected[0], atol, rtol)) << "forward, " << dtype_name(dtype);
  for (size_t i = 1; i < actual.size(); ++i)
    EXPECT_TRUE(all_close(actual[i], expected[i], atol, rtol))
        << "gradient of floating input " << i - 1 << ", " << dtype_name(dtype);
}

}  // namespace distill::testing
