// Kernel-level profile of a region: every GPU kernel, copy and memset the process runs between
// profiler_start() and profiler_stop(), with its duration as the hardware timestamps it (CUPTI's
// activity records, what Nsight Systems shows), aggregated by kernel name. cuBLAS/cuDNN kernels
// are included, so a benchmark can say where a training step's time goes. CUPTI is loaded at run
// time (dlopen): a build or a machine without it still runs, and start reports why it cannot.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace distill::kernels::cuda {

struct KernelTime {
  std::string name;  // demangled, template arguments dropped ("[memcpy DtoD]" for copies)
  int64_t calls = 0;
  double total_ms = 0;
};

// Throws std::runtime_error (naming what is missing) when CUPTI cannot be loaded or enabled.
void profiler_start();
// Flushes the records and returns them aggregated by name, largest total first.
std::vector<KernelTime> profiler_stop();

}  // namespace distill::kernels::cuda
