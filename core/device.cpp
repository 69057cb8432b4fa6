#include "core/device.h"

#include "core/dtype.h"
#include "core/error.h"
#include "core/ops/dispatch.h"
#include "kernels/device.h"

namespace distill {

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

bool cuda_compiled() {
  return DISTILL_HAS_CUDA != 0;
}

int cuda_device_count() {
#if DISTILL_HAS_CUDA
  static const int count = kernels::cuda::device_count();
  return count;
#else
  return 0;
#endif
}

bool cuda_available() {
  return cuda_device_count() > 0;
}

DType dtype_from_name(const std::string& name) {
  for (DType t :
       {DType::F32, DType::F64, DType::BF16, DType::F16, DType::I32, DType::I64, DType::U8})
    if (name == dtype_name(t)) return t;
  fail("unknown dtype '", name, "' (expected f32, f64, bf16, f16, i32, i64 or u8)");
}

namespace detail {
void no_cuda(const char* op) {
  fail(op,
       ": a CUDA tensor was given but this build has no CUDA support (rebuild with nvcc "
       "available and -DDISTILL_CUDA=ON)");
}
}  // namespace detail

}  // namespace distill
