// In-place optimizer steps over tensor lists (kernels/optim.h): validation, lazy state creation
// and one multi-tensor kernel call per step.
#include "kernels/optim.h"

#include <cmath>

#include "core/error.h"
#include "core/ops.h"
#include "core/ops/dispatch.h"

namespace distill {

namespace {

void check_param(const char* op, const Tensor& p, size_t i) {
  DISTILL_CHECK(p.defined(), op, ": param ", i, " is undefined");
  DISTILL_CHECK(p.dtype() == DType::F32 && p.is_contiguous(), op, ": param ", i, " ", p.describe(),
                " must be a contiguous F32 tensor (fp32 master weights)");
}

// The gradient as the kernels read it: contiguous, with the param's shape and device.
Tensor checked_grad(const char* op, const Tensor& p, const Tensor& g, size_t i) {
  DISTILL_CHECK(g.shape() == p.shape(), op, ": grad ", i, " ", g.describe(),
                " does not match param ", p.describe());
  DISTILL_CHECK(g.device() == p.device(), op, ": grad ", i, " ", g.describe(),
                " is not on the device of param ", p.describe());
  DISTILL_CHECK(g.dtype() == DType::F32 || g.dtype() == DType::BF16 || g.dtype() == DType::F16, op,
                ": grad ", i, " ", g.describe(), " must be F32, BF16 or F16");
  NoGradGuard no_grad;
  return contiguous(g.detach());
}

// Creates an undefined state entry (zeros or a copy of `init`), or checks an existing one.
Tensor& state_for(const char* op, const char* name, std::vector<Tensor>& states, size_t i,
                  const Tensor& p) {
  if (states.size() <= i) states.resize(i + 1);
  Tensor& s = states[i];
  if (!s.defined()) {
    s = zeros(p.shape(), TensorOptions(DType::F32, p.device()));
  } else {
    DISTILL_CHECK(s.shape() == p.shape() && s.dtype() == DType::F32 && s.is_contiguous() &&
                      s.device() == p.device(),
                  op, ": ", name, " ", i, " ", s.describe(),
                  " must be a contiguous F32 tensor like param ", p.describe());
  }
  return s;
}

// The lists' common device (CPU when every grad is undefined).
Device list_device(const char* op, const std::vector<Tensor>& tensors) {
  const Tensor* first = nullptr;
  for (const Tensor& t : tensors) {
    if (!t.defined()) continue;
    if (!first) first = &t;
    DISTILL_CHECK(t.device() == first->device(), op,
                  ": tensors on different devices: ", first->describe(), " and ", t.describe());
  }
  return first ? first->device() : Device::cpu();
}

}  // namespace

void adamw_step(std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                std::vector<Tensor>& exp_avg, std::vector<Tensor>& exp_avg_sq,
                const AdamWConfig& config, int64_t step) {
  const char* op = "adamw_step";
  DISTILL_CHECK(grads.size() == params.size(), op, ": ", params.size(), " params but ",
                grads.size(), " grads");
  DISTILL_CHECK(step >= 1, op, ": step must be at least 1 (bias correction), got ", step);
  DISTILL_CHECK(config.lr >= 0 && config.eps > 0 && config.weight_decay >= 0, op, ": invalid lr ",
                config.lr, ", eps ", config.eps, " or weight_decay ", config.weight_decay);
  DISTILL_CHECK(config.beta1 >= 0 && config.beta1 < 1 && config.beta2 >= 0 && config.beta2 < 1, op,
                ": betas must be in [0, 1), got (", config.beta1, ", ", config.beta2, ")");
  const Device device = list_device(op, params);
  std::vector<Tensor> keep_alive;  // contiguous grad copies live until the kernel has read them
  std::vector<kernels::OptimTensor> table;
  for (size_t i = 0; i < params.size(); ++i) {
    check_param(op, params[i], i);
    if (!grads[i].defined()) continue;
    const Tensor g = checked_grad(op, params[i], grads[i], i);
    Tensor& m = state_for(op, "exp_avg", exp_avg, i, params[i]);
    Tensor& v = state_for(op, "exp_avg_sq", exp_avg_sq, i, params[i]);
    keep_alive.push_back(g);
    kernels::OptimTensor t;
    t.param = params[i].data<float>();
    t.grad = g.data_ptr();
    t.grad_dtype = g.dtype();
    t.state0 = m.data<float>();
    t.state1 = v.data<float>();
    t.numel = params[i].numel();
    table.push_back(t);
  }
  if (table.empty()) return;
  kernels::AdamWHyper h;
  h.lr = config.lr;
  h.beta1 = config.beta1;
  h.beta2 = config.beta2;
  h.eps = config.eps;
  h.weight_decay = config.weight_decay;
  h.step = step;
  DISTILL_DISPATCH(device, adamw_step, table.data(), static_cast<int64_t>(table.size()), h);
}

void sgd_step(std::vector<Tensor>& params, const std::vector<Tensor>& grads,
              std::vector<Tensor>& momentum_buffers, const SGDConfig& config) {
  const char* op = "sgd_step";
  DISTILL_CHECK(grads.size() == params.size(), op, ": ", params.size(), " params but ",
                grads.size(), " grads");
  DISTILL_CHECK(config.lr >= 0 && config.momentum >= 0 && config.weight_decay >= 0, op,
                ": invalid lr ", config.lr, ", momentum ", config.momentum, " or weight_decay ",
                config.weight_decay);
  DISTILL_CHECK(!config.nesterov || (config.momentum > 0 && config.dampening == 0), op,
                ": Nesterov momentum requires a momentum and zero dampening (got momentum ",
                config.momentum, ", dampening ", config.dampening, ")");
  const Device device = list_device(op, params);
  std::vector<Tensor> keep_alive;
  std::vector<kernels::OptimTensor> table;
  for (size_t i = 0; i < params.size(); ++i) {
    check_param(op, params[i], i);
    if (!grads[i].defined()) continue;
    const Tensor g = checked_grad(op, params[i], grads[i], i);
    keep_alive.push_back(g);
    kernels::OptimTensor t;
    t.param = params[i].data<float>();
    t.grad = g.data_ptr();
    t.grad_dtype = g.dtype();
    t.numel = params[i].numel();
    if (config.momentum != 0) {
      if (momentum_buffers.size() <= i) momentum_buffers.resize(i + 1);
      // A new buffer is filled from the gradient by the kernel itself (PyTorch's first step).
      t.init_state = !momentum_buffers[i].defined();
      if (t.init_state) {
        momentum_buffers[i] = Tensor::empty(params[i].shape(), TensorOptions(DType::F32, device));
      }
      Tensor& b = state_for(op, "momentum_buffer", momentum_buffers, i, params[i]);
      t.state0 = b.data<float>();
    }
    table.push_back(t);
  }
  if (table.empty()) return;
  kernels::SgdHyper h;
  h.lr = config.lr;
  h.momentum = config.momentum;
  h.dampening = config.dampening;
  h.weight_decay = config.weight_decay;
  h.nesterov = config.nesterov;
  DISTILL_DISPATCH(device, sgd_step, table.data(), static_cast<int64_t>(table.size()), h);
}

Tensor clip_grad_norm(std::vector<Tensor>& grads, double max_norm) {
  const char* op = "clip_grad_norm";
  DISTILL_CHECK(max_norm >= 0 && !std::isnan(max_norm), op, ": max_norm must be non-negative, got ",
                max_norm);
  const Device device = list_device(op, grads);
  std::vector<kernels::GradTensor> table;
  for (size_t i = 0; i < grads.size(); ++i) {
    const Tensor& g = grads[i];
    if (!g.defined()) continue;
    DISTILL_CHECK(g.is_contiguous(), op, ": grad ", i, " ", g.describe(),
                  " must be contiguous (it is scaled in place)");
    DISTILL_CHECK(g.dtype() == DType::F32 || g.dtype() == DType::BF16 || g.dtype() == DType::F16,
                  op, ": grad ", i, " ", g.describe(), " must be F32, BF16 or F16");
    kernels::GradTensor t;
    t.data = g.data_ptr();
    t.dtype = g.dtype();
    t.numel = g.numel();
    table.push_back(t);
  }
  Tensor total = Tensor::empty({}, TensorOptions(DType::F32, device));
  DISTILL_DISPATCH(device, clip_grad_norm, table.data(), static_cast<int64_t>(table.size()),
                   max_norm, total.data<float>());
  return total;
}

}  // namespace distill
