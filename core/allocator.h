// Allocators. CPU: 64-byte aligned. CUDA: a caching allocator with size buckets that reuses
// freed blocks instead of returning them to the driver (cudaMalloc/cudaFree synchronise).
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/device.h"

namespace distill {

struct MemoryStats {
  size_t current_bytes = 0;   // bytes held by live tensors
  size_t peak_bytes = 0;      // high-water mark of current_bytes
  size_t reserved_bytes = 0;  // bytes obtained from the system (live + cached)
  size_t num_allocs = 0;      // allocation requests served
  size_t num_cache_hits = 0;  // requests served from the cache (CUDA only)
};

constexpr size_t kCpuAlignment = 64;

void* cpu_alloc(size_t bytes);
void cpu_free(void* ptr, size_t bytes);
MemoryStats cpu_memory_stats();

// Rounds a request to its bucket: 512-byte granularity below 1 MiB, 2 MiB above.
size_t cuda_bucket_size(size_t bytes);
void* cuda_alloc(size_t bytes, int device);
void cuda_free(void* ptr, size_t bytes, int device);
MemoryStats cuda_memory_stats(int device = 0);
void cuda_reset_peak(int device = 0);
// Returns every cached (unused) block to the driver.
void cuda_empty_cache(int device = 0);

}  // namespace distill
