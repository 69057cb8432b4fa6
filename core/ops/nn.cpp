// Neural-network ops: softmax family, layer norm, the indexing family (embedding, index_select,
// gather) and concat/stack. Kernels see contiguous buffers; the op layer moves the dim of
// interest into place and records one autograd node per op.
#include <algorithm>

#include "core/autocast.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/ops/dispatch.h"
#include "kernels/index.h"
#include "kernels/layer_norm.h"
#include "kernels/softmax.h"

namespace distill {

namespace {

void check_floating(const Tensor& x, const char* op) {
  DISTILL_CHECK(is_floating(x.dtype()), op, ": needs a floating tensor, got ", x.describe());
}

Tensor empty_like_contiguous(const Tensor& t) {
  return Tensor::empty(t.shape(), TensorOptions(t.dtype(), t.device()));
}

// ---- softmax family

Tensor softmax_impl(const Tensor& x, int64_t dim, bool log) {
  const char* op = log ? "log_softmax" : "softmax";
  check_defined(op, x, "x");
  check_floating(x, op);
  if (x.dim() == 0) {
    normalize_dim(dim, 1, op);
    return reshape(softmax_impl(reshape(x, {1}), 0, log), {});
  }
  const int64_t d = normalize_dim(dim, x.dim(), op), last = x.dim() - 1;
  const int64_t cols = x.shape()[d];
  const int64_t rows = cols == 0 ? 0 : x.numel() / cols;
  // The kernel works on the last axis: swap `dim` there, compute, and swap back (a view).
  Tensor y_moved, y;
  {
    NoGradGuard no_grad;
    const Tensor x_moved = contiguous(transpose(x, d, last));
    y_moved = empty_like_contiguous(x_moved);
    if (x.numel() > 0)
      DISTILL_DISPATCH(x.device(), softmax_forward, x_moved.view_desc(), rows, cols, log,
                       y_moved.view_desc());
    y = transpose(y_moved, d, last);
  }
  // y_moved is a separate handle on y's storage without a grad_fn: saving it is no cycle.
  const Tensor saved = y_moved;
  record_fn(y, op, {x}, [saved, d, last, rows, cols, log](const Tensor& g) {
    const Tensor g_moved = contiguous(transpose(g, d, last));
    Tensor dx = empty_like_contiguous(g_moved);
    if (g_moved.numel() > 0)
      DISTILL_DISPATCH(g.device(), softmax_backward, saved.view_desc(), g_moved.view_desc(), rows,
                       cols, log, dx.view_desc());
    return std::vector<Tensor>{transpose(dx, d, last)};
  });
  return y;
}

// ---- indexing helpers

void check_index_tensor(const char* op, const Tensor& index) {
  DISTILL_CHECK(index.dtype() == DType::I64 || index.dtype() == DType::I32, op,
                ": indices must be i64 or i32, got ", index.describe());
}

// Turns a kernel's "first bad position" into an error naming the value and the valid range.
void check_index_result(const char* op, int64_t bad_position, const Tensor& index_contiguous,
                        int64_t bound) {
  if (bad_position < 0) return;
  NoGradGuard no_grad;
  const int64_t value =
      slice(reshape(index_contiguous, {-1}), 0, bad_position, bad_position + 1).to_int_vector()[0];
  fail(op, ": index ", value, " out of range [0, ", bound, ") at position ", bad_position,
       " of indices ", index_contiguous.describe());
}

int64_t product(const Shape& s, int64_t begin, int64_t end) {
  int64_t p = 1;
  for (int64_t i = begin; i < end; ++i) p *= s[i];
  return p;
}

// index_select over dim `d` of contiguous `src` (any rank); differentiable w.r.t. src.
Tensor select_rows(const char* op, const Tensor& src, int64_t d, const Tensor& index,
                   const Shape& out_shape) {
  check_index_tensor(op, index);
  check_same_device(op, {&src, &index});
  Tensor src_c, index_c, out;
  kernels::IndexArgs args;
  {
    NoGradGuard no_grad;
    src_c = contiguous(src);
    index_c = contiguous(index);
    out = Tensor::empty(out_shape, TensorOptions(src.dtype(), src.device()));
    args.dtype = src.dtype();
    args.index_dtype = index.dtype();
    args.outer = product(src.shape(), 0, d);
    args.inner = product(src.shape(), d + 1, src.dim());
    args.src_n = src.shape()[d];
    args.idx_n = index.numel();
    if (out.numel() > 0 || index.numel() > 0) {
      const int64_t bad = DISTILL_DISPATCH(src.device(), index_select, args, src_c.data_ptr(),
                                           index_c.data_ptr(), out.data_ptr());
      check_index_result(op, bad, index_c, args.src_n);
    }
  }
  const Shape src_shape = src.shape();
  record_fn(out, op, {src}, [args, index_c, src_shape](const Tensor& g) {
    Tensor grad_src = zeros(src_shape, TensorOptions(g.dtype(), g.device()));
    const Tensor g_c = contiguous(g);
    kernels::IndexArgs a = args;
    a.dtype = g.dtype();
    if (g_c.numel() > 0)
      (void)DISTILL_DISPATCH(g.device(), index_add, a, g_c.data_ptr(), index_c.data_ptr(),
                             grad_src.data_ptr());
    return std::vector<Tensor>{grad_src};
  });
  return out;
}

// torch.gather where src and index agree on every dim but `d`.
Tensor gather_same_extent(const Tensor& src, int64_t d, const Tensor& index) {
  Tensor src_c, index_c, out;
  kernels::IndexArgs args;
  {
    NoGradGuard no_grad;
    src_c = contiguous(src);
    index_c = contiguous(index);
    out = Tensor::empty(index.shape(), TensorOptions(src.dtype(), src.device()));
    args.dtype = src.dtype();
    args.index_dtype = index.dtype();
    args.outer = product(index.shape(), 0, d);
    args.inner = product(index.shape(), d + 1, index.dim());
    args.src_n = src.shape()[d];
    args.idx_n = index.shape()[d];
    if (out.numel() > 0) {
      const int64_t bad = DISTILL_DISPATCH(src.device(), gather, args, src_c.data_ptr(),
                                           index_c.data_ptr(), out.data_ptr());
      check_index_result("gather", bad, index_c, args.src_n);
    }
  }
  const Shape src_shape = src.shape();
  record_fn(out, "gather", {src}, [args, index_c, src_shape](const Tensor& g) {
    Tensor grad_src = zeros(src_shape, TensorOptions(g.dtype(), g.device()));
    const Tensor g_c = contiguous(g);
    kernels::IndexArgs a = args;
    a.dtype = g.dtype();
    if (g_c.numel() > 0)
      (void)DISTILL_DISPATCH(g.device(), scatter_add, a, g_c.data_ptr(), index_c.data_ptr(),
                             grad_src.data_ptr());
    return std::vector<Tensor>{grad_src};
  });
  return out;
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) {
  if (auto c = autocast_to_fp32({x})) return softmax((*c)[0], dim);
  return softmax_impl(x, dim, /*log=*/false);
}
Tensor log_softmax(const Tensor& x, int64_t dim) {
  if (auto c = autocast_to_fp32({x})) return log_softmax((*c)[0], dim);
  return softmax_impl(x, dim, /*log=*/true);
}

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps,
                  int64_t normalized_dims) {
  if (auto c = autocast_to_fp32({x, weight, bias}))
    return layer_norm((*c)[0], (*c)[1], (*c)[2], eps, normalized_dims);
  check_defined("layer_norm", x, "x");
  check_floating(x, "layer_norm");
  check_same_device("layer_norm", {&x, &weight, &bias});
  const int64_t nd = weight.defined() ? weight.dim()
                     : bias.defined() ? bias.dim()
                                      : normalized_dims;
  DISTILL_CHECK(nd >= 1 && nd <= x.dim(), "layer_norm: cannot normalise the last ", nd, " dims of ",
                x.describe());
  const Shape norm_shape(x.shape().end() - nd, x.shape().end());
  for (const Tensor* p : {&weight, &bias}) {
    if (!p->defined()) continue;
    DISTILL_CHECK(p->shape() == norm_shape && p->dtype() == x.dtype(),
                  "layer_norm: ", p == &weight ? "weight " : "bias ", p->describe(), " must be ",
                  dtype_name(x.dtype()), shape_str(norm_shape), " for input ", x.describe());
  }
  const int64_t cols = shape_numel(norm_shape);
  const int64_t rows = cols == 0 ? 0 : x.numel() / cols;
  const DType stats_dtype = x.dtype() == DType::F64 ? DType::F64 : DType::F32;
  Tensor x_c, w_c, b_c, y, mean_stat, rstd_stat;
  {
    NoGradGuard no_grad;
    // Saved for the backward without their history (they are inputs, but the node only needs
    // their values).
    x_c = contiguous(x).detach();
    if (weight.defined()) w_c = contiguous(weight).detach();
    if (bias.defined()) b_c = contiguous(bias);
    y = empty_like_contiguous(x);
    mean_stat = Tensor::empty({rows}, TensorOptions(stats_dtype, x.device()));
    rstd_stat = Tensor::empty({rows}, TensorOptions(stats_dtype, x.device()));
    if (x.numel() > 0)
      DISTILL_DISPATCH(x.device(), layer_norm_forward, x_c.view_desc(),
                       w_c.defined() ? w_c.view_desc() : kernels::View{},
                       b_c.defined() ? b_c.view_desc() : kernels::View{}, rows, cols, eps,
                       y.view_desc(), mean_stat.view_desc(), rstd_stat.view_desc());
  }
  const bool need_w = weight.defined() && weight.requires_grad();
  const bool need_b = bias.defined() && bias.requires_grad();
  const Shape x_shape = x.shape();
  record_fn(y, "layer_norm", {x, weight, bias},
            [x_c, w_c, mean_stat, rstd_stat, rows, cols, need_w, need_b, norm_shape,
             x_shape](const Tensor& g) {
              const TensorOptions opts(g.dtype(), g.device());
              const Tensor g_c = contiguous(g);
              Tensor dx = Tensor::empty(x_shape, opts);
              Tensor dw = need_w ? zeros(norm_shape, opts) : Tensor();
              Tensor db = need_b ? zeros(norm_shape, opts) : Tensor();
              if (rows > 0) {
                DISTILL_DISPATCH(g.device(), layer_norm_backward, x_c.view_desc(),
                                 w_c.defined() ? w_c.view_desc() : kernels::View{},
                                 mean_stat.view_desc(), rstd_stat.view_desc(), g_c.view_desc(),
                                 rows, cols, dx.view_desc(),
                                 need_w ? dw.view_desc() : kernels::View{},
                                 need_b ? db.view_desc() : kernels::View{});
              }
              return std::vector<Tensor>{dx, dw, db};
            });
  return y;
}

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  check_defined("embedding", weight, "weight");
  check_defined("embedding", ids, "ids");
  DISTILL_CHECK(weight.dim() == 2, "embedding: weight must be [num, dim], got ", weight.describe());
  Shape out_shape = ids.shape();
  out_shape.push_back(weight.shape()[1]);
  return select_rows("embedding", weight, 0, reshape(ids, {-1}), out_shape);
}

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  check_defined("index_select", x, "x");
  check_defined("index_select", index, "index");
  DISTILL_CHECK(index.dim() <= 1, "index_select: index must be 1-D, got ", index.describe());
  DISTILL_CHECK(x.dim() >= 1, "index_select: needs a tensor of rank >= 1, got ", x.describe());
  const int64_t d = normalize_dim(dim, x.dim(), "index_select");
  Shape out_shape = x.shape();
  out_shape[d] = index.numel();
  return select_rows("index_select", x, d, reshape(index, {-1}), out_shape);
}

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  check_defined("gather", x, "x");
  check_defined("gather", index, "index");
  check_index_tensor("gather", index);
  check_same_device("gather", {&x, &index});
  DISTILL_CHECK(x.dim() >= 1 && index.dim() == x.dim(), "gather: index ", index.describe(),
                " must have the rank of input ", x.describe());
  const int64_t d = normalize_dim(dim, x.dim(), "gather");
  // Like torch.gather, index may be smaller than x on the other dims: narrow x to it first
  // (a differentiable view, so the gradient lands in the right place of the full input).
  Tensor narrowed = x;
  for (int64_t i = 0; i < x.dim(); ++i) {
    if (i == d) continue;
    DISTILL_CHECK(index.shape()[i] <= x.shape()[i], "gather: index ", index.describe(),
                  " is larger than input ", x.describe(), " at dim ", i);
    if (index.shape()[i] < x.shape()[i]) narrowed = slice(narrowed, i, 0, index.shape()[i]);
  }
  return gather_same_extent(narrowed, d, index);
}

Tensor concat(const std::vector<Tensor>& tensors, int64_t dim) {
  DISTILL_CHECK(!tensors.empty(), "concat: needs at least one tensor");
  const Tensor& first = tensors[0];
  for (size_t i = 0; i < tensors.size(); ++i) check_defined("concat", tensors[i], "tensors");
  const int64_t d = normalize_dim(dim, first.dim(), "concat");
  DISTILL_CHECK(first.dim() >= 1, "concat: cannot concatenate rank-0 tensors (use stack)");
  Shape out_shape = first.shape();
  out_shape[d] = 0;
  std::vector<int64_t> sizes;
  for (const Tensor& t : tensors) {
    bool compatible =
        t.dim() == first.dim() && t.dtype() == first.dtype() && t.device() == first.device();
    for (int64_t i = 0; compatible && i < first.dim(); ++i)
      compatible = i == d || t.shape()[i] == first.shape()[i];
    DISTILL_CHECK(compatible, "concat: ", t.describe(), " does not match ", first.describe(),
                  " (dtype, device and every dim but ", d, " must agree)");
    sizes.push_back(t.shape()[d]);
    out_shape[d] += t.shape()[d];
  }
  Tensor out = Tensor::empty(out_shape, TensorOptions(first.dtype(), first.device()));
  {
    NoGradGuard no_grad;
    int64_t start = 0;
    for (const Tensor& t : tensors) {
      slice(out, d, start, start + t.shape()[d]).copy_(t);
      start += t.shape()[d];
    }
  }
  record_fn(out, "concat", tensors, [sizes, d](const Tensor& g) {
    std::vector<Tensor> grads;
    int64_t start = 0;
    for (int64_t size : sizes) {
      grads.push_back(slice(g, d, start, start + size));
      start += size;
    }
    return grads;
  });
  return out;
}

Tensor stack(const std::vector<Tensor>& tensors, int64_t dim) {
  DISTILL_CHECK(!tensors.empty(), "stack: needs at least one tensor");
  for (const Tensor& t : tensors) {
    check_defined("stack", t, "tensors");
    DISTILL_CHECK(t.shape() == tensors[0].shape(), "stack: ", t.describe(), " does not match ",
                  tensors[0].describe());
  }
  const int64_t d = normalize_dim(dim, tensors[0].dim() + 1, "stack");
  std::vector<Tensor> expanded;
  expanded.reserve(tensors.size());
  for (const Tensor& t : tensors) expanded.push_back(unsqueeze(t, d));
  return concat(expanded, d);
}

}  // namespace distill
