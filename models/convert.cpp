#include "models/convert.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>

#include "core/autograd.h"
#include "core/error.h"
#include "core/safetensors.h"
#include "models/name_maps.h"

#ifndef DISTILL_SOURCE_DIR_FOR_MANIFESTS
#define DISTILL_SOURCE_DIR_FOR_MANIFESTS ""
#endif

namespace distill::models {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

bool starts_with(const std::string& s, const std::string& p) {
  return s.rfind(p, 0) == 0;
}

json read_json_file(const fs::path& path) {
  std::ifstream in(path);
  DISTILL_CHECK(in.good(), "convert: cannot open ", path.string());
  json j;
  try {
    j = json::parse(in);
  } catch (const std::exception& e) {
    fail("convert: ", path.string(), " is not valid JSON: ", e.what());
  }
  DISTILL_CHECK(j.is_object(), "convert: ", path.string(), " must hold a JSON object, got ",
                j.type_name());
  return j;
}

// The weights file and the optional configs of a checkpoint path.
struct CheckpointFiles {
  fs::path weights;
  std::optional<json> hf_config;         // config.json
  std::optional<json> open_clip_config;  // open_clip_config.json
  fs::path config_path;
};

CheckpointFiles locate(const std::string& path) {
  CheckpointFiles f;
  const fs::path p(path);
  DISTILL_CHECK(fs::exists(p), "convert: ", path, " does not exist");
  fs::path dir;
  if (fs::is_directory(p)) {
    dir = p;
    for (const char* name : {"model.safetensors", "open_clip_model.safetensors"})
      if (fs::exists(dir / name)) {
        f.weights = dir / name;
        break;
      }
    if (f.weights.empty()) {
      std::vector<fs::path> found;
      for (const auto& e : fs::directory_iterator(dir))
        if (e.path().extension() == ".safetensors") found.push_back(e.path());
      DISTILL_CHECK(found.size() == 1, "convert: ", path,
                    found.empty() ? " holds no .safetensors weights file"
                                  : " holds several .safetensors files; name the one to convert");
      f.weights = found[0];
    }
  } else {
    const std::string ext = p.extension().string();
    DISTILL_CHECK(ext != ".bin" && ext != ".pt" && ext != ".pth", "convert: ", path,
                  " is a PyTorch pickle; only safetensors checkpoints are read (the hub ships "
                  "model.safetensors for every supported model; or convert with "
                  "safetensors.torch.save_file)");
    f.weights = p;
    dir = p.parent_path();
    if (dir.empty()) dir = ".";
  }
  if (fs::exists(dir / "config.json")) {
    f.config_path = dir / "config.json";
    f.hf_config = read_json_file(f.config_path);
  }
  if (fs::exists(dir / "open_clip_config.json")) {
    f.config_path = dir / "open_clip_config.json";
    f.open_clip_config = read_json_file(f.config_path);
  }
  return f;
}

// A config value of the wrong JSON type; convert_checkpoint adds the input path.
class ConfigValueError : public Error {
 public:
  using Error::Error;
};

// Reads a key of an HF config with a default (HF omits defaults when saving).
template <typename V>
V cfg(const json& j, const char* key, V fallback) {
  if (!j.is_object() || !j.contains(key) || j.at(key).is_null()) return fallback;
  try {
    return j.at(key).get<V>();
  } catch (const json::type_error&) {
    throw ConfigValueError(std::string("config value '") + key +
                           "' has the wrong type: " + j.at(key).dump());
  }
}

int64_t count_layers(const std::vector<std::string>& names, const std::string& prefix) {
  std::set<int64_t> ids;
  for (const auto& n : names) {
    if (!starts_with(n, prefix)) continue;
    const std::string rest = n.substr(prefix.size());
    const size_t dot = rest.find('.');
    try {
      ids.insert(std::stoll(rest.substr(0, dot)));
    } catch (...) {
    }
  }
  return static_cast<int64_t>(ids.size());
}

class Source {
 public:
  explicit Source(const fs::path& weights) : file_(weights.string()), path_(weights.string()) {}
  const std::vector<std::string>& names() const { return file_.names(); }
  bool has(const std::string& n) const { return file_.contains(n); }
  const Shape& shape(const std::string& n) const {
    DISTILL_CHECK(file_.contains(n), "convert: ", path_, " has no tensor '", n,
                  "', which this architecture needs");
    return file_.info(n).shape;
  }
  int64_t dim(const std::string& n, size_t d) const {
    const Shape& s = shape(n);
    DISTILL_CHECK(d < s.size(), "convert: ", path_, ": tensor '", n, "' has shape ",
                  nn::shape_str(s), ", expected at least ", d + 1, " dims");
    return s[d];
  }
  Tensor tensor(const std::string& n) const { return file_.tensor(n); }
  const std::string& path() const { return path_; }

 private:
  SafetensorsFile file_;
  std::string path_;
};

void check_agrees(const std::string& what, int64_t from_config, int64_t from_weights,
                  const std::string& config_path, const std::string& weights_path) {
  DISTILL_CHECK(from_config == from_weights, "convert: ", config_path, " says ", what, " = ",
                from_config, " but the weights in ", weights_path, " have ", from_weights);
}

// ---- config inference per naming

json hf_vision_config(const Source& s, const json& vc, const std::string& cfg_path) {
  VitConfig c;
  c.width = s.dim("vision_model.embeddings.patch_embedding.weight", 0);
  c.patch_size = s.dim("vision_model.embeddings.patch_embedding.weight", 2);
  const int64_t tokens = s.dim("vision_model.embeddings.position_embedding.weight", 0);
  int64_t grid = 0;
  while ((grid + 1) * (grid + 1) <= tokens - 1) ++grid;
  DISTILL_CHECK(grid * grid + 1 == tokens, "convert: ", s.path(), ": ", tokens,
                " vision position embeddings is not 1 + a square number of patches");
  c.image_size = grid * c.patch_size;
  c.layers = count_layers(s.names(), "vision_model.encoder.layers.");
  c.mlp_dim = s.dim("vision_model.encoder.layers.0.mlp.fc1.weight", 0);
  c.output_dim = s.has("visual_projection.weight") ? s.dim("visual_projection.weight", 0) : 0;
  c.heads = cfg<int64_t>(vc, "num_attention_heads", 12);
  c.act = nn::activation_from_name(cfg<std::string>(vc, "hidden_act", "quick_gelu"));
  c.ln_eps = cfg<double>(vc, "layer_norm_eps", 1e-5);
  if (!cfg_path.empty()) {
    check_agrees("vision hidden_size", cfg<int64_t>(vc, "hidden_size", 768), c.width, cfg_path,
                 s.path());
    check_agrees("vision num_hidden_layers", cfg<int64_t>(vc, "num_hidden_layers", 12), c.layers,
                 cfg_path, s.path());
    check_agrees("vision image_size", cfg<int64_t>(vc, "image_size", 224), c.image_size, cfg_path,
                 s.path());
  }
  return to_json(vit_config_from_json(to_json(c), s.path()));
}

json hf_text_config(const Source& s, const json& tc, const std::string& cfg_path) {
  ClipTextConfig c;
  c.vocab_size = s.dim("text_model.embeddings.token_embedding.weight", 0);
  c.width = s.dim("text_model.embeddings.token_embedding.weight", 1);
  c.context_length = s.dim("text_model.embeddings.position_embedding.weight", 0);
  c.layers = count_layers(s.names(), "text_model.encoder.layers.");
  c.mlp_dim = s.dim("text_model.encoder.layers.0.mlp.fc1.weight", 0);
  c.output_dim = s.has("text_projection.weight") ? s.dim("text_projection.weight", 0) : 0;
  c.heads = cfg<int64_t>(tc, "num_attention_heads", 8);
  c.act = nn::activation_from_name(cfg<std::string>(tc, "hidden_act", "quick_gelu"));
  c.ln_eps = cfg<double>(tc, "layer_norm_eps", 1e-5);
  // transformers pools at the largest id when eos_token_id is the legacy 2, else at the first
  // eos_token_id.
  const int64_t eos = cfg<int64_t>(tc, "eos_token_id", 2);
  c.eot_token_id = eos == 2 ? -1 : eos;
  if (!cfg_path.empty()) {
    check_agrees("text hidden_size", cfg<int64_t>(tc, "hidden_size", 512), c.width, cfg_path,
                 s.path());
    check_agrees("text vocab_size", cfg<int64_t>(tc, "vocab_size", 49408), c.vocab_size, cfg_path,
                 s.path());
    check_agrees("text num_hidden_layers", cfg<int64_t>(tc, "num_hidden_layers", 12), c.layers,
                 cfg_path, s.path());
  }
  return to_json(clip_text_config_from_json(to_json(c), s.path()));
}

json openai_vision_config(const Source& s, const json& model_cfg) {
  const json vc = cfg<json>(model_cfg, "vision_cfg", json::object());
  const bool quick = model_cfg.is_null() ? true : cfg<bool>(model_cfg, "quick_gelu", false);
  const int64_t head_width = cfg<int64_t>(vc, "head_width", 64);
  if (s.has("visual.attnpool.positional_embedding")) {
    ResNetConfig c;
    for (int i = 0; i < 4; ++i)
      c.blocks[i] = count_layers(s.names(), "visual.layer" + std::to_string(i + 1) + ".");
    c.width = s.dim("visual.layer1.0.conv1.weight", 0);
    const int64_t tokens = s.dim("visual.attnpool.positional_embedding", 0);
    int64_t grid = 0;
    while ((grid + 1) * (grid + 1) <= tokens - 1) ++grid;
    c.image_size = grid * 32;
    c.output_dim = s.dim("visual.attnpool.c_proj.weight", 0);
    c.heads = c.width * 32 / head_width;
    return to_json(resnet_config_from_json(to_json(c), s.path()));
  }
  VitConfig c;
  c.width = s.dim("visual.conv1.weight", 0);
  c.patch_size = s.dim("visual.conv1.weight", 2);
  const int64_t tokens = s.dim("visual.positional_embedding", 0);
  int64_t grid = 0;
  while ((grid + 1) * (grid + 1) <= tokens - 1) ++grid;
  DISTILL_CHECK(grid * grid + 1 == tokens, "convert: ", s.path(), ": ", tokens,
                " vision position embeddings is not 1 + a square number of patches");
  c.image_size = grid * c.patch_size;
  c.layers = count_layers(s.names(), "visual.transformer.resblocks.");
  c.mlp_dim = s.dim("visual.transformer.resblocks.0.mlp.c_fc.weight", 0);
  c.output_dim = s.has("visual.proj") ? s.dim("visual.proj", 1) : 0;
  c.heads = c.width / head_width;
  c.act = quick ? nn::Activation::QuickGELU : nn::Activation::GELU;
  return to_json(vit_config_from_json(to_json(c), s.path()));
}

json openai_text_config(const Source& s, const json& model_cfg) {
  const json tc = cfg<json>(model_cfg, "text_cfg", json::object());
  const bool quick = model_cfg.is_null() ? true : cfg<bool>(model_cfg, "quick_gelu", false);
  ClipTextConfig c;
  c.vocab_size = s.dim("token_embedding.weight", 0);
  c.width = s.dim("token_embedding.weight", 1);
  c.context_length = s.dim("positional_embedding", 0);
  c.layers = count_layers(s.names(), "transformer.resblocks.");
  c.mlp_dim = s.dim("transformer.resblocks.0.mlp.c_fc.weight", 0);
  c.output_dim = s.has("text_projection") ? s.dim("text_projection", 1) : 0;
  // OpenAI's heads = width / 64; open_clip configs give heads (default 8).
  c.heads = model_cfg.is_null() ? c.width / 64 : cfg<int64_t>(tc, "heads", 8);
  c.act = quick ? nn::Activation::QuickGELU : nn::Activation::GELU;
  c.eot_token_id = -1;  // OpenAI pools at the largest id (the end token)
  return to_json(clip_text_config_from_json(to_json(c), s.path()));
}

json hf_bert_config(const Source& s, const std::string& prefix, const json& hc,
                    const std::string& flavour, const std::string& cfg_path) {
  BertConfig c;
  c.flavour = flavour;
  const std::string e = prefix + "embeddings.";
  c.vocab_size = s.dim(e + "word_embeddings.weight", 0);
  c.hidden = s.dim(e + "word_embeddings.weight", 1);
  c.max_position = s.dim(e + "position_embeddings.weight", 0);
  c.type_vocab_size = s.dim(e + "token_type_embeddings.weight", 0);
  c.layers = count_layers(s.names(), prefix + "encoder.layer.");
  c.intermediate = s.dim(prefix + "encoder.layer.0.intermediate.dense.weight", 0);
  c.pooler = s.has(prefix + "pooler.dense.weight");
  c.heads = cfg<int64_t>(hc, "num_attention_heads", 12);
  c.pad_token_id = cfg<int64_t>(hc, "pad_token_id", flavour == "roberta" ? 1 : 0);
  c.ln_eps = cfg<double>(hc, "layer_norm_eps", 1e-12);
  const std::string act = cfg<std::string>(hc, "hidden_act", "gelu");
  DISTILL_CHECK(act == "gelu" || act == "relu", "convert: ", cfg_path.empty() ? s.path() : cfg_path,
                ": hidden_act '", act, "' is not supported (gelu, relu)");
  c.act = nn::activation_from_name(act);
  c.pooling = flavour == "roberta" ? "cls" : "mean";
  if (!cfg_path.empty()) {
    check_agrees("hidden_size", cfg<int64_t>(hc, "hidden_size", 768), c.hidden, cfg_path, s.path());
    check_agrees("num_hidden_layers", cfg<int64_t>(hc, "num_hidden_layers", 12), c.layers, cfg_path,
                 s.path());
    check_agrees("vocab_size", cfg<int64_t>(hc, "vocab_size", c.vocab_size), c.vocab_size, cfg_path,
                 s.path());
  }
  return to_json(bert_config_from_json(to_json(c), s.path()));
}

// ---- mapping

struct Mapper {
  const Source& src;
  nn::NamedTensors out;
  std::vector<std::string> unexpected;
  std::vector<std::string> notes;

  void map(const std::vector<NameRule>& rules, const std::string& src_name,
           const std::string& rule_name, const std::string& out_prefix) {
    std::vector<MappedTensor> mapped;
    bool dropped = false;
    if (!apply_name_rules(rules, rule_name, src.tensor(src_name), mapped, dropped)) {
      unexpected.push_back(src_name);
      return;
    }
    if (dropped) notes.push_back("dropped " + src_name);
    for (auto& m : mapped) out.emplace_back(out_prefix + m.name, m.tensor);
  }
};

// Builds the tower, checks the mapped names and shapes against it (every problem listed, naming
// the file), and completes BatchNorm counters absent from older checkpoints.
nn::LoadReport check_tower(nn::Module& tower, nn::NamedTensors& tensors, const std::string& prefix,
                           const std::vector<std::string>& unexpected_src, const std::string& path,
                           std::vector<std::string>& notes) {
  std::map<std::string, Tensor> have;
  for (const auto& [n, t] : tensors)
    if (starts_with(n, prefix)) have[n.substr(prefix.size())] = t;
  nn::LoadReport r;
  for (const auto& [name, t] : tower.state_dict()) {
    auto it = have.find(name);
    if (it == have.end()) {
      if (name.size() > 20 && name.substr(name.size() - 20) == ".num_batches_tracked") {
        tensors.emplace_back(prefix + name, zeros({}, DType::I64));
        notes.push_back("added " + prefix + name + " = 0 (absent from the checkpoint)");
        continue;
      }
      r.missing.push_back(prefix + name);
    } else if (it->second.shape() != t.shape()) {
      r.mismatched.push_back(prefix + name + ": " + path + " has " +
                             nn::shape_str(it->second.shape()) + ", the config implies " +
                             nn::shape_str(t.shape()));
    }
  }
  std::set<std::string> own;
  for (const auto& [name, t] : tower.state_dict()) own.insert(name);
  for (const auto& [n, t] : have)
    if (!own.count(n)) r.unexpected.push_back(prefix + n);
  for (const auto& u : unexpected_src) r.unexpected.push_back(u + " (no rule maps it)");
  return r;
}

void fail_if_bad(const nn::LoadReport& r, const std::string& path, const std::string& what) {
  if (!r.ok())
    fail("convert: ", path, " does not match the ", what, " its config describes (",
         r.missing.size(), " missing, ", r.unexpected.size(), " unexpected, ", r.mismatched.size(),
         " of the wrong shape):", r.describe());
}

nn::LoadReport merge(nn::LoadReport a, const nn::LoadReport& b) {
  a.missing.insert(a.missing.end(), b.missing.begin(), b.missing.end());
  a.unexpected.insert(a.unexpected.end(), b.unexpected.begin(), b.unexpected.end());
  a.mismatched.insert(a.mismatched.end(), b.mismatched.begin(), b.mismatched.end());
  return a;
}

std::string detect_naming(const Source& s, std::string& bert_prefix) {
  bool hf_clip = false, openai = false, bert = false;
  for (const auto& n : s.names()) {
    if (starts_with(n, "vision_model.") || starts_with(n, "text_model.")) hf_clip = true;
    if (starts_with(n, "visual.") || n == "token_embedding.weight" ||
        starts_with(n, "transformer.resblocks."))
      openai = true;
    for (const char* p : {"", "roberta.", "bert."})
      if (n == std::string(p) + "embeddings.word_embeddings.weight") {
        bert = true;
        bert_prefix = p;
      }
  }
  const int kinds = int(hf_clip) + int(openai) + int(bert);
  DISTILL_CHECK(kinds == 1, "convert: ", s.path(),
                kinds == 0 ? " is not a checkpoint of a supported architecture (no CLIP "
                             "vision_model./text_model., OpenAI visual./transformer. or BERT "
                             "embeddings. tensors)"
                           : " mixes the tensor naming of several architectures");
  return hf_clip ? "hf-clip" : openai ? "openai" : "bert";
}

}  // namespace

namespace {
ConvertedModel convert_checkpoint_unchecked(const std::string& path,
                                            const ConvertOptions& options) {
  DISTILL_CHECK(options.dtype == DType::F32 || options.dtype == DType::BF16,
                "convert: --dtype must be f32 or bf16, got ", dtype_name(options.dtype));
  const std::set<std::string> archs = {"", "clip", "clip-vision", "clip-text", "roberta", "bert"};
  DISTILL_CHECK(archs.count(options.arch), "convert: unknown --arch '", options.arch,
                "' (expected clip, clip-vision, clip-text, roberta or bert)");
  const CheckpointFiles files = locate(path);
  const Source src(files.weights);
  ConvertedModel result;
  result.source = src.path();
  std::string bert_prefix;
  const std::string naming = detect_naming(src, bert_prefix);
  result.naming = naming == "openai" ? "openai" : "hf";
  Mapper mapper{src, {}, {}, {}};
  const std::string cfg_path = files.config_path.string();

  if (naming == "hf-clip" || naming == "openai") {
    bool has_vision = false, has_text = false;
    for (const auto& n : src.names()) {
      if (starts_with(n, "vision_model.") || starts_with(n, "visual")) has_vision = true;
      if (starts_with(n, "text_model.") || n == "token_embedding.weight" ||
          starts_with(n, "text_projection"))
        has_text = true;
    }
    std::string arch = options.arch;
    const std::string holds = has_vision && has_text ? "clip"
                              : has_vision           ? "clip-vision"
                                                     : "clip-text";
    if (arch.empty()) arch = holds;
    DISTILL_CHECK(
        arch == "clip" || arch == "clip-vision" || arch == "clip-text", "convert: ", src.path(),
        " holds a CLIP ", holds == "clip" ? "model" : holds + " tower", " (",
        naming == "openai" ? "OpenAI" : "Hugging Face", " naming), not a ", arch, " checkpoint");
    DISTILL_CHECK(holds == "clip" || holds == arch, "convert: ", src.path(), " holds only a ",
                  holds, " tower, so --arch ", arch, " cannot be made from it");
    const bool want_vision = arch != "clip-text", want_text = arch != "clip-vision";
    const std::string vprefix = arch == "clip" ? "visual." : "";
    const std::string tprefix = arch == "clip" ? "text." : "";
    json vision_cfg, text_cfg;
    json model_cfg;
    if (files.open_clip_config) model_cfg = cfg<json>(*files.open_clip_config, "model_cfg", json());
    const json hc = files.hf_config ? *files.hf_config : json::object();
    // CLIPModel nests the tower configs; CLIPVisionModel/CLIPTextModel configs are the tower's.
    const std::string model_type = cfg<std::string>(hc, "model_type", "");
    const json hf_vc = hc.contains("vision_config") ? hc["vision_config"] : hc;
    const json hf_tc = hc.contains("text_config") ? hc["text_config"] : hc;
    if (want_vision) {
      vision_cfg = naming == "openai"
                       ? openai_vision_config(src, model_cfg)
                       : hf_vision_config(src, hf_vc, files.hf_config ? cfg_path : "");
    }
    if (want_text) {
      text_cfg = naming == "openai" ? openai_text_config(src, model_cfg)
                                    : hf_text_config(src, hf_tc, files.hf_config ? cfg_path : "");
    }
    for (const auto& n : src.names()) {
      if (naming == "hf-clip") {
        if (starts_with(n, "vision_model.")) {
          if (want_vision) mapper.map(hf_clip_vision_rules(), n, n.substr(13), vprefix);
        } else if (n == "visual_projection.weight") {
          if (want_vision) mapper.out.emplace_back(vprefix + "proj.weight", src.tensor(n));
        } else if (starts_with(n, "text_model.")) {
          if (want_text) mapper.map(hf_clip_text_rules(), n, n.substr(11), tprefix);
        } else if (n == "text_projection.weight") {
          if (want_text) mapper.out.emplace_back(tprefix + "proj.weight", src.tensor(n));
        } else if (n == "logit_scale") {
          if (arch == "clip") mapper.out.emplace_back("logit_scale", src.tensor(n));
        } else {
          mapper.unexpected.push_back(n);
        }
      } else {
        if (starts_with(n, "visual.")) {
          const bool resnet = vision_cfg.is_object() && vision_cfg["type"] == "resnet";
          if (want_vision)
            mapper.map(resnet ? openai_resnet_rules() : openai_vit_rules(), n, n.substr(7),
                       vprefix);
        } else if (n == "logit_scale") {
          if (arch == "clip") mapper.out.emplace_back("logit_scale", src.tensor(n));
        } else if (n == "input_resolution" || n == "context_length" || n == "vocab_size") {
          mapper.notes.push_back("dropped " + n + " (OpenAI's integer attribute)");
        } else if (want_text) {
          mapper.map(openai_text_rules(), n, n, tprefix);
        }
      }
    }
    result.spec.arch = arch;
    if (arch == "clip") {
      result.spec.config = {{"vision", vision_cfg}, {"text", text_cfg}};
      auto v = make_image_encoder(vision_cfg, src.path());
      auto t = make_text_encoder("clip-text", text_cfg, src.path());
      std::vector<std::string> vis_unexpected, text_unexpected;
      for (const auto& u : mapper.unexpected)
        (starts_with(u, "vision_model.") || starts_with(u, "visual.") ? vis_unexpected
                                                                      : text_unexpected)
            .push_back(u);
      fail_if_bad(
          merge(check_tower(*v, mapper.out, "visual.", vis_unexpected, src.path(), mapper.notes),
                check_tower(*t, mapper.out, "text.", text_unexpected, src.path(), mapper.notes)),
          src.path(), "CLIP model");
      DISTILL_CHECK(src.has("logit_scale"), "convert: ", src.path(),
                    " has no logit_scale, which a full CLIP checkpoint carries");
    } else if (arch == "clip-vision") {
      result.spec.config = vision_cfg;
      auto v = make_image_encoder(vision_cfg, src.path());
      fail_if_bad(check_tower(*v, mapper.out, "", mapper.unexpected, src.path(), mapper.notes),
                  src.path(), v->type_name());
    } else {
      result.spec.config = text_cfg;
      auto t = make_text_encoder("clip-text", text_cfg, src.path());
      fail_if_bad(check_tower(*t, mapper.out, "", mapper.unexpected, src.path(), mapper.notes),
                  src.path(), t->type_name());
    }
  } else {
    // BERT family: the flavour comes from config.json's model_type (or the layout of the
    // position embeddings when there is no config).
    const json hc = files.hf_config ? *files.hf_config : json::object();
    std::string flavour = cfg<std::string>(hc, "model_type", "");
    if (flavour.empty() || (flavour != "roberta" && flavour != "bert")) {
      DISTILL_CHECK(flavour.empty() || flavour == "xlm-roberta" || flavour == "camembert",
                    "convert: ", cfg_path, ": model_type '", flavour, "' is not roberta or bert");
      flavour = bert_prefix == "roberta."                                    ? "roberta"
                : bert_prefix == "bert."                                     ? "bert"
                : src.dim("embeddings.token_type_embeddings.weight", 0) == 1 ? "roberta"
                                                                             : "bert";
    }
    std::string arch = options.arch.empty() ? flavour : options.arch;
    DISTILL_CHECK(arch == flavour, "convert: ", src.path(), " holds a ", flavour,
                  " encoder, not a ", arch, " checkpoint");
    const json bc = hf_bert_config(src, bert_prefix, hc, flavour, files.hf_config ? cfg_path : "");
    for (const auto& n : src.names()) {
      if (!bert_prefix.empty() && !starts_with(n, bert_prefix)) {
        // Heads beside the prefixed encoder (lm_head.*, classifier.*) are not part of it.
        std::vector<MappedTensor> ignored;
        bool dropped = false;
        if (apply_name_rules(hf_bert_rules(), n, Tensor(), ignored, dropped) && dropped)
          mapper.notes.push_back("dropped " + n);
        else
          mapper.unexpected.push_back(n);
        continue;
      }
      mapper.map(hf_bert_rules(), n, n.substr(bert_prefix.size()), "");
    }
    result.spec.arch = arch;
    result.spec.config = bc;
    auto t = make_text_encoder(arch, bc, src.path());
    fail_if_bad(check_tower(*t, mapper.out, "", mapper.unexpected, src.path(), mapper.notes),
                src.path(), flavour == "roberta" ? "RobertaModel" : "BertModel");
  }

  // Cast: fp16/bf16 sources become the requested dtype; integer buffers stay.
  NoGradGuard guard;
  for (auto& [n, t] : mapper.out) {
    const DType d = t.dtype();
    if (d == DType::F32 || d == DType::F16 || d == DType::BF16 || d == DType::F64)
      t = contiguous(to_dtype(t, options.dtype));
    else
      t = contiguous(t);
  }
  result.tensors = std::move(mapper.out);
  result.notes = std::move(mapper.notes);
  return result;
}
}  // namespace

ConvertedModel convert_checkpoint(const std::string& path, const ConvertOptions& options) {
  try {
    return convert_checkpoint_unchecked(path, options);
  } catch (const ConfigValueError& e) {
    fail("convert: the config of ", path, ": ", e.what());
  }
}

// ---- manifests

namespace {
fs::path manifest_dir() {
  if (const char* env = std::getenv("DISTILL_MANIFESTS")) return env;
  return fs::path(DISTILL_SOURCE_DIR_FOR_MANIFESTS) / "weights" / "manifests";
}

nlohmann::json manifest_of(const nn::Module& m) {
  json tensors = json::object();
  for (const auto& [n, t] : m.state_dict()) tensors[n] = t.shape();
  return tensors;
}
}  // namespace

nlohmann::json preset_manifest(const std::string& name) {
  const fs::path file = manifest_dir() / (name + ".json");
  if (fs::exists(file)) return read_json_file(file);
  // No manifest folder next to this binary: derive it from the preset itself.
  const ModelSpec spec = preset(name);
  return {{"model", name},
          {"arch", spec.arch},
          {"config", spec.config},
          {"tensors", manifest_of(*make_preset(name))}};
}

std::string matching_preset(const std::string& tower_arch, const nlohmann::json& config) {
  for (const auto& name : preset_names()) {
    const ModelSpec spec = preset(name);
    if (spec.arch == tower_arch && spec.config == config) return name;
  }
  return "";
}

namespace {
void check_against_manifest(const ConvertedModel& m, const std::string& tower_arch,
                            const json& config, const std::string& prefix) {
  const std::string name = matching_preset(tower_arch, config);
  if (name.empty()) return;
  const json manifest = preset_manifest(name);
  std::map<std::string, Shape> have;
  for (const auto& [n, t] : m.tensors)
    if (starts_with(n, prefix)) have[n.substr(prefix.size())] = t.shape();
  std::string problems;
  for (const auto& [n, shape] : manifest.at("tensors").items()) {
    auto it = have.find(n);
    if (it == have.end())
      problems += "\n  missing: " + n;
    else if (it->second != shape.get<Shape>())
      problems += "\n  wrong shape: " + n + " " + nn::shape_str(it->second);
  }
  for (const auto& [n, s] : have)
    if (!manifest.at("tensors").contains(n)) problems += "\n  unexpected: " + n;
  DISTILL_CHECK(problems.empty(), "convert: the output for ", m.source,
                " does not match the manifest of preset ", name, ":", problems);
}
}  // namespace

void save_converted(const ConvertedModel& m, const std::string& out_path) {
  if (m.spec.arch == "clip") {
    check_against_manifest(m, "clip-vision", m.spec.config["vision"], "visual.");
    check_against_manifest(m, "clip-text", m.spec.config["text"], "text.");
  } else {
    check_against_manifest(m, m.spec.arch, m.spec.config, "");
  }
  std::map<std::string, std::string> meta = {
      {"format", "distill"}, {"format_version", "1"},
      {"arch", m.spec.arch}, {"config", m.spec.config.dump()},
      {"naming", m.naming},  {"source", m.source}};
  save_safetensors(out_path, m.tensors, meta);
}

CanonicalCheckpoint read_canonical_spec(const std::string& path) {
  SafetensorsFile f(path);
  const auto& meta = f.metadata();
  auto get = [&](const char* key) -> std::string {
    auto it = meta.find(key);
    DISTILL_CHECK(it != meta.end(), path, " is not a distill checkpoint (no '", key,
                  "' in its metadata); convert it first with `distill convert`");
    return it->second;
  };
  DISTILL_CHECK(get("format") == "distill", path, " is not a distill checkpoint (its format is '",
                get("format"), "'); convert it first with `distill convert`");
  CanonicalCheckpoint c;
  c.path = path;
  c.spec.arch = get("arch");
  try {
    c.spec.config = json::parse(get("config"));
  } catch (const std::exception& e) {
    fail(path, ": the config in its metadata is not valid JSON: ", e.what());
  }
  return c;
}

namespace {
// The tensors of one tower of a whole-model state (prefix "visual." / "text." for arch clip).
nn::NamedTensors tower_state(const nn::NamedTensors& all, const std::string& prefix) {
  nn::NamedTensors state;
  for (const auto& [n, t] : all)
    if (prefix.empty() ? n != "logit_scale" : starts_with(n, prefix))
      state.emplace_back(n.substr(prefix.size()), t);
  return state;
}

// One tower's config inside a whole-CLIP config; a file whose metadata lacks it is named.
const json& clip_tower_config(const ModelSpec& spec, const char* tower, const std::string& path) {
  DISTILL_CHECK(spec.config.is_object() && spec.config.contains(tower), path,
                ": the clip config in its metadata has no '", tower, "' tower");
  return spec.config.at(tower);
}

std::shared_ptr<ImageEncoder> image_tower(const ModelSpec& spec, const nn::NamedTensors& tensors,
                                          const std::string& path) {
  DISTILL_CHECK(spec.arch == "clip" || spec.arch == "clip-vision", path, " holds a ", spec.arch,
                " model, which has no image tower");
  const bool clip = spec.arch == "clip";
  auto enc = make_image_encoder(clip ? clip_tower_config(spec, "vision", path) : spec.config, path);
  enc->load_state_dict(tower_state(tensors, clip ? "visual." : ""), true, path);
  enc->eval();
  return enc;
}

std::shared_ptr<TextEncoder> text_tower(const ModelSpec& spec, const nn::NamedTensors& tensors,
                                        const std::string& path) {
  DISTILL_CHECK(spec.arch != "clip-vision", path, " holds a CLIP image tower, no text encoder");
  const bool clip = spec.arch == "clip";
  auto enc = make_text_encoder(clip ? "clip-text" : spec.arch,
                               clip ? clip_tower_config(spec, "text", path) : spec.config, path);
  enc->load_state_dict(tower_state(tensors, clip ? "text." : ""), true, path);
  enc->eval();
  return enc;
}

bool is_canonical(const std::string& path) {
  if (fs::is_directory(path)) return false;
  const SafetensorsFile f(path);
  const auto it = f.metadata().find("format");
  return it != f.metadata().end() && it->second == "distill";
}
}  // namespace

std::shared_ptr<ImageEncoder> load_image_encoder(const std::string& path) {
  const CanonicalCheckpoint c = read_canonical_spec(path);
  return image_tower(c.spec, SafetensorsFile(path).load_all(), path);
}

std::shared_ptr<TextEncoder> load_text_encoder(const std::string& path) {
  const CanonicalCheckpoint c = read_canonical_spec(path);
  return text_tower(c.spec, SafetensorsFile(path).load_all(), path);
}

std::shared_ptr<ImageEncoder> open_image_encoder(const std::string& path) {
  if (is_canonical(path)) return load_image_encoder(path);
  const ConvertedModel m = convert_checkpoint(path);
  return image_tower(m.spec, m.tensors, path);
}

std::shared_ptr<TextEncoder> open_text_encoder(const std::string& path) {
  if (is_canonical(path)) return load_text_encoder(path);
  const ConvertedModel m = convert_checkpoint(path);
  return text_tower(m.spec, m.tensors, path);
}

}  // namespace distill::models
