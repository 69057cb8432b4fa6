#include "train/data_parallel.h"

#include "core/error.h"
#include "core/ops.h"

namespace distill::train {

nlohmann::json to_json(const DataParallelConfig& config) {
  return {{"bucket_mb", config.bucket_mb}, {"sync_batch_norm", config.sync_batch_norm}};
}

DataParallelConfig data_parallel_config_from_json(const nlohmann::json& j,
                                                  const std::string& where) {
  DataParallelConfig c;
  DISTILL_CHECK(j.is_object(), where, ": must be a JSON object");
  for (const auto& [key, value] : j.items()) {
    if (key == "bucket_mb") {
      DISTILL_CHECK(value.is_number() && value.get<double>() > 0, where,
                    ": bucket_mb must be a number > 0, got ", value.dump());
      c.bucket_mb = value.get<double>();
    } else if (key == "sync_batch_norm") {
      DISTILL_CHECK(value.is_boolean(), where, ": sync_batch_norm must be true or false, got ",
                    value.dump());
      c.sync_batch_norm = value.get<bool>();
    } else {
      fail(where, ": unknown key '", key, "' (bucket_mb, sync_batch_norm)");
    }
  }
  return c;
}

namespace {
std::vector<Tensor> trainable(const nn::Module& module) {
  std::vector<Tensor> out;
  for (const auto& [name, p] : module.named_parameters())
    if (p.requires_grad()) out.push_back(p);
  return out;
}
}  // namespace

GradientBuckets::GradientBuckets(const nn::Module& module, double bucket_mb)
    : GradientBuckets(trainable(module), bucket_mb) {}

GradientBuckets::GradientBuckets(std::vector<Tensor> params, double bucket_mb)
    : params_(std::move(params)) {
  DISTILL_CHECK(bucket_mb > 0, "GradientBuckets: bucket_mb must be > 0, got ", bucket_mb);
  const double cap = bucket_mb * 1024 * 1024;
  bucket_of_.resize(params_.size());
  double bytes = 0;
  for (size_t k = params_.size(); k-- > 0;) {
    const Tensor& p = params_[k];
    DISTILL_CHECK(p.dtype() == DType::F32 && p.is_contiguous() && !p.grad_fn(),
                  "GradientBuckets: parameter ", k, " ", p.describe(),
                  " must be a contiguous f32 leaf");
    DISTILL_CHECK(p.device() == params_.back().device(),
                  "GradientBuckets: parameters are on more than one device");
    const double b = static_cast<double>(p.nbytes());
    if (buckets_.empty() || (bytes > 0 && bytes + b > cap)) {
      buckets_.emplace_back();
      bytes = 0;
    }
    buckets_.back().push_back(k);
    bucket_of_[k] = buckets_.size() - 1;
    bytes += b;
  }
  for (size_t k = 0; k < params_.size(); ++k)
    hooks_.push_back(add_grad_ready_hook(params_[k], [this, k] { on_ready(k); }));
  ready_.assign(params_.size(), 0);
  bucket_ready_.assign(buckets_.size(), 0);
}

GradientBuckets::~GradientBuckets() = default;

void GradientBuckets::before_backward(bool steps) {
  work_.clear();  // waits for anything left in flight by a failed step
  flat_.clear();
  armed_ = steps;
  std::fill(ready_.begin(), ready_.end(), 0);
  std::fill(bucket_ready_.begin(), bucket_ready_.end(), 0);
  next_launch_ = 0;
  launched_.clear();
  ready_count_ = 0;
}

void GradientBuckets::on_ready(size_t param) {
  if (!armed_ || ready_[param]) return;
  ready_[param] = 1;
  ++ready_count_;
  ++bucket_ready_[bucket_of_[param]];
  while (next_launch_ < buckets_.size() &&
         bucket_ready_[next_launch_] == buckets_[next_launch_].size())
    launch(next_launch_++);
  // Drive the reductions in flight while the backward goes on (MPI progresses them only here).
  for (size_t b = 0; b < next_launch_; ++b)
    if (work_[b]) work_[b]->test();
}

void GradientBuckets::launch(size_t bucket) {
  int64_t numel = 0;
  for (size_t k : buckets_[bucket]) numel += params_[k].numel();
  const Device device = params_[buckets_[bucket].front()].device();
  Tensor flat = Tensor::empty({numel}, TensorOptions(DType::F32, device));
  int64_t offset = 0;
  for (size_t k : buckets_[bucket]) {
    const Tensor& p = params_[k];
    Tensor slot = Tensor::make_view(flat.storage(), p.shape(), contiguous_strides(p.shape()),
                                    flat.offset() + offset, DType::F32);
    const Tensor g = p.grad();
    if (g.defined()) {
      slot.copy_(g);
    } else {
      slot.fill_(0.0);  // not reached by this backward: contributes nothing on this rank
    }
    offset += p.numel();
  }
  if (flat_.size() <= bucket) flat_.resize(buckets_.size());
  if (work_.size() < buckets_.size()) work_.resize(buckets_.size());
  flat_[bucket] = flat;
  work_[bucket] = dist::all_reduce_sum_async(flat_[bucket]);
  launched_.push_back(bucket);
}

void GradientBuckets::before_step() {
  DISTILL_CHECK(armed_, "GradientBuckets: before_step() without a stepping backward");
  while (next_launch_ < buckets_.size()) launch(next_launch_++);
  const double inverse_world = 1.0 / static_cast<double>(dist::world_size());
  for (size_t b = 0; b < buckets_.size(); ++b) {
    work_[b]->wait();
    // One division per bucket; each gradient is a view of the result.
    const Tensor mean = dist::world_size() == 1 ? flat_[b] : mul(flat_[b], inverse_world);
    int64_t offset = 0;
    for (size_t k : buckets_[b]) {
      Tensor& p = params_[k];
      p.set_grad(Tensor::make_view(mean.storage(), p.shape(), contiguous_strides(p.shape()),
                                   mean.offset() + offset, DType::F32));
      offset += p.numel();
    }
  }
  work_.clear();
  flat_.clear();
  armed_ = false;
}

void broadcast_parameters(const nn::Module& module) {
  if (!dist::distributed()) return;
  for (auto [name, t] : module.state_dict()) {
    DISTILL_CHECK(t.is_contiguous(), "broadcast_parameters: ", name, " is not contiguous");
    dist::broadcast(t);
  }
}

}  // namespace distill::train
