// Module: a node of the layer tree. Parameters, buffers and children are registered under
// Hugging-Face-style dotted names ("encoder.layers.0.attn.q_proj.weight"), so a state dict is
// the list of (name, tensor) pairs a safetensors checkpoint holds.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/ops.h"

namespace distill::nn {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// What loading a state found: names the module has that the state lacks (missing), names the
// state has that the module lacks (unexpected), and names whose shapes differ.
struct LoadReport {
  std::vector<std::string> missing;
  std::vector<std::string> unexpected;
  std::vector<std::string> mismatched;  // "name: state [a, b] vs module [c, d]"
  bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  std::string describe() const;  // one line per problem, every name listed
};

std::string shape_str(const Shape& shape);  // "[2, 3]"

class Module {
 public:
  explicit Module(std::string type_name) : type_name_(std::move(type_name)) {}
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  const std::string& type_name() const { return type_name_; }

  NamedTensors named_parameters() const;
  std::vector<Tensor> parameters() const;
  NamedTensors named_buffers() const;
  NamedTensors state_dict() const;  // parameters, then buffers
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const {
    return children_;
  }
  int64_t num_parameters() const;

  // Copies `state` into the module's tensors, casting to each tensor's dtype and device (the
  // module keeps its dtype and device). strict: every missing, unexpected and mis-shaped name is
  // an Error that lists them all and names `source` (a file); nothing is modified then.
  // Not strict: loads the names that match and returns the report.
  LoadReport load_state_dict(const NamedTensors& state, bool strict = true,
                             const std::string& source = "state dict");

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // Moves every parameter and buffer (parameters stay leaves with their requires_grad).
  void to(Device device);
  // Casts the floating parameters and buffers; integer buffers keep their dtype.
  void to(DType dtype);
  void requires_grad_(bool on);
  void zero_grad();
  Device device() const;  // of the first parameter (CPU when there is none)

 protected:
  // `slot` must be a member of the registering module (its address stays valid).
  void register_parameter(const std::string& name, Tensor* slot);
  void register_buffer(const std::string& name, Tensor* slot);
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    children_.emplace_back(name, module);
    return module;
  }

 private:
  using Slots = std::vector<std::pair<std::string, Tensor*>>;
  void collect(const std::string& prefix, bool parameters, Slots& out) const;
  void collect_all(const std::string& prefix, Slots& out) const;

  std::string type_name_;
  bool training_ = true;
  Slots parameters_;
  Slots buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

// Numbered children ("0", "1", ...), like torch.nn.ModuleList.
template <typename M>
class ModuleList : public Module {
 public:
  ModuleList() : Module("ModuleList") {}
  std::shared_ptr<M> push_back(std::shared_ptr<M> m) {
    items_.push_back(register_module(std::to_string(items_.size()), std::move(m)));
    return items_.back();
  }
  size_t size() const { return items_.size(); }
  M& operator[](size_t i) const { return *items_[i]; }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }

 private:
  std::vector<std::shared_ptr<M>> items_;
};

// A module that only groups children under a name (torch's Sequential used as a namespace).
class Container : public Module {
 public:
  explicit Container(std::string type_name = "Container") : Module(std::move(type_name)) {}
  using Module::register_buffer;
  using Module::register_module;
  using Module::register_parameter;
};

// NVTX range for the lifetime of the scope, so Nsight shows the layer structure.
class ScopedRange {
 public:
  explicit ScopedRange(const char* name);
  ~ScopedRange();
  ScopedRange(const ScopedRange&) = delete;
  ScopedRange& operator=(const ScopedRange&) = delete;
};

}  // namespace distill::nn
