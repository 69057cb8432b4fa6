// Philox-4x32-10 counter-based RNG (Salmon et al., SC'11), identical on host and device so that
// the CPU and CUDA streams agree bit for bit for the same (seed, offset).
//
// Stream definition: element i of a draw at `offset` uses counter (offset + i) split into two
// 32-bit words, key = seed split into two words. Uniform uses output word 0; normal uses words 0
// and 1 through Box-Muller.
#pragma once

#include <cmath>

#include "kernels/common.h"

namespace distill::kernels {

struct Philox4 {
  uint32_t v[4];
};

DISTILL_HD void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

// The full Philox4x32-10 bijection on a 4-word counter and a 2-word key (Random123's
// philox4x32_R(10, ...)); exposed so its published known-answer vectors can be tested.
DISTILL_HD Philox4 philox4x32_10_words(Philox4 ctr, uint32_t k0, uint32_t k1) {
  uint32_t c0 = ctr.v[0], c1 = ctr.v[1], c2 = ctr.v[2], c3 = ctr.v[3];
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(0xD2511F53u, c0, hi0, lo0);
    philox_mulhilo(0xCD9E8D57u, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n1 = lo1;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    const uint32_t n3 = lo0;
    c0 = n0;
    c1 = n1;
    c2 = n2;
    c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// The engine's stream: counter words (low, high, 0, 0) of `counter`, key words (low, high) of
// `seed`.
DISTILL_HD Philox4 philox4x32_10(uint64_t counter, uint64_t seed) {
  const Philox4 ctr{{static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32), 0u, 0u}};
  return philox4x32_10_words(ctr, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// Uniform in [0, 1) with 24 random bits: exact in float, so CPU and CUDA agree bit for bit.
DISTILL_HD float philox_uniform(uint64_t seed, uint64_t index) {
  return static_cast<float>(philox4x32_10(index, seed).v[0] >> 8) * (1.0f / 16777216.0f);
}

// Standard normal via Box-Muller, computed in double and rounded once, so host and device agree
// except in rare last-bit cases of the double math libraries.
DISTILL_HD double philox_normal(uint64_t seed, uint64_t index) {
  const Philox4 r = philox4x32_10(index, seed);
  // u1 in (0, 1] so log(u1) is finite; u2 in [0, 1).
  const double u1 = (static_cast<double>(r.v[0]) + 1.0) * (1.0 / 4294967296.0);
  const double u2 = static_cast<double>(r.v[1]) * (1.0 / 4294967296.0);
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586476925286766559 * u2);
}

// The values random fills store (before the one rounding to the destination dtype). Both
// backends must use these: an explicit fma rounds once everywhere, whereas nvcc would contract
// a plain `a + b * c` into an fma on the device but not on the host, and the streams would differ.
DISTILL_HD double philox_uniform_in(uint64_t seed, uint64_t index, double low, double high) {
  return fma(high - low, static_cast<double>(philox_uniform(seed, index)), low);
}
DISTILL_HD double philox_normal_with(uint64_t seed, uint64_t index, double mean, double std) {
  return fma(std, philox_normal(seed, index), mean);
}

}  // namespace distill::kernels
