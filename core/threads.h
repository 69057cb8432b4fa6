// CPU thread pool control: OpenMP for our kernels, and OpenBLAS's own pool for GEMM.
#pragma once

namespace distill {

int num_threads();
// Sets both the OpenMP and the BLAS thread counts (n <= 0 restores the default: all cores).
void set_num_threads(int n);

}  // namespace distill
