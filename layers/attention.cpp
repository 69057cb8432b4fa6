#include "layers/attention.h"

#include <cmath>

#include "core/error.h"

namespace distill::nn {

MultiheadAttention::MultiheadAttention(int64_t dim, int64_t heads_, int64_t kdim, bool bias,
                                       Generator* gen)
    : Module("MultiheadAttention"), heads(heads_) {
  DISTILL_CHECK(heads > 0 && dim % heads == 0, "MultiheadAttention: width ", dim,
                " is not divisible by ", heads, " heads");
  if (kdim == 0) kdim = dim;
  q_proj = register_module("q_proj", std::make_shared<Linear>(dim, dim, bias, gen));
  k_proj = register_module("k_proj", std::make_shared<Linear>(kdim, dim, bias, gen));
  v_proj = register_module("v_proj", std::make_shared<Linear>(kdim, dim, bias, gen));
  out_proj = register_module("out_proj", std::make_shared<Linear>(dim, dim, bias, gen));
}

Tensor multi_head_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t heads,
                            const AttentionMask& mask) {
  const int64_t batch = q.size(0), lq = q.size(1), lk = k.size(1), width = q.size(2);
  DISTILL_CHECK(k.size(0) == batch && v.size(0) == batch && k.size(2) == width && v.size(1) == lk &&
                    v.size(2) == width,
                "multi_head_attention: q ", q.describe(), ", k ", k.describe(), ", v ",
                v.describe(), " do not agree");
  const int64_t head_dim = width / heads;
  auto split = [&](const Tensor& t, int64_t len) {
    return permute(reshape(t, {batch, len, heads, head_dim}), {0, 2, 1, 3});
  };
  Tensor o = attention(split(q, lq), split(k, lk), split(v, lk), mask);
  return reshape(permute(o, {0, 2, 1, 3}), {batch, lq, width});
}

Tensor MultiheadAttention::forward(const Tensor& query, const Tensor& key, const Tensor& value,
                                   const AttentionMask& mask) const {
  ScopedRange range("MultiheadAttention");
  DISTILL_CHECK(query.dim() == 3 && key.dim() == 3 && value.dim() == 3,
                "MultiheadAttention: expected [B, L, width] inputs, got ", query.describe(), ", ",
                key.describe(), ", ", value.describe());
  Tensor o = multi_head_attention(q_proj->forward(query), k_proj->forward(key),
                                  v_proj->forward(value), heads, mask);
  return out_proj->forward(o);
}

AttentionPool2d::AttentionPool2d(int64_t spatial_dim, int64_t dim, int64_t heads_,
                                 int64_t output_dim, Generator* gen)
    : Module("AttentionPool2d"), heads(heads_) {
  DISTILL_CHECK(heads > 0 && dim % heads == 0, "AttentionPool2d: width ", dim,
                " is not divisible by ", heads, " heads");
  positional_embedding =
      mul(randn({spatial_dim * spatial_dim + 1, dim}, TensorOptions(DType::F32), gen),
          1.0 / std::sqrt(static_cast<double>(dim)));
  register_parameter("positional_embedding", &positional_embedding);
  k_proj = register_module("k_proj", std::make_shared<Linear>(dim, dim, true, gen));
  q_proj = register_module("q_proj", std::make_shared<Linear>(dim, dim, true, gen));
  v_proj = register_module("v_proj", std::make_shared<Linear>(dim, dim, true, gen));
  c_proj = register_module("c_proj", std::make_shared<Linear>(dim, output_dim, true, gen));
}

Tensor AttentionPool2d::forward(const Tensor& x) const {
  ScopedRange range("AttentionPool2d");
  DISTILL_CHECK(x.dim() == 4, "AttentionPool2d: expected [N, C, H, W], got ", x.describe());
  const int64_t n = x.size(0), c = x.size(1), hw = x.size(2) * x.size(3);
  DISTILL_CHECK(hw + 1 == positional_embedding.size(0) && c == positional_embedding.size(1),
                "AttentionPool2d: input ", x.describe(), " does not fit the position embedding ",
                shape_str(positional_embedding.shape()));
  Tensor tokens = permute(reshape(x, {n, c, hw}), {0, 2, 1});         // [N, HW, C]
  tokens = concat({mean(tokens, {1}, /*keepdim=*/true), tokens}, 1);  // [N, HW+1, C]
  tokens = add(tokens, positional_embedding);
  Tensor query = slice(tokens, 1, 0, 1);
  Tensor o = multi_head_attention(q_proj->forward(query), k_proj->forward(tokens),
                                  v_proj->forward(tokens), heads);
  return reshape(c_proj->forward(o), {n, c_proj->out_features()});
}

}  // namespace distill::nn
