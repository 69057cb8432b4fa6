// CPU reference optimizers (kernels/optim.h): the same fp32 formulas, in the same order, as the
// CUDA kernels (and PyTorch's), one tensor after another, elements in parallel.
#include "kernels/optim.h"

#include <cmath>

#include "kernels/cpu/loops.h"

namespace distill::kernels::cpu {

namespace {

bool parallel_for(int64_t n) {
  return n >= kParallelGrain;
}

// fn(read) with read(i) -> float for the gradient's dtype; the switch stays outside the loops.
template <typename Fn>
void with_grad_reader(const void* grad, DType dtype, Fn&& fn) {
  if (dtype == DType::F32) {
    const float* g = static_cast<const float*>(grad);
    fn([g](int64_t i) { return g[i]; });
  } else {
    fn([grad, dtype](int64_t i) { return load_as<float>(grad, i, dtype); });
  }
}

}  // namespace

void adamw_step(const OptimTensor* tensors, int64_t count, const AdamWHyper& h) {
  const double step = static_cast<double>(h.step);
  const float step_size = static_cast<float>(h.lr / (1.0 - std::pow(h.beta1, step)));
  const float bias_correction2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(h.beta2, step)));
  const float decay = static_cast<float>(1.0 - h.lr * h.weight_decay);
  const float one_minus_beta1 = static_cast<float>(1.0 - h.beta1);
  const float beta2 = static_cast<float>(h.beta2),
              one_minus_beta2 = static_cast<float>(1.0 - h.beta2);
  const float eps = static_cast<float>(h.eps);
  for (int64_t t = 0; t < count; ++t) {
    const OptimTensor& o = tensors[t];
    with_grad_reader(o.grad, o.grad_dtype, [&](auto grad) {
      float* p = o.param;
      float* m = o.state0;
      float* v = o.state1;
#pragma omp parallel for schedule(static) if (parallel_for(o.numel))
      for (int64_t i = 0; i < o.numel; ++i) {
        const float g = grad(i);
        m[i] += one_minus_beta1 * (g - m[i]);
        v[i] = beta2 * v[i] + one_minus_beta2 * g * g;
        const float denom = std::sqrt(v[i]) / bias_correction2_sqrt + eps;
        p[i] = p[i] * decay - step_size * m[i] / denom;
      }
    });
  }
}

void sgd_step(const OptimTensor* tensors, int64_t count, const SgdHyper& h) {
  const float lr = static_cast<float>(h.lr), momentum = static_cast<float>(h.momentum);
  const float one_minus_dampening = static_cast<float>(1.0 - h.dampening);
  const float weight_decay = static_cast<float>(h.weight_decay);
  for (int64_t t = 0; t < count; ++t) {
    const OptimTensor& o = tensors[t];
    with_grad_reader(o.grad, o.grad_dtype, [&](auto grad) {
      float* p = o.param;
      float* buf = o.state0;
#pragma omp parallel for schedule(static) if (parallel_for(o.numel))
      for (int64_t i = 0; i < o.numel; ++i) {
        float g = grad(i) + weight_decay * p[i];
        if (buf) {
          const float b = o.init_state ? g : momentum * buf[i] + one_minus_dampening * g;
          buf[i] = b;
          g = h.nesterov ? g + momentum * b : b;
        }
        p[i] -= lr * g;
      }
    });
  }
}

void clip_grad_norm(const GradTensor* grads, int64_t count, double max_norm, float* total_norm) {
  double sum_sq = 0;
  for (int64_t t = 0; t < count; ++t) {
    const GradTensor& gt = grads[t];
    with_grad_reader(gt.data, gt.dtype, [&](auto grad) {
      double tensor_sum = 0;
#pragma omp parallel for schedule(static) reduction(+ : tensor_sum) if (parallel_for(gt.numel))
      for (int64_t i = 0; i < gt.numel; ++i) {
        const double v = grad(i);
        tensor_sum += v * v;
      }
      sum_sq += tensor_sum;
    });
  }
  const double norm = std::sqrt(sum_sq);
  *total_norm = static_cast<float>(norm);
  // PyTorch multiplies by min(coef, 1): 1 leaves the grads as they are (a NaN norm still
  // propagates into the grads, as in PyTorch). Same fp32 arithmetic as the CUDA kernel.
  const float coef = static_cast<float>(max_norm) / (static_cast<float>(norm) + 1e-6f);
  if (coef >= 1.f) return;
  for (int64_t t = 0; t < count; ++t) {
    const GradTensor& g = grads[t];
    if (g.dtype == DType::F32) {
      float* p = static_cast<float*>(g.data);
#pragma omp parallel for schedule(static) if (parallel_for(g.numel))
      for (int64_t i = 0; i < g.numel; ++i) p[i] *= coef;
    } else {
#pragma omp parallel for schedule(static) if (parallel_for(g.numel))
      for (int64_t i = 0; i < g.numel; ++i)
        store_as<float>(g.data, i, g.dtype, load_as<float>(g.data, i, g.dtype) * coef);
    }
  }
}

}  // namespace distill::kernels::cpu
