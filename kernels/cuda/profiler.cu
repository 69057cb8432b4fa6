// CUPTI activity tracing behind kernels/profiler.h. CUPTI is dlopen'ed so that the engine has no
// link-time dependency on it; the record layout is the one of the CUPTI headers this file is
// compiled with (CUDA 13: CUpti_ActivityKernel10), so the library loaded must be of the same
// major version (the toolkit's own is tried first).
#include <cupti_activity.h>
#include <cxxabi.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>

#include "kernels/device.h"
#include "kernels/profiler.h"

namespace distill::kernels::cuda {

namespace {

struct Cupti {
  CUptiResult (*register_callbacks)(CUpti_BuffersCallbackRequestFunc,
                                    CUpti_BuffersCallbackCompleteFunc) = nullptr;
  CUptiResult (*enable)(CUpti_ActivityKind) = nullptr;
  CUptiResult (*disable)(CUpti_ActivityKind) = nullptr;
  CUptiResult (*flush_all)(uint32_t) = nullptr;
  CUptiResult (*next_record)(uint8_t*, size_t, CUpti_Activity**) = nullptr;
  CUptiResult (*result_string)(CUptiResult, const char**) = nullptr;
  std::string error;  // why loading failed; empty when loaded
};

const Cupti& cupti() {
  static const Cupti lib = [] {
    Cupti c;
    void* handle = nullptr;
    std::string tried;
    for (const char* path : {"/usr/local/cuda/extras/CUPTI/lib64/libcupti.so.13",
                             "/usr/local/cuda/lib64/libcupti.so.13",
                             "/usr/local/cuda/lib/libcupti.so.13", "libcupti.so.13"}) {
      handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
      if (handle) break;
      tried += std::string(tried.empty() ? "" : ", ") + path;
    }
    if (!handle) {
      c.error = "CUPTI (libcupti.so.13) not found; tried " + tried +
                " (add its folder to LD_LIBRARY_PATH)";
      return c;
    }
    const auto sym = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(handle, name));
      if (!fn && c.error.empty()) c.error = std::string("CUPTI lacks ") + name;
    };
    sym(c.register_callbacks, "cuptiActivityRegisterCallbacks");
    sym(c.enable, "cuptiActivityEnable");
    sym(c.disable, "cuptiActivityDisable");
    sym(c.flush_all, "cuptiActivityFlushAll");
    sym(c.next_record, "cuptiActivityGetNextRecord");
    sym(c.result_string, "cuptiGetResultString");
    return c;
  }();
  return lib;
}

void check(CUptiResult r, const char* what) {
  if (r == CUPTI_SUCCESS) return;
  const char* text = "unknown error";
  if (cupti().result_string) cupti().result_string(r, &text);
  throw std::runtime_error(std::string("profiler: ") + what + " failed: " + text);
}

// "void ns::kernel<float, 64>(Params)" -> "ns::kernel": readable and aggregates instantiations
// the same way within one name (the template arguments are kept for cuBLAS's own kernel names,
// which are not mangled C++).
std::string short_name(const char* mangled) {
  if (!mangled) return "?";
  int status = 0;
  char* demangled = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  std::string name = status == 0 && demangled ? demangled : mangled;
  std::free(demangled);
  // Drop the parameter list, then a leading return type ("void ").
  int depth = 0;
  for (size_t i = 0; i < name.size(); ++i) {
    if (name[i] == '<') ++depth;
    if (name[i] == '>') --depth;
    if (name[i] == '(' && depth == 0) {
      name.resize(i);
      break;
    }
  }
  if (name.rfind("void ", 0) == 0) name = name.substr(5);
  return name;
}

std::mutex g_mutex;
std::map<std::string, KernelTime> g_times;
constexpr size_t kBufferBytes = 8 << 20;

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *size = kBufferBytes;
  *max_records = 0;
}

void add(const std::string& name, uint64_t start, uint64_t end) {
  KernelTime& t = g_times[name];
  t.name = name;
  t.calls += 1;
  t.total_ms += (end - start) * 1e-6;
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  CUpti_Activity* record = nullptr;
  std::lock_guard<std::mutex> lock(g_mutex);
  while (cupti().next_record(buffer, valid, &record) == CUPTI_SUCCESS) {
    switch (record->kind) {
      case CUPTI_ACTIVITY_KIND_KERNEL:
      case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL: {
        const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
        add(short_name(k->name), k->start, k->end);
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMCPY: {
        const auto* m = reinterpret_cast<const CUpti_ActivityMemcpy6*>(record);
        const char* kinds[] = {"unknown", "HtoD", "DtoH", "HtoA", "AtoH", "AtoA",
                               "AtoD",    "DtoA", "DtoD", "HtoH", "PtoP"};
        const unsigned kind = m->copyKind < 11 ? m->copyKind : 0;
        add(std::string("[memcpy ") + kinds[kind] + "]", m->start, m->end);
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMSET: {
        const auto* m = reinterpret_cast<const CUpti_ActivityMemset4*>(record);
        add("[memset]", m->start, m->end);
        break;
      }
      default:
        break;
    }
  }
  std::free(buffer);
}

constexpr CUpti_ActivityKind kKinds[] = {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL,
                                         CUPTI_ACTIVITY_KIND_MEMCPY, CUPTI_ACTIVITY_KIND_MEMSET};

}  // namespace

void profiler_start() {
  const Cupti& c = cupti();
  if (!c.error.empty()) throw std::runtime_error("profiler: " + c.error);
  synchronize();
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_times.clear();
  }
  static const bool registered = [&] {
    check(c.register_callbacks(buffer_requested, buffer_completed),
          "cuptiActivityRegisterCallbacks");
    return true;
  }();
  (void)registered;
  for (CUpti_ActivityKind kind : kKinds) check(c.enable(kind), "cuptiActivityEnable");
}

std::vector<KernelTime> profiler_stop() {
  const Cupti& c = cupti();
  if (!c.error.empty()) throw std::runtime_error("profiler: " + c.error);
  synchronize();
  for (CUpti_ActivityKind kind : kKinds) check(c.disable(kind), "cuptiActivityDisable");
  check(c.flush_all(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED), "cuptiActivityFlushAll");
  std::vector<KernelTime> out;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    for (auto& [name, t] : g_times) out.push_back(t);
    g_times.clear();
  }
  std::sort(out.begin(), out.end(),
            [](const KernelTime& a, const KernelTime& b) { return a.total_ms > b.total_ms; });
  return out;
}

}  // namespace distill::kernels::cuda
