// Indexing family: index_select (embedding lookup), gather, and their scatter-add backwards.
// Buffers are contiguous and viewed as [outer, n, inner] around the indexed dimension.
// Index buffers are I64 or I32. Out-of-range indices are reported through the return value.
#pragma once

#include "kernels/common.h"

namespace distill::kernels {

struct IndexArgs {
  DType dtype = DType::F32;  // dtype of src/out
  DType index_dtype = DType::I64;
  int64_t outer = 1, inner = 1;
  int64_t src_n = 0;  // size of the indexed dim in src
  int64_t idx_n = 0;  // size of the indexed dim in out (number of indices per outer row)
};

namespace cpu {
// out[o, j, i] = src[o, index[j], i]. Returns the first bad index position, or -1.
int64_t index_select(const IndexArgs& a, const void* src, const void* index, void* out);
// dst[o, index[j], i] += grad[o, j, i].
int64_t index_add(const IndexArgs& a, const void* grad, const void* index, void* dst);
// out[o, j, i] = src[o, index[o, j, i], i]; index has the out shape.
int64_t gather(const IndexArgs& a, const void* src, const void* index, void* out);
// dst[o, index[o, j, i], i] += grad[o, j, i].
int64_t scatter_add(const IndexArgs& a, const void* grad, const void* index, void* dst);
}  // namespace cpu

namespace cuda {
// Same contract: -1 when every index is valid, else the position of a bad one (checked on device).
int64_t index_select(const IndexArgs& a, const void* src, const void* index, void* out);
int64_t index_add(const IndexArgs& a, const void* grad, const void* index, void* dst);
int64_t gather(const IndexArgs& a, const void* src, const void* index, void* out);
int64_t scatter_add(const IndexArgs& a, const void* grad, const void* index, void* dst);
}  // namespace cuda

}  // namespace distill::kernels
