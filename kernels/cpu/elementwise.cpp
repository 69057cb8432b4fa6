// CPU reference for the elementwise family. Floating math runs in double for F64 inputs and in
// float otherwise (bf16/f16 are widened on load, rounded once on store).
#include "kernels/elementwise.h"

#include <cmath>

#include "kernels/cpu/loops.h"

namespace distill::kernels::cpu {

void copy(const View& src, const View& dst) {
  if (src.dtype == dst.dtype && src.is_contiguous() && dst.is_contiguous()) {
    std::memcpy(dst.data, src.data, static_cast<size_t>(dst.numel() * dtype_size(dst.dtype)));
    return;
  }
  for_each_row<2>(dst, {&src, &dst}, [&](const int64_t* offs, int64_t n, const int64_t* st) {
    for (int64_t i = 0; i < n; ++i) {
      const int64_t si = offs[0] + i * st[0], di = offs[1] + i * st[1];
      if (is_floating(src.dtype) || is_floating(dst.dtype)) {
        store_as<double>(dst.data, di, dst.dtype, load_as<double>(src.data, si, src.dtype));
      } else {
        store_as<int64_t>(dst.data, di, dst.dtype, load_as<int64_t>(src.data, si, src.dtype));
      }
    }
  });
}

void fill(const View& dst, double value) {
  for_each_row<1>(dst, {&dst}, [&](const int64_t* offs, int64_t n, const int64_t* st) {
    for (int64_t i = 0; i < n; ++i) store_as<double>(dst.data, offs[0] + i * st[0], dst.dtype, value);
  });
}

void arange(const View& dst, double start, double step) {
  const int64_t n = dst.numel();
  for (int64_t i = 0; i < n; ++i)
    store_as<double>(dst.data, dst.offset_of(i), dst.dtype, start + static_cast<double>(i) * step);
}

}  // namespace distill::kernels::cpu
