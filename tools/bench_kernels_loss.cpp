// `distill bench kernels`, loss family: fused softmax-cross-entropy forward + backward in GB/s,
// twice: "cross_entropy_fwd_bwd" is the public op with autograd as a training step uses it (its
// mean reduction and gradient seeding add a few tiny kernels), "cross_entropy_kernels" the two
// fused kernels alone.
// Peer on CUDA: a device-to-device cudaMemcpy of the same logits buffer, timed in the same
// process (ratio = our GB/s / copy GB/s; the target is >= 0.7 in bf16).
// Peer on the CPU: a naive single-threaded reference (three passes per row in float).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/ops.h"
#include "core/ops/dispatch.h"
#include "kernels/cross_entropy.h"
#include "kernels/device.h"
#include "tools/bench_kernels.h"
#include "tools/bench_util.h"

namespace distill::cli {

namespace {

// Mean cross-entropy and its gradient, written the obvious way: max, sum of exps, then the
// gradient row by row, single-threaded, in float.
void naive_cross_entropy(const float* z, const int64_t* y, int64_t rows, int64_t cols, float* dz,
                         double* loss) {
  double total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = z + r * cols;
    float m = row[0];
    for (int64_t c = 1; c < cols; ++c) m = std::max(m, row[c]);
    float s = 0;
    for (int64_t c = 0; c < cols; ++c) s += std::exp(row[c] - m);
    const float lse = m + std::log(s);
    total += lse - row[y[r]];
    for (int64_t c = 0; c < cols; ++c)
      dz[r * cols + c] =
          (std::exp(row[c] - lse) - (c == y[r] ? 1.f : 0.f)) / static_cast<float>(rows);
  }
  *loss = total / static_cast<double>(rows);
}

struct CeShape {
  const char* name;  // matches tools/bench/torch_kernels.py
  int64_t rows, cols;
};

}  // namespace

nlohmann::json bench_loss(const Device& device, int iters) {
  nlohmann::json rows = nlohmann::json::array();
  const bool cuda = device.is_cuda();
  const std::vector<CeShape> shapes{
      {"ce-4096x1000", 4096, 1000}, {"ce-256x50000", 256, 50000}, {"ce-65536x10", 65536, 10}};
  const std::vector<DType> dtypes =
      cuda ? std::vector<DType>{DType::F32, DType::BF16} : std::vector<DType>{DType::F32};
  for (const CeShape& s : shapes) {
    Generator gen(4242 + s.cols);
    const Tensor labels_f =
        uniform({s.rows}, 0, static_cast<double>(s.cols) - 0.5, TensorOptions(DType::F64), &gen);
    std::vector<int64_t> label_values;
    for (double v : labels_f.to_double_vector()) label_values.push_back(static_cast<int64_t>(v));
    const Tensor labels = Tensor::from_vector(label_values, {s.rows}).to(device);
    for (DType dt : dtypes) {
      Tensor z = normal({s.rows, s.cols}, 0, 3, TensorOptions(DType::F32, device), &gen).to(dt);
      z.set_requires_grad(true);
      const auto step = [&] {
        z.zero_grad();  // no accumulation kernel: each backward writes a fresh gradient
        cross_entropy(z, labels).backward();
      };
      const double ours_op = median_seconds(step, cuda, 2, iters);
      // The two fused kernels on their own.
      const DType acc = dt == DType::F64 ? DType::F64 : DType::F32;
      Tensor row_loss = Tensor::empty({s.rows}, TensorOptions(acc, device));
      Tensor stats = Tensor::empty({s.rows, 2}, TensorOptions(acc, device));
      Tensor dz = Tensor::empty(z.shape(), TensorOptions(dt, device));
      const Tensor row_grad = expand(
          full({1}, 1.0 / static_cast<double>(s.rows), TensorOptions(acc, device)), {s.rows});
      kernels::CrossEntropyArgs args;
      args.rows = s.rows;
      args.cols = s.cols;
      const Tensor zd = z.detach();
      const auto kernels_only = [&] {
        DISTILL_DISPATCH(device, cross_entropy_forward, zd.view_desc(), labels.view_desc(), args,
                         row_loss.view_desc(), stats.view_desc(), kernels::View{});
        DISTILL_DISPATCH(device, cross_entropy_backward, zd.view_desc(), labels.view_desc(),
                         stats.view_desc(), row_grad.view_desc(), args, dz.view_desc());
      };
      const double ours_kernels = median_seconds(kernels_only, cuda, 2, iters);
      const double logits_bytes = static_cast<double>(z.nbytes());
      // Forward reads the logits; backward reads them again and writes dlogits.
      const double bytes = 3 * logits_bytes;
      double peer_seconds, peer_gbps;
      std::string peer;
      if (cuda) {
        Tensor dst = Tensor::empty(z.shape(), TensorOptions(dt, device));
        peer = "cudaMemcpy D2D";
        peer_seconds = median_seconds(
            [&] { kernels::cuda::memcpy_d2d(dst.data_ptr(), zd.data_ptr(), zd.nbytes()); }, true, 2,
            iters);
        peer_gbps = 2 * logits_bytes / peer_seconds / 1e9;  // read + write
      } else {
        peer = "naive CPU reference";
        double loss = 0;
        peer_seconds = median_seconds(
            [&] {
              naive_cross_entropy(zd.data<float>(), labels.data<int64_t>(), s.rows, s.cols,
                                  dz.data<float>(), &loss);
            },
            false, 2, iters);
        peer_gbps = bytes / peer_seconds / 1e9;
      }
      for (const auto& [kernel, seconds] :
           {std::pair<const char*, double>{"cross_entropy_fwd_bwd", ours_op},
            std::pair<const char*, double>{"cross_entropy_kernels", ours_kernels}}) {
        const double gbps = bytes / seconds / 1e9;
        rows.push_back({{"kernel", kernel},
                        {"shape", s.name},
                        {"dtype", dtype_name(dt)},
                        {"ours_ms", seconds * 1e3},
                        {"peer", peer},
                        {"peer_ms", peer_seconds * 1e3},
                        {"gbps", gbps},
                        {"peer_gbps", peer_gbps},
                        {"ratio", gbps / peer_gbps}});
      }
    }
  }
  return rows;
}

}  // namespace distill::cli
