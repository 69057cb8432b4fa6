#include "data/loader.h"

#include <algorithm>
#include <numeric>

#include "core/allocator.h"
#include "core/error.h"
#include "data/sampling.h"
#include "data/webdataset.h"
#include "kernels/device.h"
#include "kernels/philox.h"

#if DISTILL_HAS_CUDA
#include <cuda_runtime.h>
#endif

namespace distill::data {

// Reuses batch buffers (pinned ones are slow to allocate; fresh pageable ones fault in page by
// page). A buffer returns here when the last tensor viewing it is destroyed.
class BufferPool : public std::enable_shared_from_this<BufferPool> {
 public:
  explicit BufferPool(bool pinned) : pinned_(pinned) {}
  ~BufferPool() {
    for (auto& [bytes, ptr] : free_) deallocate(ptr, bytes);
  }
  std::shared_ptr<void> acquire(size_t bytes) {
    void* ptr = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(bytes);
      if (it != free_.end()) {
        ptr = it->second;
        free_.erase(it);
      }
    }
    if (!ptr) ptr = pinned_ ? kernels::cuda::host_pinned_malloc(bytes) : cpu_alloc(bytes);
    auto self = shared_from_this();
    return std::shared_ptr<void>(ptr, [self, bytes](void* p) { self->release(p, bytes); });
  }
  bool pinned() const { return pinned_; }

 private:
  static constexpr size_t kMaxCached = 32;
  void release(void* ptr, size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (free_.size() < kMaxCached) {
        free_.emplace(bytes, ptr);
        return;
      }
    }
    deallocate(ptr, bytes);
  }
  void deallocate(void* ptr, size_t bytes) {
    if (pinned_) {
      kernels::cuda::host_pinned_free(ptr);
    } else {
      cpu_free(ptr, bytes);
    }
  }
  bool pinned_;
  std::mutex mutex_;
  std::multimap<size_t, void*> free_;
};

struct DataLoader::Pending {
  int64_t expected = 0;  // samples in this batch (the batch size, less for the last one)
  int64_t done = 0;      // samples finished, good or bad
  std::shared_ptr<void> image_buffer, label_buffer;
  std::vector<int64_t> ids;
  std::vector<char> bad;
  float* images() const { return static_cast<float*>(image_buffer.get()); }
  int64_t* labels() const { return static_cast<int64_t*>(label_buffer.get()); }
};

namespace {

Tensor view_of(const std::shared_ptr<void>& buffer, const Shape& shape, DType dtype) {
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  auto storage = std::make_shared<Storage>(buffer.get(), bytes, Device::cpu(), buffer);
  return Tensor::make_view(storage, shape, contiguous_strides(shape), 0, dtype);
}

}  // namespace

Batch Batch::to(Device device) const {
  Batch out = *this;
  if (device.is_cpu() || !images.defined()) return out;
#if DISTILL_HAS_CUDA
  out.images = Tensor::empty(images.shape(), TensorOptions(DType::F32, device));
  out.labels = Tensor::empty(labels.shape(), TensorOptions(DType::I64, device));
  auto stream = static_cast<cudaStream_t>(kernels::cuda::stream());
  auto check = [](cudaError_t err, const char* what) {
    if (err != cudaSuccess) fail("Batch::to: ", what, " failed: ", cudaGetErrorString(err));
  };
  check(cudaMemcpyAsync(out.images.data_ptr(), images.data_ptr(), images.nbytes(),
                        cudaMemcpyHostToDevice, stream),
        "cudaMemcpyAsync (images)");
  check(cudaMemcpyAsync(out.labels.data_ptr(), labels.data_ptr(), labels.nbytes(),
                        cudaMemcpyHostToDevice, stream),
        "cudaMemcpyAsync (labels)");
  // The host buffers go back to the pool only after the copies have completed: `hold` owns them
  // and waits for this event when it is released.
  cudaEvent_t copied = nullptr;
  check(cudaEventCreateWithFlags(&copied, cudaEventDisableTiming), "cudaEventCreate");
  check(cudaEventRecord(copied, stream), "cudaEventRecord");
  // Built in place and never copied: a copy would destroy the event twice.
  struct HostHold {
    HostHold(Tensor host_images, Tensor host_labels, cudaEvent_t event)
        : images(std::move(host_images)), labels(std::move(host_labels)), copied(event) {}
    HostHold(const HostHold&) = delete;
    HostHold& operator=(const HostHold&) = delete;
    ~HostHold() {
      cudaEventSynchronize(copied);
      cudaEventDestroy(copied);
    }
    Tensor images, labels;
    cudaEvent_t copied;
  };
  out.hold = std::make_shared<HostHold>(images, labels, copied);
#else
  out.images = images.to(device);  // throws: CUDA is not compiled in
  out.labels = labels.to(device);
#endif
  return out;
}

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset,
                       std::shared_ptr<const Transform> transform, LoaderOptions options,
                       std::vector<int64_t> subset)
    : dataset_(std::move(dataset)),
      subset_(std::move(subset)),
      transform_(std::move(transform)),
      options_(options) {
  DISTILL_CHECK(dataset_ && transform_, "DataLoader: dataset and transform are required");
  for (int64_t i : subset_)
    DISTILL_CHECK(i >= 0 && i < dataset_->size(), "DataLoader: subset index ", i, " out of range (",
                  dataset_->size(), " samples)");
  num_classes_ = dataset_->num_classes();
  DISTILL_CHECK(options_.batch_size > 0 && options_.workers > 0 && options_.prefetch_batches > 0,
                "DataLoader: batch_size, workers and prefetch_batches must be positive");
  DISTILL_CHECK(
      options_.world_size > 0 && options_.rank >= 0 && options_.rank < options_.world_size,
      "DataLoader: rank ", options_.rank, " is outside world size ", options_.world_size);
  pool_ = std::make_shared<BufferPool>(options_.pin_memory && cuda_available());
}

DataLoader::DataLoader(std::vector<std::string> shards, int64_t num_classes,
                       std::shared_ptr<const Transform> transform, LoaderOptions options)
    : shards_(std::move(shards)),
      num_classes_(num_classes),
      transform_(std::move(transform)),
      options_(options) {
  DISTILL_CHECK(!shards_.empty() && transform_, "DataLoader: shards and transform are required");
  DISTILL_CHECK(options_.batch_size > 0 && options_.workers > 0 && options_.prefetch_batches > 0,
                "DataLoader: batch_size, workers and prefetch_batches must be positive");
  DISTILL_CHECK(
      options_.world_size > 0 && options_.rank >= 0 && options_.rank < options_.world_size,
      "DataLoader: rank ", options_.rank, " is outside world size ", options_.world_size);
  pool_ = std::make_shared<BufferPool>(options_.pin_memory && cuda_available());
}

DataLoader::~DataLoader() {
  stop_epoch();
}

int64_t DataLoader::batches_per_epoch() const {
  if (!dataset_) return -1;
  int64_t n = subset_.empty() ? dataset_->size() : static_cast<int64_t>(subset_.size());
  const int64_t bs = options_.batch_size;
  if (options_.world_size > 1) {  // this rank's share (rank_slice)
    const int64_t global = bs * options_.world_size, full = n / global, rest = n % global;
    const int64_t part = (rest + options_.world_size - 1) / options_.world_size;
    const int64_t mine = options_.drop_last
                             ? 0
                             : std::max<int64_t>(0, std::min(rest, (options_.rank + 1) * part) -
                                                        std::min(rest, options_.rank * part));
    n = full * bs + mine;
  }
  return options_.drop_last ? n / bs : (n + bs - 1) / bs;
}

std::exception_ptr DataLoader::stop_epoch() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (producer_.joinable()) producer_.join();
  for (auto& w : workers_)
    if (w.joinable()) w.join();
  workers_.clear();
  std::lock_guard<std::mutex> lock(mutex_);
  stopping_ = false;
  producer_done_ = false;
  total_ = -1;
  next_batch_ = 0;
  produced_ = 0;
  queue_.clear();
  pending_.clear();
  std::exception_ptr error = error_;
  error_ = nullptr;
  return error;
}

void DataLoader::start_epoch(int64_t epoch) {
  stop_epoch();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    epoch_ = epoch;
    ended_ = false;
    skipped_ = BadSampleLog{};
  }
  producer_ = std::thread([this] { produce(); });
  for (int w = 0; w < options_.workers; ++w) workers_.emplace_back([this] { work(); });
}

BadSampleLog DataLoader::epoch_skipped() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return skipped_;
}

void DataLoader::record_error(std::exception_ptr e, int64_t seq) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!error_ || seq < error_seq_) {
      error_ = e;
      error_seq_ = seq;
    }
  }
  cv_.notify_all();
}

void DataLoader::produce() {
  try {
    if (dataset_) {
      produce_map();
    } else {
      produce_shards();
    }
  } catch (...) {
    record_error(std::current_exception(), -1);
  }
}

bool DataLoader::push(WorkItem item) {
  const int64_t bs = options_.batch_size;
  std::unique_lock<std::mutex> lock(mutex_);
  // Bounded prefetch: stay within prefetch_batches of what the consumer has taken.
  cv_.wait(lock, [&] {
    return stopping_ || error_ || produced_ < (next_batch_ + options_.prefetch_batches) * bs;
  });
  if (stopping_ || error_) return false;
  item.seq = produced_++;
  const int64_t batch = item.seq / bs;
  if (item.seq % bs == 0) {
    auto p = std::make_unique<Pending>();
    p->expected = bs;
    const size_t per_sample =
        3 * static_cast<size_t>(transform_->out_height()) * transform_->out_width();
    p->image_buffer = pool_->acquire(static_cast<size_t>(bs) * per_sample * sizeof(float));
    p->label_buffer = pool_->acquire(static_cast<size_t>(bs) * sizeof(int64_t));
    p->ids.assign(static_cast<size_t>(bs), -1);
    p->bad.assign(static_cast<size_t>(bs), 0);
    pending_[batch] = std::move(p);
  }
  queue_.push_back(std::move(item));
  lock.unlock();
  cv_.notify_all();
  return true;
}

void DataLoader::finish_producing(int64_t total) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    total_ = total;
    producer_done_ = true;
    const int64_t bs = options_.batch_size;
    auto it = pending_.find(total / bs);
    if (total % bs != 0 && it != pending_.end()) it->second->expected = total % bs;
  }
  cv_.notify_all();
}

void DataLoader::produce_map() {
  std::vector<int64_t> order = subset_;
  if (order.empty()) {
    order.resize(static_cast<size_t>(dataset_->size()));
    std::iota(order.begin(), order.end(), 0);
  }
  if (options_.shuffle) {
    const auto perm =
        seeded_permutation(static_cast<int64_t>(order.size()),
                           derive_key(options_.seed, static_cast<uint64_t>(epoch_), 1));
    std::vector<int64_t> shuffled(order.size());
    for (size_t i = 0; i < order.size(); ++i) shuffled[i] = order[static_cast<size_t>(perm[i])];
    order = std::move(shuffled);
  }
  if (options_.world_size > 1)
    order = rank_slice(order, options_.batch_size, options_.world_size, options_.rank,
                       options_.drop_last);
  for (int64_t index : order) {
    WorkItem item{0, index, dataset_->label(index), index, {}, {}};
    if (!push(std::move(item))) return;
  }
  finish_producing(static_cast<int64_t>(order.size()));
}

void DataLoader::produce_shards() {
  const uint64_t epoch = static_cast<uint64_t>(epoch_);
  std::vector<int64_t> shard_order(shards_.size());
  std::iota(shard_order.begin(), shard_order.end(), 0);
  if (options_.shuffle)
    shard_order = seeded_permutation(static_cast<int64_t>(shards_.size()),
                                     derive_key(options_.seed, epoch, 2));
  // The shuffle buffer draws from its own Philox stream, one counter per draw.
  const uint64_t buffer_key = derive_key(options_.seed, epoch, 3);
  uint64_t draws = 0;
  auto draw = [&](size_t n) {
    const kernels::Philox4 r = kernels::philox4x32_10(draws++, buffer_key);
    return static_cast<size_t>(((static_cast<uint64_t>(r.v[0]) << 32) | r.v[1]) % n);
  };
  const size_t capacity =
      options_.shuffle ? static_cast<size_t>(std::max<int64_t>(1, options_.shuffle_buffer)) : 0;
  std::vector<WorkItem> buffer;
  int64_t total = 0;
  // Data-parallel: the stream is cut into global batches and only this rank's slice is pushed
  // (and decoded); `global_batch` holds the samples of the global batch being filled.
  const int world = options_.world_size, rank = options_.rank;
  const int64_t global_size = options_.batch_size * world;
  std::vector<WorkItem> global_batch;
  auto emit_slice = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      if (!push(std::move(global_batch[static_cast<size_t>(i)]))) return false;
      ++total;
    }
    global_batch.clear();
    return true;
  };
  auto emit = [&](WorkItem item) {
    if (world == 1) {
      if (!push(std::move(item))) return false;
      ++total;
      return true;
    }
    global_batch.push_back(std::move(item));
    if (static_cast<int64_t>(global_batch.size()) < global_size) return true;
    return emit_slice(rank * options_.batch_size, (rank + 1) * options_.batch_size);
  };
  for (int64_t s : shard_order) {
    ReaderOptions reader_options;
    reader_options.skip_bad_samples = options_.skip_bad_samples;
    ShardReader reader(shards_[static_cast<size_t>(s)], static_cast<int>(s), num_classes_,
                       reader_options, true);
    ShardSample sample;
    while (reader.next(sample)) {
      WorkItem item{0,  (s << 32) | sample.index_in_shard, sample.label,
                    -1, std::move(sample.image),           std::move(sample.where)};
      if (buffer.size() < capacity) {
        buffer.push_back(std::move(item));
        continue;
      }
      if (capacity > 0) std::swap(item, buffer[draw(capacity)]);
      if (!emit(std::move(item))) return;
    }
    std::lock_guard<std::mutex> lock(mutex_);
    skipped_.merge(reader.skipped());
  }
  while (!buffer.empty()) {
    const size_t j = draw(buffer.size());
    WorkItem item = std::move(buffer[j]);
    buffer[j] = std::move(buffer.back());
    buffer.pop_back();
    if (!emit(std::move(item))) return;
  }
  if (!global_batch.empty() && !options_.drop_last) {  // rank_slice's rule for the rest
    const int64_t rest = static_cast<int64_t>(global_batch.size());
    const int64_t part = (rest + world - 1) / world;
    if (!emit_slice(std::min(rest, rank * part), std::min(rest, (rank + 1) * part))) return;
  }
  finish_producing(total);
}

void DataLoader::work() {
  const int64_t bs = options_.batch_size;
  const size_t per_sample =
      3 * static_cast<size_t>(transform_->out_height()) * transform_->out_width();
  for (;;) {
    WorkItem item;
    Pending* batch = nullptr;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [&] { return stopping_ || error_ || !queue_.empty() || producer_done_; });
      if (stopping_ || error_) return;
      if (queue_.empty()) return;  // the producer is done and nothing is left
      item = std::move(queue_.front());
      queue_.pop_front();
      batch = pending_.at(item.seq / bs).get();
    }
    const size_t slot = static_cast<size_t>(item.seq % bs);
    std::string problem;
    try {
      const Image image = dataset_
                              ? dataset_->get(item.dataset_index).image
                              : decode_image(item.encoded.data(), item.encoded.size(), item.where);
      transform_->apply(image, options_.seed, static_cast<uint64_t>(epoch_),
                        static_cast<uint64_t>(item.id), batch->images() + slot * per_sample);
    } catch (const std::exception& e) {
      if (!options_.skip_bad_samples) {
        record_error(std::current_exception(), item.seq);
        return;
      }
      problem = e.what();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      batch->ids[slot] = item.id;
      batch->labels()[slot] = item.label;
      batch->bad[slot] = problem.empty() ? 0 : 1;
      if (!problem.empty()) skipped_.add(problem);
      ++batch->done;
    }
    cv_.notify_all();
  }
}

bool DataLoader::next(Batch& out) {
  const int64_t bs = options_.batch_size;
  const int h = transform_->out_height(), w = transform_->out_width();
  const size_t per_sample = 3 * static_cast<size_t>(h) * w;
  for (;;) {
    std::unique_ptr<Pending> p;
    int64_t index = 0;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      DISTILL_CHECK(epoch_ >= 0, "DataLoader: call start_epoch() before next()");
      if (ended_) return false;
      bool finished = false;
      cv_.wait(lock, [&] {
        if (error_) return true;
        if (producer_done_) {
          const int64_t batches = options_.drop_last ? total_ / bs : (total_ + bs - 1) / bs;
          if (next_batch_ >= batches) return finished = true;
        }
        auto it = pending_.find(next_batch_);
        return it != pending_.end() && it->second->done == it->second->expected;
      });
      if (error_) {
        lock.unlock();
        // Join the workers first: one still decoding an earlier sample may fail too, and the
        // earliest failure is the one reported.
        const std::exception_ptr e = stop_epoch();
        std::lock_guard<std::mutex> relock(mutex_);
        ended_ = true;
        std::rethrow_exception(e);
      }
      if (finished) {
        lock.unlock();
        // Join the threads but keep the epoch's skipped-sample log for epoch_skipped().
        BadSampleLog log = epoch_skipped();
        stop_epoch();
        std::lock_guard<std::mutex> relock(mutex_);
        skipped_ = std::move(log);
        ended_ = true;
        return false;
      }
      auto it = pending_.find(next_batch_);
      p = std::move(it->second);
      pending_.erase(it);
      index = next_batch_++;
    }
    cv_.notify_all();  // room for the producer

    // Close the gaps left by skipped samples.
    int64_t good = 0;
    std::vector<int64_t> ids;
    for (int64_t k = 0; k < p->expected; ++k) {
      if (p->bad[static_cast<size_t>(k)]) continue;
      if (good != k) {
        std::copy_n(p->images() + k * per_sample, per_sample, p->images() + good * per_sample);
        p->labels()[good] = p->labels()[k];
      }
      ids.push_back(p->ids[static_cast<size_t>(k)]);
      ++good;
    }
    if (good == 0) continue;  // every sample of this batch was skipped
    out.images = view_of(p->image_buffer, {good, 3, h, w}, DType::F32);
    out.labels = view_of(p->label_buffer, {good}, DType::I64);
    out.ids = std::move(ids);
    out.epoch = epoch_;
    out.index = index;
    out.hold.reset();
    return true;
  }
}

}  // namespace distill::data
