// CPU iteration helpers: walk N operands that share one logical shape but have their own strides
// (0 on broadcast dims). The innermost dim runs as a plain loop; outer rows run in parallel.
#pragma once

#include <omp.h>

#include <array>
#include <cstdint>

#include "kernels/common.h"

namespace distill::kernels::cpu {

// Minimum elements per parallel chunk: below this, threads cost more than they save.
constexpr int64_t kParallelGrain = 32768;

// fn(int64_t offsets[N], int64_t inner_count, const int64_t inner_strides[N]) is called once per
// row of the innermost dim.
template <int N, typename Fn>
void for_each_row(const View& shape_view, const std::array<const View*, N>& views, Fn&& fn) {
  const int nd = shape_view.ndim;
  if (nd == 0) {
    int64_t offs[N] = {};
    int64_t inner_strides[N] = {};
    fn(offs, int64_t(1), inner_strides);
    return;
  }
  const int64_t inner = shape_view.shape[nd - 1];
  int64_t rows = 1;
  for (int d = 0; d < nd - 1; ++d) rows *= shape_view.shape[d];
  int64_t inner_strides[N];
  for (int k = 0; k < N; ++k) inner_strides[k] = views[k]->strides[nd - 1];
  const int64_t total = rows * inner;
  const bool parallel = total >= kParallelGrain && rows > 1;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t offs[N] = {};
    int64_t rem = r;
    for (int d = nd - 2; d >= 0; --d) {
      const int64_t idx = rem % shape_view.shape[d];
      rem /= shape_view.shape[d];
      for (int k = 0; k < N; ++k) offs[k] += idx * views[k]->strides[d];
    }
    fn(offs, inner, inner_strides);
  }
}

}  // namespace distill::kernels::cpu
