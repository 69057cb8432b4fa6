// `distill bench kernels`, conv family: forward ("conv_fwd"), data gradient ("conv_dgrad") and
// weight gradient ("conv_wgrad") on CLIP RN50's 3x3 and 1x1 layers and the ViT patch embeddings at
// batch 256 (shape names as in tools/bench/torch_kernels.py).
//
// Peer on CUDA: cuDNN (conv_backend = cudnn: cudnnFind*-chosen algorithms, f32 without TF32) in the
// same process on the same tensors, against our native implicit GEMM. Peer on the CPU: a naive
// direct convolution (OpenMP over output channels), against our im2col + OpenBLAS reference, on a
// batch of 1. ratio = peer time / our time (> 1: ours is faster). tflops counts 2 N K P Q C R S.
// max_rel_diff = max |ours - peer| / max |peer| checks that both computed the same thing.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <functional>
#include <string>
#include <vector>

#include "core/ops.h"
#include "kernels/device.h"
#include "tools/bench_kernels.h"
#include "tools/bench_util.h"

namespace distill::cli {

namespace {

struct ConvShape {
  const char* name;  // matches tools/bench/torch_kernels.py
  int64_t n, c, h, w, k, r, stride, pad;
};

constexpr ConvShape kShapes[] = {
    {"rn50-3x3-56", 256, 64, 56, 56, 64, 3, 1, 1},
    {"rn50-3x3-28", 256, 128, 28, 28, 128, 3, 1, 1},
    {"rn50-3x3-14", 256, 256, 14, 14, 256, 3, 1, 1},
    {"rn50-1x1-56-reduce", 256, 256, 56, 56, 64, 1, 1, 0},
    {"rn50-1x1-56-expand", 256, 64, 56, 56, 256, 1, 1, 0},
    {"rn50-1x1-14", 256, 1024, 14, 14, 256, 1, 1, 0},
    {"patch16", 256, 3, 224, 224, 768, 16, 16, 0},
    {"patch32", 256, 3, 224, 224, 768, 32, 32, 0},
};
constexpr int64_t kCpuBatch = 1;

// ---- naive direct convolution on f32 CPU tensors (the CPU peer)

struct Geo {
  int64_t n, c, h, w, k, r, s, stride, pad, p, q;
};

Geo geo_of(const ConvShape& s, int64_t batch) {
  const int64_t p = (s.h + 2 * s.pad - s.r) / s.stride + 1;
  const int64_t q = (s.w + 2 * s.pad - s.r) / s.stride + 1;
  return {batch, s.c, s.h, s.w, s.k, s.r, s.r, s.stride, s.pad, p, q};
}

// Calls fn(n, k, p, q, c, r, s, x_index, w_index) for every valid tap, parallel over k.
template <typename F>
void for_each_tap(const Geo& g, F&& fn) {
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < g.k; ++k)
    for (int64_t n = 0; n < g.n; ++n)
      for (int64_t p = 0; p < g.p; ++p)
        for (int64_t q = 0; q < g.q; ++q)
          for (int64_t c = 0; c < g.c; ++c)
            for (int64_t r = 0; r < g.r; ++r) {
              const int64_t h = p * g.stride - g.pad + r;
              if (h < 0 || h >= g.h) continue;
              for (int64_t s = 0; s < g.s; ++s) {
                const int64_t wi = q * g.stride - g.pad + s;
                if (wi < 0 || wi >= g.w) continue;
                fn(n, k, p, q, ((n * g.c + c) * g.h + h) * g.w + wi,
                   ((k * g.c + c) * g.r + r) * g.s + s);
              }
            }
}

void naive_forward(const Geo& g, const float* x, const float* w, float* y) {
  std::fill(y, y + g.n * g.k * g.p * g.q, 0.f);
  for_each_tap(g, [&](int64_t n, int64_t k, int64_t p, int64_t q, int64_t xi, int64_t wi) {
    y[((n * g.k + k) * g.p + p) * g.q + q] += x[xi] * w[wi];
  });
}

// Data gradient: parallel over input channels so that each thread owns its dx planes.
void naive_dgrad(const Geo& g, const float* dy, const float* w, float* dx) {
  std::fill(dx, dx + g.n * g.c * g.h * g.w, 0.f);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < g.c; ++c)
    for (int64_t n = 0; n < g.n; ++n)
      for (int64_t k = 0; k < g.k; ++k)
        for (int64_t p = 0; p < g.p; ++p)
          for (int64_t q = 0; q < g.q; ++q) {
            const float gy = dy[((n * g.k + k) * g.p + p) * g.q + q];
            for (int64_t r = 0; r < g.r; ++r) {
              const int64_t h = p * g.stride - g.pad + r;
              if (h < 0 || h >= g.h) continue;
              for (int64_t s = 0; s < g.s; ++s) {
                const int64_t wi = q * g.stride - g.pad + s;
                if (wi < 0 || wi >= g.w) continue;
                dx[((n * g.c + c) * g.h + h) * g.w + wi] +=
                    gy * w[((k * g.c + c) * g.r + r) * g.s + s];
              }
            }
          }
}

void naive_wgrad(const Geo& g, const float* dy, const float* x, float* dw) {
  std::fill(dw, dw + g.k * g.c * g.r * g.s, 0.f);
  for_each_tap(g, [&](int64_t n, int64_t k, int64_t p, int64_t q, int64_t xi, int64_t wi) {
    dw[wi] += dy[((n * g.k + k) * g.p + p) * g.q + q] * x[xi];
  });
}

}  // namespace

// One dtype's rows (bench_conv runs bf16 and f32 on CUDA, f32 on the CPU).
nlohmann::json bench_conv_dtype(const Device& device, int iters, DType dtype) {
  nlohmann::json rows = nlohmann::json::array();
  const bool cuda = device.is_cuda();
  NoGradGuard no_grad;
  {
    for (const ConvShape& s : kShapes) {
      const int64_t batch = cuda ? s.n : kCpuBatch;
      const Geo g = geo_of(s, batch);
      const Conv2dParams params = Conv2dParams::square(s.stride, s.pad);
      Generator gen(777);
      const TensorOptions opts(DType::F32, device);
      const Tensor x = uniform({g.n, g.c, g.h, g.w}, -1, 1, opts, &gen).to(dtype);
      const Tensor w = uniform({g.k, g.c, g.r, g.s}, -1, 1, opts, &gen).to(dtype);
      const Tensor dy = uniform({g.n, g.k, g.p, g.q}, -1, 1, opts, &gen).to(dtype);
      const double flops = 2.0 * g.n * g.k * g.p * g.q * g.c * g.r * g.s;
      const std::string shape = std::string("x[") + std::to_string(g.n) + "," +
                                std::to_string(g.c) + "," + std::to_string(g.h) + "," +
                                std::to_string(g.w) + "] k" + std::to_string(g.r) + "x" +
                                std::to_string(g.s) + " s" + std::to_string(s.stride) + " p" +
                                std::to_string(s.pad) + " -> " + std::to_string(g.k);
      const auto row = [&](const char* kernel, double ours, double peer, const char* peer_name,
                           double diff) {
        return nlohmann::json{
            {"kernel", kernel},           {"shape", s.name},       {"geometry", shape},
            {"dtype", dtype_name(dtype)}, {"ours_ms", ours * 1e3}, {"peer", peer_name},
            {"peer_ms", peer * 1e3},      {"ratio", peer / ours},  {"tflops", flops / ours / 1e12},
            {"max_rel_diff", diff}};
      };
      Tensor ours_y, ours_dx, ours_dw, peer_y, peer_dx, peer_dw;
      if (cuda) {
        const auto native = ConvBackend::Native, cudnn = ConvBackend::Cudnn;
        const Shape xs = x.shape(), ws = w.shape();
        // A failing implementation gives a row with its error instead of ending the benchmark.
        std::string error;
        const auto timed = [&](const std::function<void()>& fn) {
          try {
            return median_seconds(fn, true, 2, iters);
          } catch (const std::exception& e) {
            error += std::string(e.what()) + "; ";
            return std::nan("");
          }
        };
        const auto diff = [&](const Tensor& a, const Tensor& b) {
          return a.defined() && b.defined() ? max_rel_diff(a, b) : std::nan("");
        };
        const double t_fwd = timed([&] { ours_y = conv2d(x, w, Tensor(), params, native); });
        const double p_fwd = timed([&] { peer_y = conv2d(x, w, Tensor(), params, cudnn); });
        const double t_dgrad =
            timed([&] { ours_dx = conv2d_backward_input(dy, w, xs, params, native); });
        const double p_dgrad =
            timed([&] { peer_dx = conv2d_backward_input(dy, w, xs, params, cudnn); });
        const double t_wgrad =
            timed([&] { ours_dw = conv2d_backward_weight(dy, x, ws, params, native); });
        const double p_wgrad =
            timed([&] { peer_dw = conv2d_backward_weight(dy, x, ws, params, cudnn); });
        rows.push_back(row("conv_fwd", t_fwd, p_fwd, "cudnn", diff(ours_y, peer_y)));
        rows.push_back(row("conv_dgrad", t_dgrad, p_dgrad, "cudnn", diff(ours_dx, peer_dx)));
        rows.push_back(row("conv_wgrad", t_wgrad, p_wgrad, "cudnn", diff(ours_dw, peer_dw)));
        if (!error.empty())
          for (size_t i = rows.size() - 3; i < rows.size(); ++i) rows[i]["error"] = error;
      } else {
        const double t_fwd =
            median_seconds([&] { ours_y = conv2d(x, w, Tensor(), params); }, false, 1, iters);
        const double t_dgrad = median_seconds(
            [&] { ours_dx = conv2d_backward_input(dy, w, x.shape(), params); }, false, 1, iters);
        const double t_wgrad = median_seconds(
            [&] { ours_dw = conv2d_backward_weight(dy, x, w.shape(), params); }, false, 1, iters);
        peer_y = Tensor::empty(ours_y.shape());
        peer_dx = Tensor::empty(x.shape());
        peer_dw = Tensor::empty(w.shape());
        // The naive loops are slow: timed once, without a warm-up.
        const double p_fwd = median_seconds(
            [&] { naive_forward(g, x.data<float>(), w.data<float>(), peer_y.data<float>()); },
            false, 0, 1);
        const double p_dgrad = median_seconds(
            [&] { naive_dgrad(g, dy.data<float>(), w.data<float>(), peer_dx.data<float>()); },
            false, 0, 1);
        const double p_wgrad = median_seconds(
            [&] { naive_wgrad(g, dy.data<float>(), x.data<float>(), peer_dw.data<float>()); },
            false, 0, 1);
        rows.push_back(row("conv_fwd", t_fwd, p_fwd, "naive", max_rel_diff(ours_y, peer_y)));
        rows.push_back(
            row("conv_dgrad", t_dgrad, p_dgrad, "naive", max_rel_diff(ours_dx, peer_dx)));
        rows.push_back(
            row("conv_wgrad", t_wgrad, p_wgrad, "naive", max_rel_diff(ours_dw, peer_dw)));
      }
    }
  }
  return rows;
}

nlohmann::json bench_conv(const Device& device, int iters) {
  nlohmann::json rows = nlohmann::json::array();
  const std::vector<DType> dtypes = device.is_cuda() ? std::vector<DType>{DType::BF16, DType::F32}
                                                     : std::vector<DType>{DType::F32};
  for (DType dtype : dtypes)
    for (auto& r : bench_conv_dtype(device, iters, dtype)) rows.push_back(r);
  return rows;
}

}  // namespace distill::cli
