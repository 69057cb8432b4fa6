// Random fills and dropout, all driven by kernels/philox.h so both backends draw the same stream.
#pragma once

#include "kernels/common.h"

namespace distill::kernels {

enum class RandomKind : uint8_t { Uniform, Normal };

namespace cpu {
// dst (contiguous) = low + (high - low) * U  or  mean + std * N, element i from counter offset+i.
void random_fill(RandomKind kind, const View& dst, uint64_t seed, uint64_t offset, double a,
                 double b);
// mask[i] = U(offset+i) >= p ? 1 : 0 (U8); out = x * mask / (1 - p). All contiguous.
void dropout(const View& x, double p, uint64_t seed, uint64_t offset, const View& out,
             const View& mask);
}  // namespace cpu

namespace cuda {
void random_fill(RandomKind kind, const View& dst, uint64_t seed, uint64_t offset, double a,
                 double b);
void dropout(const View& x, double p, uint64_t seed, uint64_t offset, const View& out,
             const View& mask);
}  // namespace cuda

}  // namespace distill::kernels
