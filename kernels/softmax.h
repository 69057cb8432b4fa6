// Softmax and log-softmax over the last axis of a contiguous [rows, cols] buffer.
#pragma once

#include "kernels/common.h"

namespace distill::kernels {

namespace cpu {
void softmax_forward(const View& x, int64_t rows, int64_t cols, bool log, const View& y);
// dx = y * (dy - sum(dy * y)) for softmax; dx = dy - exp(y) * sum(dy) for log-softmax.
void softmax_backward(const View& y, const View& dy, int64_t rows, int64_t cols, bool log,
                      const View& dx);
}  // namespace cpu

namespace cuda {
void softmax_forward(const View& x, int64_t rows, int64_t cols, bool log, const View& y);
void softmax_backward(const View& y, const View& dy, int64_t rows, int64_t cols, bool log,
                      const View& dx);
}  // namespace cuda

}  // namespace distill::kernels
