#include "core/allocator.h"

#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <mutex>
#include <new>
#include <vector>

#include "core/error.h"
#include "kernels/device.h"

namespace distill {

namespace {

constexpr int kMaxDevices = 16;  // CUDA devices
constexpr size_t kNoLimit = std::numeric_limits<size_t>::max();
constexpr const char* kLimitVariable = "DISTILL_MEMORY_LIMIT";

// Caps by device: [0] the CPU, [1 + i] cuda:i. 0: none (a cap of 0 bytes is refused).
std::atomic<size_t> g_limits[1 + kMaxDevices] = {};
std::atomic<bool> g_environment_applied{false};

std::atomic<size_t>& limit_slot(const Device& device) {
  if (device.is_cpu()) return g_limits[0];
  DISTILL_CHECK(device.index >= 0 && device.index < kMaxDevices, "memory limit: bad device ",
                device.str(), " (at most ", kMaxDevices, " CUDA devices)");
  return g_limits[1 + device.index];
}

// The cap of `device` in bytes (kNoLimit when none), DISTILL_MEMORY_LIMIT applied first.
size_t limit_of(const Device& device) {
  apply_memory_limit_from_environment();
  const size_t limit = limit_slot(device).load();
  return limit == 0 ? kNoLimit : limit;
}

[[noreturn]] void throw_out_of_memory(OutOfMemory::Details d) {
  std::string message = "out of memory on " + d.device + ": an allocation " + describe_shortfall(d);
  if (!d.cause.empty()) message += " (" + d.cause + ")";
  throw OutOfMemory(message, std::move(d));
}

std::mutex g_cpu_mutex;
MemoryStats g_cpu_stats;

// "2G" -> 2^31; nullopt when `text` is not a size.
std::optional<size_t> parse_size(const std::string& text) {
  size_t i = 0, digits = 0, dots = 0;
  for (; i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.');
       ++i)
    (text[i] == '.' ? dots : digits)++;
  if (digits == 0 || dots > 1) return std::nullopt;
  const double number = std::strtod(text.substr(0, i).c_str(), nullptr);
  std::string suffix;
  for (size_t j = i; j < text.size(); ++j)
    suffix += static_cast<char>(std::tolower(static_cast<unsigned char>(text[j])));
  const std::map<std::string, double> scale = {
      {"", 1.0},       {"b", 1.0},     {"k", 0x1p10},   {"kb", 0x1p10}, {"kib", 0x1p10},
      {"m", 0x1p20},   {"mb", 0x1p20}, {"mib", 0x1p20}, {"g", 0x1p30},  {"gb", 0x1p30},
      {"gib", 0x1p30}, {"t", 0x1p40},  {"tb", 0x1p40},  {"tib", 0x1p40}};
  const auto it = scale.find(suffix);
  if (it == scale.end()) return std::nullopt;
  const double bytes = number * it->second;
  if (!(bytes >= 1.0) || bytes >= 0x1p63) return std::nullopt;
  return static_cast<size_t>(bytes);
}

std::string trimmed(const std::string& s) {
  const size_t begin = s.find_first_not_of(" \t");
  if (begin == std::string::npos) return "";
  return s.substr(begin, s.find_last_not_of(" \t") - begin + 1);
}

}  // namespace

std::vector<MemoryLimitEntry> parse_memory_limits(const std::string& text) {
  const std::string where = std::string(kLimitVariable) + "='" + text + "'";
  const char* usage =
      "expected a size such as 8G (every device) or a list such as cpu=16G,cuda=20G,cuda:1=10G; "
      "a size is bytes or a number with K, M, G or T (powers of 1024)";
  std::vector<MemoryLimitEntry> out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    const std::string entry = trimmed(text.substr(start, comma - start));
    start = comma + 1;
    DISTILL_CHECK(!entry.empty(), where, ": empty entry; ", usage);
    const size_t equals = entry.find('=');
    const std::string size_text =
        trimmed(equals == std::string::npos ? entry : entry.substr(equals + 1));
    const auto bytes = parse_size(size_text);
    DISTILL_CHECK(bytes, where, ": '", size_text, "' is not a size (or is 0); ", usage);
    if (equals == std::string::npos) {
      out.push_back({DeviceType::CPU, -1, *bytes});
      out.push_back({DeviceType::CUDA, -1, *bytes});
      continue;
    }
    const std::string device = trimmed(entry.substr(0, equals));
    if (device == "cpu") {
      out.push_back({DeviceType::CPU, -1, *bytes});
    } else if (device == "cuda") {
      out.push_back({DeviceType::CUDA, -1, *bytes});
    } else {
      const std::string index = device.rfind("cuda:", 0) == 0 ? device.substr(5) : "";
      const bool numeric = !index.empty() && index.size() <= 2 &&
                           index.find_first_not_of("0123456789") == std::string::npos;
      DISTILL_CHECK(numeric && std::stoi(index) < kMaxDevices, where, ": unknown device '", device,
                    "' (cpu, cuda or cuda:N with N < ", kMaxDevices, "); ", usage);
      out.push_back({DeviceType::CUDA, std::stoi(index), *bytes});
    }
  }
  return out;
}

void apply_memory_limit_from_environment() {
  if (g_environment_applied.load()) return;
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  if (g_environment_applied.load()) return;
  const char* value = std::getenv(kLimitVariable);
  if (value && *value) {
    for (const auto& e : parse_memory_limits(value)) {  // throws on a bad value: not applied
      if (e.type == DeviceType::CPU) {
        limit_slot(Device::cpu()).store(e.bytes);
      } else if (e.index >= 0) {
        limit_slot(Device::cuda(e.index)).store(e.bytes);
      } else {
        for (int i = 0; i < kMaxDevices; ++i) limit_slot(Device::cuda(i)).store(e.bytes);
      }
    }
  }
  g_environment_applied.store(true);
}

void set_memory_limit(const Device& device, std::optional<size_t> limit) {
  apply_memory_limit_from_environment();  // so it cannot later overwrite this
  DISTILL_CHECK(!limit || *limit > 0, "set_memory_limit: a limit of 0 bytes on ", device.str(),
                " (pass nullopt for none)");
  limit_slot(device).store(limit ? *limit : 0);
}

std::optional<size_t> memory_limit(const Device& device) {
  const size_t limit = limit_of(device);
  return limit == kNoLimit ? std::nullopt : std::optional<size_t>(limit);
}

std::string format_bytes(size_t bytes) {
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  if (bytes < 1024) return std::to_string(bytes) + " B";
  double value = static_cast<double>(bytes) / 1024;
  int unit = 0;
  while (value >= 1024 && unit < 3) value /= 1024, ++unit;
  char text[32];
  std::snprintf(text, sizeof text, "%.1f %s", value, units[unit]);
  return text;
}

std::string describe_shortfall(const OutOfMemory::Details& d) {
  std::string text = "needed " + format_bytes(d.requested_bytes) + " more with " +
                     format_bytes(d.in_use_bytes) + " in use (peak " + format_bytes(d.peak_bytes);
  if (d.capacity_bytes > 0) text += " of " + format_bytes(d.capacity_bytes);
  if (d.limited) text += std::string(", the ") + kLimitVariable + " cap";
  if (d.reserved_bytes > d.in_use_bytes)
    text += "; " + format_bytes(d.reserved_bytes) + " reserved by the allocator";
  return text + ")";
}

std::string out_of_memory_message(const OutOfMemory& error, const std::string& context,
                                  const std::string& subject, const std::string& advice) {
  const OutOfMemory::Details& d = error.details();
  std::string message = "out of memory on " + d.device + " " + context + ": " + subject + " " +
                        describe_shortfall(d) + "; " + advice;
  if (!d.cause.empty()) message += " (" + d.cause + ")";
  return message;
}

void* cpu_alloc(size_t bytes) {
  const size_t limit = limit_of(Device::cpu());
  const auto details = [&](const char* cause) {
    OutOfMemory::Details d;
    d.device = "cpu";
    d.requested_bytes = bytes;
    d.in_use_bytes = g_cpu_stats.current_bytes;
    d.reserved_bytes = g_cpu_stats.reserved_bytes;
    d.peak_bytes = g_cpu_stats.peak_bytes;
    d.capacity_bytes = limit == kNoLimit ? 0 : limit;
    d.limited = limit != kNoLimit;
    d.cause = cause;
    return d;
  };
  {
    // Counted before the allocation so that concurrent requests cannot pass the cap together.
    std::lock_guard<std::mutex> lock(g_cpu_mutex);
    if (limit != kNoLimit && (bytes > limit || g_cpu_stats.current_bytes > limit - bytes))
      throw_out_of_memory(details(""));
    g_cpu_stats.current_bytes += bytes;
    g_cpu_stats.reserved_bytes += bytes;
    g_cpu_stats.num_allocs++;
    if (g_cpu_stats.current_bytes > g_cpu_stats.peak_bytes)
      g_cpu_stats.peak_bytes = g_cpu_stats.current_bytes;
  }
  const size_t rounded = ((bytes + kCpuAlignment - 1) / kCpuAlignment) * kCpuAlignment;
  void* p = std::aligned_alloc(kCpuAlignment, rounded == 0 ? kCpuAlignment : rounded);
  if (!p) {
    std::lock_guard<std::mutex> lock(g_cpu_mutex);
    g_cpu_stats.current_bytes -= bytes;
    g_cpu_stats.reserved_bytes -= bytes;
    throw_out_of_memory(details("the system has no more host memory"));
  }
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
  const size_t limit = limit_of(Device::cuda(device));
  std::lock_guard<std::mutex> lock(c.mutex);
  c.stats.num_allocs++;
  void* ptr = nullptr;
  auto it = c.free_blocks.find(bucket);
  if (it != c.free_blocks.end()) {
    ptr = it->second;
    c.free_blocks.erase(it);
    c.stats.num_cache_hits++;
  } else {
    const auto fits = [&] { return limit == kNoLimit || c.stats.reserved_bytes + bucket <= limit; };
    if (!fits()) release_cached(c);  // cached blocks count against the cap
    std::string err;
    if (fits()) {
      kernels::cuda::set_device(device);
      ptr = kernels::cuda::raw_malloc(bucket, &err);
      if (!ptr) {  // free the cache and retry once before giving up
        release_cached(c);
        ptr = kernels::cuda::raw_malloc(bucket, &err);
      }
    }
    if (!ptr) {
      OutOfMemory::Details d;
      d.device = Device::cuda(device).str();
      d.requested_bytes = bytes;
      d.in_use_bytes = c.stats.current_bytes;
      d.reserved_bytes = c.stats.reserved_bytes;
      d.peak_bytes = c.stats.peak_bytes;
      d.limited = limit != kNoLimit;
      d.capacity_bytes = limit;
      if (!d.limited) {
        const auto props = kernels::cuda::device_properties();
        d.capacity_bytes = device < static_cast<int>(props.size()) ? props[device].total_memory : 0;
      }
      d.cause = err.empty() ? "" : "CUDA: " + err;
      throw_out_of_memory(std::move(d));
    }
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
