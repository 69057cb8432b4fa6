// Multi-tensor optimizer updates and global-norm gradient clipping. Each call processes a whole
// list of tensors; on CUDA the list goes to the device as a table and ONE kernel launch updates
// every tensor (blocks find their tensor by binary search over chunk offsets), so a model with
// hundreds of parameters costs one launch per step instead of hundreds.
//
// Parameters and optimizer state are fp32 (master weights); gradients are F32, BF16 or F16 (per
// tensor). All buffers are contiguous with `numel` elements. Updates are in place.
#pragma once

#include "kernels/common.h"

namespace distill::kernels {

struct OptimTensor {
  float* param = nullptr;
  const void* grad = nullptr;
  DType grad_dtype = DType::F32;
  float* state0 = nullptr;  // AdamW: exp_avg; SGD: momentum buffer (nullptr when momentum == 0)
  float* state1 = nullptr;  // AdamW: exp_avg_sq; unused by SGD
  int64_t numel = 0;
  // SGD: the momentum buffer is new and is set to the gradient (PyTorch's first step, no
  // dampening) instead of being blended with it.
  bool init_state = false;
};

// PyTorch's AdamW (decoupled weight decay, bias correction with `step` >= 1):
//   p <- p (1 - lr wd)
//   m <- m + (1 - beta1) (g - m)           v <- beta2 v + (1 - beta2) g^2
//   p <- p - lr / (1 - beta1^step) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
struct AdamWHyper {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 1e-2;
  int64_t step = 1;
};

// PyTorch's SGD: g <- g + wd p; with momentum mu: b <- mu b + (1 - dampening) g (b <- g on the
// first step), g <- g + mu b (Nesterov) or g <- b; then p <- p - lr g.
struct SgdHyper {
  double lr = 1e-2, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false;
};

struct GradTensor {
  void* data = nullptr;
  DType dtype = DType::F32;
  int64_t numel = 0;
};

namespace cpu {
void adamw_step(const OptimTensor* tensors, int64_t count, const AdamWHyper& hyper);
void sgd_step(const OptimTensor* tensors, int64_t count, const SgdHyper& hyper);
// total_norm (one F32 element, same device) <- sqrt(sum of squares of every gradient); then every
// gradient is multiplied by min(1, max_norm / (total_norm + 1e-6)) (PyTorch's clip_grad_norm_).
void clip_grad_norm(const GradTensor* grads, int64_t count, double max_norm, float* total_norm);
}  // namespace cpu

namespace cuda {
void adamw_step(const OptimTensor* tensors, int64_t count, const AdamWHyper& hyper);
void sgd_step(const OptimTensor* tensors, int64_t count, const SgdHyper& hyper);
// One reduction kernel over all tensors (per-block partials, the last block to finish adds them
// in a fixed order) and one scaling kernel that reads the norm on the device: no host sync.
void clip_grad_norm(const GradTensor* grads, int64_t count, double max_norm, float* total_norm);
}  // namespace cuda

}  // namespace distill::kernels
