// The loader: complete epochs, shuffling, drop_last, determinism across worker counts (map-style
// and tar shards), pooled buffers; and the few-shot sampler.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "core/error.h"
#include "data/cifar.h"
#include "data/loader.h"
#include "data/sampling.h"
#include "data/webdataset.h"
#include "tests/data/data_test_util.h"

namespace distill::data {
namespace {

using testing::random_image;
using testing::ScratchDir;

// A small in-memory dataset: sample i is a random 12x10 image with label i % 5.
class TinyDataset : public Dataset {
 public:
  explicit TinyDataset(int64_t n) : n_(n) {
    for (int c = 0; c < 5; ++c) class_names_.push_back(std::string("c").append(std::to_string(c)));
  }
  int64_t size() const override { return n_; }
  Sample get(int64_t i) const override {
    return {random_image(12, 10, static_cast<uint64_t>(i)), i % 5};
  }
  int64_t label(int64_t i) const override { return i % 5; }
  std::string describe(int64_t i) const override { return "tiny " + std::to_string(i); }

 private:
  int64_t n_;
};

struct Epoch {
  std::vector<std::vector<int64_t>> ids;
  std::vector<std::vector<float>> images;
  std::vector<std::vector<int64_t>> labels;
};

Epoch run_epoch(DataLoader& loader, int64_t epoch) {
  Epoch e;
  loader.start_epoch(epoch);
  Batch b;
  while (loader.next(b)) {
    EXPECT_EQ(b.index, static_cast<int64_t>(e.ids.size()));
    EXPECT_EQ(b.images.dtype(), DType::F32);
    EXPECT_EQ(b.labels.dtype(), DType::I64);
    EXPECT_EQ(b.images.size(0), b.labels.size(0));
    e.ids.push_back(b.ids);
    e.images.push_back(b.images.to_float_vector());
    e.labels.push_back(b.labels.to_int_vector());
  }
  return e;
}

std::shared_ptr<const Transform> small_augment() {
  AugmentOptions o;
  o.size = 8;
  o.brightness = 0.3;
  return std::make_shared<TrainAugment>(o);
}

TEST(Loader, EpochCoversEverySampleOnceAndDropLast) {
  auto ds = std::make_shared<TinyDataset>(23);
  LoaderOptions o;
  o.batch_size = 5;
  o.workers = 2;
  DataLoader loader(ds, std::make_shared<ClipPreprocess>(6), o);
  EXPECT_EQ(loader.batches_per_epoch(), 5);
  const Epoch e = run_epoch(loader, 0);
  ASSERT_EQ(e.ids.size(), 5u);
  EXPECT_EQ(e.ids.back().size(), 3u);
  std::vector<int64_t> all;
  for (size_t b = 0; b < e.ids.size(); ++b) {
    for (size_t k = 0; k < e.ids[b].size(); ++k) EXPECT_EQ(e.labels[b][k], e.ids[b][k] % 5);
    all.insert(all.end(), e.ids[b].begin(), e.ids[b].end());
  }
  std::vector<int64_t> sorted = all;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 23; ++i) EXPECT_EQ(sorted[static_cast<size_t>(i)], i);
  EXPECT_NE(all, sorted);  // shuffled
  // The image of each sample is its CLIP preprocessing.
  std::vector<float> expected(3 * 6 * 6);
  ClipPreprocess(6).apply(ds->get(e.ids[0][1]).image, 0, 0, 0, expected.data());
  EXPECT_EQ(std::vector<float>(e.images[0].begin() + 108, e.images[0].begin() + 216), expected);
  // Another epoch, another order; drop_last drops the partial batch.
  EXPECT_NE(run_epoch(loader, 1).ids, e.ids);
  o.drop_last = true;
  DataLoader dropping(ds, std::make_shared<ClipPreprocess>(6), o);
  EXPECT_EQ(dropping.batches_per_epoch(), 4);
  EXPECT_EQ(run_epoch(dropping, 0).ids.size(), 4u);
  // Calling next() after the end keeps returning false.
  Batch b;
  EXPECT_FALSE(dropping.next(b));
}

TEST(Loader, SameSeedSameBatchesWhateverTheWorkerCount) {
  auto ds = std::make_shared<TinyDataset>(37);
  LoaderOptions o;
  o.batch_size = 4;
  o.seed = 11;
  o.prefetch_batches = 2;
  o.workers = 1;
  DataLoader one(ds, small_augment(), o);
  o.workers = 3;
  DataLoader three(ds, small_augment(), o);
  const Epoch a = run_epoch(one, 2), b = run_epoch(three, 2);
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_EQ(a.images, b.images);
  o.seed = 12;
  DataLoader other_seed(ds, small_augment(), o);
  EXPECT_NE(run_epoch(other_seed, 2).ids, a.ids);
}

TEST(Loader, ShardStreamingShufflesAcrossShardsDeterministically) {
  ScratchDir dir;
  std::vector<std::string> shards;
  for (int s = 0; s < 3; ++s) {
    TarWriter tar;
    for (int k = 0; k < 7; ++k) {
      const std::string key =
          std::string("k").append(std::to_string(s)).append("_").append(std::to_string(k));
      tar.add(key + ".png", encode_png(random_image(9, 9, static_cast<uint64_t>(s * 7 + k))));
      tar.add(key + ".cls", std::to_string((s + k) % 4));
    }
    shards.push_back(dir / ("s" + std::to_string(s) + ".tar"));
    tar.write(shards.back());
  }
  LoaderOptions o;
  o.batch_size = 4;
  o.shuffle_buffer = 5;
  o.seed = 3;
  o.workers = 1;
  DataLoader one(shards, 4, small_augment(), o);
  o.workers = 3;
  DataLoader three(shards, 4, small_augment(), o);
  const Epoch a = run_epoch(one, 0), b = run_epoch(three, 0);
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_EQ(a.images, b.images);
  std::vector<int64_t> all;
  for (size_t bi = 0; bi < a.ids.size(); ++bi)
    for (size_t k = 0; k < a.ids[bi].size(); ++k) {
      const int64_t shard = a.ids[bi][k] >> 32, index = a.ids[bi][k] & 0xffffffff;
      EXPECT_EQ(a.labels[bi][k], (shard + index) % 4);
      all.push_back(a.ids[bi][k]);
    }
  ASSERT_EQ(all.size(), 21u);
  EXPECT_EQ(std::set<int64_t>(all.begin(), all.end()).size(), 21u);
  // Samples of different shards interleave (the shuffle buffer spans shard boundaries).
  bool mixed = false;
  for (size_t i = 0; i + 1 < 7; ++i) mixed = mixed || (all[i] >> 32) != (all[0] >> 32);
  EXPECT_TRUE(mixed);
  EXPECT_NE(run_epoch(one, 1).ids, a.ids);
  // Without shuffling: shard order, file order.
  o.shuffle = false;
  DataLoader plain(shards, 4, small_augment(), o);
  const Epoch p = run_epoch(plain, 0);
  EXPECT_EQ(p.ids[0], (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(p.ids[1][3], (int64_t{1} << 32) | 0);
}

// Data-parallel sharding: the ranks' batches at step k, side by side, are the batch a single
// process with the global batch size reads at step k (same ids, same augmented pixels).
void expect_ranks_rebuild_global_batches(const Epoch& whole, const std::vector<Epoch>& ranks,
                                         size_t per_rank) {
  for (const Epoch& r : ranks) ASSERT_EQ(r.ids.size(), whole.ids.size());
  for (size_t b = 0; b < whole.ids.size(); ++b) {
    std::vector<int64_t> ids;
    std::vector<float> images;
    for (const Epoch& r : ranks) {
      EXPECT_EQ(r.ids[b].size(), per_rank) << "batch " << b;
      ids.insert(ids.end(), r.ids[b].begin(), r.ids[b].end());
      images.insert(images.end(), r.images[b].begin(), r.images[b].end());
    }
    EXPECT_EQ(ids, whole.ids[b]) << "batch " << b;
    EXPECT_EQ(images, whole.images[b]) << "batch " << b;
  }
}

TEST(Loader, RankSlicesSplitEachGlobalBatchWithoutOverlap) {
  std::vector<int64_t> order(23);
  for (int64_t i = 0; i < 23; ++i) order[static_cast<size_t>(i)] = 100 + i;
  // 2 ranks x 4: global batches [0, 8), [8, 16), then 7 left over.
  const auto r0 = rank_slice(order, 4, 2, 0, false), r1 = rank_slice(order, 4, 2, 1, false);
  EXPECT_EQ(std::vector<int64_t>(r0.begin(), r0.begin() + 4),
            (std::vector<int64_t>{100, 101, 102, 103}));
  EXPECT_EQ(std::vector<int64_t>(r1.begin(), r1.begin() + 4),
            (std::vector<int64_t>{104, 105, 106, 107}));
  // The rest splits in ceil(7 / 2) = 4 and 3: every sample once, nothing twice.
  EXPECT_EQ(r0.size(), 12u);
  EXPECT_EQ(r1.size(), 11u);
  std::set<int64_t> all(r0.begin(), r0.end());
  all.insert(r1.begin(), r1.end());
  EXPECT_EQ(all.size(), 23u);
  // drop_last drops the incomplete global batch on every rank alike.
  EXPECT_EQ(rank_slice(order, 4, 2, 0, true).size(), 8u);
  EXPECT_EQ(rank_slice(order, 4, 2, 1, true).size(), 8u);
  // 3 ranks x 4 on 13 samples: one full global batch, then 1 sample for rank 0 only.
  std::vector<int64_t> small(order.begin(), order.begin() + 13);
  EXPECT_EQ(rank_slice(small, 4, 3, 0, false).size(), 5u);
  EXPECT_EQ(rank_slice(small, 4, 3, 2, false).size(), 4u);
  EXPECT_THROW(rank_slice(order, 4, 2, 2, false), Error);
}

TEST(Loader, TwoRanksOfBatchBReadTheOneRankBatchOf2B) {
  auto ds = std::make_shared<TinyDataset>(40);
  LoaderOptions o;
  o.seed = 9;
  o.workers = 2;
  o.batch_size = 8;
  DataLoader whole(ds, small_augment(), o);
  o.batch_size = 4;
  o.world_size = 2;
  o.rank = 0;
  DataLoader rank0(ds, small_augment(), o);
  o.rank = 1;
  DataLoader rank1(ds, small_augment(), o);
  EXPECT_EQ(rank0.batches_per_epoch(), whole.batches_per_epoch());
  for (int64_t epoch : {0, 1}) {
    const Epoch a = run_epoch(rank0, epoch), b = run_epoch(rank1, epoch);
    expect_ranks_rebuild_global_batches(run_epoch(whole, epoch), {a, b}, 4);
    if (epoch == 1) {  // reshuffled with the shared seed: a new order for both ranks
      EXPECT_NE(a.ids, run_epoch(rank0, 0).ids);
    }
  }
}

TEST(Loader, ShardedTrainingDropsTheIncompleteGlobalBatchOnEveryRank) {
  auto ds = std::make_shared<TinyDataset>(21);  // 2 full global batches of 2 x 4, 5 left
  LoaderOptions o;
  o.batch_size = 4;
  o.world_size = 2;
  o.drop_last = true;
  std::set<int64_t> seen;
  for (int rank : {0, 1}) {
    o.rank = rank;
    DataLoader loader(ds, std::make_shared<ClipPreprocess>(4), o);
    EXPECT_EQ(loader.batches_per_epoch(), 2);
    const Epoch e = run_epoch(loader, 0);
    ASSERT_EQ(e.ids.size(), 2u);
    for (const auto& b : e.ids)
      for (int64_t id : b) EXPECT_TRUE(seen.insert(id).second) << "sample " << id << " twice";
  }
  EXPECT_EQ(seen.size(), 16u);
  // Evaluation keeps every sample: 3 + 2 batches, 21 samples, none twice.
  o.drop_last = false;
  o.shuffle = false;
  seen.clear();
  for (int rank : {0, 1}) {
    o.rank = rank;
    DataLoader loader(ds, std::make_shared<ClipPreprocess>(4), o);
    const Epoch e = run_epoch(loader, 0);
    EXPECT_EQ(static_cast<int64_t>(e.ids.size()), loader.batches_per_epoch());
    for (const auto& b : e.ids)
      for (int64_t id : b) EXPECT_TRUE(seen.insert(id).second) << "sample " << id << " twice";
  }
  EXPECT_EQ(seen.size(), 21u);
  o.rank = 2;
  EXPECT_THROW(DataLoader(ds, std::make_shared<ClipPreprocess>(4), o), Error);
}

TEST(Loader, ShardStreamsSplitAcrossRanksLikeTheGlobalBatch) {
  ScratchDir dir;
  std::vector<std::string> shards;
  for (int s = 0; s < 3; ++s) {
    TarWriter tar;
    for (int k = 0; k < 9; ++k) {
      const std::string key =
          std::string("k").append(std::to_string(s)).append("_").append(std::to_string(k));
      tar.add(key + ".png", encode_png(random_image(9, 9, static_cast<uint64_t>(s * 9 + k))));
      tar.add(key + ".cls", std::to_string(k % 4));
    }
    shards.push_back(dir / ("s" + std::to_string(s) + ".tar"));
    tar.write(shards.back());
  }
  LoaderOptions o;
  o.seed = 5;
  o.shuffle_buffer = 6;
  o.batch_size = 6;
  o.drop_last = true;  // 27 samples: 4 global batches of 6, 3 dropped
  DataLoader whole(shards, 4, small_augment(), o);
  o.batch_size = 3;
  o.world_size = 2;
  std::vector<Epoch> ranks;
  for (int rank : {0, 1}) {
    o.rank = rank;
    DataLoader loader(shards, 4, small_augment(), o);
    ranks.push_back(run_epoch(loader, 1));
  }
  const Epoch w = run_epoch(whole, 1);
  ASSERT_EQ(w.ids.size(), 4u);
  expect_ranks_rebuild_global_batches(w, ranks, 3);
}

TEST(Loader, BuffersAreReusedAndBatchesCopyToCpu) {
  auto ds = std::make_shared<TinyDataset>(16);
  LoaderOptions o;
  o.batch_size = 8;
  DataLoader loader(ds, std::make_shared<ClipPreprocess>(4), o);
  loader.start_epoch(0);
  Batch b;
  ASSERT_TRUE(loader.next(b));
  const Batch copy = b.to(Device::cpu());
  EXPECT_EQ(copy.images.to_float_vector(), b.images.to_float_vector());
  const void* first = b.images.data_ptr();
  b = Batch{};
  std::set<const void*> seen;
  for (int epoch = 1; epoch < 4; ++epoch) {
    loader.start_epoch(epoch);
    while (loader.next(b)) seen.insert(b.images.data_ptr());
  }
  EXPECT_LE(seen.size(), 8u);  // from the pool, not a fresh allocation per batch
  (void)first;
  if (!cuda_available()) {
    EXPECT_THROW(copy.to(Device::cuda(0)), std::exception);
  }
}

// Runs on a GPU machine only: pinned batch buffers and the asynchronous copy.
TEST(Loader, PinnedBatchesCopyToTheGpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  auto ds = std::make_shared<TinyDataset>(20);
  LoaderOptions o;
  o.batch_size = 8;
  DataLoader loader(ds, small_augment(), o);
  for (int epoch = 0; epoch < 2; ++epoch) {
    loader.start_epoch(epoch);
    Batch b;
    while (loader.next(b)) {
      const Batch gpu = b.to(Device::cuda(0));
      EXPECT_TRUE(gpu.images.device().is_cuda());
      EXPECT_EQ(gpu.images.to_float_vector(), b.images.to_float_vector());
      EXPECT_EQ(gpu.labels.to_int_vector(), b.labels.to_int_vector());
    }
  }
}

TEST(Loader, StopsCleanlyMidEpoch) {
  auto ds = std::make_shared<TinyDataset>(100);
  LoaderOptions o;
  o.batch_size = 3;
  o.workers = 3;
  {
    DataLoader loader(ds, small_augment(), o);
    loader.start_epoch(0);
    Batch b;
    ASSERT_TRUE(loader.next(b));
    loader.start_epoch(1);  // abandons epoch 0
    ASSERT_TRUE(loader.next(b));
    EXPECT_EQ(b.epoch, 1);
  }  // destroyed with workers running
}

TEST(FewShot, NestedSeededAndBalanced) {
  std::vector<int64_t> labels;
  for (int i = 0; i < 200; ++i) labels.push_back((i * 7) % 10);
  const auto two = few_shot_indices(labels, 10, 2, 5);
  const auto four = few_shot_indices(labels, 10, 4, 5);
  ASSERT_EQ(two.size(), 20u);
  ASSERT_EQ(four.size(), 40u);
  EXPECT_TRUE(std::includes(four.begin(), four.end(), two.begin(), two.end()));
  std::vector<int> per_class(10, 0);
  for (int64_t i : four) ++per_class[static_cast<size_t>(labels[static_cast<size_t>(i)])];
  for (int c : per_class) EXPECT_EQ(c, 4);
  EXPECT_EQ(few_shot_indices(labels, 10, 4, 5), four);
  EXPECT_NE(few_shot_indices(labels, 10, 4, 6), four);
  EXPECT_THROW(few_shot_indices(labels, 10, 21, 5), Error);
  const auto rest = complement_indices(200, four);
  EXPECT_EQ(rest.size(), 160u);
  // Through a Dataset and into the loader as a subset.
  auto ds = std::make_shared<TinyDataset>(50);
  const auto subset = few_shot_indices(*ds, 3, 1);
  LoaderOptions o;
  o.batch_size = 4;
  DataLoader loader(ds, std::make_shared<ClipPreprocess>(4), o, subset);
  const Epoch e = run_epoch(loader, 0);
  int64_t n = 0;
  for (const auto& ids : e.ids) n += static_cast<int64_t>(ids.size());
  EXPECT_EQ(n, 15);
}

}  // namespace
}  // namespace distill::data
