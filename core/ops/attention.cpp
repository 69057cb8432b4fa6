// Fused attention: argument checks, operand descriptors, dispatch and the autograd node. The
// backward runs the fused backward kernels from the saved output and log-sum-exp (it is not
// itself differentiable: no double backward through attention).
#include "kernels/attention.h"

#include <cmath>

#include "core/autocast.h"
#include "core/error.h"
#include "core/flops.h"
#include "core/ops.h"
#include "core/ops/dispatch.h"

namespace distill {

namespace {

constexpr const char* kOp = "attention";

bool is_attention_dtype(DType t) {
  return t == DType::F32 || t == DType::F64 || t == DType::BF16 || t == DType::F16;
}

// The kernels index (b, h, l) through strides but need the head dim contiguous.
Tensor with_unit_last_stride(const Tensor& t) {
  if (t.size(-1) <= 1 || t.strides().back() == 1) return t;
  return contiguous(t);
}

kernels::AttentionOperand operand(const Tensor& t) {
  kernels::AttentionOperand o;
  o.data = t.data_ptr();
  o.stride_b = t.strides()[0];
  o.stride_h = t.strides()[1];
  o.stride_l = t.strides()[2];
  return o;
}

struct Problem {
  int64_t batch = 0, heads = 0, q_len = 0, kv_len = 0, head_dim = 0;
  double scale = 1.0;
  Tensor key_keep;  // U8, contiguous [B or 1, Lk], or undefined
};

// Validates q, k, v and the mask; resolves scale 0 to 1/sqrt(D) and converts the padding mask to
// a contiguous U8 tensor on the inputs' device.
Problem check_problem(const char* op, const Tensor& q, const Tensor& k, const Tensor& v,
                      const AttentionMask& mask, double scale) {
  check_defined(op, q, "q");
  check_defined(op, k, "k");
  check_defined(op, v, "v");
  check_same_device(op, {&q, &k, &v, &mask.key_keep});
  DISTILL_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, op,
                ": q, k and v must be 4-D [B, H, L, D], got q ", q.describe(), ", k ", k.describe(),
                ", v ", v.describe());
  DISTILL_CHECK(is_attention_dtype(q.dtype()), op, ": q must be f32, f64, bf16 or f16, got ",
                q.describe());
  DISTILL_CHECK(k.dtype() == q.dtype() && v.dtype() == q.dtype(), op,
                ": q, k and v must share one dtype, got q ", q.describe(), ", k ", k.describe(),
                ", v ", v.describe());
  const Shape& qs = q.shape();
  const Shape& ks = k.shape();
  DISTILL_CHECK(ks == v.shape(), op, ": k and v must have the same shape [B, H, Lk, D], got k ",
                k.describe(), " and v ", v.describe());
  DISTILL_CHECK(qs[0] == ks[0] && qs[1] == ks[1] && qs[3] == ks[3], op,
                ": q [B, H, Lq, D] and k/v [B, H, Lk, D] must agree in B, H and D, got q ",
                q.describe(), " and k ", k.describe());
  Problem p;
  p.batch = qs[0];
  p.heads = qs[1];
  p.q_len = qs[2];
  p.kv_len = ks[2];
  p.head_dim = qs[3];
  DISTILL_CHECK(std::isfinite(scale), op, ": scale must be finite, got ", scale);
  p.scale =
      scale != 0 ? scale : 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(p.head_dim, 1)));
  if (q.device().is_cuda())
    DISTILL_CHECK(p.head_dim <= kernels::cuda::kAttentionMaxHeadDim, op,
                  ": the CUDA kernel supports head dims up to ",
                  kernels::cuda::kAttentionMaxHeadDim, ", got q ", q.describe());
  if (mask.key_keep.defined()) {
    const Tensor& m = mask.key_keep;
    DISTILL_CHECK(m.dim() == 2 && (m.size(0) == p.batch || m.size(0) == 1) && m.size(1) == p.kv_len,
                  op, ": key_keep mask must be [B, Lk] or [1, Lk] = [", p.batch, " or 1, ",
                  p.kv_len, "] for q ", q.describe(), " and k ", k.describe(), ", got ",
                  m.describe());
    NoGradGuard no_grad;
    Tensor keep = m.dtype() == DType::U8
                      ? m
                      : ne(m, zeros({1}, TensorOptions(m.dtype(), m.device())));  // nonzero -> 1
    p.key_keep = contiguous(keep);
  }
  return p;
}

kernels::AttentionArgs make_args(const Problem& p, DType dtype, const Tensor& q, const Tensor& k,
                                 const Tensor& v, bool causal) {
  kernels::AttentionArgs a;
  a.dtype = dtype;
  a.batch = p.batch;
  a.heads = p.heads;
  a.q_len = p.q_len;
  a.kv_len = p.kv_len;
  a.head_dim = p.head_dim;
  a.scale = p.scale;
  a.causal = causal;
  if (p.key_keep.defined()) {
    a.key_keep = p.key_keep.data<uint8_t>();
    a.key_keep_stride_b = p.key_keep.size(0) == 1 ? 0 : p.kv_len;
  }
  a.q = operand(q);
  a.k = operand(k);
  a.v = operand(v);
  return a;
}

AttentionForwardResult run_forward(const Problem& p, const Tensor& q_in, const Tensor& k_in,
                                   const Tensor& v_in, bool causal) {
  NoGradGuard no_grad;
  const Tensor q = with_unit_last_stride(q_in);
  const Tensor k = with_unit_last_stride(k_in);
  const Tensor v = with_unit_last_stride(v_in);
  const TensorOptions opts(q.dtype(), q.device());
  AttentionForwardResult r;
  r.out = Tensor::empty({p.batch, p.heads, p.q_len, p.head_dim}, opts);
  r.lse = Tensor::empty({p.batch, p.heads, p.q_len},
                        TensorOptions(kernels::attention_lse_dtype(q.dtype()), q.device()));
  if (r.out.numel() == 0) return r;
  kernels::AttentionArgs a = make_args(p, q.dtype(), q, k, v, causal);
  a.out = operand(r.out);
  a.lse = r.lse.data_ptr();
  DISTILL_DISPATCH(q.device(), attention_forward, a);
  return r;
}

}  // namespace

AttentionForwardResult attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                         const AttentionMask& mask, double scale) {
  const Problem p = check_problem("attention_forward", q, k, v, mask, scale);
  return run_forward(p, q, k, v, mask.causal);
}

AttentionGrads attention_backward(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                                  const Tensor& out_in, const Tensor& lse_in,
                                  const Tensor& grad_out_in, const AttentionMask& mask,
                                  double scale) {
  const char* op = "attention_backward";
  const Problem p = check_problem(op, q_in, k_in, v_in, mask, scale);
  check_defined(op, out_in, "out");
  check_defined(op, lse_in, "lse");
  check_defined(op, grad_out_in, "grad_out");
  check_same_device(op, {&q_in, &out_in, &lse_in, &grad_out_in});
  const Shape out_shape{p.batch, p.heads, p.q_len, p.head_dim};
  DISTILL_CHECK(out_in.shape() == out_shape && grad_out_in.shape() == out_shape, op,
                ": out and grad_out must be ", shape_str(out_shape), ", got ", out_in.describe(),
                " and ", grad_out_in.describe());
  const DType lse_dtype = kernels::attention_lse_dtype(q_in.dtype());
  DISTILL_CHECK(lse_in.shape() == Shape({p.batch, p.heads, p.q_len}) && lse_in.dtype() == lse_dtype,
                op, ": lse must be ", dtype_name(lse_dtype), "[", p.batch, ", ", p.heads, ", ",
                p.q_len, "], got ", lse_in.describe());

  NoGradGuard no_grad;
  const Tensor q = with_unit_last_stride(q_in);
  const Tensor k = with_unit_last_stride(k_in);
  const Tensor v = with_unit_last_stride(v_in);
  const Tensor out = with_unit_last_stride(to_dtype(out_in, q.dtype()));
  const Tensor grad_out = with_unit_last_stride(to_dtype(grad_out_in, q.dtype()));
  const Tensor lse = contiguous(lse_in);
  const TensorOptions opts(q.dtype(), q.device());
  AttentionGrads g;
  g.q = Tensor::empty(q.shape(), opts);
  g.k = Tensor::empty(k.shape(), opts);
  g.v = Tensor::empty(v.shape(), opts);
  if (g.q.numel() == 0 && g.k.numel() == 0) return g;
  if (g.q.numel() == 0 || g.k.numel() == 0) {  // Lq == 0 or Lk == 0: nothing flows anywhere
    g.q.fill_(0);
    g.k.fill_(0);
    g.v.fill_(0);
    return g;
  }
  kernels::AttentionArgs a = make_args(p, q.dtype(), q, k, v, mask.causal);
  a.out = operand(out);
  a.lse = lse.data_ptr();
  a.grad_out = operand(grad_out);
  a.grad_q = operand(g.q);
  a.grad_k = operand(g.k);
  a.grad_v = operand(g.v);
  DISTILL_DISPATCH(q.device(), attention_backward, a);
  return g;
}

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMask& mask,
                 double scale) {
  if (auto c = autocast_to_low({q, k, v})) return attention((*c)[0], (*c)[1], (*c)[2], mask, scale);
  const Problem p = check_problem(kOp, q, k, v, mask, scale);
  AttentionForwardResult r = run_forward(p, q, k, v, mask.causal);
  flops::add(4.0 * static_cast<double>(p.batch) * p.heads * p.q_len * p.kv_len * p.head_dim);
  if (any_requires_grad({&q, &k, &v})) {
    // Inputs are saved detached (the node already references them through its edges) and the
    // output detached, so the node does not keep itself alive through out's grad_fn.
    AttentionMask saved_mask{mask.causal, p.key_keep};
    record_fn(r.out, kOp, {q, k, v},
              [qd = q.detach(), kd = k.detach(), vd = v.detach(), out = r.out.detach(), lse = r.lse,
               saved_mask, resolved_scale = p.scale](const Tensor& grad) {
                AttentionGrads g =
                    attention_backward(qd, kd, vd, out, lse, grad, saved_mask, resolved_scale);
                return std::vector<Tensor>{g.q, g.k, g.v};
              });
  }
  return r.out;
}

}  // namespace distill
