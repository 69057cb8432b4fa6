// Training checkpoints: everything a resumed run needs to continue bit-identically, in ONE
// safetensors file:
//   tensors   "model.<name>"      the model's state_dict (parameters and buffers)
//             "optimizer.<name>"  the optimizer's state_tensors() (moments, buffers, "step")
//   metadata  "format"            "distill-training-checkpoint", "version" "1"
//             "step", "epoch"     decimal integers
//             "rng"               {"default": {"seed", "offset"}, "<name>": {...}}: the default
//                                 generator and the caller's named generators
//             "data_position"     the data loader's position (opaque JSON from the caller)
//             "config"            the resolved run config (JSON)
//             "extra"             anything else the caller wants back (JSON)
//             "model_type", "optimizer", "schedule"   for people reading the file
// The schedule is a pure function of the optimizer's step count, which is saved.
//
// Writing is atomic and durable: save_safetensors writes a temporary file in the target's
// directory, fsyncs it, renames it over the target and fsyncs the directory. Loading validates
// the whole file before changing anything, and errors name the file (truncated, not a training
// checkpoint, missing / unexpected / mis-shaped tensors, missing generators).
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/rng.h"
#include "layers/module.h"
#include "train/optimizer.h"

namespace distill::train {

struct TrainingProgress {
  int64_t step = 0;  // the caller's step (normally optimizer steps done)
  int64_t epoch = 0;
  nlohmann::json data_position;  // opaque to the checkpoint
  nlohmann::json config;         // the resolved run config
  nlohmann::json extra;
};

// Generators besides the default one (which is always saved and restored): data order,
// augmentation, ... Names must be unique and not "default".
using NamedGenerators = std::vector<std::pair<std::string, Generator*>>;

// optimizer may be null (then none is saved).
void save_training_checkpoint(const std::string& path, const nn::Module& model,
                              const Optimizer* optimizer, const TrainingProgress& progress,
                              const NamedGenerators& generators = {});

// Restores the model, the optimizer (unless null; the file must then hold optimizer state), the
// default generator and every generator in `generators` (each must be in the file), and returns
// the progress. Nothing is modified when the file does not match.
TrainingProgress load_training_checkpoint(const std::string& path, nn::Module& model,
                                          Optimizer* optimizer,
                                          const NamedGenerators& generators = {});

// Keeps a directory of checkpoints "<prefix>-<step, 8 digits>.safetensors", the newest
// keep_last of them, and "latest.json" ({"checkpoint": file name, "step": n}) pointing at the
// newest complete one. latest.json moves only after the checkpoint is durably written, so a
// failed or killed save leaves it on the previous good checkpoint.
class CheckpointManager {
 public:
  explicit CheckpointManager(std::string directory, int64_t keep_last = 3,
                             std::string prefix = "ckpt");

  // Writes the checkpoint for progress.step, moves latest.json to it, then deletes the oldest
  // beyond keep_last (never the one latest.json names) and stale temporary files of killed
  // saves. Returns the checkpoint's path. Creates the directory if needed.
  std::string save(const nn::Module& model, const Optimizer* optimizer,
                   const TrainingProgress& progress, const NamedGenerators& generators = {});
  // The checkpoint latest.json names, or nullopt when there is none yet. Throws naming the file
  // when latest.json is unreadable or names a checkpoint that does not exist.
  std::optional<std::string> latest() const;
  // Checkpoint files in the directory, oldest first.
  std::vector<std::string> list() const;

  const std::string& directory() const { return directory_; }
  std::string path_for_step(int64_t step) const;

  // Test hook: runs after the checkpoint file is written, before latest.json moves; a throw
  // from it aborts the save like a failed write.
  void set_before_commit_hook(std::function<void(const std::string& path)> hook) {
    before_commit_ = std::move(hook);
  }

 private:
  std::string directory_;
  int64_t keep_last_;
  std::string prefix_;
  std::function<void(const std::string&)> before_commit_;
};

// NaN / Inf guard: throws an Error naming the step and the last good checkpoint (or saying that
// none was written yet) when the loss is not finite.
void check_finite(double loss, int64_t step, const std::string& last_checkpoint);
void check_finite(const Tensor& loss, int64_t step, const std::string& last_checkpoint);

}  // namespace distill::train
