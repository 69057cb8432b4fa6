// Elementwise ops: unary math, scalar arithmetic, broadcasting binary ops, comparisons, where,
// masked_fill, sum_to and dropout. Binary inputs are broadcast by handing the kernels stride-0
// views of the output's shape; their backwards reduce gradients with sum_to.
#include "kernels/elementwise.h"

#include <cmath>
#include <optional>
#include <utility>

#include "core/error.h"
#include "core/ops.h"
#include "core/ops/dispatch.h"
#include "kernels/random.h"

namespace distill {

using kernels::BinaryOp;
using kernels::CompareOp;
using kernels::UnaryOp;

namespace {

// ---- argument checks

void check_floating(const char* op, const Tensor& x) {
  DISTILL_CHECK(is_floating(x.dtype()), op, ": needs a floating-point tensor, got ", x.describe());
}

void check_same_dtype(const char* op, const Tensor& a, const Tensor& b) {
  DISTILL_CHECK(a.dtype() == b.dtype(), op, ": dtype mismatch between ", a.describe(), " and ",
                b.describe(), " (cast one with to_dtype)");
}

// PyTorch's type promotion between floating dtypes: the wider wins (f64 > f32 > bf16/f16), and
// bf16 with f16 meet at f32. It is what makes autocast compose: a bf16 matmul output added to an
// f32 residual or parameter gives f32, as in torch.autocast. Integer/floating mixes stay errors.
DType promoted_floating(DType a, DType b) {
  if (a == DType::F64 || b == DType::F64) return DType::F64;
  if (a == DType::F32 || b == DType::F32) return DType::F32;
  return DType::F32;  // {bf16, f16}
}
// The inputs cast to their promoted dtype, or nullopt when no cast is needed or possible.
std::optional<std::pair<Tensor, Tensor>> promote(const Tensor& a, const Tensor& b) {
  if (!a.defined() || !b.defined() || a.dtype() == b.dtype() || !is_floating(a.dtype()) ||
      !is_floating(b.dtype()))
    return std::nullopt;
  const DType t = promoted_floating(a.dtype(), b.dtype());
  return std::make_pair(to_dtype(a, t), to_dtype(b, t));
}

// Kernel descriptor of `t` viewed at the broadcast `shape` (stride 0 on broadcast dims); no
// autograd involvement, unlike expand().
kernels::View broadcast_desc(const Tensor& t, const Shape& shape, const char* op) {
  DISTILL_CHECK(static_cast<int64_t>(shape.size()) <= kernels::kMaxDims, op, ": result of rank ",
                shape.size(), " exceeds the kernel limit of ", kernels::kMaxDims, " dims");
  kernels::View v = t.view_desc();
  const size_t lead = shape.size() - t.shape().size();
  v.ndim = static_cast<int>(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) {
    const bool broadcast = i < lead || (t.shape()[i - lead] == 1 && shape[i] != 1);
    v.shape[i] = shape[i];
    v.strides[i] = broadcast ? 0 : t.strides()[i - lead];
  }
  return v;
}

// ---- unary

// Which saved tensors an op's derivative reads (kernels/cpu/elementwise.cpp: (x, y, g)).
bool derivative_needs_input(UnaryOp op) {
  switch (op) {
    case UnaryOp::Log:
    case UnaryOp::Relu:
    case UnaryOp::Gelu:
    case UnaryOp::QuickGelu:
    case UnaryOp::Abs:
    case UnaryOp::PowScalar:
      return true;
    default:
      return false;
  }
}
bool derivative_needs_output(UnaryOp op) {
  switch (op) {
    case UnaryOp::Exp:
    case UnaryOp::Sqrt:
    case UnaryOp::Rsqrt:
    case UnaryOp::Tanh:
    case UnaryOp::Sigmoid:
      return true;
    default:
      return false;
  }
}
bool integer_supported(UnaryOp op) {
  return op == UnaryOp::Neg || op == UnaryOp::Abs || op == UnaryOp::AddScalar ||
         op == UnaryOp::MulScalar;
}

// grad * d(op)/dx through the backend's unary_backward kernel (which wants contiguous operands
// of one dtype). `x` / `y` may be undefined when the derivative does not read them.
Tensor unary_grad(UnaryOp op, const Tensor& grad, const Tensor& x, const Tensor& y, double s,
                  DType dtype) {
  const Tensor g = contiguous(to_dtype(grad, dtype));
  const Tensor xc = x.defined() ? contiguous(x) : g;
  const Tensor yc = y.defined() ? contiguous(y) : g;
  Tensor grad_in = Tensor::empty(g.shape(), TensorOptions(dtype, g.device()));
  if (grad_in.numel() > 0)
    DISTILL_DISPATCH(g.device(), unary_backward, op, xc.view_desc(), yc.view_desc(), g.view_desc(),
                     grad_in.view_desc(), s);
  return grad_in;
}

Tensor unary_op(UnaryOp op, const char* name, const Tensor& x, double s = 0.0) {
  check_defined(name, x, "x");
  if (!is_floating(x.dtype())) {
    DISTILL_CHECK(integer_supported(op), name, ": needs a floating-point tensor, got ",
                  x.describe());
    DISTILL_CHECK(std::nearbyint(s) == s, name, ": non-integer scalar ", s, " for integer tensor ",
                  x.describe());
  }
  Tensor y = Tensor::empty(x.shape(), TensorOptions(x.dtype(), x.device()));
  if (y.numel() > 0) DISTILL_DISPATCH(x.device(), unary, op, x.view_desc(), y.view_desc(), s);
  if (any_requires_grad({&x})) {
    const Tensor saved_x = derivative_needs_input(op) ? x.detach() : Tensor();
    const Tensor saved_y = derivative_needs_output(op) ? y.detach() : Tensor();
    const DType dtype = x.dtype();
    record_fn(y, name, {x}, [op, saved_x, saved_y, s, dtype](const Tensor& g) {
      return std::vector<Tensor>{unary_grad(op, g, saved_x, saved_y, s, dtype)};
    });
  }
  return y;
}

// ---- binary

struct Broadcast {
  Shape shape;
  kernels::View a, b;
};

Broadcast prepare_binary(const char* name, const Tensor& a, const Tensor& b) {
  check_defined(name, a, "a");
  check_defined(name, b, "b");
  check_same_device(name, {&a, &b});
  check_same_dtype(name, a, b);
  Broadcast bc;
  bc.shape = broadcast_shapes(a.shape(), b.shape(), name);
  bc.a = broadcast_desc(a, bc.shape, name);
  bc.b = broadcast_desc(b, bc.shape, name);
  return bc;
}

Tensor binary_forward(BinaryOp op, const char* name, const Tensor& a, const Tensor& b) {
  if (op == BinaryOp::Div || op == BinaryOp::Pow) {
    check_floating(name, a);
    check_floating(name, b);
  }
  const Broadcast bc = prepare_binary(name, a, b);
  Tensor out = Tensor::empty(bc.shape, TensorOptions(a.dtype(), a.device()));
  if (out.numel() > 0) DISTILL_DISPATCH(a.device(), binary, op, bc.a, bc.b, out.view_desc());
  return out;
}

// Gradient for one input of a binary op: computed only when that input wants it, then summed
// over the dims it was broadcast along.
template <typename F>
Tensor input_grad(bool wanted, const Shape& shape, F compute) {
  if (!wanted) return Tensor();
  return sum_to(compute(), shape);
}

Tensor compare_op(CompareOp op, const char* name, const Tensor& a, const Tensor& b) {
  if (auto p = promote(a, b)) return compare_op(op, name, p->first, p->second);
  const Broadcast bc = prepare_binary(name, a, b);
  Tensor out = Tensor::empty(bc.shape, TensorOptions(DType::U8, a.device()));
  if (out.numel() > 0) DISTILL_DISPATCH(a.device(), compare, op, bc.a, bc.b, out.view_desc());
  return out;
}

Tensor scalar_like(double value, const Tensor& t) {
  return full({}, value, TensorOptions(t.dtype(), t.device()));
}

// Weight of `a` in the gradient of maximum (is_max) or minimum: 1 where a is selected, 0 where b
// is, and 1/2 on ties, which splits the gradient evenly between the two inputs as PyTorch does.
Tensor selection_weight(const Tensor& a, const Tensor& b, bool is_max) {
  const Tensor wins = to_dtype(is_max ? gt(a, b) : lt(a, b), a.dtype());
  const Tensor ties = to_dtype(eq(a, b), a.dtype());
  return add(wins, mul(ties, 0.5));
}

Tensor extremum(const char* name, bool is_max, const Tensor& a, const Tensor& b) {
  if (auto p = promote(a, b)) return extremum(name, is_max, p->first, p->second);
  Tensor out = binary_forward(is_max ? BinaryOp::Maximum : BinaryOp::Minimum, name, a, b);
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  record_fn(out, name, {a, b},
            [sa = a.shape(), sb = b.shape(), ad = a.detach(), bd = b.detach(), ga, gb,
             is_max](const Tensor& g) {
              const Tensor wa = selection_weight(ad, bd, is_max);
              return std::vector<Tensor>{input_grad(ga, sa, [&] { return mul(g, wa); }),
                                         input_grad(gb, sb, [&] { return sub(g, mul(g, wa)); })};
            });
  return out;
}

}  // namespace

// ---- binary arithmetic

Tensor add(const Tensor& a, const Tensor& b) {
  if (auto p = promote(a, b)) return add(p->first, p->second);
  Tensor out = binary_forward(BinaryOp::Add, "add", a, b);
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  record_fn(out, "add", {a, b}, [sa = a.shape(), sb = b.shape(), ga, gb](const Tensor& g) {
    return std::vector<Tensor>{input_grad(ga, sa, [&] { return g; }),
                               input_grad(gb, sb, [&] { return g; })};
  });
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  if (auto p = promote(a, b)) return sub(p->first, p->second);
  Tensor out = binary_forward(BinaryOp::Sub, "sub", a, b);
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  record_fn(out, "sub", {a, b}, [sa = a.shape(), sb = b.shape(), ga, gb](const Tensor& g) {
    return std::vector<Tensor>{input_grad(ga, sa, [&] { return g; }),
                               input_grad(gb, sb, [&] { return neg(g); })};
  });
  return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  if (auto p = promote(a, b)) return mul(p->first, p->second);
  Tensor out = binary_forward(BinaryOp::Mul, "mul", a, b);
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  if (!ga && !gb) return out;
  // Each side's gradient reads only the other side, so save just what is needed.
  record_fn(out, "mul", {a, b},
            [sa = a.shape(), sb = b.shape(), ad = gb ? a.detach() : Tensor(),
             bd = ga ? b.detach() : Tensor(), ga, gb](const Tensor& g) {
              return std::vector<Tensor>{input_grad(ga, sa, [&] { return mul(g, bd); }),
                                         input_grad(gb, sb, [&] { return mul(g, ad); })};
            });
  return out;
}

Tensor div(const Tensor& a, const Tensor& b) {
  if (auto p = promote(a, b)) return div(p->first, p->second);
  Tensor out = binary_forward(BinaryOp::Div, "div", a, b);
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  if (!ga && !gb) return out;
  // d(a/b)/db = -a/b^2 = -out/b.
  record_fn(out, "div", {a, b},
            [sa = a.shape(), sb = b.shape(), bd = b.detach(), od = gb ? out.detach() : Tensor(), ga,
             gb](const Tensor& g) {
              return std::vector<Tensor>{
                  input_grad(ga, sa, [&] { return div(g, bd); }),
                  input_grad(gb, sb, [&] { return neg(div(mul(g, od), bd)); })};
            });
  return out;
}

Tensor pow(const Tensor& a, const Tensor& b) {
  if (auto p = promote(a, b)) return pow(p->first, p->second);
  Tensor out = binary_forward(BinaryOp::Pow, "pow", a, b);
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  if (!ga && !gb) return out;
  record_fn(out, "pow", {a, b},
            [sa = a.shape(), sb = b.shape(), ad = a.detach(), bd = b.detach(),
             od = gb ? out.detach() : Tensor(), ga, gb](const Tensor& g) {
              // d/da a^b = b a^(b-1).
              auto grad_base = [&] { return mul(g, mul(bd, pow(ad, add(bd, -1.0)))); };
              // d/db a^b = a^b log(a); defined as 0 where a == 0 and b >= 0 (PyTorch's choice:
              // the limit along a -> 0+), NaN for negative bases.
              auto grad_exponent = [&] {
                const Tensor zero = scalar_like(0.0, ad);
                const Tensor at_zero = mul(eq(ad, zero), ge(bd, zero));
                return mul(g, masked_fill(mul(od, log(ad)), at_zero, 0.0));
              };
              return std::vector<Tensor>{input_grad(ga, sa, grad_base),
                                         input_grad(gb, sb, grad_exponent)};
            });
  return out;
}

// Gradient of maximum/minimum: to the selected input; ties split evenly (1/2 each), like
// PyTorch, so maximum(x, x) has gradient 1 in x.
Tensor maximum(const Tensor& a, const Tensor& b) {
  return extremum("maximum", true, a, b);
}
Tensor minimum(const Tensor& a, const Tensor& b) {
  return extremum("minimum", false, a, b);
}

// ---- scalar arithmetic and unary math

Tensor add(const Tensor& a, double s) {
  return unary_op(UnaryOp::AddScalar, "add", a, s);
}
Tensor mul(const Tensor& a, double s) {
  return unary_op(UnaryOp::MulScalar, "mul", a, s);
}
Tensor pow(const Tensor& a, double exponent) {
  check_floating("pow", a);
  return unary_op(UnaryOp::PowScalar, "pow", a, exponent);
}
Tensor neg(const Tensor& x) {
  return unary_op(UnaryOp::Neg, "neg", x);
}
Tensor exp(const Tensor& x) {
  return unary_op(UnaryOp::Exp, "exp", x);
}
Tensor log(const Tensor& x) {
  return unary_op(UnaryOp::Log, "log", x);
}
Tensor sqrt(const Tensor& x) {
  return unary_op(UnaryOp::Sqrt, "sqrt", x);
}
Tensor rsqrt(const Tensor& x) {
  return unary_op(UnaryOp::Rsqrt, "rsqrt", x);
}
Tensor tanh(const Tensor& x) {
  return unary_op(UnaryOp::Tanh, "tanh", x);
}
Tensor sigmoid(const Tensor& x) {
  return unary_op(UnaryOp::Sigmoid, "sigmoid", x);
}
Tensor relu(const Tensor& x) {
  return unary_op(UnaryOp::Relu, "relu", x);
}
Tensor gelu(const Tensor& x) {
  return unary_op(UnaryOp::Gelu, "gelu", x);
}
Tensor quick_gelu(const Tensor& x) {
  return unary_op(UnaryOp::QuickGelu, "quick_gelu", x);
}
Tensor abs(const Tensor& x) {
  return unary_op(UnaryOp::Abs, "abs", x);
}

// ---- comparisons

Tensor eq(const Tensor& a, const Tensor& b) {
  return compare_op(CompareOp::Eq, "eq", a, b);
}
Tensor ne(const Tensor& a, const Tensor& b) {
  return compare_op(CompareOp::Ne, "ne", a, b);
}
Tensor lt(const Tensor& a, const Tensor& b) {
  return compare_op(CompareOp::Lt, "lt", a, b);
}
Tensor le(const Tensor& a, const Tensor& b) {
  return compare_op(CompareOp::Le, "le", a, b);
}
Tensor gt(const Tensor& a, const Tensor& b) {
  return compare_op(CompareOp::Gt, "gt", a, b);
}
Tensor ge(const Tensor& a, const Tensor& b) {
  return compare_op(CompareOp::Ge, "ge", a, b);
}

// ---- selection

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_defined("where", cond, "cond");
  check_defined("where", a, "a");
  check_defined("where", b, "b");
  check_same_device("where", {&cond, &a, &b});
  DISTILL_CHECK(cond.dtype() == DType::U8, "where: condition must be u8, got ", cond.describe());
  if (auto p = promote(a, b)) return where(cond, p->first, p->second);
  check_same_dtype("where", a, b);
  const Shape shape =
      broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  Tensor out = Tensor::empty(shape, TensorOptions(a.dtype(), a.device()));
  if (out.numel() > 0)
    DISTILL_DISPATCH(a.device(), where, broadcast_desc(cond, shape, "where"),
                     broadcast_desc(a, shape, "where"), broadcast_desc(b, shape, "where"),
                     out.view_desc());
  const bool ga = a.requires_grad(), gb = b.requires_grad();
  if (!ga && !gb) return out;
  record_fn(out, "where", {a, b},
            [sa = a.shape(), sb = b.shape(), c = cond.detach(), ga, gb](const Tensor& g) {
              const Tensor zero = scalar_like(0.0, g);
              return std::vector<Tensor>{input_grad(ga, sa, [&] { return where(c, g, zero); }),
                                         input_grad(gb, sb, [&] { return where(c, zero, g); })};
            });
  return out;
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  check_defined("masked_fill", x, "x");
  check_defined("masked_fill", mask, "mask");
  DISTILL_CHECK(mask.dtype() == DType::U8, "masked_fill: mask must be u8, got ", mask.describe());
  DISTILL_CHECK(broadcast_shapes(x.shape(), mask.shape(), "masked_fill") == x.shape(),
                "masked_fill: mask ", mask.describe(), " does not broadcast to ", x.describe());
  // Differentiable through where: the filled positions get no gradient.
  return where(mask, scalar_like(value, x), x);
}

// ---- broadcasting support

Tensor sum_to(const Tensor& x, const Shape& shape) {
  check_defined("sum_to", x, "x");
  if (x.shape() == shape) return x;
  const size_t rank = x.shape().size();
  DISTILL_CHECK(shape.size() <= rank, "sum_to: cannot sum ", x.describe(), " down to ",
                shape_str(shape));
  const size_t lead = rank - shape.size();
  std::vector<int64_t> dims;
  for (size_t i = 0; i < rank; ++i) {
    if (i < lead) {
      dims.push_back(static_cast<int64_t>(i));
      continue;
    }
    const int64_t target = shape[i - lead];
    DISTILL_CHECK(target == x.shape()[i] || target == 1, "sum_to: cannot sum ", x.describe(),
                  " down to ", shape_str(shape));
    if (target == 1 && x.shape()[i] != 1) dims.push_back(static_cast<int64_t>(i));
  }
  // An empty dims list would mean "all dims" to sum(); only leading size-1 dims differ then.
  if (dims.empty()) return reshape(x, shape);
  return reshape(sum(x, dims, /*keepdim=*/true), shape);
}

// ---- dropout

Tensor dropout(const Tensor& x, double p, bool training, Generator* gen) {
  check_defined("dropout", x, "x");
  DISTILL_CHECK(p >= 0.0 && p <= 1.0, "dropout: probability must be in [0, 1], got ", p);
  if (!training || p == 0.0) return x;
  check_floating("dropout", x);
  const Tensor xc = contiguous(x);
  Tensor out = Tensor::empty(xc.shape(), TensorOptions(xc.dtype(), xc.device()));
  Tensor mask = Tensor::empty(xc.shape(), TensorOptions(DType::U8, xc.device()));
  Generator& g = gen ? *gen : default_generator();
  const uint64_t offset = g.advance(static_cast<uint64_t>(xc.numel()));
  if (xc.numel() > 0)
    DISTILL_DISPATCH(xc.device(), dropout, xc.view_desc(), p, g.seed(), offset, out.view_desc(),
                     mask.view_desc());
  // Same scale as the kernel: 1/(1-p), and nothing survives at p == 1.
  const double scale = p < 1.0 ? 1.0 / (1.0 - p) : 0.0;
  record_fn(out, "dropout", {xc}, [mask, scale](const Tensor& grad) {
    return std::vector<Tensor>{mul(mul(grad, to_dtype(mask, grad.dtype())), scale)};
  });
  return out;
}

}  // namespace distill
