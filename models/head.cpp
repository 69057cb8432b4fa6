#include "models/head.h"

#include <cmath>

#include "core/error.h"

namespace distill::models {

nlohmann::json to_json(const HeadConfig& c) {
  return {{"query_dim", c.query_dim}, {"token_dim", c.token_dim}, {"width", c.width},
          {"heads", c.heads},         {"mlp_ratio", c.mlp_ratio}, {"num_classes", c.num_classes},
          {"dropout", c.dropout}};
}

HeadConfig head_config_from_json(const nlohmann::json& j, const std::string& where) {
  HeadConfig c;
  DISTILL_CHECK(j.is_object(), where, ": head config must be a JSON object");
  for (const auto& [key, value] : j.items()) {
    if (key == "dropout") {
      DISTILL_CHECK(value.is_number() && value.get<double>() >= 0 && value.get<double>() < 1, where,
                    ": head dropout must be in [0, 1), got ", value.dump());
      c.dropout = value.get<double>();
      continue;
    }
    int64_t* field = key == "query_dim"     ? &c.query_dim
                     : key == "token_dim"   ? &c.token_dim
                     : key == "width"       ? &c.width
                     : key == "heads"       ? &c.heads
                     : key == "mlp_ratio"   ? &c.mlp_ratio
                     : key == "num_classes" ? &c.num_classes
                                            : nullptr;
    DISTILL_CHECK(field, where, ": unknown head config key '", key, "'");
    DISTILL_CHECK(value.is_number_integer() && value.get<int64_t>() >= 1, where, ": head '", key,
                  "' must be an integer >= 1, got ", value.dump());
    *field = value.get<int64_t>();
  }
  DISTILL_CHECK(c.width % c.heads == 0, where, ": head width ", c.width, " is not divisible by ",
                c.heads, " heads");
  return c;
}

ImageTextHead::ImageTextHead(const HeadConfig& c, Generator* gen)
    : nn::Module("ImageTextHead"), config(c) {
  query_norm = register_module("query_norm", std::make_shared<nn::LayerNorm>(c.query_dim));
  query_proj =
      register_module("query_proj", std::make_shared<nn::Linear>(c.query_dim, c.width, true, gen));
  attn = register_module(
      "attn", std::make_shared<nn::MultiheadAttention>(c.width, c.heads, c.token_dim, true, gen));
  attn_norm = register_module("attn_norm", std::make_shared<nn::LayerNorm>(c.width));
  mlp_norm = register_module("mlp_norm", std::make_shared<nn::LayerNorm>(c.width));
  mlp = register_module(
      "mlp", std::make_shared<nn::Mlp>(c.width, c.width * c.mlp_ratio, nn::Activation::GELU, gen));
  dropout = register_module("dropout", std::make_shared<nn::Dropout>(c.dropout));
  const double bound = 1.0 / std::sqrt(static_cast<double>(c.width));
  class_weight = uniform({c.num_classes, c.width}, -bound, bound, TensorOptions(DType::F32), gen);
  class_bias = zeros({c.num_classes});
  register_parameter("class_weight", &class_weight);
  register_parameter("class_bias", &class_bias);
  caption_classifier = register_module(
      "caption_classifier", std::make_shared<nn::Linear>(c.width, c.num_classes, true, gen));
}

Tensor ImageTextHead::decode(const Tensor& tokens, const Tensor& queries) {
  nn::ScopedRange range("ImageTextHead");
  DISTILL_CHECK(tokens.dim() == 3 && tokens.size(2) == config.token_dim,
                "ImageTextHead: image tokens must be [B, N, ", config.token_dim, "], got ",
                tokens.describe());
  DISTILL_CHECK(queries.dim() == 3 && queries.size(0) == tokens.size(0) &&
                    queries.size(2) == config.query_dim,
                "ImageTextHead: queries must be [B, Q, ", config.query_dim, "], got ",
                queries.describe(), " for tokens ", tokens.describe());
  const Tensor q = query_proj->forward(query_norm->forward(queries));
  Tensor h = attn_norm->forward(add(q, dropout->forward(attn->forward(q, tokens, tokens))));
  return add(h, dropout->forward(mlp->forward(mlp_norm->forward(h))));
}

Tensor ImageTextHead::forward(const Tensor& tokens, const Tensor& class_queries) {
  DISTILL_CHECK(class_queries.dim() == 2 && class_queries.size(0) == config.num_classes,
                "ImageTextHead: class queries must be [", config.num_classes, ", ",
                config.query_dim, "], got ", class_queries.describe());
  const int64_t b = tokens.size(0);
  const Tensor queries = expand(unsqueeze(to_dtype(class_queries, tokens.dtype()), 0),
                                {b, config.num_classes, config.query_dim});
  const Tensor h = decode(tokens, queries);                // [B, C, width]
  return add(sum(mul(h, class_weight), {2}), class_bias);  // [B, C]
}

Tensor ImageTextHead::forward_captions(const Tensor& tokens, const Tensor& caption_tokens,
                                       const Tensor& caption_mask) {
  DISTILL_CHECK(caption_mask.dim() == 2 && caption_mask.size(0) == caption_tokens.size(0) &&
                    caption_mask.size(1) == caption_tokens.size(1),
                "ImageTextHead: caption mask ", caption_mask.describe(),
                " does not match the caption tokens ", caption_tokens.describe());
  // Queries attend to the image tokens only; the caption mask matters for the pooling.
  const Tensor h = decode(tokens, caption_tokens);  // [B, L, width]
  const Tensor m = unsqueeze(to_dtype(to_device(caption_mask, h.device()), h.dtype()), 2);
  const Tensor pooled = div(sum(mul(h, m), {1}), sum(m, {1}));  // masked mean
  return caption_classifier->forward(pooled);
}

EncoderClassifier::EncoderClassifier(std::shared_ptr<ImageEncoder> enc, int64_t num_classes,
                                     Generator* gen)
    : nn::Module("EncoderClassifier") {
  encoder = register_module("encoder", std::move(enc));
  classifier = register_module(
      "classifier", std::make_shared<nn::Linear>(encoder->embed_dim(), num_classes, true, gen));
}

Tensor EncoderClassifier::forward(const Tensor& pixels) {
  return classifier->forward(encoder->encode(pixels).pooled);
}

}  // namespace distill::models
