#include "core/autocast.h"

#include "core/error.h"
#include "core/ops.h"

namespace distill {

namespace {
thread_local bool t_enabled = false;
thread_local DType t_dtype = DType::BF16;

bool is_low_precision(DType t) {
  return t == DType::BF16 || t == DType::F16;
}

std::optional<std::vector<Tensor>> cast_where(const std::vector<Tensor>& inputs, DType target,
                                              bool (*needs_cast)(DType, DType)) {
  if (!t_enabled) return std::nullopt;
  bool any = false;
  for (const Tensor& t : inputs) any = any || (t.defined() && needs_cast(t.dtype(), target));
  if (!any) return std::nullopt;
  std::vector<Tensor> out;
  out.reserve(inputs.size());
  for (const Tensor& t : inputs)
    out.push_back(t.defined() && needs_cast(t.dtype(), target) ? to_dtype(t, target) : t);
  return out;
}
}  // namespace

bool autocast_enabled() {
  return t_enabled;
}
DType autocast_dtype() {
  return t_dtype;
}

AutocastGuard::AutocastGuard(DType low_precision, bool enabled)
    : previous_enabled_(t_enabled), previous_dtype_(t_dtype) {
  DISTILL_CHECK(is_low_precision(low_precision),
                "autocast: the low-precision dtype must be bf16 "
                "or f16, got ",
                dtype_name(low_precision));
  t_enabled = enabled;
  t_dtype = low_precision;
}

AutocastGuard::~AutocastGuard() {
  t_enabled = previous_enabled_;
  t_dtype = previous_dtype_;
}

std::optional<std::vector<Tensor>> autocast_to_low(const std::vector<Tensor>& inputs) {
  return cast_where(inputs, t_dtype, [](DType t, DType target) {
    return (t == DType::F32 || is_low_precision(t)) && t != target;
  });
}

std::optional<std::vector<Tensor>> autocast_to_fp32(const std::vector<Tensor>& inputs) {
  return cast_where(inputs, DType::F32, [](DType t, DType) { return is_low_precision(t); });
}

}  // namespace distill
