#include "train/schedule.h"

#include <cmath>
#include <numbers>

#include "core/error.h"
#include "train/json_fields.h"

namespace distill::train {

const char* schedule_kind_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::Constant:
      return "constant";
    case ScheduleKind::Cosine:
      return "cosine";
    case ScheduleKind::Step:
      return "step";
  }
  return "?";
}

ScheduleKind schedule_kind_from_name(const std::string& name) {
  for (ScheduleKind k : {ScheduleKind::Constant, ScheduleKind::Cosine, ScheduleKind::Step})
    if (name == schedule_kind_name(k)) return k;
  fail("lr schedule: unknown kind '", name, "' (known: constant, cosine, step)");
}

void LrSchedule::validate() const {
  const char* where = "lr schedule";
  DISTILL_CHECK(base_lr >= 0 && std::isfinite(base_lr), where,
                ": base_lr must be a finite number >= 0, got ", base_lr);
  DISTILL_CHECK(warmup_steps >= 0, where, ": warmup_steps must be >= 0, got ", warmup_steps);
  if (kind == ScheduleKind::Cosine) {
    DISTILL_CHECK(total_steps > warmup_steps, where, ": cosine needs total_steps (", total_steps,
                  ") > warmup_steps (", warmup_steps, ")");
    DISTILL_CHECK(min_lr_ratio >= 0 && min_lr_ratio <= 1, where,
                  ": min_lr_ratio must be in [0, 1], got ", min_lr_ratio);
  }
  if (kind == ScheduleKind::Step) {
    DISTILL_CHECK(step_size >= 1, where, ": step_size must be >= 1, got ", step_size);
    DISTILL_CHECK(gamma > 0 && gamma <= 1, where, ": gamma must be in (0, 1], got ", gamma);
  }
}

double LrSchedule::lr(int64_t step) const {
  validate();
  DISTILL_CHECK(step >= 0, "lr schedule: step must be >= 0, got ", step);
  if (step < warmup_steps)
    return base_lr * static_cast<double>(step) / static_cast<double>(warmup_steps);
  const int64_t after_warmup = step - warmup_steps;
  switch (kind) {
    case ScheduleKind::Constant:
      return base_lr;
    case ScheduleKind::Cosine: {
      const double progress = std::min(
          1.0, static_cast<double>(after_warmup) / static_cast<double>(total_steps - warmup_steps));
      const double cosine = 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
      return base_lr * (min_lr_ratio + (1.0 - min_lr_ratio) * cosine);
    }
    case ScheduleKind::Step:
      return base_lr * std::pow(gamma, static_cast<double>(after_warmup / step_size));
  }
  return base_lr;
}

nlohmann::json to_json(const LrSchedule& s) {
  nlohmann::json j = {{"kind", schedule_kind_name(s.kind)},
                      {"base_lr", s.base_lr},
                      {"warmup_steps", s.warmup_steps}};
  if (s.kind == ScheduleKind::Cosine) {
    j["total_steps"] = s.total_steps;
    j["min_lr_ratio"] = s.min_lr_ratio;
  }
  if (s.kind == ScheduleKind::Step) {
    j["step_size"] = s.step_size;
    j["gamma"] = s.gamma;
  }
  return j;
}

LrSchedule lr_schedule_from_json(const nlohmann::json& j, const std::string& where) {
  const JsonFields f(
      j, where,
      {"kind", "base_lr", "warmup_steps", "total_steps", "min_lr_ratio", "step_size", "gamma"});
  LrSchedule s;
  std::string kind = schedule_kind_name(s.kind);
  f.get("kind", kind);
  try {
    s.kind = schedule_kind_from_name(kind);
    f.get("base_lr", s.base_lr);
    f.get("warmup_steps", s.warmup_steps);
    f.get("total_steps", s.total_steps);
    f.get("min_lr_ratio", s.min_lr_ratio);
    f.get("step_size", s.step_size);
    f.get("gamma", s.gamma);
    s.validate();
  } catch (const Error& e) {
    const std::string what = e.what();
    // JsonFields errors already name `where`; the rest get it prefixed.
    if (what.rfind(where, 0) == 0) throw;
    fail(where, ": ", what);
  }
  return s;
}

}  // namespace distill::train
