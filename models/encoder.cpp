#include "models/encoder.h"

#include "core/error.h"
#include "models/bert.h"
#include "models/clip.h"

namespace distill::models {

std::shared_ptr<ImageEncoder> make_image_encoder(const nlohmann::json& config,
                                                 const std::string& where, Generator* gen) {
  DISTILL_CHECK(config.is_object() && config.contains("type") && config["type"].is_string(), where,
                ": image tower config needs \"type\": \"vit\" or \"resnet\"");
  const std::string type = config["type"];
  if (type == "vit")
    return std::make_shared<VisionTransformer>(vit_config_from_json(config, where), gen);
  if (type == "resnet")
    return std::make_shared<ModifiedResNet>(resnet_config_from_json(config, where), gen);
  fail(where, ": unknown image tower type '", type, "' (expected vit or resnet)");
}

std::shared_ptr<TextEncoder> make_text_encoder(const std::string& arch,
                                               const nlohmann::json& config,
                                               const std::string& where, Generator* gen) {
  if (arch == "clip-text")
    return std::make_shared<ClipTextTransformer>(clip_text_config_from_json(config, where), gen);
  if (arch == "roberta" || arch == "bert") {
    BertConfig c = bert_config_from_json(config, where);
    DISTILL_CHECK(c.flavour == arch, where, ": arch '", arch, "' but the config's flavour is '",
                  c.flavour, "'");
    return std::make_shared<BertModel>(c, gen);
  }
  fail(where, ": '", arch, "' is not a text encoder (expected clip-text, roberta or bert)");
}

std::shared_ptr<nn::Module> make_preset(const std::string& name, Generator* gen) {
  const ModelSpec spec = preset(name);
  if (spec.arch == "clip-vision") return make_image_encoder(spec.config, "preset " + name, gen);
  return make_text_encoder(spec.arch, spec.config, "preset " + name, gen);
}

}  // namespace distill::models
