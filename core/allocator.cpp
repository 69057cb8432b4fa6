#include "core/allocator.h"

#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <vector>

#include "core/error.h"
#include "kernels/device.h"

namespace distill {

namespace {
std::mutex g_cpu_mutex;
MemoryStats g_cpu_stats;
}  // namespace

void* cpu_alloc(size_t bytes) {
  const size_t rounded = ((bytes + kCpuAlignment - 1) / kCpuAlignment) * kCpuAlignment;
  void* p = std::aligned_alloc(kCpuAlignment, rounded == 0 ? kCpuAlignment : rounded);
  if (!p) fail("cpu_alloc: out of host memory allocating ", bytes, " bytes");
  std::lock_guard<std::mutex> lock(g_cpu_mutex);
  g_cpu_stats.current_bytes += bytes;
  g_cpu_stats.reserved_bytes += bytes;
  g_cpu_stats.num_allocs++;
  if (g_cpu_stats.current_bytes > g_cpu_stats.peak_bytes)
    g_cpu_stats.peak_bytes = g_cpu_stats.current_bytes;
  return p;
}

void cpu_free(void* ptr, size_t bytes) {
  if (!ptr) return;
  std::free(ptr);
  std::lock_guard<std::mutex> lock(g_cpu_mutex);
  g_cpu_stats.current_bytes -= bytes;
  g_cpu_stats.reserved_bytes -= bytes;
}

MemoryStats cpu_memory_stats() {
  std::lock_guard<std::mutex> lock(g_cpu_mutex);
  return g_cpu_stats;
}

size_t cuda_bucket_size(size_t bytes) {
  constexpr size_t kSmall = 512, kLarge = size_t(2) << 20, kSmallLimit = size_t(1) << 20;
  if (bytes == 0) return kSmall;
  if (bytes <= kSmallLimit) return ((bytes + kSmall - 1) / kSmall) * kSmall;
  return ((bytes + kLarge - 1) / kLarge) * kLarge;
}

#if DISTILL_HAS_CUDA
namespace {
// One cache per device: free blocks keyed by bucket size. All kernels run on one stream, so a
// block freed on the host can be reused by the next launch without an event.
struct DeviceCache {
  std::mutex mutex;
  std::multimap<size_t, void*> free_blocks;
  MemoryStats stats;
};
constexpr int kMaxDevices = 16;
DeviceCache& cache_for(int device) {
  static DeviceCache caches[kMaxDevices];
  DISTILL_CHECK(device >= 0 && device < kMaxDevices, "cuda_alloc: bad device index ", device);
  return caches[device];
}
void release_cached(DeviceCache& c) {
  for (auto& [size, ptr] : c.free_blocks) {
    kernels::cuda::raw_free(ptr);
    c.stats.reserved_bytes -= size;
  }
  c.free_blocks.clear();
}
}  // namespace

void* cuda_alloc(size_t bytes, int device) {
  DeviceCache& c = cache_for(device);
  const size_t bucket = cuda_bucket_size(bytes);
  std::lock_guard<std::mutex> lock(c.mutex);
  c.stats.num_allocs++;
  void* ptr = nullptr;
  auto it = c.free_blocks.find(bucket);
  if (it != c.free_blocks.end()) {
    ptr = it->second;
    c.free_blocks.erase(it);
    c.stats.num_cache_hits++;
  } else {
    kernels::cuda::set_device(device);
    std::string err;
    ptr = kernels::cuda::raw_malloc(bucket, &err);
    if (!ptr) {  // free the cache and retry once before giving up
      release_cached(c);
      ptr = kernels::cuda::raw_malloc(bucket, &err);
    }
    if (!ptr)
      fail("cuda_alloc: out of GPU memory on cuda:", device, " allocating ", bytes, " bytes (",
           c.stats.current_bytes, " bytes in use by tensors, ", c.stats.reserved_bytes,
           " reserved): ", err);
    c.stats.reserved_bytes += bucket;
  }
  c.stats.current_bytes += bucket;
  if (c.stats.current_bytes > c.stats.peak_bytes) c.stats.peak_bytes = c.stats.current_bytes;
  return ptr;
}

void cuda_free(void* ptr, size_t bytes, int device) {
  if (!ptr) return;
  DeviceCache& c = cache_for(device);
  const size_t bucket = cuda_bucket_size(bytes);
  std::lock_guard<std::mutex> lock(c.mutex);
  c.stats.current_bytes -= bucket;
  c.free_blocks.emplace(bucket, ptr);
}

MemoryStats cuda_memory_stats(int device) {
  DeviceCache& c = cache_for(device);
  std::lock_guard<std::mutex> lock(c.mutex);
  return c.stats;
}

void cuda_reset_peak(int device) {
  DeviceCache& c = cache_for(device);
  std::lock_guard<std::mutex> lock(c.mutex);
  c.stats.peak_bytes = c.stats.current_bytes;
}

void cuda_empty_cache(int device) {
  DeviceCache& c = cache_for(device);
  std::lock_guard<std::mutex> lock(c.mutex);
  kernels::cuda::synchronize();
  release_cached(c);
}
#else
void* cuda_alloc(size_t, int) {
  fail("cuda_alloc: this build has no CUDA support");
}
void cuda_free(void*, size_t, int) {}
MemoryStats cuda_memory_stats(int) {
  return {};
}
void cuda_reset_peak(int) {}
void cuda_empty_cache(int) {}
#endif

}  // namespace distill
