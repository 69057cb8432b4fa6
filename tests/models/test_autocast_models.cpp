// bf16 autocast through whole models, as `distill bench step --precision bf16` and bf16 training
// run them: every tower and the head train under autocast (mixed bf16/f32 tensors meet in
// residual adds and parameter adds, which promote as in PyTorch), and their fp32 master weights
// get fp32 gradients close to the fp32 ones.
#include <cmath>

#include "core/autocast.h"
#include "models/clip.h"
#include "models/head.h"
#include "tests/models/model_test_util.h"
#include "tests/test_util.h"
#include "train/losses.h"

namespace distill {
namespace {

using testing::random_tensor;

double max_abs(const Tensor& t) {
  double m = 0;
  for (double v : t.to_double_vector()) m = std::max(m, std::fabs(v));
  return m;
}

// Gradients of every parameter after one backward of `loss_of`, in f32 and under autocast. Each
// is compared relative to its own scale, floored at 1e-2 of the model's largest gradient: some
// gradients are exactly zero in exact arithmetic (a key bias shifts every logit of a softmax row
// equally) and both runs give rounding noise there.
void expect_autocast_gradients_close(nn::Module& model, const std::function<Tensor()>& loss_of,
                                     double tol) {
  const auto params = model.named_parameters();
  loss_of().backward();
  std::vector<Tensor> fp32;
  double largest = 0;
  for (auto [name, p] : params) {
    fp32.push_back(p.grad().defined() ? p.grad().clone() : Tensor());
    if (p.grad().defined()) largest = std::max(largest, max_abs(p.grad()));
    p.zero_grad();
  }
  {
    AutocastGuard autocast;
    loss_of().backward();
  }
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor& g = params[i].second.grad();
    // A parameter the loss does not reach (caption-mode weights) has no gradient either way.
    ASSERT_EQ(g.defined(), fp32[i].defined()) << params[i].first;
    if (!g.defined()) continue;
    EXPECT_EQ(g.dtype(), DType::F32) << params[i].first;
    const double scale = std::max(max_abs(fp32[i]), 1e-2 * largest);
    // bf16 operands: ~1e-2 relative to each gradient's scale.
    EXPECT_LE(max_abs(sub(g, fp32[i])), tol * scale) << params[i].first;
  }
}

TEST(AutocastModels, MixedDtypesPromoteLikePyTorch) {
  const Tensor a = random_tensor({2, 3}, 1).to(DType::BF16).set_requires_grad(true);
  const Tensor b = random_tensor({3}, 2).set_requires_grad(true);
  const Tensor y = add(a, b);
  EXPECT_EQ(y.dtype(), DType::F32);
  EXPECT_EQ(mul(a, b).dtype(), DType::F32);
  EXPECT_EQ(add(a, b.to(DType::F64)).dtype(), DType::F64);
  EXPECT_EQ(add(a, a.to(DType::F16)).dtype(), DType::F32);
  EXPECT_EQ(eq(a, b).dtype(), DType::U8);
  sum(y).backward();
  // Each input's gradient comes back in its own dtype.
  EXPECT_EQ(a.grad().dtype(), DType::BF16);
  EXPECT_EQ(b.grad().dtype(), DType::F32);
  EXPECT_DOUBLE_EQ(b.grad().to_double_vector()[0], 2.0);
  // Integer with floating is still refused, naming both.
  EXPECT_THROW(add(a, ones({3}, TensorOptions(DType::I64))), Error);
}

TEST(AutocastModels, VitStudentAndHeadTrainInBf16) {
  Generator gen(3);
  auto vit =
      std::make_shared<models::VisionTransformer>(testing::tiny_vit_config(16, 8, 32, 16), &gen);
  models::EncoderClassifier student(vit, 5, &gen);
  const Tensor pixels = random_tensor({4, 3, 16, 16}, 4);
  const Tensor target = random_tensor({4, 5}, 5);
  expect_autocast_gradients_close(
      student,
      [&] { return train::distillation_loss(student.forward(pixels), target, Tensor()).total; },
      5e-2);

  models::HeadConfig hc;
  hc.query_dim = 12;
  hc.token_dim = 16;
  hc.width = 16;
  hc.heads = 2;
  hc.num_classes = 5;
  models::ImageTextHead head(hc, &gen);
  const Tensor tokens = random_tensor({4, 5, 16}, 6), queries = random_tensor({5, 12}, 7);
  const Tensor labels = ones({4}, TensorOptions(DType::I64));
  expect_autocast_gradients_close(
      head, [&] { return cross_entropy(head.forward(tokens, queries), labels); }, 5e-2);
}

// In eval mode (running statistics) the whole tower's gradients match f32 like the ViT's. In
// training mode BatchNorm's backward subtracts per-channel means of dy, and at random init with a
// tiny batch those cancel to a small residual in which bf16's rounding of dy is a large part
// (measured: 60% of the scale at batch 2..32, with BatchNorm alone accurate to 1e-3), so there
// the forward is compared and the gradients only checked finite.
TEST(AutocastModels, ModifiedResNetTrainsInBf16) {
  Generator gen(8);
  models::ResNetConfig rc;
  rc.blocks = {1, 1, 1, 1};
  rc.width = 8;
  rc.image_size = 64;
  rc.heads = 2;
  rc.output_dim = 16;
  auto resnet = std::make_shared<models::ModifiedResNet>(rc, &gen);
  models::EncoderClassifier student(resnet, 3, &gen);
  const Tensor pixels = random_tensor({2, 3, 64, 64}, 9);
  const Tensor labels = zeros({2}, TensorOptions(DType::I64));
  const auto loss_of = [&] { return cross_entropy(student.forward(pixels), labels); };
  student.eval();
  // 1e-1: a ReLU whose input lies within bf16 rounding of 0 flips side, moving a whole term.
  expect_autocast_gradients_close(student, loss_of, 1e-1);

  student.train();
  const double loss_fp32 = loss_of().item();
  AutocastGuard autocast;
  const Tensor loss = loss_of();
  EXPECT_NEAR(loss.item(), loss_fp32, 2e-2 * std::fabs(loss_fp32));
  loss.backward();
  for (auto [name, p] : student.named_parameters())
    for (double v : p.grad().to_double_vector()) ASSERT_TRUE(std::isfinite(v)) << name;
}

}  // namespace
}  // namespace distill
