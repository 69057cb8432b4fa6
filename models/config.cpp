#include "models/config.h"

#include <set>

#include "core/error.h"

namespace distill::models {

using nlohmann::json;

namespace {

// Reads the keys of `j` into fields, rejecting unknown keys so a typo is not silently ignored.
class Reader {
 public:
  Reader(const json& j, std::string where, std::set<std::string> allowed)
      : j_(j), where_(std::move(where)) {
    DISTILL_CHECK(j.is_object(), where_, ": model config must be a JSON object, got ", j.dump());
    allowed.insert("type");
    for (const auto& [key, value] : j.items())
      DISTILL_CHECK(allowed.count(key), where_, ": unknown model config key '", key, "'");
  }
  void get(const char* key, int64_t& out, int64_t min_value = 1) const {
    if (!j_.contains(key)) return;
    const auto& v = j_.at(key);
    DISTILL_CHECK(v.is_number_integer() && v.get<int64_t>() >= min_value, where_, ": '", key,
                  "' must be an integer >= ", min_value, ", got ", v.dump());
    out = v.get<int64_t>();
  }
  void get(const char* key, double& out) const {
    if (!j_.contains(key)) return;
    const auto& v = j_.at(key);
    DISTILL_CHECK(v.is_number() && v.get<double>() > 0, where_, ": '", key,
                  "' must be a positive number, got ", v.dump());
    out = v.get<double>();
  }
  void get(const char* key, bool& out) const {
    if (!j_.contains(key)) return;
    DISTILL_CHECK(j_.at(key).is_boolean(), where_, ": '", key, "' must be true or false");
    out = j_.at(key).get<bool>();
  }
  void get(const char* key, std::string& out) const {
    if (!j_.contains(key)) return;
    DISTILL_CHECK(j_.at(key).is_string(), where_, ": '", key, "' must be a string");
    out = j_.at(key).get<std::string>();
  }
  void get(const char* key, nn::Activation& out) const {
    std::string name = nn::activation_name(out);
    get(key, name);
    try {
      out = nn::activation_from_name(name);
    } catch (const Error& e) {
      fail(where_, ": ", e.what());
    }
  }
  const std::string& where() const { return where_; }

 private:
  const json& j_;
  std::string where_;
};

void check_heads(const std::string& where, int64_t width, int64_t heads) {
  DISTILL_CHECK(width % heads == 0, where, ": width ", width, " is not divisible by ", heads,
                " heads");
}

}  // namespace

json to_json(const VitConfig& c) {
  return {{"type", "vit"},        {"image_size", c.image_size}, {"patch_size", c.patch_size},
          {"width", c.width},     {"layers", c.layers},         {"heads", c.heads},
          {"mlp_dim", c.mlp_dim}, {"output_dim", c.output_dim}, {"act", nn::activation_name(c.act)},
          {"ln_eps", c.ln_eps}};
}

json to_json(const ResNetConfig& c) {
  return {{"type", "resnet"},           {"blocks", c.blocks}, {"width", c.width},
          {"image_size", c.image_size}, {"heads", c.heads},   {"output_dim", c.output_dim}};
}

json to_json(const ClipTextConfig& c) {
  return {{"vocab_size", c.vocab_size}, {"context_length", c.context_length},
          {"width", c.width},           {"layers", c.layers},
          {"heads", c.heads},           {"mlp_dim", c.mlp_dim},
          {"output_dim", c.output_dim}, {"act", nn::activation_name(c.act)},
          {"ln_eps", c.ln_eps},         {"eot_token_id", c.eot_token_id}};
}

json to_json(const BertConfig& c) {
  return {{"flavour", c.flavour},
          {"vocab_size", c.vocab_size},
          {"hidden", c.hidden},
          {"layers", c.layers},
          {"heads", c.heads},
          {"intermediate", c.intermediate},
          {"max_position", c.max_position},
          {"type_vocab_size", c.type_vocab_size},
          {"pad_token_id", c.pad_token_id},
          {"ln_eps", c.ln_eps},
          {"act", nn::activation_name(c.act)},
          {"pooler", c.pooler},
          {"pooling", c.pooling}};
}

VitConfig vit_config_from_json(const json& j, const std::string& where) {
  VitConfig c;
  Reader r(j, where,
           {"image_size", "patch_size", "width", "layers", "heads", "mlp_dim", "output_dim", "act",
            "ln_eps"});
  r.get("image_size", c.image_size);
  r.get("patch_size", c.patch_size);
  r.get("width", c.width);
  r.get("layers", c.layers);
  r.get("heads", c.heads);
  r.get("mlp_dim", c.mlp_dim);
  r.get("output_dim", c.output_dim, 0);
  r.get("act", c.act);
  r.get("ln_eps", c.ln_eps);
  DISTILL_CHECK(c.image_size % c.patch_size == 0, where, ": image_size ", c.image_size,
                " is not a multiple of patch_size ", c.patch_size);
  check_heads(where, c.width, c.heads);
  return c;
}

ResNetConfig resnet_config_from_json(const json& j, const std::string& where) {
  ResNetConfig c;
  Reader r(j, where, {"blocks", "width", "image_size", "heads", "output_dim"});
  if (j.contains("blocks")) {
    const auto& b = j.at("blocks");
    DISTILL_CHECK(b.is_array() && b.size() == 4, where, ": 'blocks' must list 4 block counts");
    for (size_t i = 0; i < 4; ++i) {
      DISTILL_CHECK(b[i].is_number_integer() && b[i].get<int64_t>() >= 1, where,
                    ": 'blocks' entries must be integers >= 1");
      c.blocks[i] = b[i].get<int64_t>();
    }
  }
  r.get("width", c.width);
  r.get("image_size", c.image_size);
  r.get("heads", c.heads);
  r.get("output_dim", c.output_dim);
  DISTILL_CHECK(c.image_size % 32 == 0, where, ": image_size ", c.image_size,
                " is not a multiple of 32 (the ResNet's total stride)");
  check_heads(where, c.embed_dim(), c.heads);
  return c;
}

ClipTextConfig clip_text_config_from_json(const json& j, const std::string& where) {
  ClipTextConfig c;
  Reader r(j, where,
           {"vocab_size", "context_length", "width", "layers", "heads", "mlp_dim", "output_dim",
            "act", "ln_eps", "eot_token_id"});
  r.get("vocab_size", c.vocab_size);
  r.get("context_length", c.context_length);
  r.get("width", c.width);
  r.get("layers", c.layers);
  r.get("heads", c.heads);
  r.get("mlp_dim", c.mlp_dim);
  r.get("output_dim", c.output_dim, 0);
  r.get("act", c.act);
  r.get("ln_eps", c.ln_eps);
  r.get("eot_token_id", c.eot_token_id, -1);
  check_heads(where, c.width, c.heads);
  return c;
}

BertConfig bert_config_from_json(const json& j, const std::string& where) {
  BertConfig c;
  Reader r(j, where,
           {"flavour", "vocab_size", "hidden", "layers", "heads", "intermediate", "max_position",
            "type_vocab_size", "pad_token_id", "ln_eps", "act", "pooler", "pooling"});
  r.get("flavour", c.flavour);
  DISTILL_CHECK(c.flavour == "bert" || c.flavour == "roberta", where, ": flavour '", c.flavour,
                "' is neither bert nor roberta");
  r.get("vocab_size", c.vocab_size);
  r.get("hidden", c.hidden);
  r.get("layers", c.layers);
  r.get("heads", c.heads);
  r.get("intermediate", c.intermediate);
  r.get("max_position", c.max_position);
  r.get("type_vocab_size", c.type_vocab_size);
  r.get("pad_token_id", c.pad_token_id, 0);
  r.get("ln_eps", c.ln_eps);
  r.get("act", c.act);
  r.get("pooler", c.pooler);
  r.get("pooling", c.pooling);
  DISTILL_CHECK(c.pooling == "cls" || c.pooling == "mean", where, ": pooling '", c.pooling,
                "' is neither cls nor mean");
  check_heads(where, c.hidden, c.heads);
  return c;
}

std::vector<std::string> preset_names() {
  return {"clip-vit-b-32",  "clip-vit-b-16", "clip-rn50",         "clip-text-b",
          "clip-text-rn50", "roberta-base",  "bert-base-uncased", "all-minilm-l6-v2"};
}

ModelSpec preset(const std::string& name) {
  if (name == "clip-vit-b-32" || name == "clip-vit-b-16") {
    VitConfig c;
    c.patch_size = name == "clip-vit-b-32" ? 32 : 16;
    return {"clip-vision", to_json(c)};
  }
  if (name == "clip-rn50") return {"clip-vision", to_json(ResNetConfig{})};
  if (name == "clip-text-b" || name == "clip-text-rn50") {
    ClipTextConfig c;
    c.output_dim = name == "clip-text-b" ? 512 : 1024;
    return {"clip-text", to_json(c)};
  }
  if (name == "roberta-base") {
    BertConfig c;
    c.flavour = "roberta";
    c.vocab_size = 50265;
    c.max_position = 514;
    c.type_vocab_size = 1;
    c.pad_token_id = 1;
    c.ln_eps = 1e-5;
    return {"roberta", to_json(c)};
  }
  if (name == "bert-base-uncased") return {"bert", to_json(BertConfig{})};
  if (name == "all-minilm-l6-v2") {
    BertConfig c;
    c.hidden = 384;
    c.layers = 6;
    c.intermediate = 1536;
    c.pooling = "mean";
    return {"bert", to_json(c)};
  }
  std::string known;
  for (const auto& n : preset_names()) known += (known.empty() ? "" : ", ") + n;
  fail("unknown model preset '", name, "' (known: ", known, ")");
}

}  // namespace distill::models
