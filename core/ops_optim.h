// Public API of the optim op family (see core/ops.h for conventions): in-place optimizer steps
// over lists of tensors (PyTorch semantics), without autograd. The train/ Optimizer classes are
// built on these. On CUDA each call is ONE kernel launch for the whole list (clip_grad_norm: two).
//
// Shared rules: params and optimizer state are contiguous F32 tensors (fp32 master weights) on
// one device; grads have the params' shapes and are F32, BF16 or F16 (made contiguous if needed).
// A param whose grad is undefined is skipped (PyTorch skips params with grad None). State
// entries that are undefined are created on first use (zeros for AdamW, the gradient for the
// SGD momentum buffer), so passing empty state vectors on the first step is fine.
#pragma once

#include "core/ops.h"

namespace distill {

struct AdamWConfig {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;  // decoupled: p <- p (1 - lr wd)
};

// One AdamW step; `step` is the 1-based step count used for bias correction.
void adamw_step(std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                std::vector<Tensor>& exp_avg, std::vector<Tensor>& exp_avg_sq,
                const AdamWConfig& config, int64_t step);

struct SGDConfig {
  double lr = 1e-2;
  double momentum = 0;
  double dampening = 0;
  double weight_decay = 0;  // L2: added to the gradient
  bool nesterov = false;    // needs momentum > 0 and dampening == 0 (as in PyTorch)
};

// One SGD step. momentum_buffers is unused when momentum == 0.
void sgd_step(std::vector<Tensor>& params, const std::vector<Tensor>& grads,
              std::vector<Tensor>& momentum_buffers, const SGDConfig& config);

// Global L2-norm clipping (torch.nn.utils.clip_grad_norm_): total = ||concat(grads)||_2, then
// every grad is scaled in place by min(1, max_norm / (total + 1e-6)). Returns the total norm as a
// 0-dim F32 tensor on the grads' device (read it with .item(), which synchronises). Undefined
// grads are skipped; grads must be contiguous (they are modified in place).
Tensor clip_grad_norm(std::vector<Tensor>& grads, double max_norm);

}  // namespace distill
