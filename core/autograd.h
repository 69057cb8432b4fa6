// Reverse-mode autodiff over a dynamic tape. Every differentiable op that runs while grad mode is
// on and has an input that requires grad records a Node holding what its backward needs. Tensors
// point at the node that made them (grad_fn); nodes point at their inputs through Edges, so the
// graph is freed when the last output handle goes away.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace distill {

struct Edge {
  std::shared_ptr<Node> fn;          // input was produced by this node, or
  std::shared_ptr<TensorImpl> leaf;  // input is a leaf that requires grad, or neither
  Shape shape;                       // input's shape, to check the incoming gradient
};

struct Node {
  // Releases the chain of input nodes iteratively: dropping the last handle of a very deep graph
  // must not recurse once per node (it would overflow the stack).
  virtual ~Node();
  // Gradients w.r.t. each input, same order as `inputs`; an undefined Tensor means "no gradient".
  virtual std::vector<Tensor> backward(const Tensor& grad_output) = 0;
  virtual const char* name() const = 0;
  std::vector<Edge> inputs;
};

// Grad mode is thread-local; ops record only while it is enabled.
bool grad_enabled();
void set_grad_enabled(bool enabled);

class NoGradGuard {
 public:
  NoGradGuard() : previous_(grad_enabled()) { set_grad_enabled(false); }
  ~NoGradGuard() { set_grad_enabled(previous_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// True when grad mode is on and any input requires grad.
bool any_requires_grad(std::initializer_list<const Tensor*> inputs);
bool any_requires_grad(const std::vector<Tensor>& inputs);

// Connects `node` to `inputs` and makes it `output`'s grad_fn (no-op unless recording applies).
void record(const Tensor& output, std::shared_ptr<Node> node, const std::vector<Tensor>& inputs);

// Runs the backward pass from `root` with incoming gradient `grad` (ones for scalar roots).
void run_backward(const Tensor& root, const Tensor& grad);

// A node defined by a lambda, for ops whose backward is a few lines.
template <typename F>
struct LambdaNode : Node {
  LambdaNode(const char* n, F f) : name_(n), fn_(std::move(f)) {}
  std::vector<Tensor> backward(const Tensor& g) override { return fn_(g); }
  const char* name() const override { return name_; }
  const char* name_;
  F fn_;
};

template <typename F>
void record_fn(const Tensor& output, const char* name, const std::vector<Tensor>& inputs, F f) {
  if (!any_requires_grad(inputs)) return;
  record(output, std::make_shared<LambdaNode<F>>(name, std::move(f)), inputs);
}

}  // namespace distill
