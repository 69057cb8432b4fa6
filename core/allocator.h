// Allocators. CPU: 64-byte aligned. CUDA: a caching allocator with size buckets that reuses
// freed blocks instead of returning them to the driver (cudaMalloc/cudaFree synchronise).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/error.h"

namespace distill {

struct MemoryStats {
  size_t current_bytes = 0;   // bytes held by live tensors
  size_t peak_bytes = 0;      // high-water mark of current_bytes
  size_t reserved_bytes = 0;  // bytes obtained from the system (live + cached)
  size_t num_allocs = 0;      // allocation requests served
  size_t num_cache_hits = 0;  // requests served from the cache (CUDA only)
};

constexpr size_t kCpuAlignment = 64;

// Memory caps per device. A request that would take a device past its cap throws OutOfMemory
// (as a full GPU does), so a run can be kept to part of a shared GPU and the out-of-memory path
// can be exercised on the CPU. CPU: bytes held by live tensors. CUDA: bytes the caching allocator
// holds (live + cached; the cache is released before giving up).
//
// The environment variable DISTILL_MEMORY_LIMIT sets them when the allocators are first used:
// "<size>" caps every device; "cpu=<size>,cuda=<size>,cuda:1=<size>" caps devices by kind or one
// by index. A size is bytes or a number with K, M, G or T (powers of 1024; "KiB", "GB" ... too).
void set_memory_limit(const Device& device, std::optional<size_t> limit);  // nullopt: no cap
std::optional<size_t> memory_limit(const Device& device);
// Applies DISTILL_MEMORY_LIMIT (once; later calls do nothing). Throws naming the variable and
// its value when it is malformed. The allocators call it; `distill` calls it at start-up so a
// bad value is reported before any work.
void apply_memory_limit_from_environment();
// Parses a DISTILL_MEMORY_LIMIT value into (device, cap) pairs; a device index of -1 means every
// device of that type, and an entry without a device (a bare size) yields both cpu and cuda.
struct MemoryLimitEntry {
  DeviceType type;
  int index;  // -1: every device of the type
  size_t bytes;
};
std::vector<MemoryLimitEntry> parse_memory_limits(const std::string& text);
// "512 B", "1.5 KiB", "3.1 GiB".
std::string format_bytes(size_t bytes);
// "needed 3.1 GiB more with 74.2 GiB in use (peak 77.9 GiB of 79.1 GiB)", for messages that add
// their own context.
std::string describe_shortfall(const OutOfMemory::Details& details);
// "out of memory on <device> <context>: <subject> <shortfall>; <advice>" followed by the driver's
// error in parentheses: what a training loop rethrows once it knows the stage and batch size.
std::string out_of_memory_message(const OutOfMemory& error, const std::string& context,
                                  const std::string& subject, const std::string& advice);

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
