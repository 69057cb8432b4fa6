#include "data/sampling.h"

#include <algorithm>

#include "core/error.h"
#include "kernels/philox.h"

namespace distill::data {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t derive_key(uint64_t seed, uint64_t epoch, uint64_t stream) {
  return splitmix64(splitmix64(seed ^ 0xD15711Full) ^ splitmix64(epoch) ^ (stream * 0x9E37ull));
}

std::vector<int64_t> seeded_permutation(int64_t n, uint64_t key) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[static_cast<size_t>(i)] = i;
  for (int64_t i = n - 1; i > 0; --i) {
    const kernels::Philox4 r = kernels::philox4x32_10(static_cast<uint64_t>(i), key);
    const uint64_t bits = (static_cast<uint64_t>(r.v[0]) << 32) | r.v[1];
    const auto j = static_cast<int64_t>(bits % static_cast<uint64_t>(i + 1));
    std::swap(p[static_cast<size_t>(i)], p[static_cast<size_t>(j)]);
  }
  return p;
}

std::vector<int64_t> few_shot_indices(const std::vector<int64_t>& labels, int64_t num_classes,
                                      int64_t k, uint64_t seed) {
  DISTILL_CHECK(k > 0, "few_shot_indices: k must be positive, got ", k);
  std::vector<std::vector<int64_t>> by_class(static_cast<size_t>(num_classes));
  for (size_t i = 0; i < labels.size(); ++i) {
    check_label(labels[i], num_classes, "few_shot_indices: sample " + std::to_string(i));
    by_class[static_cast<size_t>(labels[i])].push_back(static_cast<int64_t>(i));
  }
  std::vector<int64_t> out;
  for (int64_t c = 0; c < num_classes; ++c) {
    const auto& members = by_class[static_cast<size_t>(c)];
    DISTILL_CHECK(static_cast<int64_t>(members.size()) >= k, "few_shot_indices: class ", c, " has ",
                  members.size(), " samples, fewer than k = ", k);
    // The class's own permutation, independent of k, so that sets for growing k are nested.
    const auto order = seeded_permutation(static_cast<int64_t>(members.size()),
                                          derive_key(seed, 0, 0xF5 + static_cast<uint64_t>(c)));
    for (int64_t j = 0; j < k; ++j)
      out.push_back(members[static_cast<size_t>(order[static_cast<size_t>(j)])]);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<int64_t> few_shot_indices(const Dataset& dataset, int64_t k, uint64_t seed) {
  std::vector<int64_t> labels(static_cast<size_t>(dataset.size()));
  for (int64_t i = 0; i < dataset.size(); ++i) labels[static_cast<size_t>(i)] = dataset.label(i);
  return few_shot_indices(labels, dataset.num_classes(), k, seed);
}

std::vector<int64_t> complement_indices(int64_t n, const std::vector<int64_t>& subset) {
  std::vector<bool> taken(static_cast<size_t>(n), false);
  for (int64_t i : subset) {
    DISTILL_CHECK(i >= 0 && i < n, "complement_indices: index ", i, " out of range (", n, ")");
    taken[static_cast<size_t>(i)] = true;
  }
  std::vector<int64_t> out;
  for (int64_t i = 0; i < n; ++i)
    if (!taken[static_cast<size_t>(i)]) out.push_back(i);
  return out;
}

std::vector<int64_t> rank_slice(const std::vector<int64_t>& order, int64_t batch_size,
                                int world_size, int rank, bool drop_last) {
  DISTILL_CHECK(batch_size > 0 && world_size > 0 && rank >= 0 && rank < world_size,
                "rank_slice: bad batch size ", batch_size, ", world size ", world_size, " or rank ",
                rank);
  const int64_t n = static_cast<int64_t>(order.size());
  const int64_t global = batch_size * world_size;
  const int64_t full = n / global;
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>((full + 1) * batch_size));
  auto take = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out.push_back(order[static_cast<size_t>(i)]);
  };
  for (int64_t b = 0; b < full; ++b)
    take(b * global + rank * batch_size, b * global + (rank + 1) * batch_size);
  const int64_t rest = n - full * global;
  if (rest > 0 && !drop_last) {
    const int64_t part = (rest + world_size - 1) / world_size;
    const int64_t begin = std::min(rest, rank * part), end = std::min(rest, (rank + 1) * part);
    take(full * global + begin, full * global + end);
  }
  return out;
}

}  // namespace distill::data
