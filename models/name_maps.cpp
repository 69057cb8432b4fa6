#include "models/name_maps.h"

#include <map>
#include <mutex>
#include <regex>

#include "core/error.h"
#include "core/ops.h"

namespace distill::models {

namespace {
using T = NameTransform;

// Rules shared by the two HF CLIP towers: the encoder layers.
std::vector<NameRule> hf_clip_layer_rules() {
  return {
      {"encoder.layers.{i}.self_attn.q_proj.{w}", "layers.{i}.attn.q_proj.{w}"},
      {"encoder.layers.{i}.self_attn.k_proj.{w}", "layers.{i}.attn.k_proj.{w}"},
      {"encoder.layers.{i}.self_attn.v_proj.{w}", "layers.{i}.attn.v_proj.{w}"},
      {"encoder.layers.{i}.self_attn.out_proj.{w}", "layers.{i}.attn.out_proj.{w}"},
      {"encoder.layers.{i}.layer_norm1.{w}", "layers.{i}.ln_1.{w}"},
      {"encoder.layers.{i}.layer_norm2.{w}", "layers.{i}.ln_2.{w}"},
      {"encoder.layers.{i}.mlp.fc1.{w}", "layers.{i}.mlp.fc1.{w}"},
      {"encoder.layers.{i}.mlp.fc2.{w}", "layers.{i}.mlp.fc2.{w}"},
  };
}

// OpenAI's residual blocks (both towers).
std::vector<NameRule> openai_block_rules() {
  return {
      {"transformer.resblocks.{i}.ln_1.{w}", "layers.{i}.ln_1.{w}"},
      {"transformer.resblocks.{i}.ln_2.{w}", "layers.{i}.ln_2.{w}"},
      {"transformer.resblocks.{i}.attn.in_proj_weight", "layers.{i}.attn.{qkv}_proj.weight",
       T::SplitQkv},
      {"transformer.resblocks.{i}.attn.in_proj_bias", "layers.{i}.attn.{qkv}_proj.bias",
       T::SplitQkv},
      {"transformer.resblocks.{i}.attn.out_proj.{w}", "layers.{i}.attn.out_proj.{w}"},
      {"transformer.resblocks.{i}.mlp.c_fc.{w}", "layers.{i}.mlp.fc1.{w}"},
      {"transformer.resblocks.{i}.mlp.c_proj.{w}", "layers.{i}.mlp.fc2.{w}"},
  };
}

std::vector<NameRule> join(std::vector<NameRule> a, const std::vector<NameRule>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

struct CompiledRule {
  std::regex pattern;
  const NameRule* rule;
};

std::regex compile(const std::string& from) {
  std::string re;
  for (size_t i = 0; i < from.size(); ++i) {
    if (from.compare(i, 3, "{i}") == 0) {
      re += "([0-9]+)";
      i += 2;
    } else if (from.compare(i, 3, "{w}") == 0) {
      re += "(weight|bias)";
      i += 2;
    } else if (from.compare(i, 6, "{rest}") == 0) {
      re += "(.+)";
      i += 5;
    } else if (std::string(".[]()*+?^$|\\").find(from[i]) != std::string::npos) {
      re += std::string("\\") + from[i];
    } else {
      re += from[i];
    }
  }
  return std::regex(re);
}

// Substitutes the captured groups into the target in order of their placeholders.
std::string substitute(const std::string& to, const std::smatch& m, const std::string& qkv) {
  std::string out;
  size_t group = 1;
  for (size_t i = 0; i < to.size(); ++i) {
    if (to.compare(i, 3, "{i}") == 0 || to.compare(i, 3, "{w}") == 0) {
      out += m[group++].str();
      i += 2;
    } else if (to.compare(i, 6, "{rest}") == 0) {
      out += m[group++].str();
      i += 5;
    } else if (to.compare(i, 5, "{qkv}") == 0) {
      out += qkv;
      i += 4;
    } else {
      out += to[i];
    }
  }
  return out;
}

const std::vector<CompiledRule>& compiled(const std::vector<NameRule>& rules) {
  // One compiled copy per table (tables are static, so their address identifies them).
  static std::mutex mutex;
  static std::map<const void*, std::vector<CompiledRule>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(&rules);
  if (it != cache.end()) return it->second;
  std::vector<CompiledRule> c;
  for (const auto& r : rules) c.push_back({compile(r.from), &r});
  return cache.emplace(&rules, std::move(c)).first->second;
}
}  // namespace

const std::vector<NameRule>& hf_clip_vision_rules() {
  static const std::vector<NameRule> rules = join(
      {
          {"embeddings.patch_embedding.weight", "patch_embed.weight"},
          {"embeddings.class_embedding", "class_embedding"},
          {"embeddings.position_embedding.weight", "position_embedding"},
          {"embeddings.position_ids", "", T::Drop},
          {"pre_layrnorm.{w}", "ln_pre.{w}"},  // sic: HF's spelling
          {"post_layernorm.{w}", "ln_post.{w}"},
      },
      hf_clip_layer_rules());
  return rules;
}

const std::vector<NameRule>& hf_clip_text_rules() {
  static const std::vector<NameRule> rules = join(
      {
          {"embeddings.token_embedding.weight", "token_embedding.weight"},
          {"embeddings.position_embedding.weight", "position_embedding"},
          {"embeddings.position_ids", "", T::Drop},
          {"final_layer_norm.{w}", "ln_final.{w}"},
      },
      hf_clip_layer_rules());
  return rules;
}

const std::vector<NameRule>& openai_vit_rules() {
  static const std::vector<NameRule> rules = join(
      {
          {"conv1.weight", "patch_embed.weight"},
          {"class_embedding", "class_embedding"},
          {"positional_embedding", "position_embedding"},
          {"ln_pre.{w}", "ln_pre.{w}"},
          {"ln_post.{w}", "ln_post.{w}"},
          {"proj", "proj.weight", T::Transpose},
      },
      openai_block_rules());
  return rules;
}

const std::vector<NameRule>& openai_resnet_rules() {
  // The canonical ResNet names are OpenAI's own.
  static const std::vector<NameRule> rules = {{"{rest}", "{rest}"}};
  return rules;
}

const std::vector<NameRule>& openai_text_rules() {
  static const std::vector<NameRule> rules = join(
      {
          {"token_embedding.weight", "token_embedding.weight"},
          {"positional_embedding", "position_embedding"},
          {"ln_final.{w}", "ln_final.{w}"},
          {"text_projection", "proj.weight", T::Transpose},
      },
      openai_block_rules());
  return rules;
}

const std::vector<NameRule>& hf_bert_rules() {
  static const std::vector<NameRule> rules = {
      {"embeddings.position_ids", "", T::Drop},
      {"embeddings.LayerNorm.gamma", "embeddings.LayerNorm.weight"},  // TF-era names
      {"embeddings.LayerNorm.beta", "embeddings.LayerNorm.bias"},
      {"encoder.layer.{i}.attention.output.LayerNorm.gamma",
       "encoder.layer.{i}.attention.output.LayerNorm.weight"},
      {"encoder.layer.{i}.attention.output.LayerNorm.beta",
       "encoder.layer.{i}.attention.output.LayerNorm.bias"},
      {"encoder.layer.{i}.output.LayerNorm.gamma", "encoder.layer.{i}.output.LayerNorm.weight"},
      {"encoder.layer.{i}.output.LayerNorm.beta", "encoder.layer.{i}.output.LayerNorm.bias"},
      // Task heads of RobertaForMaskedLM / BertForPreTraining etc. are not part of the encoder.
      {"lm_head.{rest}", "", T::Drop},
      {"cls.{rest}", "", T::Drop},
      {"classifier.{rest}", "", T::Drop},
      {"embeddings.{rest}", "embeddings.{rest}"},
      {"encoder.{rest}", "encoder.{rest}"},
      {"pooler.{rest}", "pooler.{rest}"},
  };
  return rules;
}

bool apply_name_rules(const std::vector<NameRule>& rules, const std::string& name,
                      const Tensor& tensor, std::vector<MappedTensor>& out, bool& dropped) {
  dropped = false;
  for (const auto& c : compiled(rules)) {
    std::smatch m;
    if (!std::regex_match(name, m, c.pattern)) continue;
    switch (c.rule->transform) {
      case T::Drop:
        dropped = true;
        return true;
      case T::Copy:
        out.push_back({substitute(c.rule->to, m, ""), tensor});
        return true;
      case T::Transpose:
        DISTILL_CHECK(tensor.dim() == 2, "convert: '", name, "' should be a matrix, got ",
                      tensor.describe());
        out.push_back({substitute(c.rule->to, m, ""), contiguous(transpose(tensor, 0, 1))});
        return true;
      case T::SplitQkv: {
        DISTILL_CHECK(tensor.dim() >= 1 && tensor.size(0) % 3 == 0, "convert: packed '", name,
                      "' must have 3 x width rows, got ", tensor.describe());
        const int64_t e = tensor.size(0) / 3;
        const char* parts[3] = {"q", "k", "v"};
        for (int p = 0; p < 3; ++p)
          out.push_back({substitute(c.rule->to, m, parts[p]),
                         contiguous(slice(tensor, 0, p * e, (p + 1) * e))});
        return true;
      }
    }
  }
  return false;
}

}  // namespace distill::models
