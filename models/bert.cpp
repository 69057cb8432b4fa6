#include "models/bert.h"

#include "core/error.h"
#include "models/clip.h"

namespace distill::models {

BertLayer::BertLayer(const BertConfig& c, Generator* gen)
    : nn::Module("BertLayer"), heads(c.heads), act(c.act) {
  // HF's nesting: attention.self.{query,key,value}, attention.output.{dense,LayerNorm},
  // intermediate.dense, output.{dense,LayerNorm}.
  auto attention = std::make_shared<nn::Container>("BertAttention");
  auto self = attention->register_module("self", std::make_shared<nn::Container>("BertSelf"));
  query =
      self->register_module("query", std::make_shared<nn::Linear>(c.hidden, c.hidden, true, gen));
  key = self->register_module("key", std::make_shared<nn::Linear>(c.hidden, c.hidden, true, gen));
  value =
      self->register_module("value", std::make_shared<nn::Linear>(c.hidden, c.hidden, true, gen));
  auto attn_output = attention->register_module("output", std::make_shared<nn::Container>());
  attn_out = attn_output->register_module(
      "dense", std::make_shared<nn::Linear>(c.hidden, c.hidden, true, gen));
  attn_norm = attn_output->register_module("LayerNorm",
                                           std::make_shared<nn::LayerNorm>(c.hidden, c.ln_eps));
  register_module("attention", std::shared_ptr<nn::Module>(attention));
  auto inter = std::make_shared<nn::Container>();
  intermediate = inter->register_module(
      "dense", std::make_shared<nn::Linear>(c.hidden, c.intermediate, true, gen));
  register_module("intermediate", std::shared_ptr<nn::Module>(inter));
  auto out = std::make_shared<nn::Container>();
  output = out->register_module("dense",
                                std::make_shared<nn::Linear>(c.intermediate, c.hidden, true, gen));
  output_norm =
      out->register_module("LayerNorm", std::make_shared<nn::LayerNorm>(c.hidden, c.ln_eps));
  register_module("output", std::shared_ptr<nn::Module>(out));
}

Tensor BertLayer::forward(const Tensor& x, const AttentionMask& mask) const {
  nn::ScopedRange range("BertLayer");
  Tensor a =
      nn::multi_head_attention(query->forward(x), key->forward(x), value->forward(x), heads, mask);
  Tensor h = attn_norm->forward(add(x, attn_out->forward(a)));
  Tensor f = output->forward(nn::activate(intermediate->forward(h), act));
  return output_norm->forward(add(h, f));
}

BertModel::BertModel(const BertConfig& c, Generator* gen) : TextEncoder("BertModel"), config(c) {
  auto emb = std::make_shared<nn::Container>("BertEmbeddings");
  word_embeddings = emb->register_module(
      "word_embeddings", std::make_shared<nn::Embedding>(c.vocab_size, c.hidden, gen));
  position_embeddings = emb->register_module(
      "position_embeddings", std::make_shared<nn::Embedding>(c.max_position, c.hidden, gen));
  token_type_embeddings = emb->register_module(
      "token_type_embeddings", std::make_shared<nn::Embedding>(c.type_vocab_size, c.hidden, gen));
  embeddings_norm =
      emb->register_module("LayerNorm", std::make_shared<nn::LayerNorm>(c.hidden, c.ln_eps));
  register_module("embeddings", std::shared_ptr<nn::Module>(emb));
  auto encoder = std::make_shared<nn::Container>("BertEncoder");
  layers = encoder->register_module("layer", std::make_shared<nn::ModuleList<BertLayer>>());
  for (int64_t i = 0; i < c.layers; ++i) layers->push_back(std::make_shared<BertLayer>(c, gen));
  register_module("encoder", std::shared_ptr<nn::Module>(encoder));
  if (c.pooler) {
    auto p = std::make_shared<nn::Container>("BertPooler");
    pooler =
        p->register_module("dense", std::make_shared<nn::Linear>(c.hidden, c.hidden, true, gen));
    register_module("pooler", std::shared_ptr<nn::Module>(p));
  }
}

int64_t BertModel::max_length() const {
  return config.flavour == "roberta" ? config.max_position - config.pad_token_id - 1
                                     : config.max_position;
}

Tensor BertModel::position_ids(const Tensor& ids) const {
  const int64_t n = ids.size(0), len = ids.size(1);
  std::vector<int64_t> pos(static_cast<size_t>(n * len));
  const auto host = ids.to_int_vector();
  for (int64_t r = 0; r < n; ++r) {
    int64_t count = 0;
    for (int64_t t = 0; t < len; ++t) {
      const size_t i = static_cast<size_t>(r * len + t);
      if (config.flavour == "roberta") {
        pos[i] = host[i] == config.pad_token_id ? config.pad_token_id
                                                : config.pad_token_id + 1 + count++;
      } else {
        pos[i] = t;
      }
    }
  }
  return Tensor::from_vector(pos, {n, len});
}

BertOutputs BertModel::forward(const Tensor& ids, const Tensor& attention_mask,
                               const Tensor& token_type_ids) {
  nn::ScopedRange range("BertModel");
  const char* name = config.flavour == "roberta" ? "RobertaModel" : "BertModel";
  check_token_ids(ids, config.vocab_size, max_length(), name);
  const int64_t n = ids.size(0), len = ids.size(1);
  const Device dev = device();
  Tensor mask = attention_mask.defined() ? attention_mask : ones({n, len}, DType::I64);
  DISTILL_CHECK(mask.shape() == ids.shape(), name, ": attention_mask ", mask.describe(),
                " does not match the ids ", ids.describe());
  Tensor types = token_type_ids.defined() ? token_type_ids : zeros({n, len}, DType::I64);
  DISTILL_CHECK(types.shape() == ids.shape(), name, ": token_type_ids ", types.describe(),
                " does not match the ids ", ids.describe());
  check_token_ids(types, config.type_vocab_size, max_length(), name);

  Tensor x = add(word_embeddings->forward(to_device(ids, dev)),
                 position_embeddings->forward(to_device(position_ids(ids), dev)));
  x = add(x, token_type_embeddings->forward(to_device(types, dev)));
  x = embeddings_norm->forward(x);
  AttentionMask keep;
  keep.key_keep = to_device(mask, dev);
  for (const auto& layer : *layers) x = layer->forward(x, keep);

  BertOutputs out;
  out.last_hidden_state = x;
  if (pooler) out.pooler_output = tanh(pooler->forward(select(x, 1, 0)));
  // Masked mean; the count is clamped like sentence-transformers' (1e-9) for all-padding rows.
  Tensor m = unsqueeze(to_dtype(to_device(mask, dev), x.dtype()), 2);
  Tensor count = maximum(sum(m, {1}), full({1}, 1e-9, TensorOptions(x.dtype(), dev)));
  out.mean_pooled = div(sum(mul(x, m), {1}), count);
  return out;
}

TextFeatures BertModel::encode(const Tensor& ids, const Tensor& attention_mask) {
  BertOutputs o = forward(ids, attention_mask);
  Tensor pooled = config.pooling == "mean" ? o.mean_pooled : select(o.last_hidden_state, 1, 0);
  return {pooled, o.last_hidden_state};
}

}  // namespace distill::models
