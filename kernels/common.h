// Types shared by every kernel family. Kernels see raw pointers plus shape/stride descriptors,
// never the Tensor class: the CPU and CUDA implementations stay free of core/ and compile fast.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define DISTILL_HD __host__ __device__ __forceinline__
#else
#define DISTILL_HD inline
#endif

namespace distill::kernels {

enum class DType : uint8_t { F32, F64, BF16, F16, I32, I64, U8 };

constexpr int kMaxDims = 8;

DISTILL_HD int64_t dtype_size(DType t) {
  switch (t) {
    case DType::F32:
      return 4;
    case DType::F64:
      return 8;
    case DType::BF16:
      return 2;
    case DType::F16:
      return 2;
    case DType::I32:
      return 4;
    case DType::I64:
      return 8;
    case DType::U8:
      return 1;
  }
  return 0;
}

DISTILL_HD const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32:
      return "f32";
    case DType::F64:
      return "f64";
    case DType::BF16:
      return "bf16";
    case DType::F16:
      return "f16";
    case DType::I32:
      return "i32";
    case DType::I64:
      return "i64";
    case DType::U8:
      return "u8";
  }
  return "?";
}

DISTILL_HD bool is_floating(DType t) {
  return t == DType::F32 || t == DType::F64 || t == DType::BF16 || t == DType::F16;
}

// A strided view of device or host memory. `data` already points at the first element (the
// tensor's offset is applied). Strides are in elements and may be 0 (broadcast) or negative-free.
struct View {
  void* data = nullptr;
  DType dtype = DType::F32;
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};

  DISTILL_HD int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
  DISTILL_HD bool is_contiguous() const {
    int64_t expected = 1;
    for (int i = ndim - 1; i >= 0; --i) {
      if (shape[i] != 1 && strides[i] != expected) return false;
      expected *= shape[i];
    }
    return true;
  }
  // Element offset of the i-th element in row-major logical order.
  DISTILL_HD int64_t offset_of(int64_t linear) const {
    int64_t off = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      const int64_t idx = linear % shape[d];
      linear /= shape[d];
      off += idx * strides[d];
    }
    return off;
  }
};

// ---- 16-bit float conversions (bit-exact, round-to-nearest-even), usable on host and device.
DISTILL_HD float bf16_bits_to_float(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
DISTILL_HD uint16_t float_to_bf16_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu))
    return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding) >> 16);
}
DISTILL_HD float f16_bits_to_float(uint16_t h) {
  const uint32_t sign = (static_cast<uint32_t>(h) & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      u = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (mant << 13);
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  memcpy(&f, &u, 4);
  return f;
}
DISTILL_HD uint16_t float_to_f16_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t abs = u & 0x7fffffffu;
  if (abs >= 0x7f800000u)
    return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (abs < 0x38800000u) {                                               // subnormal or zero in f16
    if (abs < 0x33000000u) return static_cast<uint16_t>(sign);
    const uint32_t e = abs >> 23;
    const uint32_t m = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;  // 14 + (112 - e) ... f16 subnormal scale
    const uint32_t halfway = 1u << (shift - 1);
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1);
    if (rem > halfway || (rem == halfway && (r & 1u))) ++r;
    return static_cast<uint16_t>(sign | r);
  }
  uint32_t r = abs - 0x38000000u;  // rebias exponent 127 -> 15
  const uint32_t rem = r & 0x1fffu;
  r >>= 13;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
  return static_cast<uint16_t>(sign | r);
}

// Load/store any dtype as a compute type (float or double).
template <typename T>
DISTILL_HD T load_as(const void* base, int64_t idx, DType t) {
  switch (t) {
    case DType::F32:
      return static_cast<T>(static_cast<const float*>(base)[idx]);
    case DType::F64:
      return static_cast<T>(static_cast<const double*>(base)[idx]);
    case DType::BF16:
      return static_cast<T>(bf16_bits_to_float(static_cast<const uint16_t*>(base)[idx]));
    case DType::F16:
      return static_cast<T>(f16_bits_to_float(static_cast<const uint16_t*>(base)[idx]));
    case DType::I32:
      return static_cast<T>(static_cast<const int32_t*>(base)[idx]);
    case DType::I64:
      return static_cast<T>(static_cast<const int64_t*>(base)[idx]);
    case DType::U8:
      return static_cast<T>(static_cast<const uint8_t*>(base)[idx]);
  }
  return T(0);
}
template <typename T>
DISTILL_HD void store_as(void* base, int64_t idx, DType t, T v) {
  switch (t) {
    case DType::F32:
      static_cast<float*>(base)[idx] = static_cast<float>(v);
      break;
    case DType::F64:
      static_cast<double*>(base)[idx] = static_cast<double>(v);
      break;
    case DType::BF16:
      static_cast<uint16_t*>(base)[idx] = float_to_bf16_bits(static_cast<float>(v));
      break;
    case DType::F16:
      static_cast<uint16_t*>(base)[idx] = float_to_f16_bits(static_cast<float>(v));
      break;
    case DType::I32:
      static_cast<int32_t*>(base)[idx] = static_cast<int32_t>(v);
      break;
    case DType::I64:
      static_cast<int64_t*>(base)[idx] = static_cast<int64_t>(v);
      break;
    case DType::U8:
      static_cast<uint8_t*>(base)[idx] = static_cast<uint8_t>(v);
      break;
  }
}

}  // namespace distill::kernels
