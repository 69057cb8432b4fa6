// CPU random fills and dropout. Element i of a draw uses Philox counter offset + i, exactly as the
// CUDA kernels do, so both backends produce the same stream for the same (seed, offset).
#include "kernels/random.h"

#include <array>
#include <type_traits>

#include "kernels/cpu/loops.h"
#include "kernels/philox.h"

namespace distill::kernels::cpu {

void random_fill(RandomKind kind, const View& dst, uint64_t seed, uint64_t offset, double a,
                 double b) {
  const int64_t n = dst.numel();
  const bool parallel = n >= kParallelGrain;
  // Each value is formed in double (kernels/philox.h) and rounded once by store_as.
  if (kind == RandomKind::Uniform) {
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t i = 0; i < n; ++i)
      store_as<double>(dst.data, i, dst.dtype,
                       philox_uniform_in(seed, offset + static_cast<uint64_t>(i), a, b));
  } else {
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t i = 0; i < n; ++i)
      store_as<double>(dst.data, i, dst.dtype,
                       philox_normal_with(seed, offset + static_cast<uint64_t>(i), a, b));
  }
}

namespace {
template <typename T>
void dropout_typed(const View& x, double p, uint64_t seed, uint64_t offset, const View& out,
                   const View& mask) {
  const int64_t n = x.numel();
  // p == 1 drops everything; the scale is then irrelevant (and would be infinite).
  const T scale = p < 1.0 ? static_cast<T>(1.0 / (1.0 - p)) : T(0);
  auto* keep = static_cast<uint8_t*>(mask.data);
#pragma omp parallel for schedule(static) if (n >= kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    // Compared in double, exactly as the header states (not against p rounded to float).
    const uint8_t k =
        static_cast<double>(philox_uniform(seed, offset + static_cast<uint64_t>(i))) >= p ? 1 : 0;
    keep[i] = k;
    // Written as x * mask * scale (not a select) so it matches the backward's g * mask * scale.
    store_as<T>(out.data, i, out.dtype, load_as<T>(x.data, i, x.dtype) * T(k) * scale);
  }
}
}  // namespace

void dropout(const View& x, double p, uint64_t seed, uint64_t offset, const View& out,
             const View& mask) {
  if (x.dtype == DType::F64) return dropout_typed<double>(x, p, seed, offset, out, mask);
  dropout_typed<float>(x, p, seed, offset, out, mask);
}

}  // namespace distill::kernels::cpu
