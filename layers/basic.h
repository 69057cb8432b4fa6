// The basic layers: Linear, Conv2d, LayerNorm, BatchNorm2d, Embedding, Dropout, the MLP block.
// Parameter names and default initialisation follow torch.nn, so state dicts map one to one.
#pragma once

#include <string>

#include "core/ops.h"
#include "layers/module.h"

namespace distill::nn {

// y = x W^T + b over the last dim; weight [out, in]. Init: U(-1/sqrt(in), 1/sqrt(in)) (torch's).
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true, Generator* gen = nullptr);
  Tensor forward(const Tensor& x) const;
  int64_t in_features() const { return weight.size(1); }
  int64_t out_features() const { return weight.size(0); }
  Tensor weight, bias;  // bias undefined when constructed without
};

// NCHW convolution, groups = 1. weight [out, in, k, k].
class Conv2d : public Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t stride = 1,
         int64_t padding = 0, bool bias = true, Generator* gen = nullptr);
  Tensor forward(const Tensor& x) const;
  Tensor weight, bias;
  int64_t stride, padding;
};

// Normalises the last dim; weight 1, bias 0 at init.
class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t dim, double eps = 1e-5);
  Tensor forward(const Tensor& x) const;
  Tensor weight, bias;
  double eps;
};

// Batch norm over [N, C, H, W] with running statistics (train: batch statistics and a running
// update; eval: the running statistics). num_batches_tracked is kept so torch checkpoints load.
class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t channels, double eps = 1e-5, double momentum = 0.1);
  Tensor forward(const Tensor& x);
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  double eps, momentum;
};

// Lookup table [num, dim]; init N(0, 1) (torch's).
class Embedding : public Module {
 public:
  Embedding(int64_t num_embeddings, int64_t dim, Generator* gen = nullptr);
  Tensor forward(const Tensor& ids) const;
  Tensor weight;
};

class Dropout : public Module {
 public:
  explicit Dropout(double p) : Module("Dropout"), p(p) {}
  Tensor forward(const Tensor& x) const { return p > 0 ? dropout(x, p, is_training()) : x; }
  double p;
};

enum class Activation { GELU, QuickGELU, ReLU };
Activation activation_from_name(const std::string& name);  // "gelu", "quick_gelu", "relu"
const char* activation_name(Activation act);
Tensor activate(const Tensor& x, Activation act);

// fc2(act(fc1(x))): the transformer feed-forward block.
class Mlp : public Module {
 public:
  Mlp(int64_t dim, int64_t hidden, Activation act, Generator* gen = nullptr);
  Tensor forward(const Tensor& x) const;
  std::shared_ptr<Linear> fc1, fc2;
  Activation act;
};

}  // namespace distill::nn
