// Optimizer: AdamW or SGD over a module's trainable parameters, split into param groups (weight
// decay on weights only, per-group lr scaling), with the lr from an LrSchedule, optional global
// gradient-norm clipping and gradient accumulation. The update itself is the fused multi-tensor
// op of core/ops_optim.h (one kernel per group on CUDA).
//
// Weight decay (WeightDecayRule, the timm / open_clip convention): a trainable parameter gets NO
// weight decay when
//   1. it has at most one dimension: biases, LayerNorm / BatchNorm weights, CLIP's
//      class_embedding, logit scales;
//   2. it is the weight of an nn::Embedding module: token / word / position / token-type tables;
//   3. its own name (the last dotted component) contains "embedding": embedding tensors held
//      directly by a model, like the ViT's and the text transformer's position_embedding
//      (patch_embed.weight is a convolution and is decayed);
//   4. its full name contains one of WeightDecayRule::exclude_names (caller's exclusions).
// Rules 1-3 can be switched off. Every other parameter (Linear / Conv2d / attention weights,
// projections) is decayed with OptimizerConfig::weight_decay.
//
// Gradient accumulation: accumulate(loss) runs loss.backward() with the loss scaled by
// 1 / accumulation_steps (THE OPTIMIZER SCALES, the caller passes its plain mean loss), and
// after the accumulation_steps-th micro-batch clips and steps. So N micro-batches of b with a
// mean loss give the gradient of the mean over the N * b items, i.e. one batch of N * b.
//
// The step count is global (PyTorch keeps one per parameter; they differ only for parameters
// that go without a gradient on some steps). AdamW bias correction uses step_count() + 1 and the
// schedule gives lr(step_count()) for the step about to be taken.
//
// Construct the optimizer after the model is on its device: it holds handles to the parameters.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "layers/module.h"
#include "train/schedule.h"

namespace distill::train {

enum class OptimizerKind { AdamW, SGD };
const char* optimizer_kind_name(OptimizerKind kind);              // "adamw", "sgd"
OptimizerKind optimizer_kind_from_name(const std::string& name);  // throws listing the kinds

struct WeightDecayRule {
  bool exclude_1d = true;                  // rule 1
  bool exclude_embeddings = true;          // rules 2 and 3
  std::vector<std::string> exclude_names;  // rule 4: substrings of full parameter names
};

// Whether the parameter `name` of `module` is decayed under `rule` (throws for an unknown name).
bool gets_weight_decay(const nn::Module& module, const std::string& name,
                       const WeightDecayRule& rule = {});

struct ParamGroup {
  std::string name;
  nn::NamedTensors params;  // handles to the module's parameters (F32, contiguous, one device)
  double weight_decay = 0;  // AdamW: decoupled; SGD: L2 added to the gradient
  double lr_scale = 1;      // this group's lr = schedule lr * lr_scale
};

// The module's trainable (requires_grad) parameters in two groups, in named_parameters() order:
// "decay" (weight_decay) and "no_decay" (0). A group with no parameters is left out.
std::vector<ParamGroup> weight_decay_groups(const nn::Module& module, double weight_decay,
                                            const WeightDecayRule& rule = {});

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::AdamW;
  // Applied to the "decay" group (PyTorch's defaults: AdamW 0.01, SGD 0; configs set it).
  double weight_decay = 0.0;
  WeightDecayRule decay_rule;
  // AdamW.
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  // SGD (timm's momentum default; PyTorch's is 0).
  double momentum = 0.9, dampening = 0.0;
  bool nesterov = false;
  // > 0: scale all gradients so their global L2 norm is at most this, before each step.
  double max_grad_norm = 0.0;
  // Micro-batches per optimizer step (accumulate()).
  int64_t accumulation_steps = 1;

  void validate() const;  // throws naming the bad field
};

nlohmann::json to_json(const OptimizerConfig& config);
// Keys: kind, weight_decay, beta1, beta2, eps, momentum, dampening, nesterov, max_grad_norm,
// accumulation_steps, no_decay_1d, no_decay_embeddings, no_decay_names (a list of strings).
// Missing keys keep their defaults; unknown keys and bad values are errors naming `where`.
OptimizerConfig optimizer_config_from_json(const nlohmann::json& j, const std::string& where);

// What one accumulate() / step() call did.
struct StepInfo {
  bool stepped = false;   // false: a micro-batch was accumulated, no update yet
  int64_t step = 0;       // optimizer steps taken so far (after this call)
  double lr = 0;          // the schedule's lr used by the update (0 when not stepped)
  double grad_norm = -1;  // global grad norm before clipping; -1 when clipping is off
};

// Data-parallel gradient reduction (train/data_parallel.h) plugged into accumulate(): told
// before each micro-batch's backward whether that micro-batch steps, and asked to finish (every
// rank then holds the same averaged gradients) after its backward, before clipping and the update.
class GradientReducer {
 public:
  virtual ~GradientReducer() = default;
  virtual void before_backward(bool steps) = 0;
  virtual void before_step() = 0;
};

class Optimizer {
 public:
  // weight_decay_groups(module, config.weight_decay, config.decay_rule).
  Optimizer(const nn::Module& module, const OptimizerConfig& config, const LrSchedule& schedule);
  Optimizer(std::vector<ParamGroup> groups, const OptimizerConfig& config,
            const LrSchedule& schedule);

  // One micro-batch: drops old gradients when it starts a new accumulation window, runs the
  // backward of loss / accumulation_steps (a scalar), and on the last micro-batch of the window
  // steps. Gradients are kept after the step (for inspection) until the next window starts.
  StepInfo accumulate(const Tensor& loss);
  // Clips (if configured) and updates with the gradients the parameters hold now, at the lr
  // schedule.lr(step_count()), then advances the step count. Does not zero the gradients.
  StepInfo step();
  // Drops every parameter's gradient and restarts the accumulation window.
  void zero_grad();
  // accumulate() calls `reducer` (not owned; nullptr: none) around the backward of each step.
  void set_gradient_reducer(GradientReducer* reducer) { reducer_ = reducer; }

  double current_lr() const { return schedule_.lr(step_count_); }  // lr of the next step
  int64_t step_count() const { return step_count_; }
  int64_t pending_micro_batches() const { return micro_batches_; }
  const std::vector<ParamGroup>& groups() const { return groups_; }
  const OptimizerConfig& config() const { return config_; }
  const LrSchedule& schedule() const { return schedule_; }

  // State for checkpoints: "<param>.exp_avg" and "<param>.exp_avg_sq" (AdamW) or
  // "<param>.momentum_buffer" (SGD with momentum) for every state entry created so far, plus
  // "step" (I64 scalar, the step count). Entries are created on a parameter's first update.
  // Throws while micro-batches are pending (their gradients are not part of the state).
  nn::NamedTensors state_tensors() const;
  // Throws (naming `source`) on unknown names, wrong shapes or dtypes, a missing "step"; nothing
  // is modified then. State entries absent from `state` are dropped (created again on use).
  void validate_state(const nn::NamedTensors& state, const std::string& source) const;
  void load_state(const nn::NamedTensors& state, const std::string& source);

 private:
  struct GroupState {
    std::vector<Tensor> params;
    std::vector<Tensor> exp_avg, exp_avg_sq, momentum;  // parallel to params; may be undefined
  };
  // Calls f(name, param, state tensor) for every state entry of this kind, defined or not.
  template <typename Self, typename F>
  static void for_each_state(Self& self, F&& f);

  std::vector<ParamGroup> groups_;
  std::vector<GroupState> state_;
  OptimizerConfig config_;
  LrSchedule schedule_;
  Device device_ = Device::cpu();  // of every parameter
  int64_t step_count_ = 0;
  int64_t micro_batches_ = 0;
  GradientReducer* reducer_ = nullptr;
};

}  // namespace distill::train
