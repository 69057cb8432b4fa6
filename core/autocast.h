// Mixed precision (autocast). While an AutocastGuard is active, the matrix-heavy ops (matmul, bmm,
// linear, attention, conv2d) cast their floating inputs to the low-precision dtype (bf16 by
// default; tensor-core operands, fp32 accumulation inside the kernels) and return it, while the
// precision-sensitive ops (softmax, log_softmax, layer_norm, batch_norm; the losses already compute
// in fp32) cast low-precision inputs up to fp32. The casts are differentiable, so fp32 master
// weights receive fp32 gradients and optimizer state stays fp32. F64 tensors are never touched.
#pragma once

#include <optional>
#include <vector>

#include "core/tensor.h"

namespace distill {

bool autocast_enabled();
DType autocast_dtype();

class AutocastGuard {
 public:
  explicit AutocastGuard(DType low_precision = DType::BF16, bool enabled = true);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool previous_enabled_;
  DType previous_dtype_;
};

// When autocast is on and some floating (non-F64) input is not yet in the low-precision dtype,
// returns the inputs cast to it (undefined tensors stay undefined); otherwise nullopt, so an op
// can write `if (auto c = autocast_to_low({a, b})) return op((*c)[0], (*c)[1]);`.
std::optional<std::vector<Tensor>> autocast_to_low(const std::vector<Tensor>& inputs);
// The same for ops that must run in fp32: casts bf16/f16 inputs to F32.
std::optional<std::vector<Tensor>> autocast_to_fp32(const std::vector<Tensor>& inputs);

}  // namespace distill
