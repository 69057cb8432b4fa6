// Allocators: CPU alignment and accounting; the CUDA caching allocator's buckets, reuse and
// current/peak statistics (the CUDA case skips without a GPU).
#include "core/allocator.h"
#include "tests/test_util.h"

namespace distill {
namespace {

TEST(Allocator, CpuBlocksAreAlignedAndCounted) {
  const MemoryStats before = cpu_memory_stats();
  {
    Tensor a = Tensor::empty({1000}, DType::F32);
    Tensor b = Tensor::empty({3}, DType::U8);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data_ptr()) % kCpuAlignment, 0u);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data_ptr()) % kCpuAlignment, 0u);
    const MemoryStats during = cpu_memory_stats();
    EXPECT_EQ(during.current_bytes, before.current_bytes + 4000 + 3);
    EXPECT_GE(during.peak_bytes, during.current_bytes);
  }
  EXPECT_EQ(cpu_memory_stats().current_bytes, before.current_bytes);
}

TEST(Allocator, CudaBucketsRoundSmallAndLargeRequests) {
  EXPECT_EQ(cuda_bucket_size(0), 512u);
  EXPECT_EQ(cuda_bucket_size(1), 512u);
  EXPECT_EQ(cuda_bucket_size(512), 512u);
  EXPECT_EQ(cuda_bucket_size(513), 1024u);
  EXPECT_EQ(cuda_bucket_size(size_t(1) << 20), size_t(1) << 20);
  EXPECT_EQ(cuda_bucket_size((size_t(1) << 20) + 1), size_t(2) << 20);
  EXPECT_EQ(cuda_bucket_size((size_t(5) << 20) + 7), size_t(6) << 20);
}

TEST(Allocator, CudaCacheReusesFreedBlocksAndTracksPeak) {
  DISTILL_SKIP_IF_NO_DEVICE(Device::cuda(0));
  cuda_empty_cache(0);
  cuda_reset_peak(0);
  const MemoryStats start = cuda_memory_stats(0);
  void* first = nullptr;
  {
    Tensor t = Tensor::empty({1 << 20}, TensorOptions(DType::F32, Device::cuda(0)));  // 4 MiB
    first = t.data_ptr();
    EXPECT_EQ(cuda_memory_stats(0).current_bytes, start.current_bytes + (size_t(4) << 20));
  }
  EXPECT_EQ(cuda_memory_stats(0).current_bytes, start.current_bytes);
  const size_t hits_before = cuda_memory_stats(0).num_cache_hits;
  Tensor again = Tensor::empty({1 << 20}, TensorOptions(DType::F32, Device::cuda(0)));
  EXPECT_EQ(again.data_ptr(), first) << "a freed block of the same bucket is reused";
  EXPECT_EQ(cuda_memory_stats(0).num_cache_hits, hits_before + 1);
  EXPECT_GE(cuda_memory_stats(0).peak_bytes, start.current_bytes + (size_t(4) << 20));
  EXPECT_GE(cuda_memory_stats(0).reserved_bytes, cuda_memory_stats(0).current_bytes);
}

}  // namespace
}  // namespace distill
