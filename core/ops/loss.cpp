// Fused softmax-cross-entropy ops (kernels/cross_entropy.h). The forward kernel writes the
// per-row losses and the row statistics its backward needs; the reduction over rows is a plain
// sum, and the backward kernel receives the incoming gradient as a per-row view (stride 0 for
// Sum/Mean), so one kernel launch per direction does all the per-element work.
#include <cmath>

#include "core/error.h"
#include "core/ops.h"
#include "core/ops/dispatch.h"
#include "kernels/cross_entropy.h"

namespace distill {

namespace {

// Losses, statistics and gradients of the loss live in fp32 (fp64 for fp64 logits).
DType accum_dtype(DType logits_dtype) {
  return logits_dtype == DType::F64 ? DType::F64 : DType::F32;
}

kernels::View view_or_empty(const Tensor& t) {
  return t.defined() ? t.view_desc() : kernels::View{};
}

const char* reduction_name(Reduction r) {
  switch (r) {
    case Reduction::None:
      return "none";
    case Reduction::Mean:
      return "mean";
    case Reduction::Sum:
      return "sum";
  }
  return "?";
}

void check_logits(const char* op, const Tensor& logits) {
  check_defined(op, logits, "logits");
  DISTILL_CHECK(logits.dim() == 2, op, ": logits must be [N, C], got ", logits.describe());
  DISTILL_CHECK(is_floating(logits.dtype()), op, ": logits must be floating, got ",
                logits.describe());
  DISTILL_CHECK(logits.size(1) > 0, op, ": logits need at least one class, got ",
                logits.describe());
}

void check_temperature(const char* op, double temperature) {
  DISTILL_CHECK(std::isfinite(temperature) && temperature > 0, op,
                ": temperature must be a positive finite number, got ", temperature);
}

// Row losses [N] -> the requested reduction. `count` divides the sum for Mean.
Tensor reduce_rows(const Tensor& row_loss, Reduction reduction, const Tensor& count) {
  switch (reduction) {
    case Reduction::None:
      return row_loss;
    case Reduction::Sum:
      return sum(row_loss);
    case Reduction::Mean:
      return div(sum(row_loss), count);
  }
  fail("cross_entropy: unknown reduction");
}

// The incoming gradient as one value per row: [N] for None, a stride-0 broadcast of the scalar
// (divided by the count for Mean) otherwise.
Tensor per_row_grad(const Tensor& grad, Reduction reduction, const Tensor& count, int64_t rows,
                    DType acc) {
  Tensor g = to_dtype(grad, acc);
  if (reduction == Reduction::None) return g;
  if (reduction == Reduction::Mean) g = div(g, count);
  return expand(reshape(g, {1}), {rows});
}

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& labels,
                     const CrossEntropyOptions& options) {
  const char* op = "cross_entropy";
  check_logits(op, logits);
  check_defined(op, labels, "labels");
  check_same_device(op, {&logits, &labels});
  DISTILL_CHECK(labels.dtype() == DType::I64 || labels.dtype() == DType::I32, op,
                ": labels must be I64 or I32 class indices, got ", labels.describe());
  DISTILL_CHECK(labels.dim() == 1 && labels.size(0) == logits.size(0), op, ": labels ",
                labels.describe(), " do not match logits ", logits.describe(),
                " (expected [N] with N = ", logits.size(0), ")");
  DISTILL_CHECK(options.label_smoothing >= 0 && options.label_smoothing <= 1, op,
                ": label_smoothing must be in [0, 1], got ", options.label_smoothing);
  check_temperature(op, options.temperature);

  const int64_t rows = logits.size(0), cols = logits.size(1);
  Tensor z, y;
  {
    NoGradGuard no_grad;
    z = contiguous(logits.detach());
    y = contiguous(to_dtype(labels.detach(), DType::I64));
  }
  if (y.device().is_cpu()) {
    const int64_t* lab = y.data<int64_t>();
    for (int64_t r = 0; r < rows; ++r) {
      DISTILL_CHECK(lab[r] == options.ignore_index || (lab[r] >= 0 && lab[r] < cols), op,
                    ": label ", lab[r], " at row ", r, " is out of range for ", cols,
                    " classes (logits ", logits.describe(), ", ignore_index ", options.ignore_index,
                    ")");
    }
  }

  const DType acc = accum_dtype(z.dtype());
  const Device device = z.device();
  Tensor row_loss = Tensor::empty({rows}, TensorOptions(acc, device));
  Tensor stats = Tensor::empty({rows, 2}, TensorOptions(acc, device));
  Tensor valid;
  if (options.reduction == Reduction::Mean)
    valid = Tensor::empty({rows}, TensorOptions(acc, device));
  kernels::CrossEntropyArgs args;
  args.rows = rows;
  args.cols = cols;
  args.inv_temperature = 1.0 / options.temperature;
  args.ignore_index = options.ignore_index;
  args.label_smoothing = options.label_smoothing;
  if (rows > 0) {
    DISTILL_DISPATCH(device, cross_entropy_forward, z.view_desc(), y.view_desc(), args,
                     row_loss.view_desc(), stats.view_desc(), view_or_empty(valid));
  }
  Tensor count, out;
  {
    NoGradGuard no_grad;
    if (valid.defined()) count = sum(valid);
    out = reduce_rows(row_loss, options.reduction, count);
  }
  const Reduction reduction = options.reduction;
  record_fn(out, op, {logits}, [z, y, stats, count, args, reduction, acc](const Tensor& grad) {
    const Tensor g = per_row_grad(grad, reduction, count, args.rows, acc);
    Tensor dz = Tensor::empty(z.shape(), TensorOptions(z.dtype(), z.device()));
    if (args.rows > 0) {
      DISTILL_DISPATCH(z.device(), cross_entropy_backward, z.view_desc(), y.view_desc(),
                       stats.view_desc(), g.view_desc(), args, dz.view_desc());
    }
    return std::vector<Tensor>{dz};
  });
  return out;
}

Tensor soft_cross_entropy(const Tensor& logits, const Tensor& target, double temperature,
                          Reduction reduction) {
  const char* op = "soft_cross_entropy";
  check_logits(op, logits);
  check_defined(op, target, "target");
  check_same_device(op, {&logits, &target});
  DISTILL_CHECK(is_floating(target.dtype()), op, ": target must be floating probabilities, got ",
                target.describe());
  DISTILL_CHECK(target.shape() == logits.shape(), op, ": target ", target.describe(),
                " must have the shape of logits ", logits.describe());
  check_temperature(op, temperature);
  DISTILL_CHECK(
      reduction == Reduction::None || reduction == Reduction::Mean || reduction == Reduction::Sum,
      op, ": unknown reduction ", reduction_name(reduction));

  const int64_t rows = logits.size(0), cols = logits.size(1);
  const DType acc = accum_dtype(logits.dtype());
  Tensor z, t;
  {
    NoGradGuard no_grad;
    z = contiguous(logits.detach());
    t = contiguous(to_dtype(target.detach(), acc));
  }
  const Device device = z.device();
  Tensor row_loss = Tensor::empty({rows}, TensorOptions(acc, device));
  Tensor stats = Tensor::empty({rows, 2}, TensorOptions(acc, device));
  Tensor target_sum = Tensor::empty({rows}, TensorOptions(acc, device));
  kernels::CrossEntropyArgs args;
  args.rows = rows;
  args.cols = cols;
  args.inv_temperature = 1.0 / temperature;
  if (rows > 0) {
    DISTILL_DISPATCH(device, soft_cross_entropy_forward, z.view_desc(), t.view_desc(), args,
                     row_loss.view_desc(), stats.view_desc(), target_sum.view_desc());
  }
  Tensor count, out;
  {
    NoGradGuard no_grad;
    count = full({}, static_cast<double>(rows), TensorOptions(acc, device));
    out = reduce_rows(row_loss, reduction, count);
  }
  record_fn(out, op, {logits},
            [z, t, stats, target_sum, count, args, reduction, acc](const Tensor& grad) {
              const Tensor g = per_row_grad(grad, reduction, count, args.rows, acc);
              Tensor dz = Tensor::empty(z.shape(), TensorOptions(z.dtype(), z.device()));
              if (args.rows > 0) {
                DISTILL_DISPATCH(z.device(), soft_cross_entropy_backward, z.view_desc(),
                                 t.view_desc(), stats.view_desc(), target_sum.view_desc(),
                                 g.view_desc(), args, dz.view_desc());
              }
              return std::vector<Tensor>{dz};
            });
  return out;
}

}  // namespace distill
