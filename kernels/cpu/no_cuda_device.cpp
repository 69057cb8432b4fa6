// Without CUDA compiled in, the runtime services report no GPU and refuse to move memory.
#if !DISTILL_HAS_CUDA
#include <stdexcept>

#include "kernels/device.h"
#include "kernels/profiler.h"

namespace distill::kernels::cuda {

namespace {
[[noreturn]] void unavailable(const char* what) {
  throw std::runtime_error(std::string(what) + ": this build has no CUDA support");
}
}  // namespace

int device_count() {
  return 0;
}
std::vector<DeviceProps> device_properties() {
  return {};
}
std::string runtime_version_string() {
  return "not compiled in";
}
void set_device(int) {
  unavailable("set_device");
}
void* raw_malloc(size_t, std::string* error) {
  if (error) *error = "no CUDA support";
  return nullptr;
}
void raw_free(void*) {}
void memcpy_h2d(void*, const void*, size_t) {
  unavailable("memcpy_h2d");
}
void memcpy_d2h(void*, const void*, size_t) {
  unavailable("memcpy_d2h");
}
void memcpy_d2d(void*, const void*, size_t) {
  unavailable("memcpy_d2d");
}
void memset_zero(void*, size_t) {
  unavailable("memset_zero");
}
void* host_pinned_malloc(size_t) {
  unavailable("host_pinned_malloc");
}
void host_pinned_free(void*) {}
void synchronize() {}
void* stream() {
  return nullptr;
}
void check_last_error(const char*) {}
void nvtx_push(const char*) {}
void nvtx_pop() {}

void profiler_start() {
  unavailable("profiler_start");
}
std::vector<KernelTime> profiler_stop() {
  unavailable("profiler_stop");
}

}  // namespace distill::kernels::cuda
#endif
