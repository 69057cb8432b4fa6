// The stage-2 distillation loss (DESIGN.md section 1):
//
//   L = alpha * tau^2 * CE(softmax(z_t / tau), softmax(z_s / tau)) + (1 - alpha) * CE(labels, z_s)
//
// with CE(p, q) = -sum_c p_c log q_c averaged over the batch, z_s the student's and z_t the
// teacher's logits. tau^2 keeps the soft term's gradient magnitude independent of tau (Hinton et
// al.); the teacher's distribution is a constant (no gradient reaches the teacher). Thesis
// default alpha = 1, tau = 1: pure soft-target cross-entropy (eq. 3.3).
//
// Built on core/ops_loss.h: soft_cross_entropy(z_s, p_t, tau) divides only the student's logits
// by tau, so the teacher's softened target p_t = softmax(z_t / tau) is computed here.
#pragma once

#include "core/ops.h"

namespace distill::train {

struct DistillationOptions {
  double alpha = 1.0;        // weight of the soft (teacher) term, in [0, 1]
  double temperature = 1.0;  // tau > 0
};

struct DistillationLoss {
  Tensor total;  // scalar, differentiable w.r.t. the student logits
  // The two terms unweighted, for logging; each is computed whenever its input is given (without
  // a gradient when its weight is 0) and undefined otherwise.
  Tensor soft;  // CE(softmax(z_t / tau), softmax(z_s / tau))
  Tensor hard;  // CE(labels, z_s)
};

// student_logits [N, C] (floating; the loss is fp32 for f32/bf16/f16 logits and f64 for f64),
// teacher_logits [N, C] (any floating dtype; may be undefined when alpha == 0), labels [N]
// (integer class ids; may be undefined when alpha == 1). With alpha < 1, rows labelled -100 are
// left out of the hard term (cross_entropy's ignore_index), but a batch with no labelled row
// gives NaN there, as in PyTorch: use alpha = 1 on unlabelled data.
DistillationLoss distillation_loss(const Tensor& student_logits, const Tensor& teacher_logits,
                                   const Tensor& labels, const DistillationOptions& options = {});

}  // namespace distill::train
