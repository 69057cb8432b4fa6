// `distill bench kernels`, attention family: the fused attention kernels, forward
// ("attention_fwd") and forward + backward ("attention_fwd_bwd"), on the ViT and head shapes of
// tools/bench/torch_kernels.py, no mask.
//
// Peer on CUDA: the unfused composition a framework runs without a fused kernel, on raw buffers:
// cublasGemmStridedBatchedEx for S = scale Q K^T, our softmax kernel (kernels/softmax.h) for P,
// cublasGemmStridedBatchedEx for O = P V; backward dV = P^T dO, dP = dO V^T, dS = softmax
// backward, dQ = scale dS K, dK = scale dS^T Q (4 more GEMMs and the softmax backward kernel).
// fp32 accumulation throughout; f32 inputs run true fp32 GEMMs (no TF32), like our f32 kernel.
// (cuDNN's fused attention through the cudnn frontend is not used: too heavy a dependency.)
// Peer on the CPU: the same composition through the public ops (OpenBLAS GEMMs + softmax, with
// autograd for the backward), on a smaller batch (the row's "B").
//
// ratio = peer time / our time (> 1: ours is faster). tflops counts the useful GEMM work of the
// step: 4 B H Lq Lk D for the forward, 12 B H Lq Lk D for forward + backward (the backward's
// recomputation of the scores is not counted).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/ops.h"
#include "kernels/device.h"
#include "kernels/softmax.h"
#include "tools/bench_kernels.h"
#include "tools/bench_util.h"

#if DISTILL_HAS_CUDA
#include <cublas_v2.h>
#include <cuda_runtime.h>
#endif

namespace distill::cli {

namespace {

struct AttentionShape {
  const char* name;  // matches tools/bench/torch_kernels.py
  int64_t batch, heads, q_len, kv_len, head_dim;
};

constexpr AttentionShape kShapes[] = {
    {"vit-b16", 256, 12, 197, 197, 64},
    {"vit-b32", 256, 12, 50, 50, 64},
    {"head-c10-b32", 256, 8, 10, 50, 64},
    {"head-c100-b16", 256, 8, 100, 197, 64},
};
constexpr int64_t kCpuBatch = 4;  // the CPU runs the same shapes on a smaller batch

// max |a - b| / max |b|.

#if DISTILL_HAS_CUDA

// The unfused composition on raw buffers. Every matrix is row-major per (batch, head); cuBLAS is
// column-major, so a row-major [r, c] matrix is passed as the column-major [c, r] one.
class CublasAttention {
 public:
  CublasAttention(const AttentionShape& s, DType dtype, Device device)
      : s_(s), dtype_(dtype), bh_(s.batch * s.heads) {
    const TensorOptions opts(dtype, device);
    scores_ = Tensor::empty({bh_, s.q_len, s.kv_len}, opts);
    probs_ = Tensor::empty({bh_, s.q_len, s.kv_len}, opts);
    dprobs_ = Tensor::empty({bh_, s.q_len, s.kv_len}, opts);
    dscores_ = Tensor::empty({bh_, s.q_len, s.kv_len}, opts);
  }

  void forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out) {
    const double scale = 1.0 / std::sqrt(static_cast<double>(s_.head_dim));
    // S^T [Lk x Lq] = K [Lk x D] (= op_T of the col-major D x Lk) * Q^T [D x Lq].
    gemm(true, false, s_.kv_len, s_.q_len, s_.head_dim, scale, k, s_.head_dim,
         s_.kv_len * s_.head_dim, q, s_.head_dim, s_.q_len * s_.head_dim, scores_, s_.kv_len,
         s_.q_len * s_.kv_len);
    softmax(scores_, probs_, /*backward=*/false);
    // O^T [D x Lq] = V^T [D x Lk] * P^T [Lk x Lq].
    gemm(false, false, s_.head_dim, s_.q_len, s_.kv_len, 1.0, v, s_.head_dim,
         s_.kv_len * s_.head_dim, probs_, s_.kv_len, s_.q_len * s_.kv_len, out, s_.head_dim,
         s_.q_len * s_.head_dim);
  }

  void backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout,
                const Tensor& dq, const Tensor& dk, const Tensor& dv) {
    const double scale = 1.0 / std::sqrt(static_cast<double>(s_.head_dim));
    const int64_t lq = s_.q_len, lk = s_.kv_len, d = s_.head_dim;
    // dV^T [D x Lk] = dO^T [D x Lq] * P [Lq x Lk].
    gemm(false, true, d, lk, lq, 1.0, dout, d, lq * d, probs_, lk, lq * lk, dv, d, lk * d);
    // dP^T [Lk x Lq] = V [Lk x D] * dO^T [D x Lq].
    gemm(true, false, lk, lq, d, 1.0, v, d, lk * d, dout, d, lq * d, dprobs_, lk, lq * lk);
    softmax(probs_, dscores_, /*backward=*/true);
    // dQ^T [D x Lq] = K^T [D x Lk] * dS^T [Lk x Lq], scaled.
    gemm(false, false, d, lq, lk, scale, k, d, lk * d, dscores_, lk, lq * lk, dq, d, lq * d);
    // dK^T [D x Lk] = Q^T [D x Lq] * dS [Lq x Lk], scaled.
    gemm(false, true, d, lk, lq, scale, q, d, lq * d, dscores_, lk, lq * lk, dk, d, lk * d);
  }

 private:
  // Column-major C [m x n] = alpha op(A) op(B), batched over (batch, head).
  void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
            const Tensor& a, int64_t lda, int64_t stride_a, const Tensor& b, int64_t ldb,
            int64_t stride_b, const Tensor& c, int64_t ldc, int64_t stride_c) {
    const float alpha_f = static_cast<float>(alpha), beta_f = 0.0f;
    const cudaDataType_t type = dtype_ == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F;
    const cublasStatus_t st = cublasGemmStridedBatchedEx(
        cublas_handle(), trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
        static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), &alpha_f, a.data_ptr(), type,
        static_cast<int>(lda), stride_a, b.data_ptr(), type, static_cast<int>(ldb), stride_b,
        &beta_f, c.data_ptr(), type, static_cast<int>(ldc), stride_c, static_cast<int>(bh_),
        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS)
      throw std::runtime_error(std::string("bench attention: cublasGemmStridedBatchedEx failed: ") +
                               cublasGetStatusString(st));
  }

  // Row softmax of `x` into `y` (forward), or dS = softmax backward of (P = x, dP = dprobs_) into
  // y.
  void softmax(const Tensor& x, const Tensor& y, bool backward) {
    const int64_t rows = bh_ * s_.q_len, cols = s_.kv_len;
    if (backward) {
      kernels::cuda::softmax_backward(x.view_desc(), dprobs_.view_desc(), rows, cols, false,
                                      y.view_desc());
    } else {
      kernels::cuda::softmax_forward(x.view_desc(), rows, cols, false, y.view_desc());
    }
  }

  AttentionShape s_;
  DType dtype_;
  int64_t bh_;
  Tensor scores_, probs_, dprobs_, dscores_;
};
#endif

// The composition through the public ops (autograd for the backward): the CPU peer.
Tensor composed_attention(const Tensor& q, const Tensor& k, const Tensor& v) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  return matmul(softmax(mul(matmul(q, transpose(k, -2, -1)), scale), -1), v);
}

}  // namespace

nlohmann::json bench_attention(const Device& device, int iters) {
  nlohmann::json rows = nlohmann::json::array();
  const bool cuda = device.is_cuda();
  const std::vector<DType> dtypes =
      cuda ? std::vector<DType>{DType::BF16, DType::F32} : std::vector<DType>{DType::F32};
  for (DType dtype : dtypes) {
    for (AttentionShape s : kShapes) {
      if (!cuda) s.batch = kCpuBatch;
      Generator gen(4242);
      const auto input = [&](int64_t len) {
        return normal({s.batch, s.heads, len, s.head_dim}, 0, 1, TensorOptions(DType::F32, device),
                      &gen)
            .to(dtype);
      };
      const Tensor q = input(s.q_len), k = input(s.kv_len), v = input(s.kv_len);
      const Tensor dout = input(s.q_len);
      const double gemm_flops =
          2.0 * static_cast<double>(s.batch * s.heads) * s.q_len * s.kv_len * s.head_dim;

      // Ours: the fused kernels through the lower-level entry points (no autograd bookkeeping).
      AttentionForwardResult fwd;
      const double ours_fwd =
          median_seconds([&] { fwd = attention_forward(q, k, v); }, cuda, 2, iters);
      const double ours_fwd_bwd = median_seconds(
          [&] {
            const AttentionForwardResult r = attention_forward(q, k, v);
            (void)attention_backward(q, k, v, r.out, r.lse, dout);
          },
          cuda, 2, iters);

      double peer_fwd = 0, peer_fwd_bwd = 0, diff = 0;
      std::string peer;
      if (cuda) {
#if DISTILL_HAS_CUDA
        peer = "cuBLAS GEMM + softmax + GEMM";
        CublasAttention composed(s, dtype, device);
        const TensorOptions opts(dtype, device);
        const Tensor out = Tensor::empty(q.shape(), opts);
        const Tensor dq = Tensor::empty(q.shape(), opts), dk = Tensor::empty(k.shape(), opts),
                     dv = Tensor::empty(v.shape(), opts);
        peer_fwd = median_seconds([&] { composed.forward(q, k, v, out); }, cuda, 2, iters);
        peer_fwd_bwd = median_seconds(
            [&] {
              composed.forward(q, k, v, out);
              composed.backward(q, k, v, dout, dq, dk, dv);
            },
            cuda, 2, iters);
        diff = max_rel_diff(fwd.out, out);
#endif
      } else {
        peer = "OpenBLAS GEMM + softmax + GEMM (public ops)";
        Tensor out;
        peer_fwd = median_seconds(
            [&] {
              NoGradGuard no_grad;
              out = composed_attention(q, k, v);
            },
            cuda, 2, iters);
        peer_fwd_bwd = median_seconds(
            [&] {
              Tensor ql = q.detach(), kl = k.detach(), vl = v.detach();
              for (Tensor* t : {&ql, &kl, &vl}) t->set_requires_grad(true);
              composed_attention(ql, kl, vl).backward(dout);
            },
            cuda, 2, iters);
        diff = max_rel_diff(fwd.out, out);
      }

      const auto row = [&](const char* kernel, double ours, double theirs, double flops) {
        return nlohmann::json{{"kernel", kernel},
                              {"shape", s.name},
                              {"dtype", dtype_name(dtype)},
                              {"B", s.batch},
                              {"H", s.heads},
                              {"Lq", s.q_len},
                              {"Lk", s.kv_len},
                              {"D", s.head_dim},
                              {"ours_ms", ours * 1e3},
                              {"peer", peer},
                              {"peer_ms", theirs * 1e3},
                              {"ratio", theirs / ours},
                              {"tflops", flops / ours / 1e12},
                              {"peer_tflops", flops / theirs / 1e12},
                              {"max_rel_diff_fwd", diff}};
      };
      rows.push_back(row("attention_fwd", ours_fwd, peer_fwd, 2 * gemm_flops));
      rows.push_back(row("attention_fwd_bwd", ours_fwd_bwd, peer_fwd_bwd, 6 * gemm_flops));
    }
  }
  return rows;
}

}  // namespace distill::cli
