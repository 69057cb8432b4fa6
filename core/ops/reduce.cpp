// Reductions over any set of dims. The reduced dims are permuted to the end and the input made
// contiguous, so one [rows, cols] kernel (kernels/reduce.h) serves every case.
#include "kernels/reduce.h"

#include <algorithm>

#include "core/error.h"
#include "core/ops.h"
#include "core/ops/dispatch.h"

namespace distill {

namespace {

using kernels::ReduceOp;

struct ReducePlan {
  std::vector<int64_t> reduced_dims;  // normalised, ascending
  Shape permutation;                  // kept dims (in order), then reduced dims
  Shape kept_shape;                   // output shape without keepdim
  Shape keepdim_shape;                // output shape with the reduced dims as 1
  int64_t rows = 1;                   // product of kept sizes
  int64_t cols = 1;                   // product of reduced sizes
};

// `dims` empty means every dim.
ReducePlan plan_reduction(const Tensor& x, const std::vector<int64_t>& dims, const char* op) {
  const int64_t n = x.dim();
  std::vector<bool> is_reduced(static_cast<size_t>(n), dims.empty());
  for (int64_t d : dims) {
    const int64_t nd = normalize_dim(d, std::max<int64_t>(n, 1), op);
    if (n == 0) continue;  // a scalar reduces over its (implicit) single element
    DISTILL_CHECK(!is_reduced[nd], op, ": dim ", d, " repeated in dims ", shape_str(dims), " for ",
                  x.describe());
    is_reduced[nd] = true;
  }
  ReducePlan plan;
  plan.keepdim_shape = x.shape();
  for (int64_t d = 0; d < n; ++d) {
    if (is_reduced[d]) {
      plan.reduced_dims.push_back(d);
      plan.cols *= x.shape()[d];
      plan.keepdim_shape[d] = 1;
    } else {
      plan.permutation.push_back(d);
      plan.kept_shape.push_back(x.shape()[d]);
      plan.rows *= x.shape()[d];
    }
  }
  plan.permutation.insert(plan.permutation.end(), plan.reduced_dims.begin(),
                          plan.reduced_dims.end());
  return plan;
}

Tensor run_reduce(ReduceOp op, const Tensor& x, const ReducePlan& plan, bool keepdim,
                  DType out_dtype, int64_t correction) {
  NoGradGuard no_grad;  // the caller records one node for the whole reduction
  const Tensor rows_by_cols = contiguous(permute(x, plan.permutation));
  Tensor out = Tensor::empty(keepdim ? plan.keepdim_shape : plan.kept_shape,
                             TensorOptions(out_dtype, x.device()));
  if (out.numel() > 0) {
    DISTILL_DISPATCH(x.device(), reduce_rows, op, rows_by_cols.data_ptr(), x.dtype(), plan.rows,
                     plan.cols, out.data_ptr(), out_dtype, correction);
  }
  return out;
}

// The output gradient broadcast back over the reduced dims (a stride-0 view, no copy).
Tensor expand_to_input(const Tensor& grad, const Shape& keepdim_shape, const Shape& input_shape) {
  return expand(reshape(grad, keepdim_shape), input_shape);
}

void check_floating(const Tensor& x, const char* op) {
  DISTILL_CHECK(is_floating(x.dtype()), op, ": needs a floating tensor, got ", x.describe());
}

void check_nonempty(const Tensor& x, const ReducePlan& plan, const char* op) {
  DISTILL_CHECK(plan.cols > 0 || plan.rows == 0, op, ": cannot reduce ", x.describe(),
                " over an empty dimension (no identity)");
}

// max/min: the gradient goes to every position equal to the result, split evenly between ties
// (PyTorch's amax/amin rule), so the backward is symmetric in tied elements.
Tensor reduce_extreme(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim,
                      bool want_max) {
  const char* op = want_max ? "max" : "min";
  check_defined(op, x, "x");
  const ReducePlan plan = plan_reduction(x, dims, op);
  check_nonempty(x, plan, op);
  Tensor out = run_reduce(want_max ? ReduceOp::Max : ReduceOp::Min, x, plan, keepdim, x.dtype(), 0);
  if (any_requires_grad({&x})) {
    const Tensor input = x.detach();
    const Tensor result = reshape(out.detach(), plan.keepdim_shape);
    record_fn(out, op, {x}, [input, result, plan](const Tensor& g) {
      const Tensor hits = to_dtype(eq(input, result), g.dtype());
      const Tensor ties = sum(hits, plan.reduced_dims, /*keepdim=*/true);
      return std::vector<Tensor>{mul(hits, div(reshape(g, plan.keepdim_shape), ties))};
    });
  }
  return out;
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  check_defined("sum", x, "x");
  const ReducePlan plan = plan_reduction(x, dims, "sum");
  // Integer sums widen to I64 (like PyTorch) so they do not overflow.
  const DType out_dtype = is_floating(x.dtype()) ? x.dtype() : DType::I64;
  Tensor out = run_reduce(ReduceOp::Sum, x, plan, keepdim, out_dtype, 0);
  const Shape in_shape = x.shape();
  record_fn(out, "sum", {x}, [plan, in_shape](const Tensor& g) {
    return std::vector<Tensor>{expand_to_input(g, plan.keepdim_shape, in_shape)};
  });
  return out;
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  check_defined("mean", x, "x");
  check_floating(x, "mean");
  const ReducePlan plan = plan_reduction(x, dims, "mean");
  Tensor out = run_reduce(ReduceOp::Mean, x, plan, keepdim, x.dtype(), 0);
  const Shape in_shape = x.shape();
  record_fn(out, "mean", {x}, [plan, in_shape](const Tensor& g) {
    const double scale = 1.0 / static_cast<double>(plan.cols);
    return std::vector<Tensor>{expand_to_input(mul(g, scale), plan.keepdim_shape, in_shape)};
  });
  return out;
}

Tensor max(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return reduce_extreme(x, dims, keepdim, /*want_max=*/true);
}

Tensor min(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return reduce_extreme(x, dims, keepdim, /*want_max=*/false);
}

Tensor var(const Tensor& x, const std::vector<int64_t>& dims, int64_t correction, bool keepdim) {
  check_defined("var", x, "x");
  check_floating(x, "var");
  DISTILL_CHECK(correction >= 0, "var: correction must be non-negative, got ", correction);
  const ReducePlan plan = plan_reduction(x, dims, "var");
  Tensor out = run_reduce(ReduceOp::Var, x, plan, keepdim, x.dtype(), correction);
  if (any_requires_grad({&x})) {
    const Tensor input = x.detach();
    record_fn(out, "var", {x}, [input, plan, correction](const Tensor& g) {
      // d var / d x_i = 2 (x_i - mean) / (N - correction)
      const double scale = 2.0 / static_cast<double>(plan.cols - correction);
      const Tensor centered = sub(input, mean(input, plan.reduced_dims, /*keepdim=*/true));
      return std::vector<Tensor>{mul(mul(centered, reshape(g, plan.keepdim_shape)), scale)};
    });
  }
  return out;
}

Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) {
  check_defined("argmax", x, "x");
  const ReducePlan plan = plan_reduction(x, {dim}, "argmax");
  check_nonempty(x, plan, "argmax");
  return run_reduce(ReduceOp::ArgMax, x, plan, keepdim, DType::I64, 0);
}

}  // namespace distill
