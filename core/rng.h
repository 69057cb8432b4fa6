// Philox generator state: a seed and a counter offset. Each draw of n elements uses counters
// [offset, offset + n) and advances the offset, so CPU and CUDA draws with the same state match.
#pragma once

#include <cstdint>

namespace distill {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0x5eed) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) {
    seed_ = seed;
    offset_ = offset;
  }
  // Reserves n counters and returns the first.
  uint64_t advance(uint64_t n) {
    const uint64_t start = offset_;
    offset_ += n;
    return start;
  }

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
};

// Process-wide default generator (used when an op is given none).
Generator& default_generator();
void manual_seed(uint64_t seed);

}  // namespace distill
