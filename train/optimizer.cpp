#include "train/optimizer.h"

#include <map>
#include <set>

#include "core/error.h"
#include "train/json_fields.h"

namespace distill::train {

namespace {

// Full names of the parameters that belong to nn::Embedding modules under `prefix`.
void collect_embedding_params(const nn::Module& module, const std::string& prefix,
                              std::set<std::string>& out) {
  if (module.type_name() == "Embedding")
    for (const auto& [name, t] : module.named_parameters()) out.insert(prefix + name);
  for (const auto& [name, child] : module.children())
    collect_embedding_params(*child, prefix + name + ".", out);
}

bool decayed(const std::string& name, const Tensor& p, bool in_embedding_module,
             const WeightDecayRule& rule) {
  if (rule.exclude_1d && p.dim() <= 1) return false;
  if (rule.exclude_embeddings) {
    if (in_embedding_module) return false;
    const size_t dot = name.rfind('.');
    const std::string own = dot == std::string::npos ? name : name.substr(dot + 1);
    if (own.find("embedding") != std::string::npos) return false;
  }
  for (const auto& s : rule.exclude_names)
    if (!s.empty() && name.find(s) != std::string::npos) return false;
  return true;
}

const char* kStepName = "step";

}  // namespace

const char* optimizer_kind_name(OptimizerKind kind) {
  return kind == OptimizerKind::AdamW ? "adamw" : "sgd";
}

OptimizerKind optimizer_kind_from_name(const std::string& name) {
  if (name == "adamw") return OptimizerKind::AdamW;
  if (name == "sgd") return OptimizerKind::SGD;
  fail("optimizer: unknown kind '", name, "' (known: adamw, sgd)");
}

bool gets_weight_decay(const nn::Module& module, const std::string& name,
                       const WeightDecayRule& rule) {
  std::set<std::string> embedding_params;
  collect_embedding_params(module, "", embedding_params);
  for (const auto& [n, p] : module.named_parameters())
    if (n == name) return decayed(n, p, embedding_params.count(n) != 0, rule);
  fail("gets_weight_decay: the ", module.type_name(), " has no parameter '", name, "'");
}

std::vector<ParamGroup> weight_decay_groups(const nn::Module& module, double weight_decay,
                                            const WeightDecayRule& rule) {
  std::set<std::string> embedding_params;
  collect_embedding_params(module, "", embedding_params);
  ParamGroup decay{"decay", {}, weight_decay, 1.0};
  ParamGroup no_decay{"no_decay", {}, 0.0, 1.0};
  for (const auto& [name, p] : module.named_parameters()) {
    if (!p.requires_grad()) continue;  // frozen (e.g. the encoders in stage 1)
    (decayed(name, p, embedding_params.count(name) != 0, rule) ? decay : no_decay)
        .params.emplace_back(name, p);
  }
  std::vector<ParamGroup> groups;
  if (!decay.params.empty()) groups.push_back(std::move(decay));
  if (!no_decay.params.empty()) groups.push_back(std::move(no_decay));
  return groups;
}

void OptimizerConfig::validate() const {
  const char* where = "optimizer config";
  DISTILL_CHECK(weight_decay >= 0, where, ": weight_decay must be >= 0, got ", weight_decay);
  DISTILL_CHECK(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1, where,
                ": beta1 and beta2 must be in [0, 1), got ", beta1, " and ", beta2);
  DISTILL_CHECK(eps > 0, where, ": eps must be > 0, got ", eps);
  DISTILL_CHECK(momentum >= 0 && dampening >= 0, where,
                ": momentum and dampening must be >= 0, got ", momentum, " and ", dampening);
  DISTILL_CHECK(!nesterov || kind != OptimizerKind::SGD || (momentum > 0 && dampening == 0), where,
                ": Nesterov needs momentum > 0 and dampening 0 (got momentum ", momentum,
                ", dampening ", dampening, ")");
  DISTILL_CHECK(max_grad_norm >= 0, where, ": max_grad_norm must be >= 0 (0: no clipping), got ",
                max_grad_norm);
  DISTILL_CHECK(accumulation_steps >= 1, where, ": accumulation_steps must be >= 1, got ",
                accumulation_steps);
}

nlohmann::json to_json(const OptimizerConfig& c) {
  nlohmann::json j = {{"kind", optimizer_kind_name(c.kind)},
                      {"weight_decay", c.weight_decay},
                      {"max_grad_norm", c.max_grad_norm},
                      {"accumulation_steps", c.accumulation_steps},
                      {"no_decay_1d", c.decay_rule.exclude_1d},
                      {"no_decay_embeddings", c.decay_rule.exclude_embeddings},
                      {"no_decay_names", c.decay_rule.exclude_names}};
  if (c.kind == OptimizerKind::AdamW) {
    j["beta1"] = c.beta1;
    j["beta2"] = c.beta2;
    j["eps"] = c.eps;
  } else {
    j["momentum"] = c.momentum;
    j["dampening"] = c.dampening;
    j["nesterov"] = c.nesterov;
  }
  return j;
}

OptimizerConfig optimizer_config_from_json(const nlohmann::json& j, const std::string& where) {
  const JsonFields f(j, where,
                     {"kind", "weight_decay", "beta1", "beta2", "eps", "momentum", "dampening",
                      "nesterov", "max_grad_norm", "accumulation_steps", "no_decay_1d",
                      "no_decay_embeddings", "no_decay_names"});
  OptimizerConfig c;
  std::string kind = optimizer_kind_name(c.kind);
  f.get("kind", kind);
  try {
    c.kind = optimizer_kind_from_name(kind);
  } catch (const Error& e) {
    fail(where, ": ", e.what());
  }
  f.get("weight_decay", c.weight_decay);
  f.get("beta1", c.beta1);
  f.get("beta2", c.beta2);
  f.get("eps", c.eps);
  f.get("momentum", c.momentum);
  f.get("dampening", c.dampening);
  f.get("nesterov", c.nesterov);
  f.get("max_grad_norm", c.max_grad_norm);
  f.get("accumulation_steps", c.accumulation_steps);
  f.get("no_decay_1d", c.decay_rule.exclude_1d);
  f.get("no_decay_embeddings", c.decay_rule.exclude_embeddings);
  if (f.has("no_decay_names")) {
    const auto& names = f.at("no_decay_names");
    DISTILL_CHECK(names.is_array(), where, ": 'no_decay_names' must be a list of strings, got ",
                  names.dump());
    for (const auto& n : names) {
      DISTILL_CHECK(n.is_string(), where, ": 'no_decay_names' must be a list of strings, got ",
                    names.dump());
      c.decay_rule.exclude_names.push_back(n.get<std::string>());
    }
  }
  try {
    c.validate();
  } catch (const Error& e) {
    fail(where, ": ", e.what());
  }
  return c;
}

Optimizer::Optimizer(const nn::Module& module, const OptimizerConfig& config,
                     const LrSchedule& schedule)
    : Optimizer(weight_decay_groups(module, config.weight_decay, config.decay_rule), config,
                schedule) {}

Optimizer::Optimizer(std::vector<ParamGroup> groups, const OptimizerConfig& config,
                     const LrSchedule& schedule)
    : groups_(std::move(groups)), config_(config), schedule_(schedule) {
  config_.validate();
  schedule_.validate();
  std::set<std::string> names;
  std::set<const TensorImpl*> seen;
  const Tensor* first = nullptr;
  for (const auto& g : groups_) {
    DISTILL_CHECK(g.weight_decay >= 0 && g.lr_scale >= 0, "optimizer: group '", g.name,
                  "' needs weight_decay >= 0 and lr_scale >= 0, got ", g.weight_decay, " and ",
                  g.lr_scale);
    GroupState s;
    for (const auto& [name, p] : g.params) {
      DISTILL_CHECK(p.defined() && p.dtype() == DType::F32 && p.is_contiguous(), "optimizer: '",
                    name, "' must be a contiguous F32 parameter (fp32 master weights), got ",
                    p.defined() ? p.describe() : "undefined");
      DISTILL_CHECK(names.insert(name).second && seen.insert(p.impl()).second,
                    "optimizer: parameter '", name, "' is in more than one group");
      if (!first) first = &p;
      DISTILL_CHECK(p.device() == first->device(), "optimizer: '", name, "' ", p.describe(),
                    " is not on the device of the other parameters (", first->describe(), ")");
      s.params.push_back(p);
    }
    const size_t n = s.params.size();
    s.exp_avg.resize(n);
    s.exp_avg_sq.resize(n);
    s.momentum.resize(n);
    state_.push_back(std::move(s));
  }
  DISTILL_CHECK(first, "optimizer: no trainable parameters (every parameter is frozen?)");
  device_ = first->device();
}

void Optimizer::zero_grad() {
  for (auto& s : state_)
    for (auto& p : s.params) p.zero_grad();
  micro_batches_ = 0;
}

StepInfo Optimizer::accumulate(const Tensor& loss) {
  DISTILL_CHECK(loss.defined() && loss.numel() == 1, "optimizer.accumulate: the loss must be a ",
                "scalar, got ", loss.defined() ? loss.describe() : "undefined");
  DISTILL_CHECK(loss.requires_grad(), "optimizer.accumulate: the loss ", loss.describe(),
                " does not require grad (computed under NoGradGuard, or nothing is trainable?)");
  if (micro_batches_ == 0) zero_grad();
  // Seeding the backward with 1/N instead of multiplying the loss keeps the graph as it is.
  const double scale = 1.0 / static_cast<double>(config_.accumulation_steps);
  const bool steps = micro_batches_ + 1 >= config_.accumulation_steps;
  if (reducer_) reducer_->before_backward(steps);
  loss.backward(full(loss.shape(), scale, TensorOptions(loss.dtype(), loss.device())));
  ++micro_batches_;
  if (!steps) {
    StepInfo info;
    info.step = step_count_;
    return info;
  }
  if (reducer_) reducer_->before_step();  // before clipping: every rank clips the same gradients
  return step();
}

StepInfo Optimizer::step() {
  StepInfo info;
  info.lr = schedule_.lr(step_count_);
  if (config_.max_grad_norm > 0) {
    std::vector<Tensor> grads;
    for (auto& s : state_)
      for (auto& p : s.params) {
        Tensor g = p.grad();
        if (!g.defined()) continue;
        if (!g.is_contiguous()) {  // clipping scales in place
          g = g.contiguous();
          p.set_grad(g);
        }
        grads.push_back(g);
      }
    if (!grads.empty()) info.grad_norm = clip_grad_norm(grads, config_.max_grad_norm).item();
  }
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    GroupState& s = state_[gi];
    std::vector<Tensor> grads;
    for (const auto& p : s.params) grads.push_back(p.grad());
    const double lr = info.lr * groups_[gi].lr_scale;
    if (config_.kind == OptimizerKind::AdamW) {
      const AdamWConfig c{lr, config_.beta1, config_.beta2, config_.eps, groups_[gi].weight_decay};
      adamw_step(s.params, grads, s.exp_avg, s.exp_avg_sq, c, step_count_ + 1);
    } else {
      SGDConfig c;
      c.lr = lr;
      c.momentum = config_.momentum;
      c.dampening = config_.dampening;
      c.weight_decay = groups_[gi].weight_decay;
      c.nesterov = config_.nesterov;
      sgd_step(s.params, grads, s.momentum, c);
    }
  }
  ++step_count_;
  micro_batches_ = 0;
  info.stepped = true;
  info.step = step_count_;
  return info;
}

template <typename Self, typename F>
void Optimizer::for_each_state(Self& self, F&& f) {
  for (size_t gi = 0; gi < self.groups_.size(); ++gi) {
    auto& s = self.state_[gi];
    for (size_t i = 0; i < s.params.size(); ++i) {
      const std::string& name = self.groups_[gi].params[i].first;
      if (self.config_.kind == OptimizerKind::AdamW) {
        f(name + ".exp_avg", s.params[i], s.exp_avg[i]);
        f(name + ".exp_avg_sq", s.params[i], s.exp_avg_sq[i]);
      } else if (self.config_.momentum != 0) {
        f(name + ".momentum_buffer", s.params[i], s.momentum[i]);
      }
    }
  }
}

nn::NamedTensors Optimizer::state_tensors() const {
  DISTILL_CHECK(micro_batches_ == 0, "optimizer.state_tensors: ", micro_batches_,
                " micro-batches are accumulated but not stepped; save state between steps");
  nn::NamedTensors out;
  for_each_state(*this, [&](const std::string& name, const Tensor&, const Tensor& state) {
    if (state.defined()) out.emplace_back(name, state);
  });
  out.emplace_back(kStepName, Tensor::from_vector(std::vector<int64_t>{step_count_}, {}));
  return out;
}

void Optimizer::validate_state(const nn::NamedTensors& state, const std::string& source) const {
  std::map<std::string, Shape> shapes;
  for_each_state(*this, [&](const std::string& name, const Tensor& param, const Tensor&) {
    shapes[name] = param.shape();
  });
  std::vector<std::string> problems;
  bool has_step = false;
  for (const auto& [name, t] : state) {
    if (name == kStepName) {
      has_step = true;
      if (t.numel() != 1 || (t.dtype() != DType::I64 && t.dtype() != DType::I32) ||
          t.to_int_vector()[0] < 0)
        problems.push_back("'step' must be one non-negative integer, got " + t.describe());
      continue;
    }
    auto it = shapes.find(name);
    if (it == shapes.end()) {
      problems.push_back("unexpected: " + name);
    } else if (t.shape() != it->second || t.dtype() != DType::F32) {
      problems.push_back("wrong shape or dtype: " + name + " is " + t.describe() +
                         ", the optimizer expects f32" + nn::shape_str(it->second));
    }
  }
  if (!has_step) problems.push_back("missing: step");
  if (problems.empty()) return;
  std::string text;
  for (const auto& p : problems) text += "\n  " + p;
  fail("optimizer: the state in ", source, " does not match this ",
       optimizer_kind_name(config_.kind), " optimizer (", problems.size(), " problems):", text);
}

void Optimizer::load_state(const nn::NamedTensors& state, const std::string& source) {
  validate_state(state, source);
  std::map<std::string, const Tensor*> given;
  for (const auto& [name, t] : state) given[name] = &t;
  NoGradGuard no_grad;
  for_each_state(*this, [&](const std::string& name, const Tensor&, Tensor& slot) {
    const auto it = given.find(name);
    // Own, contiguous copies on the parameters' device (file tensors may be views of a mapping).
    slot = it == given.end() ? Tensor() : it->second->to(device_).contiguous().clone();
  });
  step_count_ = given.at(kStepName)->to_int_vector()[0];
  micro_batches_ = 0;
}

}  // namespace distill::train
