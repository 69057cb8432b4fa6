// Data-parallel training: the gradient all-reduce in buckets, overlapped with the backward pass.
//
// The trainable parameters are grouped, in reverse registration order (roughly the order the
// backward produces their gradients), into buckets of about `bucket_mb` MB. A gradient-ready hook
// (core/grad_hooks.h) marks each parameter when the backward pass of the micro-batch that steps
// is done with it; once every parameter of a bucket is marked, and every earlier bucket has
// started (so all ranks issue the collectives in the same order), the bucket's gradients are
// copied into one flat buffer and a nonblocking all-reduce starts (MPI on the CPU, NCCL on a
// communication stream on CUDA). Before the optimizer step, every bucket still waiting starts
// (a parameter the backward never reached counts as a zero gradient), all are waited for, and
// each gradient becomes its slice of the reduced buffer divided by the world size: the mean over
// ranks of per-rank mean losses, i.e. the gradient of the mean over the global batch. Clipping
// and the update then run on identical gradients on every rank.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/distributed.h"
#include "core/grad_hooks.h"
#include "layers/module.h"
#include "train/optimizer.h"

namespace distill::train {

// The config's "distributed" object.
struct DataParallelConfig {
  double bucket_mb = 25;         // gradient bucket size (MB of f32)
  bool sync_batch_norm = false;  // BatchNorm statistics over the global batch (else per rank)
};
nlohmann::json to_json(const DataParallelConfig& config);
// Keys: bucket_mb (> 0), sync_batch_norm; unknown keys and bad values are errors naming `where`.
DataParallelConfig data_parallel_config_from_json(const nlohmann::json& j,
                                                  const std::string& where);

class GradientBuckets : public GradientReducer {
 public:
  // `params`: trainable leaf tensors in registration order, contiguous, on one device.
  GradientBuckets(std::vector<Tensor> params, double bucket_mb);
  // The trainable parameters of `module`.
  GradientBuckets(const nn::Module& module, double bucket_mb);
  ~GradientBuckets() override;
  GradientBuckets(const GradientBuckets&) = delete;
  GradientBuckets& operator=(const GradientBuckets&) = delete;

  void before_backward(bool steps) override;
  void before_step() override;

  // Parameter indices (into the constructor's list) of each bucket, in launch order.
  const std::vector<std::vector<size_t>>& buckets() const { return buckets_; }
  // Buckets whose all-reduce has started in the current step, in order (for tests: a bucket
  // starts during the backward as soon as its gradients are ready).
  const std::vector<size_t>& launched() const { return launched_; }
  // How many parameters were marked ready by the backward hooks in the current step.
  int64_t ready_count() const { return ready_count_; }

 private:
  void on_ready(size_t param);
  void launch(size_t bucket);

  std::vector<Tensor> params_;
  std::vector<std::vector<size_t>> buckets_;
  std::vector<size_t> bucket_of_;  // parameter index -> bucket
  std::vector<GradHookHandle> hooks_;
  bool armed_ = false;  // the current backward is the one that steps
  std::vector<char> ready_;
  std::vector<size_t> bucket_ready_;  // ready parameters per bucket
  size_t next_launch_ = 0;
  std::vector<size_t> launched_;
  int64_t ready_count_ = 0;
  std::vector<Tensor> flat_;  // per bucket, in flight
  std::vector<std::unique_ptr<dist::Work>> work_;
};

// Copies rank 0's parameters and buffers to every rank (a no-op in one process).
void broadcast_parameters(const nn::Module& module);

}  // namespace distill::train
