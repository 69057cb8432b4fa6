// Layer norm over the last `cols` elements of a contiguous [rows, cols] buffer. Statistics are
// kept in fp32 (fp64 for F64 inputs) and saved for the backward pass.
#pragma once

#include "kernels/common.h"

namespace distill::kernels {

namespace cpu {
// gamma/beta may have data == nullptr (no affine). mean/rstd: [rows], F32 (F64 for F64 input).
void layer_norm_forward(const View& x, const View& gamma, const View& beta, int64_t rows,
                        int64_t cols, double eps, const View& y, const View& mean,
                        const View& rstd);
// dgamma/dbeta may have data == nullptr when not needed.
void layer_norm_backward(const View& x, const View& gamma, const View& mean, const View& rstd,
                         const View& dy, int64_t rows, int64_t cols, const View& dx,
                         const View& dgamma, const View& dbeta);
}  // namespace cpu

namespace cuda {
void layer_norm_forward(const View& x, const View& gamma, const View& beta, int64_t rows,
                        int64_t cols, double eps, const View& y, const View& mean,
                        const View& rstd);
void layer_norm_backward(const View& x, const View& gamma, const View& mean, const View& rstd,
                         const View& dy, int64_t rows, int64_t cols, const View& dx,
                         const View& dgamma, const View& dbeta);
}  // namespace cuda

}  // namespace distill::kernels
