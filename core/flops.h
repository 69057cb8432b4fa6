// Matrix FLOP counting for benchmarks (model FLOP utilisation). While a FlopCounter is alive, the
// matrix ops add what they compute to it, counted as PyTorch's torch.utils.flop_counter does so
// that the two engines' numbers compare: 2*m*n*k per GEMM, 2 * output elements * (in/groups) *
// kernel area per convolution, 4*B*H*Lq*Lk*D per attention forward. Elementwise ops, norms and
// losses are not counted. The counter is process-wide; counting is for single-threaded callers.
#pragma once

#include <cstdint>

namespace distill {

class FlopCounter {
 public:
  FlopCounter();
  ~FlopCounter();
  FlopCounter(const FlopCounter&) = delete;
  FlopCounter& operator=(const FlopCounter&) = delete;
  double flops() const;  // counted since construction

 private:
  double start_;
  bool was_enabled_;
};

namespace flops {
bool counting();         // whether some FlopCounter is alive
void add(double count);  // called by the ops; a no-op unless counting
}  // namespace flops

}  // namespace distill
