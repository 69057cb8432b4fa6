// "Gradient ready" hooks on leaf tensors: the backward engine calls a leaf's hooks once per
// backward pass, right after the last contribution to its gradient in that pass (when every
// node that feeds it has run), also when that pass gave it no gradient at all. Data-parallel
// training uses them to start reducing a bucket of gradients while the backward goes on.
#pragma once

#include <cstdint>
#include <functional>

#include "core/tensor.h"

namespace distill {

// Removes its hook when destroyed (movable, not copyable).
class GradHookHandle {
 public:
  GradHookHandle() = default;
  explicit GradHookHandle(uint64_t id) : id_(id) {}
  GradHookHandle(GradHookHandle&& o) noexcept : id_(o.id_) { o.id_ = 0; }
  GradHookHandle& operator=(GradHookHandle&& o) noexcept;
  GradHookHandle(const GradHookHandle&) = delete;
  GradHookHandle& operator=(const GradHookHandle&) = delete;
  ~GradHookHandle();

 private:
  uint64_t id_ = 0;
};

// `hook` runs (on the thread running backward) each time a backward pass that reaches `leaf` is
// done with it; leaf.grad() then holds the gradient accumulated so far. `leaf` must be a leaf.
[[nodiscard]] GradHookHandle add_grad_ready_hook(const Tensor& leaf, std::function<void()> hook);

}  // namespace distill
