// Matrix products. Everything funnels into one differentiable batched product on 3-D operands
// ([B, m, k] @ [B, k, n]); matmul's 1-D and broadcast cases are views around it, so their
// gradients come from the view ops (expand's backward sums over broadcast batch dims).
#include <algorithm>

#include "core/autocast.h"
#include "core/error.h"
#include "core/flops.h"
#include "core/ops.h"
#include "core/ops/dispatch.h"
#include "kernels/matmul.h"

namespace distill {

namespace {

// A [batch, rows, cols] operand as the GEMM kernel reads it: a row-major matrix, or the transpose
// of one, with a leading dimension and a batch stride (0 when the batch is broadcast).
struct GemmOperand {
  Tensor memory;  // keeps a contiguous copy alive when the view had to be materialised
  const void* data = nullptr;
  int64_t ld = 0, batch_stride = 0;
  bool transposed = false;
};

GemmOperand as_gemm_operand(const Tensor& t3) {
  const int64_t rows = t3.shape()[1], cols = t3.shape()[2];
  const int64_t row_stride = t3.strides()[1], col_stride = t3.strides()[2];
  GemmOperand op;
  op.memory = t3;
  // Size-1 dims have meaningless strides; BLAS only needs ld >= the stored row length.
  if ((cols == 1 || col_stride == 1) && (rows == 1 || row_stride >= std::max<int64_t>(cols, 1))) {
    op.ld = rows == 1 ? std::max<int64_t>(cols, 1) : row_stride;
  } else if ((rows == 1 || row_stride == 1) &&
             (cols == 1 || col_stride >= std::max<int64_t>(rows, 1))) {
    op.transposed = true;
    op.ld = cols == 1 ? std::max<int64_t>(rows, 1) : col_stride;
  } else {
    op.memory = clone(t3);  // e.g. a stride-0 (expanded) row or a gather-like view
    op.ld = std::max<int64_t>(cols, 1);
  }
  op.data = op.memory.data_ptr();
  op.batch_stride = op.memory.shape()[0] == 1 ? 0 : op.memory.strides()[0];
  return op;
}

void check_matmul_operands(const char* op, const Tensor& a, const Tensor& b) {
  check_defined(op, a, "a");
  check_defined(op, b, "b");
  check_same_device(op, {&a, &b});
  DISTILL_CHECK(a.dtype() == b.dtype(), op, ": dtype mismatch: ", a.describe(), " and ",
                b.describe());
  DISTILL_CHECK(is_floating(a.dtype()), op, ": needs floating tensors, got ", a.describe(), " and ",
                b.describe());
}

// out[B, m, n] = a[B, m, k] @ b[B, k, n] (+ bias[n]); batch dims of size 1 with stride 0 are
// broadcast by the kernel. Not differentiable by itself: callers record the node.
Tensor gemm_forward(const Tensor& a3, const Tensor& b3, const Tensor& bias) {
  NoGradGuard no_grad;
  const int64_t batch = a3.shape()[0], m = a3.shape()[1], k = a3.shape()[2], n = b3.shape()[2];
  Tensor out = Tensor::empty({batch, m, n}, TensorOptions(a3.dtype(), a3.device()));
  if (out.numel() == 0) return out;
  const GemmOperand a = as_gemm_operand(a3);
  const GemmOperand b = as_gemm_operand(b3);
  const Tensor bias_dense = bias.defined() ? contiguous(bias) : Tensor();
  kernels::GemmArgs args;
  args.dtype = a3.dtype();
  args.batch = batch;
  args.m = m;
  args.n = n;
  args.k = k;
  args.a = a.data;
  args.lda = a.ld;
  args.stride_a = a.batch_stride;
  args.trans_a = a.transposed;
  args.b = b.data;
  args.ldb = b.ld;
  args.stride_b = b.batch_stride;
  args.trans_b = b.transposed;
  args.c = out.data_ptr();
  args.ldc = n;
  args.stride_c = m * n;
  args.bias = bias_dense.defined() ? bias_dense.data_ptr() : nullptr;
  DISTILL_DISPATCH(a3.device(), gemm, args);
  flops::add(2.0 * static_cast<double>(batch) * m * n * k);
  return out;
}

// The differentiable core: [B, m, k] @ [B, k, n] with equal batch sizes.
Tensor batched_product(const Tensor& a3, const Tensor& b3) {
  Tensor out = gemm_forward(a3, b3, Tensor());
  const Tensor a = a3.detach(), b = b3.detach();
  const bool need_a = a3.requires_grad(), need_b = b3.requires_grad();
  record_fn(out, "bmm", {a3, b3}, [a, b, need_a, need_b](const Tensor& g) {
    // dA = dC @ B^T, dB = A^T @ dC; the transposes are free (the kernel reads them as views).
    return std::vector<Tensor>{need_a ? batched_product(g, transpose(b, 1, 2)) : Tensor(),
                               need_b ? batched_product(transpose(a, 1, 2), g) : Tensor()};
  });
  return out;
}

Shape concat_shapes(Shape head, const Shape& tail) {
  head.insert(head.end(), tail.begin(), tail.end());
  return head;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  if (auto c = autocast_to_low({a, b})) return matmul((*c)[0], (*c)[1]);
  check_matmul_operands("matmul", a, b);
  DISTILL_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul: needs tensors of rank >= 1, got ",
                a.describe(), " and ", b.describe());
  const int64_t k = a.shape().back();
  const int64_t k_b = b.dim() == 1 ? b.shape()[0] : b.shape()[b.dim() - 2];
  DISTILL_CHECK(k == k_b, "matmul: shapes ", shape_str(a.shape()), " and ", shape_str(b.shape()),
                " cannot be multiplied (", k, " != ", k_b, ")");

  // 1-D operands become matrices, and the added dim is removed from the result (torch rules).
  if (a.dim() == 1 && b.dim() == 1)
    return reshape(batched_product(reshape(a, {1, 1, k}), reshape(b, {1, k, 1})), {});
  if (b.dim() == 1) return squeeze(matmul(a, unsqueeze(b, 1)), -1);
  if (a.dim() == 1) return squeeze(matmul(unsqueeze(a, 0), b), -2);

  const int64_t m = a.shape()[a.dim() - 2], n = b.shape().back();
  const Shape batch_a(a.shape().begin(), a.shape().end() - 2);
  const Shape batch_b(b.shape().begin(), b.shape().end() - 2);
  if (b.dim() == 2) {
    // [..., m, k] @ [k, n]: fold a's batch into its rows, one GEMM instead of a batch of them.
    const Tensor a3 = a.dim() == 2 ? unsqueeze(a, 0) : reshape(a, {1, shape_numel(batch_a) * m, k});
    return reshape(batched_product(a3, unsqueeze(b, 0)), concat_shapes(batch_a, {m, n}));
  }
  const Shape batch = broadcast_shapes(batch_a, batch_b, "matmul");
  const int64_t batch_size = shape_numel(batch);
  const Tensor a3 = reshape(expand(a, concat_shapes(batch, {m, k})), {batch_size, m, k});
  const Tensor b3 = reshape(expand(b, concat_shapes(batch, {k, n})), {batch_size, k, n});
  return reshape(batched_product(a3, b3), concat_shapes(batch, {m, n}));
}

Tensor bmm(const Tensor& a, const Tensor& b) {
  if (auto c = autocast_to_low({a, b})) return bmm((*c)[0], (*c)[1]);
  check_matmul_operands("bmm", a, b);
  DISTILL_CHECK(
      a.dim() == 3 && b.dim() == 3 && a.shape()[0] == b.shape()[0] && a.shape()[2] == b.shape()[1],
      "bmm: expected [B, m, k] and [B, k, n], got ", shape_str(a.shape()), " and ",
      shape_str(b.shape()));
  return batched_product(a, b);
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  if (auto c = autocast_to_low({x, weight, bias})) return linear((*c)[0], (*c)[1], (*c)[2]);
  check_matmul_operands("linear", x, weight);
  DISTILL_CHECK(weight.dim() == 2, "linear: weight must be [out, in], got ", weight.describe());
  const int64_t in = weight.shape()[1], out_features = weight.shape()[0];
  DISTILL_CHECK(x.dim() >= 1 && x.shape().back() == in, "linear: input ", x.describe(),
                " does not match weight ", weight.describe(), " (last dim must be ", in, ")");
  if (bias.defined()) {
    check_same_device("linear", {&x, &bias});
    DISTILL_CHECK(bias.dtype() == x.dtype() && bias.dim() == 1 && bias.shape()[0] == out_features,
                  "linear: bias ", bias.describe(), " must be ", dtype_name(x.dtype()), "[",
                  out_features, "] to match weight ", weight.describe());
  }
  const Shape lead(x.shape().begin(), x.shape().end() - 1);
  const Tensor x3 = reshape(x, {1, shape_numel(lead), in});  // leading dims become GEMM rows
  const Tensor weight_t = unsqueeze(transpose(weight, 0, 1), 0);
  // Forward in one GEMM with the bias epilogue; the recorded node covers x, weight and bias.
  Tensor y;
  {
    NoGradGuard no_grad;
    y = gemm_forward(x3, weight_t, bias);
  }
  if (any_requires_grad({&x3, &weight, &bias})) {
    const Tensor xs = x3.detach(), ws = weight.detach();
    const bool need_x = x3.requires_grad(), need_w = weight.requires_grad();
    const bool need_b = bias.defined() && bias.requires_grad();
    record_fn(y, "linear", {x3, weight, bias}, [xs, ws, need_x, need_w, need_b](const Tensor& g) {
      const Tensor g2 = squeeze(g, 0);  // [rows, out]
      return std::vector<Tensor>{need_x ? unsqueeze(matmul(g2, ws), 0) : Tensor(),
                                 need_w ? matmul(transpose(g2, 0, 1), squeeze(xs, 0)) : Tensor(),
                                 need_b ? sum(g2, {0}) : Tensor()};
    });
  }
  return reshape(y, concat_shapes(lead, {out_features}));
}

}  // namespace distill
