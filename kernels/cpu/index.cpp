// CPU indexing kernels over contiguous [outer, n, inner] buffers. Every kernel validates all
// indices before touching the output, so a bad index leaves the output unwritten.
#include "kernels/index.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/loops.h"

namespace distill::kernels::cpu {

namespace {

// Inner columns per task for the accumulating kernels: a task owns a set of (outer, column)
// pairs and walks all indices for them, so repeated indices never race.
constexpr int64_t kInnerBlock = 256;

int64_t load_index(const void* index, DType index_dtype, int64_t pos) {
  return index_dtype == DType::I32 ? static_cast<const int32_t*>(index)[pos]
                                   : static_cast<const int64_t*>(index)[pos];
}

// Position of the first index outside [0, bound), or -1.
int64_t first_bad_index(const void* index, DType index_dtype, int64_t count, int64_t bound) {
  for (int64_t p = 0; p < count; ++p) {
    const int64_t v = load_index(index, index_dtype, p);
    if (v < 0 || v >= bound) return p;
  }
  return -1;
}

// Adds `from` into `to` in the buffer dtype (float accumulation for 16-bit types).
void accumulate(void* dst, int64_t d, const void* src, int64_t s, DType dtype) {
  if (dtype == DType::F64) {
    static_cast<double*>(dst)[d] += static_cast<const double*>(src)[s];
  } else if (dtype == DType::F32) {
    static_cast<float*>(dst)[d] += static_cast<const float*>(src)[s];
  } else {
    store_as<float>(dst, d, dtype, load_as<float>(dst, d, dtype) + load_as<float>(src, s, dtype));
  }
}

// Runs fn(o, i0, i1) over (outer, inner-block) tasks in parallel.
template <typename Fn>
void for_each_column_block(const IndexArgs& a, int64_t work_per_task, Fn&& fn) {
  const int64_t blocks = (a.inner + kInnerBlock - 1) / kInnerBlock;
  const int64_t tasks = a.outer * blocks;
  const bool parallel = tasks > 1 && tasks * work_per_task >= kParallelGrain;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t o = t / blocks, i0 = (t % blocks) * kInnerBlock;
    fn(o, i0, std::min(a.inner, i0 + kInnerBlock));
  }
}

}  // namespace

int64_t index_select(const IndexArgs& a, const void* src, const void* index, void* out) {
  const int64_t bad = first_bad_index(index, a.index_dtype, a.idx_n, a.src_n);
  if (bad >= 0) return bad;
  const int64_t elem = dtype_size(a.dtype);
  const size_t row_bytes = static_cast<size_t>(a.inner * elem);
  const auto* s = static_cast<const char*>(src);
  auto* d = static_cast<char*>(out);
  const int64_t rows = a.outer * a.idx_n;
  const bool parallel = rows > 1 && rows * a.inner >= kParallelGrain;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t o = r / a.idx_n, j = r % a.idx_n;
    const int64_t from = (o * a.src_n + load_index(index, a.index_dtype, j)) * a.inner;
    std::memcpy(d + r * a.inner * elem, s + from * elem, row_bytes);
  }
  return -1;
}

int64_t index_add(const IndexArgs& a, const void* grad, const void* index, void* dst) {
  const int64_t bad = first_bad_index(index, a.index_dtype, a.idx_n, a.src_n);
  if (bad >= 0) return bad;
  for_each_column_block(a, a.idx_n * kInnerBlock, [&](int64_t o, int64_t i0, int64_t i1) {
    for (int64_t j = 0; j < a.idx_n; ++j) {
      const int64_t to = (o * a.src_n + load_index(index, a.index_dtype, j)) * a.inner;
      const int64_t from = (o * a.idx_n + j) * a.inner;
      for (int64_t i = i0; i < i1; ++i) accumulate(dst, to + i, grad, from + i, a.dtype);
    }
  });
  return -1;
}

int64_t gather(const IndexArgs& a, const void* src, const void* index, void* out) {
  const int64_t count = a.outer * a.idx_n * a.inner;
  const int64_t bad = first_bad_index(index, a.index_dtype, count, a.src_n);
  if (bad >= 0) return bad;
  const int64_t elem = dtype_size(a.dtype);
  const auto* s = static_cast<const char*>(src);
  auto* d = static_cast<char*>(out);
  const bool parallel = count >= kParallelGrain;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t p = 0; p < count; ++p) {
    const int64_t o = p / (a.idx_n * a.inner), i = p % a.inner;
    const int64_t from = (o * a.src_n + load_index(index, a.index_dtype, p)) * a.inner + i;
    std::memcpy(d + p * elem, s + from * elem, static_cast<size_t>(elem));
  }
  return -1;
}

int64_t scatter_add(const IndexArgs& a, const void* grad, const void* index, void* dst) {
  const int64_t count = a.outer * a.idx_n * a.inner;
  const int64_t bad = first_bad_index(index, a.index_dtype, count, a.src_n);
  if (bad >= 0) return bad;
  for_each_column_block(a, a.idx_n * kInnerBlock, [&](int64_t o, int64_t i0, int64_t i1) {
    for (int64_t j = 0; j < a.idx_n; ++j) {
      const int64_t from = (o * a.idx_n + j) * a.inner;
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t to = (o * a.src_n + load_index(index, a.index_dtype, from + i)) * a.inner + i;
        accumulate(dst, to, grad, from + i, a.dtype);
      }
    }
  });
  return -1;
}

}  // namespace distill::kernels::cpu
