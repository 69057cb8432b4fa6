// Private to the op layer: picks the CPU or CUDA implementation of a kernel by device.
#pragma once

#include "core/error.h"
#include "core/tensor.h"

namespace distill::detail {
[[noreturn]] void no_cuda(const char* op);
}  // namespace distill::detail

#if DISTILL_HAS_CUDA
#define DISTILL_DISPATCH(device, fn, ...)                         \
  ((device).is_cuda() ? ::distill::kernels::cuda::fn(__VA_ARGS__) \
                      : ::distill::kernels::cpu::fn(__VA_ARGS__))
#else
#define DISTILL_DISPATCH(device, fn, ...)                            \
  (((device).is_cuda() ? ::distill::detail::no_cuda(#fn) : (void)0), \
   ::distill::kernels::cpu::fn(__VA_ARGS__))
#endif
