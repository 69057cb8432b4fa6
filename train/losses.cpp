#include "train/losses.h"

#include <cmath>
#include <optional>

#include "core/error.h"

namespace distill::train {

DistillationLoss distillation_loss(const Tensor& student_logits, const Tensor& teacher_logits,
                                   const Tensor& labels, const DistillationOptions& options) {
  const char* op = "distillation_loss";
  const double alpha = options.alpha, tau = options.temperature;
  DISTILL_CHECK(alpha >= 0 && alpha <= 1, op, ": alpha must be in [0, 1], got ", alpha);
  DISTILL_CHECK(tau > 0 && std::isfinite(tau), op, ": temperature must be > 0, got ", tau);
  check_defined(op, student_logits, "student_logits");
  DISTILL_CHECK(student_logits.dim() == 2, op, ": student logits must be [N, C], got ",
                student_logits.describe());
  DistillationLoss out;
  DISTILL_CHECK(alpha == 0 || teacher_logits.defined(), op, ": alpha ", alpha,
                " > 0 needs the teacher's logits");
  DISTILL_CHECK(alpha == 1 || labels.defined(), op, ": alpha ", alpha, " < 1 needs the labels");
  if (teacher_logits.defined()) {
    DISTILL_CHECK(teacher_logits.shape() == student_logits.shape(), op, ": teacher logits ",
                  teacher_logits.describe(), " do not match student logits ",
                  student_logits.describe());
    Tensor target;
    {
      // The teacher is a constant; its softmax is taken in fp32 (f64 for f64 students).
      NoGradGuard no_grad;
      const DType dtype = student_logits.dtype() == DType::F64 ? DType::F64 : DType::F32;
      const Tensor z_t = teacher_logits.detach().to(student_logits.device()).to(dtype);
      target = softmax(tau == 1.0 ? z_t : mul(z_t, 1.0 / tau), -1);
    }
    std::optional<NoGradGuard> logging_only;
    if (alpha == 0) logging_only.emplace();
    out.soft = soft_cross_entropy(student_logits, target, tau, Reduction::Mean);
    if (alpha > 0) out.total = mul(out.soft, alpha * tau * tau);
  }
  if (labels.defined()) {
    std::optional<NoGradGuard> logging_only;
    if (alpha == 1) logging_only.emplace();
    out.hard = cross_entropy(student_logits, labels);
    if (alpha < 1) {
      const Tensor weighted = mul(out.hard, 1.0 - alpha);
      out.total = out.total.defined() ? add(out.total, weighted) : weighted;
    }
  }
  return out;
}

}  // namespace distill::train
