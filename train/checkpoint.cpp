#include "train/checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/safetensors.h"
#include "train/atomic_file.h"

namespace distill::train {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kFormat = "distill-training-checkpoint";
constexpr const char* kVersion = "1";
constexpr const char* kModelPrefix = "model.";
constexpr const char* kOptimizerPrefix = "optimizer.";

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.rfind(prefix, 0) == 0;
}

json generator_json(const Generator& g) {
  return {{"seed", g.seed()}, {"offset", g.offset()}};
}

void check_generator_names(const NamedGenerators& generators, const char* where) {
  std::set<std::string> names;
  for (const auto& [name, g] : generators) {
    DISTILL_CHECK(g, where, ": generator '", name, "' is null");
    DISTILL_CHECK(name != "default", where,
                  ": 'default' is the default generator's name, always saved; pick another");
    DISTILL_CHECK(names.insert(name).second, where, ": generator '", name, "' is named twice");
  }
}

// The metadata value `key` of a checkpoint, parsed as JSON; errors name the file and key.
json metadata_json(const SafetensorsFile& file, const std::string& key) {
  const auto it = file.metadata().find(key);
  DISTILL_CHECK(it != file.metadata().end(), "training checkpoint '", file.path(),
                "': metadata has no '", key, "'");
  try {
    return json::parse(it->second);
  } catch (const json::exception& e) {
    fail("training checkpoint '", file.path(), "': metadata '", key, "' is not valid JSON (",
         e.what(), ")");
  }
}

int64_t metadata_int(const SafetensorsFile& file, const std::string& key) {
  const json j = metadata_json(file, key);
  DISTILL_CHECK(j.is_number_integer(), "training checkpoint '", file.path(), "': metadata '", key,
                "' must be an integer, got ", j.dump());
  return j.get<int64_t>();
}

std::pair<uint64_t, uint64_t> generator_state(const SafetensorsFile& file, const json& rng,
                                              const std::string& name) {
  DISTILL_CHECK(rng.is_object() && rng.contains(name), "training checkpoint '", file.path(),
                "': no state for the generator '", name, "' (the file has ", rng.dump(), ")");
  const json& g = rng.at(name);
  DISTILL_CHECK(g.is_object() && g.contains("seed") && g.contains("offset") &&
                    g["seed"].is_number_unsigned() && g["offset"].is_number_unsigned(),
                "training checkpoint '", file.path(), "': generator '", name,
                "' must be {\"seed\": n, \"offset\": n}, got ", g.dump());
  return {g["seed"].get<uint64_t>(), g["offset"].get<uint64_t>()};
}

bool same_names_and_shapes(const nn::NamedTensors& a, const nn::NamedTensors& b) {
  if (a.size() != b.size()) return false;
  std::map<std::string, Shape> shapes;
  for (const auto& [name, t] : a) shapes[name] = t.shape();
  for (const auto& [name, t] : b) {
    const auto it = shapes.find(name);
    if (it == shapes.end() || it->second != t.shape()) return false;
  }
  return true;
}

}  // namespace

// ---------------------------------------------------------------- one checkpoint

void save_training_checkpoint(const std::string& path, const nn::Module& model,
                              const Optimizer* optimizer, const TrainingProgress& progress,
                              const NamedGenerators& generators) {
  check_generator_names(generators, "save_training_checkpoint");
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (auto& [name, t] : model.state_dict()) tensors.emplace_back(kModelPrefix + name, t);
  if (optimizer)
    for (auto& [name, t] : optimizer->state_tensors())
      tensors.emplace_back(kOptimizerPrefix + name, t);

  json rng = {{"default", generator_json(default_generator())}};
  for (const auto& [name, g] : generators) rng[name] = generator_json(*g);
  std::map<std::string, std::string> metadata = {{"format", kFormat},
                                                 {"version", kVersion},
                                                 {"step", std::to_string(progress.step)},
                                                 {"epoch", std::to_string(progress.epoch)},
                                                 {"rng", rng.dump()},
                                                 {"data_position", progress.data_position.dump()},
                                                 {"config", progress.config.dump()},
                                                 {"extra", progress.extra.dump()},
                                                 {"model_type", model.type_name()}};
  if (optimizer) {
    metadata["optimizer"] = to_json(optimizer->config()).dump();
    metadata["schedule"] = to_json(optimizer->schedule()).dump();
  }
  save_safetensors(path, tensors, metadata);
}

TrainingProgress load_training_checkpoint(const std::string& path, nn::Module& model,
                                          Optimizer* optimizer, const NamedGenerators& generators) {
  check_generator_names(generators, "load_training_checkpoint");
  const SafetensorsFile file(path);  // validates the header against the file size
  const auto& meta = file.metadata();
  const auto format = meta.find("format");
  DISTILL_CHECK(format != meta.end() && format->second == kFormat, "training checkpoint '", path,
                "': not a distill training checkpoint (metadata 'format' is ",
                format == meta.end() ? "missing" : "'" + format->second + "'",
                "); a converted model is loaded with load_state_dict instead");
  const auto version = meta.find("version");
  DISTILL_CHECK(version != meta.end() && version->second == kVersion, "training checkpoint '", path,
                "': unsupported version ",
                version == meta.end() ? "(missing)" : "'" + version->second + "'",
                " (this build reads version ", kVersion, ")");

  TrainingProgress progress;
  progress.step = metadata_int(file, "step");
  progress.epoch = metadata_int(file, "epoch");
  progress.data_position = metadata_json(file, "data_position");
  progress.config = metadata_json(file, "config");
  progress.extra = metadata_json(file, "extra");
  const json rng = metadata_json(file, "rng");
  const auto default_state = generator_state(file, rng, "default");
  std::vector<std::pair<uint64_t, uint64_t>> states;
  for (const auto& [name, g] : generators) states.push_back(generator_state(file, rng, name));

  nn::NamedTensors model_state, optimizer_state;
  for (const auto& name : file.names()) {
    if (starts_with(name, kModelPrefix))
      model_state.emplace_back(name.substr(std::strlen(kModelPrefix)), file.tensor(name));
    else if (starts_with(name, kOptimizerPrefix))
      optimizer_state.emplace_back(name.substr(std::strlen(kOptimizerPrefix)), file.tensor(name));
    else
      fail("training checkpoint '", path, "': unexpected tensor '", name,
           "' (neither model. nor optimizer.)");
  }
  // Everything is checked before anything changes. A strict load that fails modifies nothing
  // and lists every missing, unexpected and mis-shaped name, so it reports a model mismatch.
  const std::string source = "training checkpoint '" + path + "'";
  if (!same_names_and_shapes(model.state_dict(), model_state))
    model.load_state_dict(model_state, true, source);
  if (optimizer) {
    DISTILL_CHECK(!optimizer_state.empty(), source,
                  " holds no optimizer state (saved without an optimizer)");
    optimizer->validate_state(optimizer_state, "'" + path + "'");
  }
  model.load_state_dict(model_state, true, source);
  if (optimizer) optimizer->load_state(optimizer_state, "'" + path + "'");
  default_generator().set_state(default_state.first, default_state.second);
  for (size_t i = 0; i < generators.size(); ++i)
    generators[i].second->set_state(states[i].first, states[i].second);
  return progress;
}

// ---------------------------------------------------------------- CheckpointManager

CheckpointManager::CheckpointManager(std::string directory, int64_t keep_last, std::string prefix)
    : directory_(std::move(directory)), keep_last_(keep_last), prefix_(std::move(prefix)) {
  DISTILL_CHECK(keep_last_ >= 1, "CheckpointManager: keep_last must be >= 1, got ", keep_last_);
  DISTILL_CHECK(!prefix_.empty() && prefix_.find('/') == std::string::npos,
                "CheckpointManager: bad file prefix '", prefix_, "'");
}

std::string CheckpointManager::path_for_step(int64_t step) const {
  char digits[32];
  std::snprintf(digits, sizeof digits, "%08lld", static_cast<long long>(step));
  return (fs::path(directory_) / (prefix_ + "-" + digits + ".safetensors")).string();
}

std::vector<std::string> CheckpointManager::list() const {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(directory_, ec)) {
    if (!entry.is_regular_file(ec)) continue;
    const std::string name = entry.path().filename().string();
    const std::string head = prefix_ + "-", tail = ".safetensors";
    if (!starts_with(name, head) || name.size() <= head.size() + tail.size() ||
        name.compare(name.size() - tail.size(), tail.size(), tail) != 0)
      continue;
    const std::string digits = name.substr(head.size(), name.size() - head.size() - tail.size());
    if (digits.size() > 18 ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
      continue;
    found.emplace_back(std::stoll(digits), entry.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& [step, path] : found) out.push_back(path);
  return out;
}

std::optional<std::string> CheckpointManager::latest() const {
  const std::string pointer = (fs::path(directory_) / "latest.json").string();
  std::ifstream in(pointer, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream text;
  text << in.rdbuf();
  json j;
  try {
    j = json::parse(text.str());
  } catch (const json::exception& e) {
    fail("checkpoint pointer '", pointer, "' is not valid JSON (", e.what(), ")");
  }
  DISTILL_CHECK(j.is_object() && j.contains("checkpoint") && j["checkpoint"].is_string(),
                "checkpoint pointer '", pointer, "' has no \"checkpoint\" file name: ", j.dump());
  const std::string path = (fs::path(directory_) / j["checkpoint"].get<std::string>()).string();
  DISTILL_CHECK(fs::exists(path), "checkpoint pointer '", pointer, "' names '", path,
                "', which does not exist");
  return path;
}

std::string CheckpointManager::save(const nn::Module& model, const Optimizer* optimizer,
                                    const TrainingProgress& progress,
                                    const NamedGenerators& generators) {
  std::error_code ec;
  fs::create_directories(directory_, ec);
  DISTILL_CHECK(!ec, "CheckpointManager: cannot create the directory '", directory_,
                "': ", ec.message());
  // Temporary files of saves that were killed part-way (one writer per directory).
  for (const auto& entry : fs::directory_iterator(directory_, ec)) {
    const std::string name = entry.path().filename().string();
    if ((starts_with(name, prefix_ + "-") || starts_with(name, "latest.json")) &&
        name.find(".tmp.") != std::string::npos)
      fs::remove(entry.path(), ec);
  }

  const std::string path = path_for_step(progress.step);
  save_training_checkpoint(path, model, optimizer, progress, generators);
  if (before_commit_) before_commit_(path);
  const json pointer = {{"checkpoint", fs::path(path).filename().string()},
                        {"step", progress.step}};
  write_file_atomically((fs::path(directory_) / "latest.json").string(), pointer.dump() + "\n");

  std::vector<std::string> all = list();
  const int64_t excess = static_cast<int64_t>(all.size()) - keep_last_;
  for (int64_t i = 0; i < excess; ++i)
    if (all[i] != path) fs::remove(all[i], ec);
  return path;
}

// ---------------------------------------------------------------- NaN guard

void check_finite(double loss, int64_t step, const std::string& last_checkpoint) {
  if (std::isfinite(loss)) return;
  fail("training stopped: the loss is ", std::isnan(loss) ? "NaN" : (loss > 0 ? "+Inf" : "-Inf"),
       " at step ", step, "; ",
       last_checkpoint.empty() ? std::string("no checkpoint was written yet (restart the run)")
                               : "the last good checkpoint is '" + last_checkpoint +
                                     "' (resume from it, e.g. with a lower learning rate)");
}

void check_finite(const Tensor& loss, int64_t step, const std::string& last_checkpoint) {
  DISTILL_CHECK(loss.defined() && loss.numel() == 1,
                "check_finite: the loss must be a scalar, got ",
                loss.defined() ? loss.describe() : "undefined");
  check_finite(loss.item(), step, last_checkpoint);
}

}  // namespace distill::train
