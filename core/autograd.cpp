#include "core/autograd.h"

#include <atomic>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "core/autocast.h"
#include "core/error.h"
#include "core/grad_hooks.h"
#include "core/ops.h"

namespace distill {

namespace {
thread_local bool t_grad_enabled = true;
}

Node::~Node() {
  std::vector<std::shared_ptr<Node>> pending;
  for (Edge& e : inputs)
    if (e.fn) pending.push_back(std::move(e.fn));
  while (!pending.empty()) {
    std::shared_ptr<Node> n = std::move(pending.back());
    pending.pop_back();
    // Only a node we hold the last reference to is destroyed here; take its inputs first so its
    // own destructor finds nothing to recurse into.
    if (n.use_count() == 1) {
      for (Edge& e : n->inputs)
        if (e.fn) pending.push_back(std::move(e.fn));
    }
  }
}

bool grad_enabled() {
  return t_grad_enabled;
}
void set_grad_enabled(bool enabled) {
  t_grad_enabled = enabled;
}

bool any_requires_grad(std::initializer_list<const Tensor*> inputs) {
  if (!grad_enabled()) return false;
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

bool any_requires_grad(const std::vector<Tensor>& inputs) {
  if (!grad_enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void record(const Tensor& output, std::shared_ptr<Node> node, const std::vector<Tensor>& inputs) {
  if (!any_requires_grad(inputs)) return;
  node->inputs.clear();
  node->inputs.reserve(inputs.size());
  for (const Tensor& in : inputs) {
    Edge e;
    if (in.defined()) {
      e.shape = in.shape();
      if (in.grad_fn()) {
        e.fn = in.grad_fn();
      } else if (in.impl()->requires_grad) {
        e.leaf = in.impl_ptr();
      }
    }
    node->inputs.push_back(std::move(e));
  }
  const_cast<Tensor&>(output).set_grad_fn(std::move(node));
}

namespace {

// Gradient-ready hooks by leaf. `g_hook_count` lets a backward without hooks skip the bookkeeping.
struct LeafHook {
  uint64_t id;
  std::function<void()> fn;
};
std::mutex g_hooks_mutex;
std::unordered_map<TensorImpl*, std::vector<LeafHook>> g_hooks;
std::atomic<int64_t> g_hook_count{0};
uint64_t g_next_hook_id = 1;

void remove_hook(uint64_t id) {
  std::lock_guard<std::mutex> lock(g_hooks_mutex);
  for (auto it = g_hooks.begin(); it != g_hooks.end(); ++it) {
    auto& v = it->second;
    for (size_t i = 0; i < v.size(); ++i) {
      if (v[i].id != id) continue;
      v.erase(v.begin() + static_cast<std::ptrdiff_t>(i));
      if (v.empty()) g_hooks.erase(it);
      --g_hook_count;
      return;
    }
  }
}

// The hooks of `leaf`, copied so that they run without the lock (a hook may add or remove hooks).
std::vector<std::function<void()>> hooks_of(TensorImpl* leaf) {
  std::lock_guard<std::mutex> lock(g_hooks_mutex);
  std::vector<std::function<void()>> out;
  if (auto it = g_hooks.find(leaf); it != g_hooks.end())
    for (const auto& h : it->second) out.push_back(h.fn);
  return out;
}

void run_hooks(TensorImpl* leaf) {
  for (const auto& fn : hooks_of(leaf)) fn();
}

}  // namespace

GradHookHandle& GradHookHandle::operator=(GradHookHandle&& o) noexcept {
  if (this != &o) {
    if (id_) remove_hook(id_);
    id_ = o.id_;
    o.id_ = 0;
  }
  return *this;
}

GradHookHandle::~GradHookHandle() {
  if (id_) remove_hook(id_);
}

GradHookHandle add_grad_ready_hook(const Tensor& leaf, std::function<void()> hook) {
  DISTILL_CHECK(leaf.defined() && !leaf.grad_fn(),
                "add_grad_ready_hook: ", leaf.defined() ? leaf.describe() : "undefined",
                " is not a leaf tensor");
  std::lock_guard<std::mutex> lock(g_hooks_mutex);
  const uint64_t id = g_next_hook_id++;
  g_hooks[leaf.impl()].push_back({id, std::move(hook)});
  ++g_hook_count;
  return GradHookHandle(id);
}

namespace {

void accumulate_leaf(TensorImpl* leaf, const Tensor& g) {
  if (!leaf->grad.defined()) {
    // Own the gradient: the incoming tensor may alias a buffer a node saved or a view.
    leaf->grad = clone(g);
  } else {
    leaf->grad = add(leaf->grad, g);
  }
}

}  // namespace

void run_backward(const Tensor& root, const Tensor& grad_in) {
  DISTILL_CHECK(root.defined(), "backward: called on an undefined tensor");
  DISTILL_CHECK(root.requires_grad(), "backward: ", root.describe(),
                " does not require grad (no input of the graph has requires_grad set)");
  NoGradGuard no_grad;  // backward formulas are not themselves recorded
  // Gradients keep the dtypes the forward produced; autocast applies to forward ops only.
  AutocastGuard no_autocast(autocast_dtype(), /*enabled=*/false);
  Tensor grad = grad_in;
  if (!grad.defined()) {
    DISTILL_CHECK(root.numel() == 1, "backward: implicit gradient needs a scalar output, got ",
                  root.describe(), "; pass a gradient");
    grad = ones(root.shape(), TensorOptions(root.dtype(), root.device()));
  }
  DISTILL_CHECK(grad.shape() == root.shape(), "backward: gradient ", grad.describe(),
                " does not match output ", root.describe());
  const bool hooks = g_hook_count.load() > 0;
  if (!root.grad_fn()) {
    accumulate_leaf(root.impl(), grad);
    if (hooks) run_hooks(root.impl());
    return;
  }

  // Count, for every reachable node, how many edges point at it (its consumers).
  std::unordered_map<Node*, int> dependencies;
  // With hooks: how many edges point at each leaf, so a leaf's hooks run after its last one.
  std::unordered_map<TensorImpl*, int> leaf_edges;
  std::vector<Node*> stack{root.grad_fn().get()};
  std::unordered_set<Node*> seen{root.grad_fn().get()};
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const Edge& e : n->inputs) {
      if (hooks && e.leaf) leaf_edges[e.leaf.get()]++;
      if (!e.fn) continue;
      dependencies[e.fn.get()]++;
      if (seen.insert(e.fn.get()).second) stack.push_back(e.fn.get());
    }
  }

  // Kahn's algorithm: a node runs once every consumer has delivered its gradient, so a tensor
  // used twice receives the sum of both contributions before its own backward runs. A node that
  // no gradient reached still passes through the queue (with no backward call) so that the
  // counts of the nodes below it reach zero.
  std::unordered_map<Node*, Tensor> pending;
  pending[root.grad_fn().get()] = grad;
  std::vector<Node*> ready{root.grad_fn().get()};
  while (!ready.empty()) {
    Node* n = ready.back();
    ready.pop_back();
    Tensor g = std::move(pending[n]);
    pending.erase(n);
    std::vector<Tensor> input_grads =
        g.defined() ? n->backward(g) : std::vector<Tensor>(n->inputs.size());
    DISTILL_CHECK(input_grads.size() == n->inputs.size(), "backward of ", n->name(), " returned ",
                  input_grads.size(), " gradients for ", n->inputs.size(), " inputs");
    for (size_t i = 0; i < n->inputs.size(); ++i) {
      const Edge& e = n->inputs[i];
      const Tensor& gi = input_grads[i];
      if (gi.defined() && (e.fn || e.leaf)) {
        DISTILL_CHECK(gi.shape() == e.shape, "backward of ", n->name(), ": gradient ",
                      gi.describe(), " for input ", i, " does not match its shape ",
                      shape_str(e.shape));
      }
      if (e.fn) {
        if (gi.defined()) {
          Tensor& acc = pending[e.fn.get()];
          acc = acc.defined() ? add(acc, gi) : gi;
        }
        if (--dependencies[e.fn.get()] == 0) ready.push_back(e.fn.get());
      } else if (e.leaf) {
        if (gi.defined()) accumulate_leaf(e.leaf.get(), gi);
        if (hooks && --leaf_edges[e.leaf.get()] == 0) run_hooks(e.leaf.get());
      }
    }
  }
}

}  // namespace distill
