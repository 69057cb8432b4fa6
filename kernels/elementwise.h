// Elementwise op family: copy/cast, fill, arange, unary, binary (broadcast), comparisons, where.
// Views passed here are already broadcast to the output's shape (stride 0 on broadcast dims).
#pragma once

#include "kernels/common.h"

namespace distill::kernels {

enum class UnaryOp : uint8_t {
  Neg,
  Exp,
  Log,
  Sqrt,
  Rsqrt,
  Tanh,
  Sigmoid,
  Relu,
  Gelu,
  QuickGelu,
  Abs,
  AddScalar,  // x + s
  MulScalar,  // x * s
  PowScalar,  // x ^ s
};

enum class BinaryOp : uint8_t { Add, Sub, Mul, Div, Pow, Maximum, Minimum };

enum class CompareOp : uint8_t { Eq, Ne, Lt, Le, Gt, Ge };

namespace cpu {
// dst[i] = convert(src[i]) for any strides and any pair of dtypes.
void copy(const View& src, const View& dst);
void fill(const View& dst, double value);
// dst[i] = start + i * step (row-major order over dst).
void arange(const View& dst, double start, double step);
void unary(UnaryOp op, const View& x, const View& out, double scalar);
// grad_in = grad_out * d(op)/dx, all contiguous and of one shape; y is op's forward output.
void unary_backward(UnaryOp op, const View& x, const View& y, const View& grad_out,
                    const View& grad_in, double scalar);
void binary(BinaryOp op, const View& a, const View& b, const View& out);
// out is U8 (0/1).
void compare(CompareOp op, const View& a, const View& b, const View& out);
// out = cond ? a : b; cond is U8.
void where(const View& cond, const View& a, const View& b, const View& out);
}  // namespace cpu

namespace cuda {
void copy(const View& src, const View& dst);
void fill(const View& dst, double value);
void arange(const View& dst, double start, double step);
void unary(UnaryOp op, const View& x, const View& out, double scalar);
void unary_backward(UnaryOp op, const View& x, const View& y, const View& grad_out,
                    const View& grad_in, double scalar);
void binary(BinaryOp op, const View& a, const View& b, const View& out);
void compare(CompareOp op, const View& a, const View& b, const View& out);
void where(const View& cond, const View& a, const View& b, const View& out);
}  // namespace cuda

}  // namespace distill::kernels
