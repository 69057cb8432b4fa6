// Allocators: CPU alignment and accounting; the CUDA caching allocator's buckets, reuse and
// current/peak statistics (the CUDA cases skip without a GPU); memory caps (DISTILL_MEMORY_LIMIT)
// and the OutOfMemory error with its numbers.
#include "core/allocator.h"
#include "tests/test_util.h"

namespace distill {
namespace {

using testing::message_has;

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

// Clears a device's cap when a test ends, however it ends.
struct LimitGuard {
  Device device;
  ~LimitGuard() { set_memory_limit(device, std::nullopt); }
};

TEST(Allocator, CpuCapThrowsOutOfMemoryWithTheNumbers) {
  const LimitGuard guard{Device::cpu()};
  const size_t in_use = cpu_memory_stats().current_bytes;
  const size_t limit = in_use + (size_t(1) << 20);
  set_memory_limit(Device::cpu(), limit);
  EXPECT_EQ(memory_limit(Device::cpu()), limit);
  Tensor fits = Tensor::empty({128 << 10}, DType::F32);  // 512 KiB of the 1 MiB left
  try {
    Tensor too_big = Tensor::empty({256 << 10}, DType::F32);  // 1 MiB more
    FAIL() << "no error";
  } catch (const OutOfMemory& e) {
    const OutOfMemory::Details& d = e.details();
    EXPECT_EQ(d.device, "cpu");
    EXPECT_EQ(d.requested_bytes, size_t(1) << 20);
    EXPECT_EQ(d.in_use_bytes, in_use + (size_t(512) << 10));
    EXPECT_GE(d.peak_bytes, d.in_use_bytes);
    EXPECT_EQ(d.capacity_bytes, limit);
    EXPECT_TRUE(d.limited);
    EXPECT_TRUE(message_has(e, "out of memory on cpu: an allocation needed 1.0 MiB more"))
        << e.what();
    EXPECT_TRUE(message_has(e, "DISTILL_MEMORY_LIMIT")) << e.what();
  }
  EXPECT_EQ(cpu_memory_stats().current_bytes, in_use + (size_t(512) << 10));  // nothing leaked
  fits = Tensor();
  Tensor now_fits = Tensor::empty({256 << 10}, DType::F32);
  set_memory_limit(Device::cpu(), std::nullopt);
  EXPECT_EQ(memory_limit(Device::cpu()), std::nullopt);
  EXPECT_THROW(set_memory_limit(Device::cpu(), 0), Error);
}

TEST(Allocator, CudaCapThrowsOutOfMemoryBeforeTheDriverDoes) {
  DISTILL_SKIP_IF_NO_DEVICE(Device::cuda(0));
  const LimitGuard guard{Device::cuda(0)};
  cuda_empty_cache(0);  // reserved == live, so the cap is measured from here
  const size_t limit = cuda_memory_stats(0).reserved_bytes + (size_t(8) << 20);
  set_memory_limit(Device::cuda(0), limit);
  Tensor fits = Tensor::empty({1 << 20}, TensorOptions(DType::F32, Device::cuda(0)));  // 4 MiB
  try {
    Tensor too_big = Tensor::empty({4 << 20}, TensorOptions(DType::F32, Device::cuda(0)));
    FAIL() << "no error";
  } catch (const OutOfMemory& e) {
    EXPECT_EQ(e.details().device, "cuda:0");
    EXPECT_EQ(e.details().requested_bytes, size_t(16) << 20);
    EXPECT_EQ(e.details().capacity_bytes, limit);
    EXPECT_TRUE(e.details().limited);
    EXPECT_TRUE(message_has(e, "out of memory on cuda:0")) << e.what();
  }
}

TEST(Allocator, MemoryLimitValuesParseOrNameTheVariable) {
  const auto one = [](const std::string& text) {
    const auto entries = parse_memory_limits(text);
    EXPECT_EQ(entries.size(), 2u) << text;  // a bare size caps the CPU and every GPU
    return entries.empty() ? size_t(0) : entries[0].bytes;
  };
  EXPECT_EQ(one("1000"), 1000u);
  EXPECT_EQ(one("2K"), 2048u);
  EXPECT_EQ(one("3MiB"), size_t(3) << 20);
  EXPECT_EQ(one(" 1.5g "), size_t(3) << 29);
  EXPECT_EQ(one("1T"), size_t(1) << 40);
  const auto entries = parse_memory_limits("cpu=16G, cuda=20G,cuda:1=10GB");
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[0].type, DeviceType::CPU);
  EXPECT_EQ(entries[0].bytes, size_t(16) << 30);
  EXPECT_EQ(entries[1].type, DeviceType::CUDA);
  EXPECT_EQ(entries[1].index, -1);
  EXPECT_EQ(entries[2].index, 1);
  EXPECT_EQ(entries[2].bytes, size_t(10) << 30);
  for (const char* bad : {"", "lots", "0", "-1G", "2X", "1.2.3G", "gpu=1G", "cuda:x=1G",
                          "cuda:99=1G", "1G,,2G", "cpu="}) {
    try {
      parse_memory_limits(bad);
      ADD_FAILURE() << "no error for '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_TRUE(message_has(e, std::string("DISTILL_MEMORY_LIMIT='") + bad + "'")) << e.what();
    }
  }
}

TEST(Allocator, BytesAreFormattedForPeople) {
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(1536), "1.5 KiB");
  EXPECT_EQ(format_bytes(size_t(3) << 20), "3.0 MiB");
  EXPECT_EQ(format_bytes(size_t(33) << 27), "4.1 GiB");
  OutOfMemory::Details d;
  d.device = "cuda:0";
  d.requested_bytes = size_t(3) << 30;
  d.in_use_bytes = size_t(74) << 30;
  d.reserved_bytes = size_t(74) << 30;
  d.peak_bytes = size_t(78) << 30;
  d.capacity_bytes = size_t(79) << 30;
  EXPECT_EQ(describe_shortfall(d),
            "needed 3.0 GiB more with 74.0 GiB in use (peak 78.0 GiB of 79.0 GiB)");
  d.cause = "CUDA: out of memory";
  const OutOfMemory e("allocation failed", d);
  EXPECT_EQ(out_of_memory_message(e, "in stage student at step 12 (batch size 256)", "the step",
                                  "lower the batch size"),
            "out of memory on cuda:0 in stage student at step 12 (batch size 256): the step needed "
            "3.0 GiB more with 74.0 GiB in use (peak 78.0 GiB of 79.0 GiB); lower the batch size "
            "(CUDA: out of memory)");
}

}  // namespace
}  // namespace distill
