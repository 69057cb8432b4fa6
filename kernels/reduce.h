// Reductions over the last axis of a contiguous [rows, cols] buffer. The op layer permutes the
// reduced dims to the end and makes the input contiguous first.
#pragma once

#include "kernels/common.h"

namespace distill::kernels {

enum class ReduceOp : uint8_t { Sum, Mean, Max, Min, ArgMax, Var };

namespace cpu {
// out has `rows` elements (I64 for ArgMax, else x's dtype). `correction` is used by Var
// (1 = unbiased). Accumulates in double.
void reduce_rows(ReduceOp op, const void* x, DType dtype, int64_t rows, int64_t cols, void* out,
                 DType out_dtype, int64_t correction);
}  // namespace cpu

namespace cuda {
// Accumulates in float (double for F64 inputs).
void reduce_rows(ReduceOp op, const void* x, DType dtype, int64_t rows, int64_t cols, void* out,
                 DType out_dtype, int64_t correction);
}  // namespace cuda

}  // namespace distill::kernels
