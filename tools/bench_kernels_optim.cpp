// `distill bench kernels`, optim family: the multi-tensor AdamW step (one launch for every
// tensor) over a ViT-B/16-sized parameter set (86M parameters in 152 tensors; on the CPU the
// ViT-S/16-sized set, 22M, to keep the run short), and global-norm gradient clipping, in GB/s.
// Peer on CUDA: a device-to-device cudaMemcpy of a buffer the size of the parameters, timed in
// the same process (ratio = our GB/s / copy GB/s). Peer on the CPU: a naive single-threaded
// per-tensor loop with the same formulas.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "core/ops.h"
#include "kernels/device.h"
#include "tools/bench_kernels.h"
#include "tools/bench_util.h"

namespace distill::cli {

namespace {

// Parameter shapes of a ViT with patch 16 on 224x224 images and a 1000-class head.
std::vector<Shape> vit_shapes(int64_t width, int64_t depth) {
  const int64_t tokens = 197, mlp = 4 * width;
  std::vector<Shape> s{{width, 3, 16, 16}, {width}, {width}, {tokens, width}, {width}, {width}};
  for (int64_t b = 0; b < depth; ++b) {
    const std::vector<Shape> block{
        {width}, {width}, {3 * width, width}, {3 * width}, {width, width}, {width},
        {width}, {width}, {mlp, width},       {mlp},       {width, mlp},   {width}};
    s.insert(s.end(), block.begin(), block.end());
  }
  s.push_back({width});
  s.push_back({width});
  s.push_back({1000, width});
  s.push_back({1000});
  return s;
}

// The same AdamW update, tensor by tensor, element by element, in float.
void naive_adamw(std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                 std::vector<Tensor>& m, std::vector<Tensor>& v, const AdamWConfig& c,
                 int64_t step) {
  const float bc1 = 1.f - std::pow(static_cast<float>(c.beta1), static_cast<float>(step));
  const float bc2 = 1.f - std::pow(static_cast<float>(c.beta2), static_cast<float>(step));
  for (size_t t = 0; t < params.size(); ++t) {
    float* p = params[t].data<float>();
    const float* g = grads[t].data<float>();
    float* mt = m[t].data<float>();
    float* vt = v[t].data<float>();
    for (int64_t i = 0; i < params[t].numel(); ++i) {
      p[i] *= 1.f - static_cast<float>(c.lr * c.weight_decay);
      mt[i] = static_cast<float>(c.beta1) * mt[i] + (1.f - static_cast<float>(c.beta1)) * g[i];
      vt[i] =
          static_cast<float>(c.beta2) * vt[i] + (1.f - static_cast<float>(c.beta2)) * g[i] * g[i];
      p[i] -= static_cast<float>(c.lr) * (mt[i] / bc1) /
              (std::sqrt(vt[i] / bc2) + static_cast<float>(c.eps));
    }
  }
}

}  // namespace

nlohmann::json bench_optim(const Device& device, int iters) {
  nlohmann::json rows = nlohmann::json::array();
  const bool cuda = device.is_cuda();
  const std::vector<Shape> shapes = cuda ? vit_shapes(768, 12) : vit_shapes(384, 12);
  const std::string set_name = std::string(cuda ? "vit-b16" : "vit-s16") + "-params-" +
                               std::to_string(shapes.size()) + "-tensors";
  Generator gen(99);
  std::vector<Tensor> params, grads_f32, exp_avg, exp_avg_sq;
  int64_t numel = 0;
  for (const Shape& s : shapes) {
    params.push_back(normal(s, 0, 0.02, TensorOptions(DType::F32, device), &gen));
    grads_f32.push_back(normal(s, 0, 1e-3, TensorOptions(DType::F32, device), &gen));
    exp_avg.push_back(zeros(s, TensorOptions(DType::F32, device)));
    exp_avg_sq.push_back(zeros(s, TensorOptions(DType::F32, device)));
    numel += params.back().numel();
  }
  const double param_bytes = 4.0 * static_cast<double>(numel);

  // The peer's bandwidth: one copy of a parameter-sized buffer (read + write).
  double copy_seconds = 0, copy_gbps = 0;
  if (cuda) {
    Tensor src = Tensor::empty({numel}, TensorOptions(DType::F32, device));
    Tensor dst = Tensor::empty({numel}, TensorOptions(DType::F32, device));
    src.fill_(1.0);
    copy_seconds = median_seconds(
        [&] { kernels::cuda::memcpy_d2d(dst.data_ptr(), src.data_ptr(), src.nbytes()); }, true, 2,
        iters);
    copy_gbps = 2 * param_bytes / copy_seconds / 1e9;
  }
  const AdamWConfig cfg{1e-4, 0.9, 0.999, 1e-8, 0.05};
  const auto add_row = [&](const char* kernel, DType grad_dtype, double seconds, double bytes,
                           double peer_seconds, double peer_gbps, const std::string& peer) {
    const double gbps = bytes / seconds / 1e9;
    rows.push_back({{"kernel", kernel},
                    {"shape", set_name},
                    {"dtype", std::string("f32 params, ") + dtype_name(grad_dtype) + " grads"},
                    {"params", numel},
                    {"tensors", shapes.size()},
                    {"ours_ms", seconds * 1e3},
                    {"peer", peer},
                    {"peer_ms", peer_seconds * 1e3},
                    {"gbps", gbps},
                    {"peer_gbps", peer_gbps},
                    {"ratio", gbps / peer_gbps}});
  };

  for (DType grad_dtype :
       cuda ? std::vector<DType>{DType::F32, DType::BF16} : std::vector<DType>{DType::F32}) {
    std::vector<Tensor> grads;
    for (const Tensor& g : grads_f32) grads.push_back(g.to(grad_dtype));
    int64_t step = 0;
    const double seconds = median_seconds(
        [&] { adamw_step(params, grads, exp_avg, exp_avg_sq, cfg, ++step); }, cuda, 2, iters);
    // Reads param, grad, exp_avg, exp_avg_sq; writes param, exp_avg, exp_avg_sq.
    const double bytes =
        static_cast<double>(numel) * static_cast<double>(24 + dtype_size(grad_dtype));
    if (cuda) {
      add_row("adamw_step", grad_dtype, seconds, bytes, copy_seconds, copy_gbps, "cudaMemcpy D2D");
    } else {
      int64_t naive_step = 0;
      const double naive = median_seconds(
          [&] { naive_adamw(params, grads, exp_avg, exp_avg_sq, cfg, ++naive_step); }, false, 2,
          iters);
      add_row("adamw_step", grad_dtype, seconds, bytes, naive, bytes / naive / 1e9,
              "naive CPU reference");
    }
  }

  // Clipping with a threshold above the norm: one read of every gradient (the scale kernel
  // exits at once), which is what most steps of a stable run do.
  {
    std::vector<Tensor> grads = grads_f32;
    const double seconds = median_seconds([&] { clip_grad_norm(grads, 1e9); }, cuda, 2, iters);
    const double bytes = param_bytes;
    if (cuda) {
      add_row("clip_grad_norm", DType::F32, seconds, bytes, copy_seconds, copy_gbps,
              "cudaMemcpy D2D");
    } else {
      double naive_norm = 0;
      const double naive = median_seconds(
          [&] {
            double sum_sq = 0;
            for (const Tensor& g : grads) {
              const float* p = g.data<float>();
              for (int64_t i = 0; i < g.numel(); ++i) sum_sq += static_cast<double>(p[i]) * p[i];
            }
            naive_norm = std::sqrt(sum_sq);
          },
          false, 2, iters);
      add_row("clip_grad_norm", DType::F32, seconds, bytes, naive, bytes / naive / 1e9,
              "naive CPU reference");
    }
  }
  return rows;
}

}  // namespace distill::cli
