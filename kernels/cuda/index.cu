// CUDA indexing kernels over contiguous [outer, n, inner] buffers.
//
// Like the CPU reference, a bad index leaves the output untouched: a first kernel finds the
// smallest bad position (atomicMin into a device flag), the work kernel reads the flag and exits
// early if it was set, and one 8-byte copy brings the flag back as the return value. Accumulating
// kernels use atomicAdd, so the summation order of repeated indices (and hence the last bits of
// floating results) is not deterministic.
#include "kernels/cuda/cuda_utils.cuh"
#include "kernels/index.h"

namespace distill::kernels::cuda {

namespace {

// memset byte pattern 0x7f gives a positive value larger than any position.
constexpr int kNoBadByte = 0x7f;
constexpr unsigned long long kNoBad = 0x7f7f7f7f7f7f7f7full;

template <typename I>
__global__ void find_bad_index_kernel(const I* index, int64_t count, int64_t bound,
                                      unsigned long long* first_bad) {
  for (int64_t p = global_thread_id(); p < count; p += grid_stride()) {
    const int64_t v = static_cast<int64_t>(index[p]);
    if (v < 0 || v >= bound) atomicMin(first_bad, static_cast<unsigned long long>(p));
  }
}

// Owns the device flag for one call: validate() launches the check, result() syncs and returns
// -1 or the first bad position.
class BadIndexFlag {
 public:
  BadIndexFlag() : scratch_(sizeof(unsigned long long)) {
    DISTILL_CUDA_CHECK(
        cudaMemsetAsync(ptr(), kNoBadByte, sizeof(unsigned long long), current_stream()));
  }
  unsigned long long* ptr() const { return scratch_.as<unsigned long long>(); }

  void validate(const IndexArgs& a, const void* index, int64_t count, const char* op) {
    if (count == 0) return;
    dispatch_index(a.index_dtype, op, [&](auto tag) {
      using I = typename decltype(tag)::type;
      find_bad_index_kernel<I><<<grid_for(count), kBlockSize, 0, current_stream()>>>(
          static_cast<const I*>(index), count, a.src_n, ptr());
      check_launch(op);
    });
  }

  int64_t result() const {
    unsigned long long host = kNoBad;
    memcpy_d2h(&host, ptr(), sizeof(host));
    return host == kNoBad ? -1 : static_cast<int64_t>(host);
  }

 private:
  DeviceScratch scratch_;
};

// ---- index_select: rows of `inner` elements copied as raw words of the widest size that divides
// the row and both base pointers (16 bytes for most float rows).

template <typename Word, typename I>
__global__ void index_select_kernel(const Word* src, const I* index, Word* out, int64_t outer,
                                    int64_t src_n, int64_t idx_n, int64_t row_words,
                                    const unsigned long long* bad) {
  if (*bad != kNoBad) return;
  const int64_t total = outer * idx_n * row_words;
  for (int64_t p = global_thread_id(); p < total; p += grid_stride()) {
    const int64_t w = p % row_words;
    const int64_t r = p / row_words;  // output row = o * idx_n + j
    const int64_t j = r % idx_n;
    const int64_t o = r / idx_n;
    const int64_t from_row = o * src_n + static_cast<int64_t>(index[j]);
    out[p] = src[from_row * row_words + w];
  }
}

// Calls fn(TypeTag<Word>) for the widest word (16, 8, 4, 2, 1 bytes) dividing `bytes` and
// aligning every pointer.
template <typename Fn>
void dispatch_word(int64_t bytes, std::initializer_list<const void*> ptrs, Fn&& fn) {
  const auto fits = [&](size_t w) {
    if (bytes % static_cast<int64_t>(w) != 0) return false;
    for (const void* p : ptrs)
      if (!is_aligned(p, w)) return false;
    return true;
  };
  if (fits(16)) return fn(TypeTag<uint4>{});
  if (fits(8)) return fn(TypeTag<uint2>{});
  if (fits(4)) return fn(TypeTag<uint32_t>{});
  if (fits(2)) return fn(TypeTag<uint16_t>{});
  fn(TypeTag<uint8_t>{});
}

// ---- gather: one element per thread.
template <typename E, typename I>
__global__ void gather_kernel(const E* src, const I* index, E* out, int64_t outer, int64_t src_n,
                              int64_t idx_n, int64_t inner, const unsigned long long* bad) {
  if (*bad != kNoBad) return;
  const int64_t total = outer * idx_n * inner;
  for (int64_t p = global_thread_id(); p < total; p += grid_stride()) {
    const int64_t i = p % inner;
    const int64_t o = p / (idx_n * inner);
    out[p] = src[(o * src_n + static_cast<int64_t>(index[p])) * inner + i];
  }
}

// ---- accumulation: atomicAdd in the buffer dtype (native for float/double; bf16/f16 atomics are
// native on sm_80+/sm_70+ and round after each add, like the CPU's per-add store).
template <typename T>
__device__ __forceinline__ void atomic_accumulate(T* dst, T v) {
  atomicAdd(dst, v);
}

template <typename T, typename I>
__global__ void index_add_kernel(const T* grad, const I* index, T* dst, int64_t outer,
                                 int64_t src_n, int64_t idx_n, int64_t inner,
                                 const unsigned long long* bad) {
  if (*bad != kNoBad) return;
  const int64_t total = outer * idx_n * inner;
  for (int64_t p = global_thread_id(); p < total; p += grid_stride()) {
    const int64_t i = p % inner;
    const int64_t r = p / inner;
    const int64_t j = r % idx_n;
    const int64_t o = r / idx_n;
    atomic_accumulate(dst + (o * src_n + static_cast<int64_t>(index[j])) * inner + i, grad[p]);
  }
}

template <typename T, typename I>
__global__ void scatter_add_kernel(const T* grad, const I* index, T* dst, int64_t outer,
                                   int64_t src_n, int64_t idx_n, int64_t inner,
                                   const unsigned long long* bad) {
  if (*bad != kNoBad) return;
  const int64_t total = outer * idx_n * inner;
  for (int64_t p = global_thread_id(); p < total; p += grid_stride()) {
    const int64_t i = p % inner;
    const int64_t o = p / (idx_n * inner);
    atomic_accumulate(dst + (o * src_n + static_cast<int64_t>(index[p])) * inner + i, grad[p]);
  }
}

template <typename Fn>
void dispatch_elem_word(DType t, Fn&& fn) {
  switch (dtype_size(t)) {
    case 1:
      fn(TypeTag<uint8_t>{});
      return;
    case 2:
      fn(TypeTag<uint16_t>{});
      return;
    case 4:
      fn(TypeTag<uint32_t>{});
      return;
    default:
      fn(TypeTag<uint64_t>{});
      return;
  }
}

void check_sizes(const IndexArgs& a, const char* op) {
  if (a.outer < 0 || a.inner < 0 || a.src_n < 0 || a.idx_n < 0)
    throw std::runtime_error(std::string(op) + ": negative size");
}

}  // namespace

int64_t index_select(const IndexArgs& a, const void* src, const void* index, void* out) {
  check_sizes(a, "index_select");
  if (a.idx_n == 0) return -1;
  NvtxRange range("index_select");
  BadIndexFlag bad;
  bad.validate(a, index, a.idx_n, "index_select");
  const int64_t row_bytes = a.inner * dtype_size(a.dtype);
  if (a.outer > 0 && row_bytes > 0) {
    dispatch_index(a.index_dtype, "index_select", [&](auto itag) {
      using I = typename decltype(itag)::type;
      dispatch_word(row_bytes, {src, out}, [&](auto wtag) {
        using W = typename decltype(wtag)::type;
        const int64_t row_words = row_bytes / static_cast<int64_t>(sizeof(W));
        const int64_t total = a.outer * a.idx_n * row_words;
        index_select_kernel<W, I><<<grid_for(total), kBlockSize, 0, current_stream()>>>(
            static_cast<const W*>(src), static_cast<const I*>(index), static_cast<W*>(out), a.outer,
            a.src_n, a.idx_n, row_words, bad.ptr());
        check_launch("index_select");
      });
    });
  }
  return bad.result();
}

int64_t index_add(const IndexArgs& a, const void* grad, const void* index, void* dst) {
  check_sizes(a, "index_add");
  if (a.idx_n == 0) return -1;
  NvtxRange range("index_add");
  BadIndexFlag bad;
  bad.validate(a, index, a.idx_n, "index_add");
  const int64_t total = a.outer * a.idx_n * a.inner;
  if (total > 0) {
    dispatch_index(a.index_dtype, "index_add", [&](auto itag) {
      using I = typename decltype(itag)::type;
      // Every floating dtype has a hardware atomicAdd (bf16/f16 on sm_80+).
      dispatch_floating(a.dtype, "index_add", [&](auto tag) {
        using T = typename decltype(tag)::type;
        index_add_kernel<T, I><<<grid_for(total), kBlockSize, 0, current_stream()>>>(
            static_cast<const T*>(grad), static_cast<const I*>(index), static_cast<T*>(dst),
            a.outer, a.src_n, a.idx_n, a.inner, bad.ptr());
        check_launch("index_add");
      });
    });
  }
  return bad.result();
}

int64_t gather(const IndexArgs& a, const void* src, const void* index, void* out) {
  check_sizes(a, "gather");
  const int64_t total = a.outer * a.idx_n * a.inner;
  if (total == 0) return -1;
  NvtxRange range("gather");
  BadIndexFlag bad;
  bad.validate(a, index, total, "gather");
  dispatch_index(a.index_dtype, "gather", [&](auto itag) {
    using I = typename decltype(itag)::type;
    dispatch_elem_word(a.dtype, [&](auto etag) {
      using E = typename decltype(etag)::type;
      gather_kernel<E, I><<<grid_for(total), kBlockSize, 0, current_stream()>>>(
          static_cast<const E*>(src), static_cast<const I*>(index), static_cast<E*>(out), a.outer,
          a.src_n, a.idx_n, a.inner, bad.ptr());
      check_launch("gather");
    });
  });
  return bad.result();
}

int64_t scatter_add(const IndexArgs& a, const void* grad, const void* index, void* dst) {
  check_sizes(a, "scatter_add");
  const int64_t total = a.outer * a.idx_n * a.inner;
  if (total == 0) return -1;
  NvtxRange range("scatter_add");
  BadIndexFlag bad;
  bad.validate(a, index, total, "scatter_add");
  dispatch_index(a.index_dtype, "scatter_add", [&](auto itag) {
    using I = typename decltype(itag)::type;
    dispatch_floating(a.dtype, "scatter_add", [&](auto tag) {
      using T = typename decltype(tag)::type;
      scatter_add_kernel<T, I><<<grid_for(total), kBlockSize, 0, current_stream()>>>(
          static_cast<const T*>(grad), static_cast<const I*>(index), static_cast<T*>(dst), a.outer,
          a.src_n, a.idx_n, a.inner, bad.ptr());
      check_launch("scatter_add");
    });
  });
  return bad.result();
}

}  // namespace distill::kernels::cuda
