// The Optimizer: the weight-decay rule on real models (a tiny CLIP ViT, a tiny BERT, a tiny CLIP
// ResNet), AdamW and SGD updates through param groups against hand computations in double,
// gradient accumulation (2 micro-batches of b == 1 batch of 2b), clipping, the state round trip
// for checkpoints, config JSON and bad input.
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "layers/basic.h"
#include "models/bert.h"
#include "models/clip.h"
#include "tests/models/model_test_util.h"
#include "train/optimizer.h"

namespace distill::train {
namespace {

using testing::all_close;
using testing::message_has;
using testing::random_tensor;

std::set<std::string> group_names(const std::vector<ParamGroup>& groups, const std::string& g) {
  std::set<std::string> out;
  for (const auto& group : groups)
    if (group.name == g)
      for (const auto& [name, p] : group.params) out.insert(name);
  return out;
}

TEST(TrainWeightDecayRule, TinyVisionTransformer) {
  const models::VitConfig c = distill::testing::tiny_vit_config();
  Generator g(1);
  models::VisionTransformer vit(c, &g);
  const auto groups = weight_decay_groups(vit, 0.05);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].weight_decay, 0.05);
  EXPECT_EQ(groups[1].weight_decay, 0.0);
  // Decayed: convolution, attention and MLP weights, the projection.
  const std::set<std::string> decay{"patch_embed.weight",
                                    "layers.0.attn.q_proj.weight",
                                    "layers.0.attn.k_proj.weight",
                                    "layers.0.attn.v_proj.weight",
                                    "layers.0.attn.out_proj.weight",
                                    "layers.0.mlp.fc1.weight",
                                    "layers.0.mlp.fc2.weight",
                                    "proj.weight"};
  EXPECT_EQ(group_names(groups, "decay"), decay);
  // Everything else: biases, LayerNorm weights, class_embedding (1-D), position_embedding (2-D,
  // excluded by name).
  const auto no_decay = group_names(groups, "no_decay");
  for (const char* n : {"class_embedding", "position_embedding", "ln_pre.weight", "ln_pre.bias",
                        "layers.0.ln_1.weight", "layers.0.attn.q_proj.bias",
                        "layers.0.mlp.fc2.bias", "ln_post.weight"})
    EXPECT_TRUE(no_decay.count(n)) << n;
  EXPECT_EQ(decay.size() + no_decay.size(), vit.named_parameters().size());
  EXPECT_FALSE(gets_weight_decay(vit, "position_embedding"));
  // The rule's switches: without the embedding rule the 2-D position embedding is decayed.
  WeightDecayRule keep_embeddings;
  keep_embeddings.exclude_embeddings = false;
  EXPECT_TRUE(gets_weight_decay(vit, "position_embedding", keep_embeddings));
  WeightDecayRule named;
  named.exclude_names = {"proj.weight"};  // also matches q_proj.weight and friends
  EXPECT_FALSE(gets_weight_decay(vit, "proj.weight", named));
  EXPECT_FALSE(gets_weight_decay(vit, "layers.0.attn.k_proj.weight", named));
  EXPECT_TRUE(gets_weight_decay(vit, "layers.0.mlp.fc1.weight", named));
  EXPECT_THROW(gets_weight_decay(vit, "no.such.weight"), Error);
}

TEST(TrainWeightDecayRule, TinyBertAndFrozenParameters) {
  models::BertConfig c;
  c.vocab_size = 50;
  c.hidden = 16;
  c.layers = 1;
  c.heads = 2;
  c.intermediate = 32;
  c.max_position = 12;
  Generator g(2);
  models::BertModel bert(c, &g);
  const auto groups = weight_decay_groups(bert, 0.1);
  const auto decay = group_names(groups, "decay");
  const auto no_decay = group_names(groups, "no_decay");
  // The three embedding tables are nn::Embedding weights: no decay.
  for (const char* n :
       {"embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
        "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight",
        "encoder.layer.0.attention.output.LayerNorm.bias",
        "encoder.layer.0.attention.self.query.bias", "pooler.dense.bias"})
    EXPECT_TRUE(no_decay.count(n)) << n;
  const std::set<std::string> want_decay{"encoder.layer.0.attention.self.query.weight",
                                         "encoder.layer.0.attention.self.key.weight",
                                         "encoder.layer.0.attention.self.value.weight",
                                         "encoder.layer.0.attention.output.dense.weight",
                                         "encoder.layer.0.intermediate.dense.weight",
                                         "encoder.layer.0.output.dense.weight",
                                         "pooler.dense.weight"};
  EXPECT_EQ(decay, want_decay);

  // Frozen parameters join no group (stage 1 freezes the encoders).
  bert.requires_grad_(false);
  bert.pooler->weight.set_requires_grad(true);
  const auto frozen = weight_decay_groups(bert, 0.1);
  ASSERT_EQ(frozen.size(), 1u);
  EXPECT_EQ(frozen[0].name, "decay");
  ASSERT_EQ(frozen[0].params.size(), 1u);
  EXPECT_EQ(frozen[0].params[0].first, "pooler.dense.weight");
  bert.requires_grad_(false);
  EXPECT_THROW(Optimizer(bert, OptimizerConfig{}, LrSchedule{}), Error);
}

TEST(TrainWeightDecayRule, TinyClipResNetAttentionPool) {
  models::ResNetConfig c;
  c.blocks = {1, 1, 1, 1};
  c.width = 8;
  c.image_size = 32;
  c.heads = 2;
  c.output_dim = 16;
  Generator g(3);
  models::ModifiedResNet resnet(c, &g);
  // attnpool.positional_embedding is 2-D: excluded by its name; convolutions are decayed.
  EXPECT_FALSE(gets_weight_decay(resnet, "attnpool.positional_embedding"));
  EXPECT_TRUE(gets_weight_decay(resnet, "conv1.weight"));
  EXPECT_TRUE(gets_weight_decay(resnet, "layer1.0.downsample.0.weight"));
  EXPECT_FALSE(gets_weight_decay(resnet, "bn1.weight"));
}

// ---------------------------------------------------------------- updates by hand

// y = x W^T + b for fixed x; loss = sum(y * w_out): dL/dW = w_out^T x, dL/db = sum_rows(w_out).
struct LinearProblem {
  Generator gen{11};
  nn::Linear layer{3, 2, true, &gen};
  Tensor x = random_tensor({4, 3}, 12), w_out = random_tensor({4, 2}, 13);
  Tensor loss() const { return sum(mul(layer.forward(x), w_out)); }
  std::vector<double> grad_weight() const {  // [2, 3]
    const auto xs = x.to_double_vector(), ws = w_out.to_double_vector();
    std::vector<double> g(6, 0.0);
    for (int o = 0; o < 2; ++o)
      for (int i = 0; i < 3; ++i)
        for (int r = 0; r < 4; ++r) g[o * 3 + i] += ws[r * 2 + o] * xs[r * 3 + i];
    return g;
  }
  std::vector<double> grad_bias() const {
    const auto ws = w_out.to_double_vector();
    std::vector<double> g(2, 0.0);
    for (int o = 0; o < 2; ++o)
      for (int r = 0; r < 4; ++r) g[o] += ws[r * 2 + o];
    return g;
  }
};

TEST(TrainOptimizer, AdamWGroupsScheduleAndLrScaleMatchHandComputation) {
  LinearProblem prob;
  OptimizerConfig cfg;
  cfg.weight_decay = 0.1;
  cfg.beta2 = 0.99;
  LrSchedule sched;
  sched.kind = ScheduleKind::Cosine;
  sched.base_lr = 0.01;
  sched.warmup_steps = 1;
  sched.total_steps = 4;
  auto groups = weight_decay_groups(prob.layer, cfg.weight_decay);
  ASSERT_EQ(groups.size(), 2u);
  groups[1].lr_scale = 0.5;  // the bias group at half the lr
  Optimizer opt(groups, cfg, sched);

  std::vector<double> w = prob.layer.weight.to_double_vector(),
                      b = prob.layer.bias.to_double_vector();
  std::vector<double> mw(6, 0), vw(6, 0), mb(2, 0), vb(2, 0);
  const auto gw = prob.grad_weight(), gb = prob.grad_bias();  // the loss is linear: fixed grads
  auto adamw = [&](std::vector<double>& p, std::vector<double>& m, std::vector<double>& v,
                   const std::vector<double>& g, double lr, double wd, int t) {
    for (size_t i = 0; i < p.size(); ++i) {
      p[i] *= 1 - lr * wd;
      m[i] = cfg.beta1 * m[i] + (1 - cfg.beta1) * g[i];
      v[i] = cfg.beta2 * v[i] + (1 - cfg.beta2) * g[i] * g[i];
      const double mh = m[i] / (1 - std::pow(cfg.beta1, t)),
                   vh = v[i] / (1 - std::pow(cfg.beta2, t));
      p[i] -= lr * mh / (std::sqrt(vh) + cfg.eps);
    }
  };
  for (int t = 1; t <= 3; ++t) {
    const StepInfo info = opt.accumulate(prob.loss());
    ASSERT_TRUE(info.stepped);
    EXPECT_EQ(info.step, t);
    EXPECT_DOUBLE_EQ(info.lr, sched.lr(t - 1));
    adamw(w, mw, vw, gw, sched.lr(t - 1), 0.1, t);
    adamw(b, mb, vb, gb, 0.5 * sched.lr(t - 1), 0.0, t);
  }
  EXPECT_EQ(opt.step_count(), 3);
  EXPECT_TRUE(all_close(prob.layer.weight, Tensor::from_vector(w, {2, 3}), 1e-6, 1e-6));
  EXPECT_TRUE(all_close(prob.layer.bias, Tensor::from_vector(b, {2}), 1e-6, 1e-6));
}

TEST(TrainOptimizer, SgdNesterovWithWeightDecayMatchesHandComputation) {
  LinearProblem prob;
  OptimizerConfig cfg;
  cfg.kind = OptimizerKind::SGD;
  cfg.momentum = 0.9;
  cfg.nesterov = true;
  cfg.weight_decay = 0.01;
  LrSchedule sched;
  sched.base_lr = 0.1;
  Optimizer opt(prob.layer, cfg, sched);
  std::vector<double> w = prob.layer.weight.to_double_vector(), buf(6, 0);
  const auto gw = prob.grad_weight();
  for (int t = 1; t <= 2; ++t) {
    opt.accumulate(prob.loss());
    for (size_t i = 0; i < w.size(); ++i) {
      const double g = gw[i] + 0.01 * w[i];    // L2
      buf[i] = t == 1 ? g : 0.9 * buf[i] + g;  // PyTorch: the first buffer is the gradient
      w[i] -= 0.1 * (g + 0.9 * buf[i]);        // Nesterov
    }
  }
  EXPECT_TRUE(all_close(prob.layer.weight, Tensor::from_vector(w, {2, 3}), 1e-6, 1e-6));
}

TEST(TrainOptimizer, ClippingScalesToTheGlobalNorm) {
  LinearProblem prob;
  OptimizerConfig cfg;
  cfg.kind = OptimizerKind::SGD;
  cfg.momentum = 0;
  cfg.max_grad_norm = 0.5;
  LrSchedule sched;
  sched.base_lr = 1.0;
  const auto w0 = prob.layer.weight.to_double_vector();
  Optimizer opt(prob.layer, cfg, sched);
  const StepInfo info = opt.accumulate(prob.loss());
  double sq = 0;
  for (double g : prob.grad_weight()) sq += g * g;
  for (double g : prob.grad_bias()) sq += g * g;
  const double norm = std::sqrt(sq);
  ASSERT_GT(norm, 0.5);  // the random problem's gradient is large enough to be clipped
  EXPECT_NEAR(info.grad_norm, norm, 1e-5 * norm);
  const double scale = 0.5 / (norm + 1e-6);
  std::vector<double> want = w0;
  const auto gw = prob.grad_weight();
  for (size_t i = 0; i < want.size(); ++i) want[i] -= scale * gw[i];
  EXPECT_TRUE(all_close(prob.layer.weight, Tensor::from_vector(want, {2, 3}), 1e-6, 1e-5));
}

// ---------------------------------------------------------------- gradient accumulation

TEST(TrainOptimizer, TwoMicroBatchesEqualOneBatchOfTwiceTheSize) {
  const Tensor x = random_tensor({8, 6}, 21);
  const Tensor y = Tensor::from_vector(std::vector<int64_t>{0, 3, 1, 2, 2, 0, 3, 1}, {8});
  auto run = [&](int64_t accumulation) {
    Generator g(22);
    auto model = std::make_shared<nn::Linear>(6, 4, true, &g);
    OptimizerConfig cfg;
    cfg.kind = OptimizerKind::SGD;
    cfg.momentum = 0.9;
    cfg.accumulation_steps = accumulation;
    LrSchedule sched;
    sched.base_lr = 0.5;
    Optimizer opt(*model, cfg, sched);
    for (int step = 0; step < 2; ++step) {
      const int64_t b = 8 / accumulation;
      for (int64_t m = 0; m < accumulation; ++m) {
        const Tensor loss = cross_entropy(model->forward(slice(x, 0, m * b, (m + 1) * b)),
                                          slice(y, 0, m * b, (m + 1) * b));
        const StepInfo info = opt.accumulate(loss);  // the plain mean loss of the micro-batch
        EXPECT_EQ(info.stepped, m == accumulation - 1);
      }
    }
    EXPECT_EQ(opt.step_count(), 2);
    return std::vector<Tensor>{model->weight.clone(), model->bias.clone(),
                               model->weight.grad().clone(), model->bias.grad().clone()};
  };
  const auto whole = run(1), halves = run(2), quarters = run(4);
  for (size_t i = 0; i < whole.size(); ++i) {
    // fp32: the micro-batch sums round differently from the whole-batch sum.
    EXPECT_TRUE(all_close(halves[i], whole[i], 1e-6, 1e-5)) << "tensor " << i;
    EXPECT_TRUE(all_close(quarters[i], whole[i], 1e-6, 1e-5)) << "tensor " << i;
  }
}

// ---------------------------------------------------------------- state for checkpoints

TEST(TrainOptimizer, StateRoundTripsAndBadStateIsAClearError) {
  LinearProblem prob;
  OptimizerConfig cfg;
  cfg.weight_decay = 0.05;
  Optimizer opt(prob.layer, cfg, LrSchedule{});
  opt.accumulate(prob.loss());
  opt.accumulate(prob.loss());
  const nn::NamedTensors state = opt.state_tensors();
  std::set<std::string> names;
  for (const auto& [n, t] : state) names.insert(n);
  EXPECT_EQ(names, (std::set<std::string>{"weight.exp_avg", "weight.exp_avg_sq", "bias.exp_avg",
                                          "bias.exp_avg_sq", "step"}));

  Optimizer fresh(prob.layer, cfg, LrSchedule{});
  fresh.load_state(state, "test state");
  EXPECT_EQ(fresh.step_count(), 2);
  const nn::NamedTensors again = fresh.state_tensors();
  ASSERT_EQ(again.size(), state.size());
  for (size_t i = 0; i < state.size(); ++i) {
    EXPECT_EQ(again[i].first, state[i].first);
    EXPECT_TRUE(all_close(again[i].second, state[i].second, 0, 0)) << state[i].first;
    if (state[i].second.dtype() == DType::F32) {  // a private copy, not the same storage
      EXPECT_NE(again[i].second.data_ptr(), state[i].second.data_ptr());
    }
  }

  auto expect_error = [&](Optimizer& o, const nn::NamedTensors& s, const std::string& text) {
    try {
      o.load_state(s, "ckpt.safetensors");
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_TRUE(message_has(e, "ckpt.safetensors")) << e.what();
      EXPECT_TRUE(message_has(e, text)) << e.what();
    }
  };
  nn::NamedTensors extra = state;
  extra.emplace_back("head.weight.exp_avg", zeros({2, 3}));
  expect_error(fresh, extra, "unexpected: head.weight.exp_avg");
  nn::NamedTensors bad_shape = state;
  bad_shape[0].second = zeros({3, 2});
  expect_error(fresh, bad_shape, "wrong shape");
  nn::NamedTensors no_step(state.begin(), state.end() - 1);
  expect_error(fresh, no_step, "missing: step");
  EXPECT_EQ(fresh.step_count(), 2);  // nothing was modified by the failed loads
  OptimizerConfig sgd;
  sgd.kind = OptimizerKind::SGD;
  Optimizer other_kind(prob.layer, sgd, LrSchedule{});
  expect_error(other_kind, state, "sgd");

  // Mid-accumulation state is refused (the pending gradients are not part of it).
  OptimizerConfig accum = cfg;
  accum.accumulation_steps = 2;
  Optimizer pending(prob.layer, accum, LrSchedule{});
  pending.accumulate(prob.loss());
  EXPECT_EQ(pending.pending_micro_batches(), 1);
  EXPECT_THROW(pending.state_tensors(), Error);
}

TEST(TrainOptimizer, ConfigJsonAndBadInput) {
  const OptimizerConfig c = optimizer_config_from_json({{"kind", "sgd"},
                                                        {"momentum", 0.8},
                                                        {"nesterov", true},
                                                        {"weight_decay", 5e-4},
                                                        {"accumulation_steps", 4},
                                                        {"max_grad_norm", 1.0},
                                                        {"no_decay_names", {"logit_scale"}}},
                                                       "run.json: optimizer");
  EXPECT_EQ(c.kind, OptimizerKind::SGD);
  EXPECT_EQ(c.accumulation_steps, 4);
  EXPECT_EQ(c.decay_rule.exclude_names, std::vector<std::string>{"logit_scale"});
  const OptimizerConfig again = optimizer_config_from_json(to_json(c), "round trip");
  EXPECT_EQ(to_json(again), to_json(c));
  try {
    optimizer_config_from_json({{"kind", "adamw"}, {"betas", {0.9, 0.95}}}, "run.json: optimizer");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, "run.json: optimizer")) << e.what();
    EXPECT_TRUE(message_has(e, "betas")) << e.what();
  }
  EXPECT_THROW(optimizer_config_from_json({{"kind", "lamb"}}, "cfg"), Error);
  EXPECT_THROW(optimizer_config_from_json({{"accumulation_steps", 0}}, "cfg"), Error);
  EXPECT_THROW(
      optimizer_config_from_json({{"kind", "sgd"}, {"momentum", 0}, {"nesterov", true}}, "cfg"),
      Error);

  LinearProblem prob;
  Optimizer opt(prob.layer, OptimizerConfig{}, LrSchedule{});
  EXPECT_THROW(opt.accumulate(prob.layer.forward(prob.x)), Error);  // not a scalar
  Tensor no_grad_loss;
  {
    NoGradGuard ng;
    no_grad_loss = prob.loss();
  }
  try {
    opt.accumulate(no_grad_loss);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, "does not require grad")) << e.what();
  }
}

}  // namespace
}  // namespace distill::train
