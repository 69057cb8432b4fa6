#include "models/clip.h"

#include <cmath>

#include "core/error.h"
#include "core/ops_norm.h"

namespace distill::models {

namespace {
Tensor scaled_randn(const Shape& shape, double scale, Generator* gen) {
  return mul(randn(shape, TensorOptions(DType::F32), gen), scale);
}
}  // namespace

TransformerBlock::TransformerBlock(int64_t width, int64_t heads, int64_t mlp_dim,
                                   nn::Activation act, double eps, Generator* gen)
    : nn::Module("TransformerBlock") {
  ln_1 = register_module("ln_1", std::make_shared<nn::LayerNorm>(width, eps));
  attn =
      register_module("attn", std::make_shared<nn::MultiheadAttention>(width, heads, 0, true, gen));
  ln_2 = register_module("ln_2", std::make_shared<nn::LayerNorm>(width, eps));
  mlp = register_module("mlp", std::make_shared<nn::Mlp>(width, mlp_dim, act, gen));
}

Tensor TransformerBlock::forward(const Tensor& x, const AttentionMask& mask) const {
  nn::ScopedRange range("TransformerBlock");
  Tensor h = add(x, attn->forward(ln_1->forward(x), mask));
  return add(h, mlp->forward(ln_2->forward(h)));
}

VisionTransformer::VisionTransformer(const VitConfig& c, Generator* gen)
    : ImageEncoder("VisionTransformer"), config(c) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.width));
  patch_embed = register_module(
      "patch_embed",
      std::make_shared<nn::Conv2d>(3, c.width, c.patch_size, c.patch_size, 0, false, gen));
  class_embedding = scaled_randn({c.width}, scale, gen);
  register_parameter("class_embedding", &class_embedding);
  position_embedding = scaled_randn({num_tokens(), c.width}, scale, gen);
  register_parameter("position_embedding", &position_embedding);
  ln_pre = register_module("ln_pre", std::make_shared<nn::LayerNorm>(c.width, c.ln_eps));
  layers = register_module("layers", std::make_shared<nn::ModuleList<TransformerBlock>>());
  for (int64_t i = 0; i < c.layers; ++i)
    layers->push_back(
        std::make_shared<TransformerBlock>(c.width, c.heads, c.mlp_dim, c.act, c.ln_eps, gen));
  ln_post = register_module("ln_post", std::make_shared<nn::LayerNorm>(c.width, c.ln_eps));
  if (c.output_dim > 0)
    proj = register_module("proj", std::make_shared<nn::Linear>(c.width, c.output_dim, false, gen));
}

Tensor VisionTransformer::hidden_states(const Tensor& pixels) {
  nn::ScopedRange range("VisionTransformer");
  DISTILL_CHECK(pixels.dim() == 4 && pixels.size(1) == 3 && pixels.size(2) == config.image_size &&
                    pixels.size(3) == config.image_size,
                "VisionTransformer: expected images [N, 3, ", config.image_size, ", ",
                config.image_size, "], got ", pixels.describe());
  const int64_t n = pixels.size(0), w = config.width;
  Tensor x = patch_embed->forward(pixels);                            // [N, W, g, g]
  x = permute(reshape(x, {n, w, x.size(2) * x.size(3)}), {0, 2, 1});  // [N, g*g, W]
  Tensor cls = expand(reshape(class_embedding, {1, 1, w}), {n, 1, w});
  x = add(concat({to_dtype(cls, x.dtype()), x}, 1), position_embedding);
  x = ln_pre->forward(x);
  for (const auto& block : *layers) x = block->forward(x);
  return x;
}

ImageFeatures VisionTransformer::encode(const Tensor& pixels) {
  Tensor x = ln_post->forward(hidden_states(pixels));
  if (proj) x = proj->forward(x);
  return {select(x, 1, 0), x};
}

Bottleneck::Bottleneck(int64_t inplanes, int64_t planes, int64_t stride_, Generator* gen)
    : nn::Module("Bottleneck"), stride(stride_) {
  conv1 =
      register_module("conv1", std::make_shared<nn::Conv2d>(inplanes, planes, 1, 1, 0, false, gen));
  bn1 = register_module("bn1", std::make_shared<nn::BatchNorm2d>(planes));
  conv2 =
      register_module("conv2", std::make_shared<nn::Conv2d>(planes, planes, 3, 1, 1, false, gen));
  bn2 = register_module("bn2", std::make_shared<nn::BatchNorm2d>(planes));
  conv3 = register_module("conv3",
                          std::make_shared<nn::Conv2d>(planes, planes * 4, 1, 1, 0, false, gen));
  bn3 = register_module("bn3", std::make_shared<nn::BatchNorm2d>(planes * 4));
  if (stride > 1 || inplanes != planes * 4) {
    auto ds = std::make_shared<nn::Container>("Downsample");
    downsample_conv = ds->register_module(
        "0", std::make_shared<nn::Conv2d>(inplanes, planes * 4, 1, 1, 0, false, gen));
    downsample_bn = ds->register_module("1", std::make_shared<nn::BatchNorm2d>(planes * 4));
    downsample = register_module("downsample", std::shared_ptr<nn::Module>(ds));
  }
}

Tensor Bottleneck::forward(const Tensor& x) {
  nn::ScopedRange range("Bottleneck");
  Tensor out = relu(bn1->forward(conv1->forward(x)));
  out = relu(bn2->forward(conv2->forward(out)));
  if (stride > 1) out = avg_pool2d(out, {stride, stride});
  out = bn3->forward(conv3->forward(out));
  Tensor identity = x;
  if (downsample) {
    if (stride > 1) identity = avg_pool2d(identity, {stride, stride});
    identity = downsample_bn->forward(downsample_conv->forward(identity));
  }
  return relu(add(out, identity));
}

ModifiedResNet::ModifiedResNet(const ResNetConfig& c, Generator* gen)
    : ImageEncoder("ModifiedResNet"), config(c) {
  const int64_t w = c.width;
  conv1 = register_module("conv1", std::make_shared<nn::Conv2d>(3, w / 2, 3, 2, 1, false, gen));
  bn1 = register_module("bn1", std::make_shared<nn::BatchNorm2d>(w / 2));
  conv2 = register_module("conv2", std::make_shared<nn::Conv2d>(w / 2, w / 2, 3, 1, 1, false, gen));
  bn2 = register_module("bn2", std::make_shared<nn::BatchNorm2d>(w / 2));
  conv3 = register_module("conv3", std::make_shared<nn::Conv2d>(w / 2, w, 3, 1, 1, false, gen));
  bn3 = register_module("bn3", std::make_shared<nn::BatchNorm2d>(w));
  int64_t inplanes = w;
  for (int s = 0; s < 4; ++s) {
    const int64_t planes = w << s, stride = s == 0 ? 1 : 2;
    stages[s] = register_module("layer" + std::to_string(s + 1),
                                std::make_shared<nn::ModuleList<Bottleneck>>());
    for (int64_t b = 0; b < c.blocks[s]; ++b) {
      stages[s]->push_back(
          std::make_shared<Bottleneck>(inplanes, planes, b == 0 ? stride : 1, gen));
      inplanes = planes * 4;
    }
  }
  attnpool = register_module(
      "attnpool", std::make_shared<nn::AttentionPool2d>(c.image_size / 32, c.embed_dim(), c.heads,
                                                        c.output_dim, gen));
}

ImageFeatures ModifiedResNet::encode(const Tensor& pixels) {
  nn::ScopedRange range("ModifiedResNet");
  DISTILL_CHECK(pixels.dim() == 4 && pixels.size(1) == 3 && pixels.size(2) == config.image_size &&
                    pixels.size(3) == config.image_size,
                "ModifiedResNet: expected images [N, 3, ", config.image_size, ", ",
                config.image_size, "], got ", pixels.describe());
  Tensor x = relu(bn1->forward(conv1->forward(pixels)));
  x = relu(bn2->forward(conv2->forward(x)));
  x = relu(bn3->forward(conv3->forward(x)));
  x = avg_pool2d(x, {2, 2});
  for (auto& stage : stages)
    for (const auto& block : *stage) x = block->forward(x);
  const int64_t n = x.size(0), ch = x.size(1), hw = x.size(2) * x.size(3);
  Tensor tokens = permute(reshape(x, {n, ch, hw}), {0, 2, 1});
  return {attnpool->forward(x), contiguous(tokens)};
}

void check_token_ids(const Tensor& ids, int64_t vocab_size, int64_t max_len, const char* model) {
  DISTILL_CHECK(
      ids.defined() && ids.dim() == 2 && (ids.dtype() == DType::I64 || ids.dtype() == DType::I32),
      model, ": expected token ids [N, L] of an integer dtype, got ",
      ids.defined() ? ids.describe() : std::string("nothing"));
  DISTILL_CHECK(ids.size(1) >= 1 && ids.size(1) <= max_len, model, ": ", ids.size(1),
                " tokens per row, the model takes 1 to ", max_len);
  for (int64_t id : ids.to_int_vector())
    DISTILL_CHECK(id >= 0 && id < vocab_size, model, ": token id ", id,
                  " is outside the vocabulary [0, ", vocab_size, ")");
}

ClipTextTransformer::ClipTextTransformer(const ClipTextConfig& c, Generator* gen)
    : TextEncoder("ClipTextTransformer"), config(c) {
  token_embedding = register_module("token_embedding",
                                    std::make_shared<nn::Embedding>(c.vocab_size, c.width, gen));
  token_embedding->weight.copy_(mul(token_embedding->weight, 0.02));  // CLIP's init scale
  position_embedding = scaled_randn({c.context_length, c.width}, 0.01, gen);
  register_parameter("position_embedding", &position_embedding);
  layers = register_module("layers", std::make_shared<nn::ModuleList<TransformerBlock>>());
  for (int64_t i = 0; i < c.layers; ++i)
    layers->push_back(
        std::make_shared<TransformerBlock>(c.width, c.heads, c.mlp_dim, c.act, c.ln_eps, gen));
  ln_final = register_module("ln_final", std::make_shared<nn::LayerNorm>(c.width, c.ln_eps));
  if (c.output_dim > 0)
    proj = register_module("proj", std::make_shared<nn::Linear>(c.width, c.output_dim, false, gen));
}

TextFeatures ClipTextTransformer::encode(const Tensor& ids, const Tensor&) {
  nn::ScopedRange range("ClipTextTransformer");
  check_token_ids(ids, config.vocab_size, config.context_length, "ClipTextTransformer");
  const int64_t n = ids.size(0), len = ids.size(1);
  const Tensor ids_dev = to_device(ids, device());
  Tensor x = add(token_embedding->forward(ids_dev), slice(position_embedding, 0, 0, len));
  AttentionMask causal;
  causal.causal = true;
  for (const auto& block : *layers) x = block->forward(x, causal);
  x = ln_final->forward(x);
  // The pooling position of each row: the first end-of-text token (or the largest id).
  const auto host_ids = ids.to_int_vector();
  std::vector<int64_t> rows(n);
  for (int64_t r = 0; r < n; ++r) {
    int64_t best = 0;
    for (int64_t t = 0; t < len; ++t) {
      const int64_t id = host_ids[r * len + t];
      if (config.eot_token_id >= 0) {
        if (id == config.eot_token_id) {
          best = t;
          break;
        }
        best = len - 1;  // no end token: the last position
      } else if (id > host_ids[r * len + best]) {
        best = t;
      }
    }
    rows[r] = r * len + best;
  }
  Tensor pooled = index_select(reshape(x, {n * len, config.width}), 0,
                               Tensor::from_vector(rows, {n}, x.device()));
  if (proj) pooled = proj->forward(pooled);
  return {pooled, x};
}

}  // namespace distill::models
