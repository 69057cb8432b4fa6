// The image-text head and the encoder classifier.
#include <set>

#include "models/clip.h"
#include "models/head.h"
#include "tests/models/model_test_util.h"

namespace distill::testing {
namespace {

models::HeadConfig small_head() {
  models::HeadConfig c;
  c.query_dim = 6;
  c.token_dim = 10;
  c.width = 8;
  c.heads = 2;
  c.mlp_ratio = 2;
  c.num_classes = 5;
  return c;
}

TEST(ImageTextHead, ClassLogitsFollowTheDesignFormula) {
  Generator g(1);
  models::ImageTextHead head(small_head(), &g);
  head.to(DType::F64);
  const Tensor tokens = f64({3, 7, 10}, 2), queries = f64({5, 6}, 3);
  const Tensor logits = head.forward(tokens, queries);
  ASSERT_EQ(logits.shape(), (Shape{3, 5}));
  // By hand: Q = LN(T) W_q; H = LN(Q + MHA(Q, X, X)); H = H + MLP(LN(H)); <H_c, w_c> + b_c.
  const Tensor q =
      expand(unsqueeze(head.query_proj->forward(head.query_norm->forward(queries)), 0), {3, 5, 8});
  Tensor h = head.attn_norm->forward(add(q, head.attn->forward(q, tokens, tokens)));
  h = add(h, head.mlp->forward(head.mlp_norm->forward(h)));
  const Tensor expected = add(sum(mul(h, head.class_weight), {2}), head.class_bias);
  EXPECT_TRUE(all_close(logits, expected, 1e-12, 1e-12));
}

TEST(ImageTextHead, OnlyTheHeadLearnsWhenTheEncodersAreFrozen) {
  Generator g(4);
  models::ImageTextHead head(small_head(), &g);
  const Tensor tokens = random_tensor({2, 7, 10}, 5).set_requires_grad(false);
  const Tensor queries = random_tensor({5, 6}, 6);
  const Tensor labels = Tensor::from_vector(std::vector<int64_t>{1, 4}, {2});
  cross_entropy(head.forward(tokens, queries), labels).backward();
  for (const auto& [n, p] : head.named_parameters()) {
    if (n.rfind("caption_classifier", 0) == 0) {
      EXPECT_FALSE(p.grad().defined()) << n;  // unused in class-query mode
    } else {
      ASSERT_TRUE(p.grad().defined()) << n;
    }
  }
  EXPECT_FALSE(tokens.grad().defined());
}

TEST(ImageTextHead, CaptionModeIgnoresPaddedCaptionTokens) {
  Generator g(7);
  models::ImageTextHead head(small_head(), &g);
  head.to(DType::F64);
  const Tensor tokens = f64({2, 7, 10}, 8);
  Tensor caption = f64({2, 4, 6}, 9);
  const Tensor mask = Tensor::from_vector(std::vector<int64_t>{1, 1, 1, 0, 1, 1, 0, 0}, {2, 4});
  const Tensor a = head.forward_captions(tokens, caption, mask);
  ASSERT_EQ(a.shape(), (Shape{2, 5}));
  // Change only the padded positions: the logits stay.
  Tensor changed = clone(caption);
  slice(slice(changed, 0, 0, 1), 1, 3, 4).copy_(f64({1, 1, 6}, 10));
  slice(slice(changed, 0, 1, 2), 1, 2, 4).copy_(f64({1, 2, 6}, 11));
  EXPECT_TRUE(all_close(head.forward_captions(tokens, changed, mask), a, 1e-12, 1e-12));
  // Changing a real token moves them.
  slice(slice(changed, 0, 0, 1), 1, 0, 1).copy_(f64({1, 1, 6}, 12));
  EXPECT_FALSE(all_close(head.forward_captions(tokens, changed, mask), a, 1e-6, 1e-6));
}

TEST(ImageTextHead, BadShapesAndConfigsAreNamed) {
  Generator g(13);
  models::ImageTextHead head(small_head(), &g);
  try {
    head.forward(random_tensor({2, 7, 9}, 1), random_tensor({5, 6}, 2));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, "image tokens must be [B, N, 10]"));
  }
  EXPECT_THROW(head.forward(random_tensor({2, 7, 10}, 1), random_tensor({4, 6}, 2)), Error);
  EXPECT_THROW(models::head_config_from_json({{"width", 10}, {"heads", 3}}, "cfg.json"), Error);
  try {
    models::head_config_from_json({{"widht", 10}}, "cfg.json");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, "cfg.json"));
    EXPECT_TRUE(message_has(e, "widht"));
  }
}

TEST(EncoderClassifier, LogitsFromThePooledEmbedding) {
  Generator g(14);
  const models::VitConfig vc = tiny_vit_config(16, 8, 16, 12);
  auto vit = std::make_shared<models::VisionTransformer>(vc, &g);
  models::EncoderClassifier student(vit, 3, &g);
  const Tensor pixels = random_tensor({2, 3, 16, 16}, 15);
  const Tensor logits = student.forward(pixels);
  EXPECT_EQ(logits.shape(), (Shape{2, 3}));
  EXPECT_TRUE(all_close(logits, student.classifier->forward(vit->encode(pixels).pooled), 0, 0));
  std::set<std::string> names;
  for (const auto& [n, p] : student.named_parameters()) names.insert(n);
  EXPECT_TRUE(names.count("encoder.patch_embed.weight"));
  EXPECT_TRUE(names.count("classifier.weight"));
}

}  // namespace
}  // namespace distill::testing
