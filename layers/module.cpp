#include "layers/module.h"

#include <map>
#include <sstream>

#include "core/autograd.h"
#include "core/error.h"
#include "kernels/device.h"

namespace distill::nn {

std::string shape_str(const Shape& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

std::string LoadReport::describe() const {
  std::ostringstream os;
  for (const auto& n : missing) os << "\n  missing: " << n;
  for (const auto& n : unexpected) os << "\n  unexpected: " << n;
  for (const auto& n : mismatched) os << "\n  wrong shape: " << n;
  return os.str();
}

void Module::register_parameter(const std::string& name, Tensor* slot) {
  DISTILL_CHECK(slot->defined(), type_name_, ": parameter '", name, "' registered undefined");
  slot->set_requires_grad(true);
  parameters_.emplace_back(name, slot);
}

void Module::register_buffer(const std::string& name, Tensor* slot) {
  DISTILL_CHECK(slot->defined(), type_name_, ": buffer '", name, "' registered undefined");
  buffers_.emplace_back(name, slot);
}

void Module::collect(const std::string& prefix, bool parameters, Slots& out) const {
  for (const auto& [name, slot] : parameters ? parameters_ : buffers_)
    out.emplace_back(prefix + name, slot);
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", parameters, out);
}

void Module::collect_all(const std::string& prefix, Slots& out) const {
  collect(prefix, true, out);
  collect(prefix, false, out);
}

NamedTensors Module::named_parameters() const {
  Slots slots;
  collect("", true, slots);
  NamedTensors out;
  for (const auto& [n, s] : slots) out.emplace_back(n, *s);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters()) out.push_back(t);
  return out;
}

NamedTensors Module::named_buffers() const {
  Slots slots;
  collect("", false, slots);
  NamedTensors out;
  for (const auto& [n, s] : slots) out.emplace_back(n, *s);
  return out;
}

NamedTensors Module::state_dict() const {
  Slots slots;
  collect_all("", slots);
  NamedTensors out;
  for (const auto& [n, s] : slots) out.emplace_back(n, *s);
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (const auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

LoadReport Module::load_state_dict(const NamedTensors& state, bool strict,
                                   const std::string& source) {
  Slots slots;
  collect_all("", slots);
  std::map<std::string, Tensor*> own;
  for (const auto& [n, s] : slots) own[n] = s;

  LoadReport report;
  std::map<std::string, const Tensor*> given;
  for (const auto& [name, t] : state) {
    given[name] = &t;
    auto it = own.find(name);
    if (it == own.end()) {
      report.unexpected.push_back(name);
    } else if (t.shape() != it->second->shape()) {
      report.mismatched.push_back(name + ": " + source + " has " + shape_str(t.shape()) +
                                  ", the model expects " + shape_str(it->second->shape()));
    }
  }
  for (const auto& [n, s] : slots)
    if (!given.count(n)) report.missing.push_back(n);
  if (strict && !report.ok())
    fail("load_state_dict: ", source, " does not match the ", type_name_, " (",
         report.missing.size(), " missing, ", report.unexpected.size(), " unexpected, ",
         report.mismatched.size(), " of the wrong shape):", report.describe());

  NoGradGuard guard;
  for (const auto& [name, t] : state) {
    auto it = own.find(name);
    if (it == own.end() || t.shape() != it->second->shape()) continue;
    it->second->copy_(t);
  }
  return report;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, c] : children_) c->train(on);
}

namespace {
void replace(Tensor* slot, Tensor value, bool is_parameter) {
  const bool rg = slot->requires_grad();
  *slot = value.detach();
  if (is_parameter) slot->set_requires_grad(rg);
}
}  // namespace

void Module::to(Device device) {
  NoGradGuard guard;
  for (auto& [n, s] : parameters_)
    if (s->device() != device) replace(s, to_device(*s, device), true);
  for (auto& [n, s] : buffers_)
    if (s->device() != device) replace(s, to_device(*s, device), false);
  for (auto& [n, c] : children_) c->to(device);
}

void Module::to(DType dtype) {
  NoGradGuard guard;
  auto floating = [](DType d) {
    return d == DType::F32 || d == DType::F64 || d == DType::BF16 || d == DType::F16;
  };
  for (auto& [n, s] : parameters_)
    if (s->dtype() != dtype && floating(s->dtype())) replace(s, to_dtype(*s, dtype), true);
  for (auto& [n, s] : buffers_)
    if (s->dtype() != dtype && floating(s->dtype())) replace(s, to_dtype(*s, dtype), false);
  for (auto& [n, c] : children_) c->to(dtype);
}

void Module::requires_grad_(bool on) {
  for (auto& [n, s] : parameters_) s->set_requires_grad(on);
  for (auto& [n, c] : children_) c->requires_grad_(on);
}

void Module::zero_grad() {
  for (auto& [n, s] : parameters_) s->zero_grad();
  for (auto& [n, c] : children_) c->zero_grad();
}

Device Module::device() const {
  if (!parameters_.empty()) return parameters_.front().second->device();
  for (const auto& [n, c] : children_)
    if (c->num_parameters() > 0) return c->device();
  return Device::cpu();
}

ScopedRange::ScopedRange(const char* name) {
  kernels::cuda::nvtx_push(name);
}
ScopedRange::~ScopedRange() {
  kernels::cuda::nvtx_pop();
}

}  // namespace distill::nn
