// Checkpoint name maps: one table per (naming, architecture). A rule maps a source name pattern
// to a canonical one; "{i}" matches a layer index, "{w}" matches weight or bias.
#pragma once

#include <string>
#include <vector>

#include "core/tensor.h"

namespace distill::models {

enum class NameTransform {
  Copy,
  Transpose,  // OpenAI's x @ proj projections [in, out] -> Linear weights [out, in]
  SplitQkv,   // packed in_proj [3 E, ...] -> q, k, v ("{qkv}" in the target)
  Drop,       // known non-parameters (position_ids buffers, other heads), dropped with a note
};

struct NameRule {
  std::string from;
  std::string to;
  NameTransform transform = NameTransform::Copy;
};

const std::vector<NameRule>& hf_clip_vision_rules();  // names after "vision_model."
const std::vector<NameRule>& hf_clip_text_rules();    // names after "text_model."
const std::vector<NameRule>& openai_vit_rules();      // names after "visual."
const std::vector<NameRule>& openai_resnet_rules();   // names after "visual."
const std::vector<NameRule>& openai_text_rules();     // top-level text names
const std::vector<NameRule>& hf_bert_rules();         // names after an optional "bert."/"roberta."

struct MappedTensor {
  std::string name;
  Tensor tensor;
};

// Applies the first matching rule. Returns false when no rule matches. Drop rules return true
// with an empty result and `dropped` set.
bool apply_name_rules(const std::vector<NameRule>& rules, const std::string& name,
                      const Tensor& tensor, std::vector<MappedTensor>& out, bool& dropped);

}  // namespace distill::models
