// The checkpoint converter: Hugging Face (CLIPModel, CLIPVisionModel[WithProjection],
// CLIPTextModel[WithProjection], RobertaModel, BertModel) and OpenAI / open_clip naming in,
// the engine's canonical safetensors out (config in __metadata__). The name maps, one table per
// architecture, are in models/name_maps.cpp.
#pragma once

#include <string>
#include <vector>

#include "layers/module.h"
#include "models/encoder.h"

namespace distill::models {

struct ConvertOptions {
  // "" detects it. "clip", "clip-vision", "clip-text", "roberta", "bert". A tower of a full CLIP
  // checkpoint may be asked for ("clip-vision" from a CLIPModel keeps only the image tower).
  std::string arch;
  DType dtype = DType::F32;  // F32 or BF16 for the written tensors
};

struct ConvertedModel {
  ModelSpec spec;
  nn::NamedTensors tensors;        // canonical names ("visual.*", "text.*" for arch clip)
  std::string naming;              // "hf" | "openai"
  std::string source;              // the weights file read
  std::vector<std::string> notes;  // tensors dropped on purpose (buffers, other heads)
};

// path: a directory (config.json or open_clip_config.json beside model.safetensors /
// open_clip_model.safetensors) or a .safetensors file (a config beside it is used when present).
// Throws naming the file for unreadable input, a wrong --arch, and every missing, unexpected or
// mis-shaped tensor.
ConvertedModel convert_checkpoint(const std::string& path, const ConvertOptions& options = {});

// Writes atomically (never leaves a partial file; an existing file is replaced only on success).
void save_converted(const ConvertedModel& model, const std::string& out_path);

// A canonical (converted) checkpoint.
struct CanonicalCheckpoint {
  ModelSpec spec;
  std::string path;
};
CanonicalCheckpoint read_canonical_spec(const std::string& path);
// The image tower of a canonical checkpoint of arch clip or clip-vision, weights loaded (strict).
std::shared_ptr<ImageEncoder> load_image_encoder(const std::string& path);
// The text tower of a canonical checkpoint of arch clip, clip-text, roberta or bert.
std::shared_ptr<TextEncoder> load_text_encoder(const std::string& path);

// Either of the above, or a checkpoint `convert_checkpoint` reads (converted in memory, nothing
// written): what a run config may name.
std::shared_ptr<ImageEncoder> open_image_encoder(const std::string& path);
std::shared_ptr<TextEncoder> open_text_encoder(const std::string& path);

// The expected tensor names and shapes of a preset (weights/manifests/<preset>.json), and the
// preset whose config equals `spec`'s tower config (empty when none).
nlohmann::json preset_manifest(const std::string& preset_name);
std::string matching_preset(const std::string& tower_arch, const nlohmann::json& config);

}  // namespace distill::models
