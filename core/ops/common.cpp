// Shared checks and the broadcasting helpers.
#include <algorithm>

#include "core/error.h"
#include "core/ops.h"

namespace distill {

int64_t normalize_dim(int64_t dim, int64_t ndim, const char* op) {
  const int64_t d = dim < 0 ? dim + ndim : dim;
  DISTILL_CHECK(d >= 0 && d < std::max<int64_t>(ndim, 1), op, ": dim ", dim,
                " out of range for a tensor of rank ", ndim);
  return d;
}

void check_same_device(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts) {
    if (!t || !t->defined()) continue;
    if (!first) {
      first = t;
      continue;
    }
    DISTILL_CHECK(t->device() == first->device(), op,
                  ": inputs on different devices: ", first->describe(), " and ", t->describe());
  }
}

void check_defined(const char* op, const Tensor& t, const char* arg) {
  DISTILL_CHECK(t.defined(), op, ": argument '", arg, "' is an undefined tensor");
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    DISTILL_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", shape_str(a), " and ",
                  shape_str(b), " cannot be broadcast together");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

}  // namespace distill
