// `distill info --model NAME`: a preset's parameter count, config and (with --tensors) its
// canonical tensor names and shapes, the form of weights/manifests/<preset>.json.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "models/encoder.h"
#include "tools/cli.h"

namespace distill::cli {

int info_model(const std::string& name, bool as_json, bool with_tensors) {
  const models::ModelSpec spec = models::preset(name);
  auto model = models::make_preset(name);
  nlohmann::json j;
  j["model"] = name;
  j["arch"] = spec.arch;
  j["parameters"] = model->num_parameters();
  j["config"] = spec.config;
  if (with_tensors) {
    nlohmann::json tensors = nlohmann::json::object();
    for (const auto& [n, t] : model->state_dict()) tensors[n] = t.shape();
    j["tensors"] = tensors;
  }
  if (as_json) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("%s (%s): %lld parameters\n  config %s\n", name.c_str(), spec.arch.c_str(),
              static_cast<long long>(model->num_parameters()), spec.config.dump().c_str());
  if (with_tensors)
    for (const auto& [n, t] : model->state_dict())
      std::printf("  %s %s\n", n.c_str(), nlohmann::json(t.shape()).dump().c_str());
  return 0;
}

}  // namespace distill::cli
