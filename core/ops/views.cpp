// View ops: new shape/strides over the same storage. Each records a backward that maps the
// gradient back to the input's shape.
#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "core/ops.h"

namespace distill {

namespace {

Tensor make_view_of(const Tensor& x, const Shape& shape, const Shape& strides, int64_t offset) {
  return Tensor::make_view(x.storage(), shape, strides, offset, x.dtype());
}

// Strides for viewing `x` as `shape` without a copy, or empty if impossible (NumPy's rule:
// each group of merged/split dims must be contiguous among itself).
std::optional<Shape> view_strides(const Shape& old_shape, const Shape& old_strides,
                                  const Shape& shape) {
  if (shape_numel(old_shape) == 0) return contiguous_strides(shape);
  Shape new_strides(shape.size());
  // Drop size-1 dims of the source; they never constrain the view.
  Shape os, ost;
  for (size_t i = 0; i < old_shape.size(); ++i)
    if (old_shape[i] != 1) {
      os.push_back(old_shape[i]);
      ost.push_back(old_strides[i]);
    }
  size_t oi = 0, ni = 0;
  while (ni < shape.size()) {
    if (shape[ni] == 1) {
      new_strides[ni] = (oi < os.size() ? ost[oi] * os[oi] : 1);
      ++ni;
      continue;
    }
    if (oi >= os.size()) return std::nullopt;
    // Take a chunk of old dims and a chunk of new dims with equal products.
    int64_t old_prod = os[oi], new_prod = shape[ni];
    size_t oj = oi, nj = ni;
    while (old_prod != new_prod) {
      if (old_prod < new_prod) {
        if (++oj >= os.size()) return std::nullopt;
        // Old dims merged into one chunk must be contiguous with each other.
        if (ost[oj - 1] != ost[oj] * os[oj]) return std::nullopt;
        old_prod *= os[oj];
      } else {
        if (++nj >= shape.size()) return std::nullopt;
        new_prod *= shape[nj];
      }
    }
    // Assign strides to new dims ni..nj from the innermost old stride upwards.
    int64_t stride = ost[oj];
    for (size_t k = nj + 1; k-- > ni;) {
      new_strides[k] = stride;
      stride *= shape[k];
    }
    oi = oj + 1;
    ni = nj + 1;
  }
  if (oi != os.size()) return std::nullopt;
  return new_strides;
}

Shape infer_shape(const Shape& shape, int64_t numel, const char* op, const Tensor& x) {
  Shape out = shape;
  int64_t infer = -1, known = 1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      DISTILL_CHECK(infer < 0, op, ": more than one -1 in target shape ", shape_str(shape));
      infer = static_cast<int64_t>(i);
    } else {
      DISTILL_CHECK(out[i] >= 0, op, ": invalid target shape ", shape_str(shape));
      known *= out[i];
    }
  }
  if (infer >= 0) {
    DISTILL_CHECK(known != 0 && numel % known == 0, op, ": cannot reshape ", x.describe(), " to ",
                  shape_str(shape));
    out[infer] = numel / known;
  }
  DISTILL_CHECK(shape_numel(out) == numel, op, ": cannot reshape ", x.describe(), " (", numel,
                " elements) to ", shape_str(shape));
  return out;
}

}  // namespace

Tensor view(const Tensor& x, const Shape& shape) {
  check_defined("view", x, "x");
  const Shape target = infer_shape(shape, x.numel(), "view", x);
  auto strides = view_strides(x.shape(), x.strides(), target);
  DISTILL_CHECK(strides.has_value(), "view: ", x.describe(), " with strides ",
                shape_str(x.strides()), " cannot be viewed as ", shape_str(target),
                " without a copy; use reshape");
  Tensor y = make_view_of(x, target, *strides, x.offset());
  const Shape in_shape = x.shape();
  record_fn(y, "view", {x},
            [in_shape](const Tensor& g) { return std::vector<Tensor>{reshape(g, in_shape)}; });
  return y;
}

Tensor reshape(const Tensor& x, const Shape& shape) {
  check_defined("reshape", x, "x");
  const Shape target = infer_shape(shape, x.numel(), "reshape", x);
  if (view_strides(x.shape(), x.strides(), target)) return view(x, target);
  return view(contiguous(x), target);
}

Tensor permute(const Tensor& x, const Shape& dims) {
  check_defined("permute", x, "x");
  const int64_t n = x.dim();
  DISTILL_CHECK(static_cast<int64_t>(dims.size()) == n, "permute: ", dims.size(),
                " dims given for ", x.describe());
  Shape shape(n), strides(n), inverse(n);
  std::vector<bool> used(n, false);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t d = normalize_dim(dims[i], n, "permute");
    DISTILL_CHECK(!used[d], "permute: dim ", d, " repeated in ", shape_str(dims));
    used[d] = true;
    shape[i] = x.shape()[d];
    strides[i] = x.strides()[d];
    inverse[d] = i;
  }
  Tensor y = make_view_of(x, shape, strides, x.offset());
  record_fn(y, "permute", {x},
            [inverse](const Tensor& g) { return std::vector<Tensor>{permute(g, inverse)}; });
  return y;
}

Tensor transpose(const Tensor& x, int64_t d0, int64_t d1) {
  check_defined("transpose", x, "x");
  const int64_t n = x.dim();
  Shape dims(n);
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[normalize_dim(d0, n, "transpose")], dims[normalize_dim(d1, n, "transpose")]);
  return permute(x, dims);
}

Tensor unsqueeze(const Tensor& x, int64_t dim) {
  check_defined("unsqueeze", x, "x");
  const int64_t d = normalize_dim(dim, x.dim() + 1, "unsqueeze");
  Shape s = x.shape();
  s.insert(s.begin() + d, 1);
  return view(x, s);
}

Tensor squeeze(const Tensor& x, int64_t dim) {
  check_defined("squeeze", x, "x");
  const int64_t d = normalize_dim(dim, x.dim(), "squeeze");
  DISTILL_CHECK(x.shape()[d] == 1, "squeeze: dim ", dim, " of ", x.describe(), " is not 1");
  Shape s = x.shape();
  s.erase(s.begin() + d);
  return view(x, s);
}

Tensor flatten(const Tensor& x, int64_t start_dim, int64_t end_dim) {
  check_defined("flatten", x, "x");
  if (x.dim() == 0) return reshape(x, {1});
  const int64_t s = normalize_dim(start_dim, x.dim(), "flatten");
  const int64_t e = normalize_dim(end_dim, x.dim(), "flatten");
  DISTILL_CHECK(s <= e, "flatten: start_dim ", start_dim, " after end_dim ", end_dim);
  Shape shape(x.shape().begin(), x.shape().begin() + s);
  int64_t prod = 1;
  for (int64_t i = s; i <= e; ++i) prod *= x.shape()[i];
  shape.push_back(prod);
  shape.insert(shape.end(), x.shape().begin() + e + 1, x.shape().end());
  return reshape(x, shape);
}

Tensor expand(const Tensor& x, const Shape& shape) {
  check_defined("expand", x, "x");
  DISTILL_CHECK(shape.size() >= x.shape().size(), "expand: cannot expand ", x.describe(), " to ",
                shape_str(shape));
  const size_t lead = shape.size() - x.shape().size();
  Shape strides(shape.size(), 0), out = shape;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i < lead) {
      DISTILL_CHECK(shape[i] >= 0, "expand: invalid target ", shape_str(shape));
      continue;
    }
    const int64_t src = x.shape()[i - lead];
    if (shape[i] == -1) out[i] = src;
    DISTILL_CHECK(src == out[i] || src == 1, "expand: cannot expand ", x.describe(), " to ",
                  shape_str(shape));
    strides[i] = src == out[i] ? x.strides()[i - lead] : 0;
  }
  Tensor y = make_view_of(x, out, strides, x.offset());
  const Shape in_shape = x.shape();
  record_fn(y, "expand", {x},
            [in_shape](const Tensor& g) { return std::vector<Tensor>{sum_to(g, in_shape)}; });
  return y;
}

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step) {
  check_defined("slice", x, "x");
  const int64_t d = normalize_dim(dim, x.dim(), "slice");
  const int64_t size = x.shape()[d];
  DISTILL_CHECK(step > 0, "slice: step must be positive, got ", step);
  if (start < 0) start += size;
  if (end < 0) end += size;
  start = std::clamp<int64_t>(start, 0, size);
  end = std::clamp<int64_t>(end, start, size);
  Shape shape = x.shape(), strides = x.strides();
  shape[d] = (end - start + step - 1) / step;
  strides[d] = x.strides()[d] * step;
  Tensor y = make_view_of(x, shape, strides, x.offset() + start * x.strides()[d]);
  const Shape in_shape = x.shape();
  const DType dt = x.dtype();
  record_fn(y, "slice", {x}, [in_shape, dt, d, start, end, step](const Tensor& g) {
    Tensor full_grad = zeros(in_shape, TensorOptions(g.dtype(), g.device()));
    slice(full_grad, d, start, end, step).copy_(g);
    (void)dt;
    return std::vector<Tensor>{full_grad};
  });
  return y;
}

Tensor select(const Tensor& x, int64_t dim, int64_t index) {
  check_defined("select", x, "x");
  const int64_t d = normalize_dim(dim, x.dim(), "select");
  const int64_t size = x.shape()[d];
  const int64_t i = index < 0 ? index + size : index;
  DISTILL_CHECK(i >= 0 && i < size, "select: index ", index, " out of range for dim ", dim, " of ",
                x.describe());
  return squeeze(slice(x, d, i, i + 1), d);
}

}  // namespace distill
