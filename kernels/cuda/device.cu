// CUDA runtime services: device discovery, raw and pinned memory, copies, the process stream,
// error reporting and NVTX ranges.
#include <cstdint>
#include <mutex>

#include "kernels/cuda/cuda_utils.cuh"
#include "kernels/device.h"

namespace distill::kernels::cuda {

namespace {
constexpr int kMaxDevices = 16;

int current_device() {
  int device = 0;
  DISTILL_CUDA_CHECK(cudaGetDevice(&device));
  if (device < 0 || device >= kMaxDevices)
    throw std::runtime_error(std::string("cuda: device index ") + std::to_string(device) +
                             " out of range");
  return device;
}

// Per-device lazily created state. Never destroyed: it lives as long as the process, and
// destroying CUDA objects from static destructors races with the runtime's own teardown.
struct DeviceState {
  std::once_flag once;
  cudaStream_t stream = nullptr;
  int max_blocks = 0;
};
DeviceState g_devices[kMaxDevices];

DeviceState& state_for_current_device() {
  const int device = current_device();
  DeviceState& s = g_devices[device];
  std::call_once(s.once, [&s, device] {
    // Non-blocking: kernels do not serialise against the legacy default stream that third-party
    // code may use; every copy of ours is issued on this stream too, so ordering is preserved.
    DISTILL_CUDA_CHECK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
    int sms = 0;
    DISTILL_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    s.max_blocks = std::max(1, sms) * 32;
    // Keep freed stream-ordered scratch memory cached in the pool instead of returning it to the
    // driver at every synchronisation.
    cudaMemPool_t pool = nullptr;
    if (cudaDeviceGetDefaultMemPool(&pool, device) == cudaSuccess) {
      uint64_t threshold = UINT64_MAX;
      (void)cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold);
    }
    (void)cudaGetLastError();
  });
  return s;
}
}  // namespace

void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line) {
  (void)cudaGetLastError();  // clear a non-sticky error so the next call starts clean
  throw std::runtime_error(std::string(what) + ": CUDA error " + cudaGetErrorName(err) + " (" +
                           cudaGetErrorString(err) + ") at " + file + ":" + std::to_string(line));
}

int max_grid_blocks() {
  return state_for_current_device().max_blocks;
}

int device_count() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // no driver / no device: report zero GPUs, never throw
    return 0;
  }
  return count;
}

std::vector<DeviceProps> device_properties() {
  std::vector<DeviceProps> out;
  const int count = device_count();
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp p{};
    DISTILL_CUDA_CHECK(cudaGetDeviceProperties(&p, i));
    DeviceProps d;
    d.index = i;
    d.name = p.name;
    d.total_memory = p.totalGlobalMem;
    d.major = p.major;
    d.minor = p.minor;
    d.multiprocessors = p.multiProcessorCount;
    out.push_back(std::move(d));
  }
  return out;
}

std::string runtime_version_string() {
  const auto format = [](int v) {
    return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
  };
  int runtime = 0, driver = 0;
  std::string s = "CUDA runtime ";
  s += cudaRuntimeGetVersion(&runtime) == cudaSuccess ? format(runtime) : std::string("unknown");
  s += ", driver ";
  if (cudaDriverGetVersion(&driver) == cudaSuccess && driver > 0) {
    s += format(driver);
  } else {
    s += "none";
  }
  (void)cudaGetLastError();
  return s;
}

void set_device(int index) {
  DISTILL_CUDA_CHECK(cudaSetDevice(index));
}

void* raw_malloc(size_t bytes, std::string* error) {
  void* ptr = nullptr;
  const cudaError_t err = cudaMalloc(&ptr, bytes);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // out-of-memory is not sticky: clear it for the retry
    if (error) *error = std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
    return nullptr;
  }
  return ptr;
}

void raw_free(void* ptr) {
  // cudaFree synchronises the device, so pending kernels using the block finish first. Errors
  // are ignored: this runs from destructors, possibly during process teardown.
  if (ptr && cudaFree(ptr) != cudaSuccess) (void)cudaGetLastError();
}

// Host <-> device copies are synchronous for the caller (the host buffer may be reused right
// after return) but ordered on the process stream after every kernel already launched.
void memcpy_h2d(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  cudaStream_t s = current_stream();
  DISTILL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s));
  DISTILL_CUDA_CHECK(cudaStreamSynchronize(s));
}

void memcpy_d2h(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  cudaStream_t s = current_stream();
  DISTILL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s));
  DISTILL_CUDA_CHECK(cudaStreamSynchronize(s));
}

void memcpy_d2d(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  // cudaMemcpyDefault lets unified addressing handle copies between two devices as well.
  DISTILL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, current_stream()));
}

void memset_zero(void* dst, size_t bytes) {
  if (bytes == 0) return;
  DISTILL_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, current_stream()));
}

void* host_pinned_malloc(size_t bytes) {
  void* ptr = nullptr;
  const cudaError_t err = cudaMallocHost(&ptr, bytes);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    throw std::runtime_error(std::string("host_pinned_malloc: cannot pin ") +
                             std::to_string(bytes) + " bytes: " + cudaGetErrorString(err));
  }
  return ptr;
}

void host_pinned_free(void* ptr) {
  if (ptr && cudaFreeHost(ptr) != cudaSuccess) (void)cudaGetLastError();
}

void synchronize() {
  DISTILL_CUDA_CHECK(cudaStreamSynchronize(current_stream()));
}

void* stream() {
  return state_for_current_device().stream;
}

void check_last_error(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string(what) + ": CUDA error " + cudaGetErrorName(err) + " (" +
                             cudaGetErrorString(err) + ")");
}

void nvtx_push(const char* name) {
  nvtxRangePushA(name);
}
void nvtx_pop() {
  nvtxRangePop();
}

}  // namespace distill::kernels::cuda
