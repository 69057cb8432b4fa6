// Learning-rate schedules: pure functions of the optimizer step, so a schedule has no state to
// checkpoint beyond that step (the Optimizer's step count).
//
// Formulas (the step is 0-based: lr(0) is the lr of the first optimizer step, as with a PyTorch
// LambdaLR that is stepped after each optimizer.step()):
//   warmup (all kinds), step < warmup_steps:  base_lr * step / warmup_steps
//   constant:  base_lr
//   cosine:    base_lr * (r + (1 - r) * 0.5 * (1 + cos(pi * p))), r = min_lr_ratio,
//              p = (step - warmup_steps) / (total_steps - warmup_steps), clamped to [0, 1]
//              (Hugging Face's get_cosine_with_min_lr_schedule_with_warmup; r = 0 is
//              get_cosine_schedule_with_warmup; past total_steps the lr stays at r * base_lr)
//   step:      base_lr * gamma ^ floor((step - warmup_steps) / step_size)
//              (torch.optim.lr_scheduler.StepLR started when the warmup ends)
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace distill::train {

enum class ScheduleKind { Constant, Cosine, Step };
const char* schedule_kind_name(ScheduleKind kind);              // "constant", "cosine", "step"
ScheduleKind schedule_kind_from_name(const std::string& name);  // throws listing the kinds

struct LrSchedule {
  ScheduleKind kind = ScheduleKind::Constant;
  double base_lr = 1e-3;
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;    // cosine: the step at which the lr reaches min_lr_ratio * base_lr
  double min_lr_ratio = 0.0;  // cosine
  int64_t step_size = 1;      // step decay: steps between decays
  double gamma = 0.1;         // step decay: factor per decay

  // The lr of optimizer step `step` (0-based). Throws on a negative step or an invalid schedule.
  double lr(int64_t step) const;
  // Throws naming the bad field (called by lr() and by the JSON reader).
  void validate() const;
};

nlohmann::json to_json(const LrSchedule& schedule);
// Missing keys keep their defaults; unknown keys and bad values are errors naming `where`.
LrSchedule lr_schedule_from_json(const nlohmann::json& j, const std::string& where);

}  // namespace distill::train
