#include "layers/sync_batch_norm.h"

#include <atomic>

#include "core/autograd.h"
#include "core/distributed.h"
#include "core/error.h"
#include "core/ops.h"

namespace distill::nn {

namespace {

std::atomic<bool> g_sync{false};

// Sum over ranks whose backward is the sum over ranks of the incoming gradients: rank r's local
// statistic feeds every rank's loss through the global statistic.
Tensor all_reduce_sum_differentiable(const Tensor& x) {
  Tensor out = x.contiguous().clone();
  dist::all_reduce_sum(out);
  record_fn(out, "AllReduceSum", {x}, [](const Tensor& g) {
    Tensor summed = g.contiguous().clone();
    dist::all_reduce_sum(summed);
    return std::vector<Tensor>{summed};
  });
  return out;
}

}  // namespace

void set_sync_batch_norm(bool on) {
  g_sync = on;
}
bool sync_batch_norm_enabled() {
  return g_sync;
}

Tensor sync_batch_norm(const Tensor& x_in, const Tensor& weight, const Tensor& bias,
                       const Tensor& running_mean, const Tensor& running_var, double momentum,
                       double eps) {
  DISTILL_CHECK(x_in.dim() == 4, "sync_batch_norm: x must be [N, C, H, W], got ", x_in.describe());
  const int64_t c = x_in.size(1);
  const Tensor x = to_dtype(x_in, DType::F32);  // statistics in fp32, as batch_norm keeps them
  std::vector<int64_t> count{x.size(0) * x.size(2) * x.size(3)};
  dist::all_reduce_sum(count);
  DISTILL_CHECK(count[0] > 1, "sync_batch_norm: needs more than one value per channel");
  const double n = static_cast<double>(count[0]);
  // Two passes (the mean, then the squared deviations from it), as the batch_norm kernel does:
  // E[x^2] - E[x]^2 in fp32 loses digits when the mean is large against the spread.
  const Tensor mean = mul(all_reduce_sum_differentiable(sum(x, {0, 2, 3})), 1.0 / n);
  const Shape channel{1, c, 1, 1};
  const Tensor centred = sub(x, reshape(mean, channel));
  const Tensor var =
      mul(all_reduce_sum_differentiable(sum(mul(centred, centred), {0, 2, 3})), 1.0 / n);
  {
    NoGradGuard no_grad;
    Tensor rm = running_mean, rv = running_var;
    if (rm.defined()) rm.copy_(add(mul(rm, 1 - momentum), mul(mean.detach(), momentum)));
    if (rv.defined())
      rv.copy_(add(mul(rv, 1 - momentum), mul(var.detach(), momentum * n / (n - 1))));
  }
  Tensor y = mul(centred, reshape(rsqrt(add(var, eps)), channel));
  if (weight.defined()) y = mul(y, reshape(weight, channel));
  if (bias.defined()) y = add(y, reshape(bias, channel));
  return to_dtype(y, x_in.dtype());
}

}  // namespace distill::nn
