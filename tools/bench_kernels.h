// Kernel benchmarks behind `distill bench kernels`. Each family times its kernels against the
// reference named in the kernels issue, in the same process on the same device, and returns rows
// {"kernel", "shape", "dtype", "ours_ms", "peer", "peer_ms", "ratio", and "tflops" or "gbps"}.
// Shape names match tools/bench/torch_kernels.py so gpu_check.sh can put PyTorch beside them.
#pragma once

#include <nlohmann/json.hpp>

#include "core/device.h"

namespace distill::cli {

nlohmann::json bench_attention(const Device& device, int iters);
nlohmann::json bench_conv(const Device& device, int iters);
nlohmann::json bench_loss(const Device& device, int iters);
nlohmann::json bench_optim(const Device& device, int iters);

}  // namespace distill::cli
