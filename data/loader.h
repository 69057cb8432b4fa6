// The data loader: worker threads decode and transform samples in parallel into batches of
// [N, 3, H, W] f32 images and [N] i64 labels, a bounded number of batches ahead of the consumer.
//
// Determinism: the sample order is made by one producer (an epoch permutation of a Dataset, or
// for tar shards a shuffled shard order read through a shuffle buffer), and a sample's
// augmentation depends on (seed, epoch, sample id) only, so the batches are the same whatever
// the number of workers. Sample ids: the dataset index, or (shard << 32 | index in shard).
//
// Memory: batch buffers come from a pool and go back to it when the last tensor using them is
// released; with CUDA present they are pinned, and Batch::to(cuda) copies asynchronously on the
// engine's stream. The loader never prints: skipped samples are counted in epoch_skipped().
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/tensor.h"
#include "data/dataset.h"
#include "data/transforms.h"

namespace distill::data {

struct LoaderOptions {
  int64_t batch_size = 64;
  int workers = 2;
  int prefetch_batches = 4;  // batches decoded ahead of the consumer
  bool shuffle = true;
  bool drop_last = false;
  uint64_t seed = 0;
  int64_t shuffle_buffer = 2000;  // tar shards: samples held for shuffling across shard order
  bool skip_bad_samples = false;
  bool pin_memory = true;  // pinned host buffers when a GPU is present
  // Data-parallel sharding (data/sampling.h rank_slice): every rank builds the same epoch order
  // from the shared seed and keeps its slice of each global batch of world_size * batch_size.
  // Tar shards: every rank reads the same shuffled stream and decodes only its own samples.
  // drop_last then drops the last incomplete global batch.
  int rank = 0;
  int world_size = 1;
};

struct Batch {
  Tensor images;             // [N, 3, H, W] f32, normalised
  Tensor labels;             // [N] i64
  std::vector<int64_t> ids;  // sample ids, in batch order
  int64_t epoch = 0;
  int64_t index = 0;           // batch number within the epoch
  std::shared_ptr<void> hold;  // keeps host buffers alive until an asynchronous copy is done

  int64_t size() const { return images.defined() ? images.size(0) : 0; }
  // Copies to `device` (asynchronously from pinned memory on the engine's CUDA stream).
  Batch to(Device device) const;
};

class BufferPool;

class DataLoader {
 public:
  // Map-style: the samples of `dataset` (or of `subset`, indices into it, e.g. few-shot).
  DataLoader(std::shared_ptr<const Dataset> dataset, std::shared_ptr<const Transform> transform,
             LoaderOptions options, std::vector<int64_t> subset = {});
  // Streaming over tar shards (WebDataset layout), read sequentially. `num_classes` > 0 checks
  // the labels.
  DataLoader(std::vector<std::string> shards, int64_t num_classes,
             std::shared_ptr<const Transform> transform, LoaderOptions options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // Starts producing epoch `epoch` (ends any epoch in progress).
  void start_epoch(int64_t epoch);
  // The next batch of the current epoch; false when the epoch is over. Errors from workers or
  // the reader are rethrown here (unless skip_bad_samples).
  bool next(Batch& batch);
  // Bad samples skipped in the current epoch (complete once next() returned false).
  BadSampleLog epoch_skipped() const;
  // Batches per epoch for map-style loaders (-1 for shards: unknown until read).
  int64_t batches_per_epoch() const;
  const LoaderOptions& options() const { return options_; }

 private:
  struct WorkItem {
    int64_t seq;
    int64_t id;
    int64_t label;
    int64_t dataset_index;         // map-style
    std::vector<uint8_t> encoded;  // shards
    std::string where;
  };
  struct Pending;  // a batch being filled

  std::exception_ptr stop_epoch();  // joins the threads; returns the epoch's error
  void produce();
  void produce_map();
  void produce_shards();
  bool push(WorkItem item);  // false when the epoch is being stopped
  void work();
  void finish_producing(int64_t total);
  // Keeps the error of the earliest sample (`seq` in epoch order; the producer's own errors use
  // -1), so that which bad file is reported does not depend on which worker failed first.
  void record_error(std::exception_ptr e, int64_t seq);

  std::shared_ptr<const Dataset> dataset_;
  std::vector<int64_t> subset_;
  std::vector<std::string> shards_;
  int64_t num_classes_ = 0;
  std::shared_ptr<const Transform> transform_;
  LoaderOptions options_;
  std::shared_ptr<BufferPool> pool_;

  // Epoch state, guarded by mutex_.
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  int64_t epoch_ = -1;
  bool stopping_ = false;
  bool producer_done_ = false;
  bool ended_ = false;          // next() returned false (or threw) for this epoch
  int64_t total_ = -1;          // samples in the epoch, once the producer is done
  int64_t next_batch_ = 0;      // the batch next() returns next
  int64_t produced_ = 0;        // work items pushed so far
  std::deque<WorkItem> queue_;  // work not yet taken by a worker, in sequence order
  std::map<int64_t, std::unique_ptr<Pending>> pending_;
  BadSampleLog skipped_;
  std::exception_ptr error_;
  int64_t error_seq_ = 0;
  std::thread producer_;
  std::vector<std::thread> workers_;
};

}  // namespace distill::data
