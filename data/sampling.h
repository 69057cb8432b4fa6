// Seeded index orders: epoch permutations and the few-shot sampler. Both draw from Philox with a
// key derived from the seed, so they are reproducible on any machine and thread count.
#pragma once

#include <cstdint>
#include <vector>

#include "data/dataset.h"

namespace distill::data {

// A permutation of 0..n-1 (Fisher-Yates on Philox draws keyed by `key`).
std::vector<int64_t> seeded_permutation(int64_t n, uint64_t key);
// The key for stream `stream` of epoch `epoch` under `seed` (distinct streams: order, shards...).
// SplitMix64's finaliser: a well-mixed 64-bit hash of x (seeds and keys are derived with it).
uint64_t splitmix64(uint64_t x);
uint64_t derive_key(uint64_t seed, uint64_t epoch, uint64_t stream);

// k samples per class, chosen by a per-class permutation that does not depend on k: the 4-shot
// set contains the 2-shot set. Returned sorted. A class with fewer than k samples is an error
// naming it.
std::vector<int64_t> few_shot_indices(const std::vector<int64_t>& labels, int64_t num_classes,
                                      int64_t k, uint64_t seed);
std::vector<int64_t> few_shot_indices(const Dataset& dataset, int64_t k, uint64_t seed);
// 0..n-1 without `subset` (the unlabelled rest for few-shot runs), sorted.
std::vector<int64_t> complement_indices(int64_t n, const std::vector<int64_t>& subset);

// Data-parallel sharding of one epoch's sample order: `order` is cut into global batches of
// world_size * batch_size and rank `rank` takes the contiguous slice [rank * batch_size,
// (rank + 1) * batch_size) of each, so the ranks' batches together are exactly the batch a single
// process with batch world_size * batch_size would read at that step, and no sample goes to two
// ranks. A last, incomplete global batch is dropped with drop_last; otherwise it is split in
// contiguous slices of ceil(rest / world_size) (the last ranks may get fewer samples, or none).
std::vector<int64_t> rank_slice(const std::vector<int64_t>& order, int64_t batch_size,
                                int world_size, int rank, bool drop_last);

}  // namespace distill::data
