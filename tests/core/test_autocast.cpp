// Mixed precision: which ops run in bf16 under autocast, that fp32 master weights get fp32
// gradients close to the fp32 ones, and that a small model still trains.
#include "core/autocast.h"
#include "tests/test_util.h"

namespace distill {
namespace {

using testing::all_close;
using testing::random_tensor;

TEST(Autocast, MatrixOpsRunInBf16AndNormsInFp32) {
  Tensor x = random_tensor({4, 8}, 1), w = random_tensor({6, 8}, 2), b = random_tensor({6}, 3);
  Tensor g = random_tensor({6}, 4), beta = random_tensor({6}, 5);
  {
    AutocastGuard autocast;
    EXPECT_TRUE(autocast_enabled());
    Tensor y = linear(x, w, b);
    EXPECT_EQ(y.dtype(), DType::BF16);
    EXPECT_EQ(matmul(x, transpose(w, 0, 1)).dtype(), DType::BF16);
    EXPECT_EQ(layer_norm(y, g, beta).dtype(), DType::F32);
    EXPECT_EQ(softmax(y).dtype(), DType::F32);
    EXPECT_EQ(log_softmax(y).dtype(), DType::F32);
    Tensor q = random_tensor({1, 2, 5, 8}, 10);
    EXPECT_EQ(attention(q, q, q).dtype(), DType::BF16);
    // F64 is never touched.
    EXPECT_EQ(matmul(x.to(DType::F64), x.to(DType::F64).transpose(0, 1)).dtype(), DType::F64);
  }
  EXPECT_FALSE(autocast_enabled());
  EXPECT_EQ(linear(x, w, b).dtype(), DType::F32);
  EXPECT_THROW(AutocastGuard bad(DType::F32), Error);
}

TEST(Autocast, MasterWeightsGetFp32GradientsCloseToFp32Training) {
  Tensor x = random_tensor({16, 32}, 6);
  Tensor w = mul(random_tensor({24, 32}, 7), 0.2).set_requires_grad(true);
  Tensor b = random_tensor({24}, 8).set_requires_grad(true);
  auto loss_of = [&] { return mean(mul(gelu(linear(x, w, b)), 1.0)); };
  loss_of().backward();
  const Tensor w_grad_fp32 = w.grad(), b_grad_fp32 = b.grad();
  w.zero_grad();
  b.zero_grad();
  {
    AutocastGuard autocast;
    Tensor loss = loss_of();
    EXPECT_EQ(loss.dtype(), DType::BF16);
    loss.backward();
  }
  ASSERT_TRUE(w.grad().defined());
  EXPECT_EQ(w.grad().dtype(), DType::F32);
  EXPECT_EQ(b.grad().dtype(), DType::F32);
  // bf16 operands: relative error of order 1e-2 against the fp32 gradients.
  EXPECT_TRUE(all_close(w.grad(), w_grad_fp32, 2e-3, 3e-2));
  EXPECT_TRUE(all_close(b.grad(), b_grad_fp32, 2e-3, 3e-2));
}

TEST(Autocast, BatchNormKeepsItsRunningStatisticsInPlace) {
  Tensor x = random_tensor({4, 3, 2, 2}, 9).to(DType::BF16);
  Tensor running_mean = zeros({3}), running_var = ones({3});
  Tensor weight = ones({3}), bias = zeros({3});
  AutocastGuard autocast;
  Tensor y = batch_norm(x, weight, bias, running_mean, running_var, true, 0.1, 1e-5);
  EXPECT_EQ(y.dtype(), DType::F32);
  EXPECT_EQ(running_mean.dtype(), DType::F32);
  // The update reached the caller's tensors (not a cast copy).
  EXPECT_GT(sum(abs(running_mean)).item(), 0.0);
}

}  // namespace
}  // namespace distill
