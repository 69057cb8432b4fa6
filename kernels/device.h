// CUDA runtime services used by the op layer: device discovery, memory, copies and the stream
// every kernel runs on. Declared always; when CUDA is not compiled in, these report "no GPU" or
// throw from the op layer before being called.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace distill::kernels::cuda {

struct DeviceProps {
  int index = 0;
  std::string name;
  size_t total_memory = 0;
  int major = 0, minor = 0;
  int multiprocessors = 0;
};

// Number of usable GPUs (0 when the driver or device is missing; never throws).
int device_count();
std::vector<DeviceProps> device_properties();
std::string runtime_version_string();

void set_device(int index);
// Raw device memory (the caching allocator in core/ sits on top of these).
void* raw_malloc(size_t bytes, std::string* error);
void raw_free(void* ptr);
void memcpy_h2d(void* dst, const void* src, size_t bytes);
void memcpy_d2h(void* dst, const void* src, size_t bytes);
void memcpy_d2d(void* dst, const void* src, size_t bytes);
void memset_zero(void* dst, size_t bytes);
// Pinned host memory for asynchronous copies.
void* host_pinned_malloc(size_t bytes);
void host_pinned_free(void* ptr);
void synchronize();
// The stream all kernels of this process are launched on (a cudaStream_t as void*).
void* stream();
// Throws std::runtime_error naming `what` if the last launch failed.
void check_last_error(const char* what);

// NVTX range helpers (no-ops without CUDA).
void nvtx_push(const char* name);
void nvtx_pop();

}  // namespace distill::kernels::cuda
