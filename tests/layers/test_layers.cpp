// The module tree (names, state loading, moves) and the attention layers against a plain
// composition of ops.
#include <cmath>

#include "layers/attention.h"
#include "layers/basic.h"
#include "tests/test_util.h"

namespace distill::testing {
namespace {

class Tiny : public nn::Module {
 public:
  Tiny() : nn::Module("Tiny") {
    Generator g(1);
    proj = register_module("proj", std::make_shared<nn::Linear>(4, 3, true, &g));
    norm = register_module("norm", std::make_shared<nn::BatchNorm2d>(3));
    blocks = register_module("blocks", std::make_shared<nn::ModuleList<nn::LayerNorm>>());
    blocks->push_back(std::make_shared<nn::LayerNorm>(3));
    blocks->push_back(std::make_shared<nn::LayerNorm>(3));
  }
  std::shared_ptr<nn::Linear> proj;
  std::shared_ptr<nn::BatchNorm2d> norm;
  std::shared_ptr<nn::ModuleList<nn::LayerNorm>> blocks;
};

std::vector<std::string> names(const nn::NamedTensors& t) {
  std::vector<std::string> out;
  for (const auto& [n, v] : t) out.push_back(n);
  return out;
}

TEST(Module, DottedNamesParametersAndBuffers) {
  Tiny m;
  EXPECT_EQ(names(m.named_parameters()),
            (std::vector<std::string>{"proj.weight", "proj.bias", "norm.weight", "norm.bias",
                                      "blocks.0.weight", "blocks.0.bias", "blocks.1.weight",
                                      "blocks.1.bias"}));
  EXPECT_EQ(names(m.named_buffers()),
            (std::vector<std::string>{"norm.running_mean", "norm.running_var",
                                      "norm.num_batches_tracked"}));
  EXPECT_EQ(m.num_parameters(), 4 * 3 + 3 + 3 + 3 + 4 * 3);
  for (const auto& p : m.parameters()) EXPECT_TRUE(p.requires_grad());
}

TEST(Module, StrictLoadListsEveryProblemAndChangesNothing) {
  Tiny m;
  const auto before = m.proj->weight.to_float_vector();
  nn::NamedTensors state = m.state_dict();
  state.erase(state.begin() + 1);                           // proj.bias missing
  state.emplace_back("proj.extra", random_tensor({2}, 1));  // unexpected
  state[0].second = random_tensor({3, 5}, 2);               // proj.weight mis-shaped
  state[1].second = random_tensor({3}, 3);                  // norm.weight: a new value
  try {
    m.load_state_dict(state, true, "ckpt.safetensors");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, "ckpt.safetensors"));
    EXPECT_TRUE(message_has(e, "missing: proj.bias"));
    EXPECT_TRUE(message_has(e, "unexpected: proj.extra"));
    EXPECT_TRUE(
        message_has(e, "proj.weight: ckpt.safetensors has [3, 5], the model expects [3, 4]"));
  }
  EXPECT_EQ(m.proj->weight.to_float_vector(), before);
  EXPECT_NE(m.norm->weight.to_float_vector(), state[1].second.to_float_vector());
  // Not strict: loads what matches and reports the rest.
  const nn::LoadReport r = m.load_state_dict(state, false);
  EXPECT_EQ(r.missing, std::vector<std::string>{"proj.bias"});
  EXPECT_EQ(r.unexpected, std::vector<std::string>{"proj.extra"});
  EXPECT_EQ(r.mismatched.size(), 1u);
  EXPECT_EQ(m.norm->weight.to_float_vector(), state[1].second.to_float_vector());
}

TEST(Module, LoadCastsToTheModuleDtypeAndMovesKeepLeaves) {
  Tiny m;
  nn::NamedTensors state = m.state_dict();
  for (auto& [n, t] : state)
    if (t.dtype() == DType::F32) t = to_dtype(random_tensor(t.shape(), 7), DType::BF16);
  m.load_state_dict(state);
  EXPECT_EQ(m.proj->weight.dtype(), DType::F32);
  m.to(DType::F64);
  EXPECT_EQ(m.proj->weight.dtype(), DType::F64);
  EXPECT_EQ(m.norm->num_batches_tracked.dtype(), DType::I64);  // integer buffers keep their dtype
  EXPECT_TRUE(m.proj->weight.is_leaf());
  EXPECT_TRUE(m.proj->weight.requires_grad());
  EXPECT_FALSE(m.norm->running_mean.requires_grad());
}

TEST(Module, TrainEvalPropagatesAndBatchNormCountsBatches) {
  Tiny m;
  EXPECT_TRUE(m.norm->is_training());
  m.norm->forward(random_tensor({2, 3, 2, 2}, 4));
  EXPECT_EQ(m.norm->num_batches_tracked.item(), 1);
  m.eval();
  EXPECT_FALSE(m.norm->is_training());
  EXPECT_FALSE((*m.blocks)[1].is_training());
  m.norm->forward(random_tensor({2, 3, 2, 2}, 5));
  EXPECT_EQ(m.norm->num_batches_tracked.item(), 1);
}

Tensor eye_like(int64_t n) {
  std::vector<double> v(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i * n + i)] = 1.0;
  return Tensor::from_vector(v, {n, n});
}

// Multi-head attention written out with matmul and softmax, in float64.
Tensor reference_mha(const nn::MultiheadAttention& a, const Tensor& q_in, const Tensor& kv_in) {
  const Tensor q = a.q_proj->forward(q_in), k = a.k_proj->forward(kv_in),
               v = a.v_proj->forward(kv_in);
  const int64_t b = q.size(0), lq = q.size(1), lk = k.size(1), e = q.size(2), h = a.heads;
  const int64_t d = e / h;
  std::vector<Tensor> heads;
  for (int64_t i = 0; i < h; ++i) {
    const Tensor qh = slice(q, 2, i * d, (i + 1) * d), kh = slice(k, 2, i * d, (i + 1) * d),
                 vh = slice(v, 2, i * d, (i + 1) * d);
    const Tensor s = mul(matmul(qh, transpose(kh, 1, 2)), 1.0 / std::sqrt(double(d)));
    heads.push_back(matmul(softmax(s, -1), vh));
  }
  (void)b, (void)lq, (void)lk;
  return a.out_proj->forward(concat(heads, 2));
}

TEST(Layers, MultiheadCrossAttentionMatchesTheComposition) {
  Generator g(11);
  nn::MultiheadAttention attn(12, 3, /*kdim=*/20, true, &g);
  attn.to(DType::F64);
  const Tensor q = f64({2, 5, 12}, 1), kv = f64({2, 7, 20}, 2);
  EXPECT_TRUE(all_close(attn.forward(q, kv, kv), reference_mha(attn, q, kv), 1e-12, 1e-12));
}

TEST(Layers, MultiheadAttentionGradientsFlowToEveryParameter) {
  Generator g(12);
  nn::MultiheadAttention attn(8, 2, 0, true, &g);
  attn.to(DType::F64);
  const Tensor x = f64({2, 4, 8}, 3);
  sum(mul(attn.forward(x), attn.forward(x))).backward();
  for (const auto& [n, p] : attn.named_parameters()) {
    ASSERT_TRUE(p.grad().defined()) << n;
    double mag = 0;
    for (double v : p.grad().to_double_vector()) mag += std::fabs(v);
    EXPECT_GT(mag, 0) << n;
  }
}

TEST(Layers, AttentionPoolQueriesWithTheMeanToken) {
  Generator g(13);
  nn::AttentionPool2d pool(2, 8, 2, 6, &g);
  pool.to(DType::F64);
  const Tensor x = f64({3, 8, 2, 2}, 4);
  // By hand: tokens [N, 5, C] = (mean, the 4 positions) + position embedding; the mean token
  // queries all 5.
  Tensor tokens = permute(reshape(x, {3, 8, 4}), {0, 2, 1});
  tokens = add(concat({mean(tokens, {1}, true), tokens}, 1), pool.positional_embedding);
  nn::MultiheadAttention ref(8, 2, 0, true);
  ref.to(DType::F64);
  ref.load_state_dict({{"q_proj.weight", pool.q_proj->weight},
                       {"q_proj.bias", pool.q_proj->bias},
                       {"k_proj.weight", pool.k_proj->weight},
                       {"k_proj.bias", pool.k_proj->bias},
                       {"v_proj.weight", pool.v_proj->weight},
                       {"v_proj.bias", pool.v_proj->bias},
                       {"out_proj.weight", eye_like(8)},
                       {"out_proj.bias", zeros({8}, DType::F64)}});
  const Tensor pooled = reference_mha(ref, slice(tokens, 1, 0, 1), tokens);
  const Tensor expected = pool.c_proj->forward(reshape(pooled, {3, 8}));
  EXPECT_TRUE(all_close(pool.forward(x), expected, 1e-12, 1e-12));
}

TEST(Layers, MlpActivationsAndBadNames) {
  EXPECT_EQ(nn::activation_from_name("quick_gelu"), nn::Activation::QuickGELU);
  try {
    nn::activation_from_name("swish");
    FAIL();
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, "swish"));
  }
  Generator g(14);
  nn::Mlp mlp(4, 10, nn::Activation::GELU, &g);
  const Tensor x = random_tensor({3, 4}, 5);
  const Tensor expected = mlp.fc2->forward(gelu(mlp.fc1->forward(x)));
  EXPECT_TRUE(all_close(mlp.forward(x), expected, 0, 0));
}

}  // namespace
}  // namespace distill::testing
