#include "layers/basic.h"

#include <cmath>

#include "core/distributed.h"
#include "core/error.h"
#include "core/ops_conv.h"
#include "core/ops_norm.h"
#include "layers/sync_batch_norm.h"

namespace distill::nn {

namespace {
Tensor uniform_init(const Shape& shape, int64_t fan_in, Generator* gen) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  return uniform(shape, -bound, bound, TensorOptions(DType::F32), gen);
}
}  // namespace

Linear::Linear(int64_t in_features, int64_t out_features, bool with_bias, Generator* gen)
    : Module("Linear") {
  DISTILL_CHECK(in_features > 0 && out_features > 0, "Linear: bad sizes ", in_features, " -> ",
                out_features);
  weight = uniform_init({out_features, in_features}, in_features, gen);
  register_parameter("weight", &weight);
  if (with_bias) {
    bias = uniform_init({out_features}, in_features, gen);
    register_parameter("bias", &bias);
  }
}

Tensor Linear::forward(const Tensor& x) const {
  return linear(x, weight, bias);
}

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t stride_,
               int64_t padding_, bool with_bias, Generator* gen)
    : Module("Conv2d"), stride(stride_), padding(padding_) {
  const int64_t fan_in = in_channels * kernel_size * kernel_size;
  weight = uniform_init({out_channels, in_channels, kernel_size, kernel_size}, fan_in, gen);
  register_parameter("weight", &weight);
  if (with_bias) {
    bias = uniform_init({out_channels}, fan_in, gen);
    register_parameter("bias", &bias);
  }
}

Tensor Conv2d::forward(const Tensor& x) const {
  return conv2d(x, weight, bias, stride, padding);
}

LayerNorm::LayerNorm(int64_t dim, double eps_) : Module("LayerNorm"), eps(eps_) {
  weight = ones({dim});
  bias = zeros({dim});
  register_parameter("weight", &weight);
  register_parameter("bias", &bias);
}

Tensor LayerNorm::forward(const Tensor& x) const {
  return layer_norm(x, weight, bias, eps);
}

BatchNorm2d::BatchNorm2d(int64_t channels, double eps_, double momentum_)
    : Module("BatchNorm2d"), eps(eps_), momentum(momentum_) {
  weight = ones({channels});
  bias = zeros({channels});
  running_mean = zeros({channels});
  running_var = ones({channels});
  num_batches_tracked = zeros({}, DType::I64);
  register_parameter("weight", &weight);
  register_parameter("bias", &bias);
  register_buffer("running_mean", &running_mean);
  register_buffer("running_var", &running_var);
  register_buffer("num_batches_tracked", &num_batches_tracked);
}

Tensor BatchNorm2d::forward(const Tensor& x) {
  if (is_training()) num_batches_tracked.fill_(num_batches_tracked.item() + 1);
  if (is_training() && sync_batch_norm_enabled() && dist::distributed())
    return sync_batch_norm(x, weight, bias, running_mean, running_var, momentum, eps);
  return batch_norm(x, weight, bias, running_mean, running_var, is_training(), momentum, eps);
}

Embedding::Embedding(int64_t num_embeddings, int64_t dim, Generator* gen) : Module("Embedding") {
  weight = randn({num_embeddings, dim}, TensorOptions(DType::F32), gen);
  register_parameter("weight", &weight);
}

Tensor Embedding::forward(const Tensor& ids) const {
  return embedding(weight, ids);
}

Activation activation_from_name(const std::string& name) {
  if (name == "gelu") return Activation::GELU;
  if (name == "quick_gelu") return Activation::QuickGELU;
  if (name == "relu") return Activation::ReLU;
  fail("unknown activation '", name, "' (expected gelu, quick_gelu or relu)");
}

const char* activation_name(Activation act) {
  switch (act) {
    case Activation::GELU:
      return "gelu";
    case Activation::QuickGELU:
      return "quick_gelu";
    case Activation::ReLU:
      return "relu";
  }
  return "?";
}

Tensor activate(const Tensor& x, Activation act) {
  switch (act) {
    case Activation::GELU:
      return gelu(x);
    case Activation::QuickGELU:
      return quick_gelu(x);
    case Activation::ReLU:
      return relu(x);
  }
  return x;
}

Mlp::Mlp(int64_t dim, int64_t hidden, Activation act_, Generator* gen) : Module("Mlp"), act(act_) {
  fc1 = register_module("fc1", std::make_shared<Linear>(dim, hidden, true, gen));
  fc2 = register_module("fc2", std::make_shared<Linear>(hidden, dim, true, gen));
}

Tensor Mlp::forward(const Tensor& x) const {
  return fc2->forward(activate(fc1->forward(x), act));
}

}  // namespace distill::nn
