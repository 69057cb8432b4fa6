// The foundation kernels of kernels/cuda/ called directly (no op layer) against the CPU reference
// kernels, on shapes chosen to reach every launch path: vectorised and strided elementwise loops
// (aligned, unaligned, transposed, broadcast), warp-, block- and split-row reductions, register-
// and shared-memory-cached softmax / layer-norm rows, GEMM layouts with padded leading dims,
// batch strides, the bias epilogue and its fallback, and index kernels with repeated and bad
// indices. Outputs are poisoned before each kernel runs. Skipped without a GPU.
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "kernels/device.h"
#include "kernels/elementwise.h"
#include "kernels/index.h"
#include "kernels/layer_norm.h"
#include "kernels/matmul.h"
#include "kernels/random.h"
#include "kernels/reduce.h"
#include "kernels/softmax.h"
#include "tests/test_util.h"

#if DISTILL_HAS_CUDA
#define RUN_KERNEL(device, fn, ...)                               \
  ((device).is_cuda() ? ::distill::kernels::cuda::fn(__VA_ARGS__) \
                      : ::distill::kernels::cpu::fn(__VA_ARGS__))
#else
#define RUN_KERNEL(device, fn, ...) ::distill::kernels::cpu::fn(__VA_ARGS__)
#endif

namespace distill {
namespace {

using kernels::BinaryOp;
using kernels::CompareOp;
using kernels::ReduceOp;
using kernels::UnaryOp;
using testing::all_close;
using testing::random_tensor;

struct Tol {
  double atol, rtol;
};

// Elementwise math: device libm vs host libm differ by an ulp or two; 16-bit outputs may then
// round to neighbouring values.
Tol elementwise_tol(DType t) {
  switch (t) {
    case DType::F64:
      return {1e-12, 1e-12};
    case DType::F32:
      return {1e-6, 1e-5};
    case DType::F16:
      return {2e-3, 2e-3};
    default:
      return {1e-2, 1e-2};  // bf16
  }
}

Tensor host_f64(const Tensor& t) {
  return t.to(Device::cpu()).to(DType::F64);
}

// An output on `device` filled with NaN (floating) or 77 (integer), so unwritten elements show.
Tensor poisoned(const Shape& shape, DType dtype, Device device) {
  Tensor t = Tensor::empty(shape, TensorOptions(dtype, device));
  t.fill_(is_floating(dtype) ? std::nan("") : 77.0);
  return t;
}

class CudaKernels : public testing::BackendTest {
 protected:
  // The same view of the same values on the CPU and on the device under test.
  struct Pair {
    Tensor cpu, dev;
  };
  Pair both(
      const Tensor& base_cpu,
      const std::function<Tensor(const Tensor&)>& view = [](const Tensor& t) { return t; }) {
    return {view(base_cpu), view(base_cpu.to(device()))};
  }
};

struct Layout {
  const char* name;
  Shape base;
  std::function<Tensor(const Tensor&)> view;
};

std::vector<Layout> elementwise_layouts() {
  return {
      {"contiguous", {100003}, [](const Tensor& t) { return t; }},
      {"unaligned", {100004}, [](const Tensor& t) { return slice(t, 0, 1, 100004); }},
      {"transposed", {129, 67}, [](const Tensor& t) { return t.transpose(0, 1); }},
      {"strided rows", {40, 33}, [](const Tensor& t) { return slice(t, 0, 0, 40, 3); }},
  };
}

// ---------------------------------------------------------------- elementwise

TEST_P(CudaKernels, UnaryEveryOpEveryLayout) {
  const std::vector<std::pair<UnaryOp, double>> ops = {
      {UnaryOp::Neg, 0},          {UnaryOp::Exp, 0},        {UnaryOp::Log, 0},
      {UnaryOp::Sqrt, 0},         {UnaryOp::Rsqrt, 0},      {UnaryOp::Tanh, 0},
      {UnaryOp::Sigmoid, 0},      {UnaryOp::Relu, 0},       {UnaryOp::Gelu, 0},
      {UnaryOp::QuickGelu, 0},    {UnaryOp::Abs, 0},        {UnaryOp::AddScalar, 0.75},
      {UnaryOp::MulScalar, -1.5}, {UnaryOp::PowScalar, 2.5}};
  uint64_t seed = 1;
  for (DType dtype : {DType::F32, DType::BF16, DType::F64}) {
    const Tol tol = elementwise_tol(dtype);
    for (const Layout& layout : elementwise_layouts()) {
      const Pair signed_x = both(random_tensor(layout.base, seed++, dtype, -4.0, 4.0), layout.view);
      const Pair positive_x =
          both(random_tensor(layout.base, seed++, dtype, 0.1, 3.0), layout.view);
      for (const auto& [op, scalar] : ops) {
        const bool needs_positive = op == UnaryOp::Log || op == UnaryOp::Sqrt ||
                                    op == UnaryOp::Rsqrt || op == UnaryOp::PowScalar;
        const Pair& x = needs_positive ? positive_x : signed_x;
        Tensor expected = Tensor::empty(x.cpu.shape(), TensorOptions(dtype));
        Tensor actual = poisoned(x.cpu.shape(), dtype, device());
        kernels::cpu::unary(op, x.cpu.view_desc(), expected.view_desc(), scalar);
        RUN_KERNEL(device(), unary, op, x.dev.view_desc(), actual.view_desc(), scalar);
        EXPECT_TRUE(all_close(host_f64(actual), host_f64(expected), tol.atol, tol.rtol))
            << "unary op " << static_cast<int>(op) << ", " << dtype_name(dtype) << ", "
            << layout.name;
      }
    }
  }
}

TEST_P(CudaKernels, UnaryIntegerOps) {
  for (DType dtype : {DType::I32, DType::I64}) {
    const Pair x = both(random_tensor({1027}, 11, DType::F32, -100, 100).to(dtype));
    for (const auto& [op, scalar] :
         std::vector<std::pair<UnaryOp, double>>{{UnaryOp::Neg, 0},
                                                 {UnaryOp::Abs, 0},
                                                 {UnaryOp::AddScalar, 7},
                                                 {UnaryOp::MulScalar, -3}}) {
      Tensor expected = Tensor::empty(x.cpu.shape(), TensorOptions(dtype));
      Tensor actual = poisoned(x.cpu.shape(), dtype, device());
      kernels::cpu::unary(op, x.cpu.view_desc(), expected.view_desc(), scalar);
      RUN_KERNEL(device(), unary, op, x.dev.view_desc(), actual.view_desc(), scalar);
      EXPECT_TRUE(all_close(host_f64(actual), host_f64(expected), 0, 0))
          << "unary op " << static_cast<int>(op) << ", " << dtype_name(dtype);
    }
  }
}

TEST_P(CudaKernels, UnaryBackwardEveryOp) {
  const std::vector<std::pair<UnaryOp, double>> ops = {
      {UnaryOp::Neg, 0},          {UnaryOp::Exp, 0},        {UnaryOp::Log, 0},
      {UnaryOp::Sqrt, 0},         {UnaryOp::Rsqrt, 0},      {UnaryOp::Tanh, 0},
      {UnaryOp::Sigmoid, 0},      {UnaryOp::Relu, 0},       {UnaryOp::Gelu, 0},
      {UnaryOp::QuickGelu, 0},    {UnaryOp::Abs, 0},        {UnaryOp::AddScalar, 0.75},
      {UnaryOp::MulScalar, -1.5}, {UnaryOp::PowScalar, 2.5}};
  uint64_t seed = 100;
  for (DType dtype : {DType::F32, DType::BF16, DType::F64}) {
    Tol tol = elementwise_tol(dtype);
    const Shape shape{4099};
    const Pair x = both(random_tensor(shape, seed++, dtype, 0.2, 3.0));
    const Pair y = both(random_tensor(shape, seed++, dtype, 0.2, 2.0));
    const Pair g = both(random_tensor(shape, seed++, dtype, -2.0, 2.0));
    for (const auto& [op, scalar] : ops) {
      Tensor expected = Tensor::empty(shape, TensorOptions(dtype));
      Tensor actual = poisoned(shape, dtype, device());
      kernels::cpu::unary_backward(op, x.cpu.view_desc(), y.cpu.view_desc(), g.cpu.view_desc(),
                                   expected.view_desc(), scalar);
      RUN_KERNEL(device(), unary_backward, op, x.dev.view_desc(), y.dev.view_desc(),
                 g.dev.view_desc(), actual.view_desc(), scalar);
      EXPECT_TRUE(all_close(host_f64(actual), host_f64(expected), tol.atol, tol.rtol))
          << "unary_backward op " << static_cast<int>(op) << ", " << dtype_name(dtype);
    }
  }
}

// Binary operands: both contiguous (vector path), a row broadcast, and a transposed operand with
// a column broadcast.
struct BinaryLayout {
  const char* name;
  Shape a_base, b_base;
  std::function<Tensor(const Tensor&)> a_view, b_view;
};
std::vector<BinaryLayout> binary_layouts() {
  return {
      {"same shape",
       {100003},
       {100003},
       [](const Tensor& t) { return t; },
       [](const Tensor& t) { return t; }},
      {"row broadcast",
       {37, 129},
       {129},
       [](const Tensor& t) { return t; },
       [](const Tensor& t) {
         return expand(t, {37, 129});
       }},
      {"transposed + column broadcast",
       {129, 37},
       {37, 1},
       [](const Tensor& t) { return t.transpose(0, 1); },
       [](const Tensor& t) {
         return expand(t, {37, 129});
       }},
  };
}

TEST_P(CudaKernels, BinaryEveryOpWithBroadcasting) {
  const std::vector<BinaryOp> float_ops = {BinaryOp::Add,    BinaryOp::Sub, BinaryOp::Mul,
                                           BinaryOp::Div,    BinaryOp::Pow, BinaryOp::Maximum,
                                           BinaryOp::Minimum};
  const std::vector<BinaryOp> int_ops = {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul,
                                         BinaryOp::Maximum, BinaryOp::Minimum};
  uint64_t seed = 200;
  for (DType dtype : {DType::F32, DType::BF16, DType::F64, DType::I32, DType::I64}) {
    const bool integer = !is_floating(dtype);
    const Tol tol = integer ? Tol{0, 0} : elementwise_tol(dtype);
    for (const BinaryLayout& layout : binary_layouts()) {
      // Positive operands keep pow real and div well conditioned.
      const auto make = [&](const Shape& s) {
        return integer ? random_tensor(s, seed++, DType::F32, -100, 100).to(dtype)
                       : random_tensor(s, seed++, dtype, 0.5, 2.5);
      };
      const Pair a = both(make(layout.a_base), layout.a_view);
      const Pair b = both(make(layout.b_base), layout.b_view);
      for (BinaryOp op : integer ? int_ops : float_ops) {
        Tensor expected = Tensor::empty(a.cpu.shape(), TensorOptions(dtype));
        Tensor actual = poisoned(a.cpu.shape(), dtype, device());
        kernels::cpu::binary(op, a.cpu.view_desc(), b.cpu.view_desc(), expected.view_desc());
        RUN_KERNEL(device(), binary, op, a.dev.view_desc(), b.dev.view_desc(), actual.view_desc());
        EXPECT_TRUE(all_close(host_f64(actual), host_f64(expected), tol.atol, tol.rtol))
            << "binary op " << static_cast<int>(op) << ", " << dtype_name(dtype) << ", "
            << layout.name;
      }
    }
  }
}

TEST_P(CudaKernels, CompareAndWhereAreExact) {
  uint64_t seed = 300;
  for (DType dtype : {DType::F32, DType::BF16, DType::I64}) {
    for (const BinaryLayout& layout : binary_layouts()) {
      // Small integers so that equal values are common.
      const auto make = [&](const Shape& s) {
        return random_tensor(s, seed++, DType::F32, -2.99, 2.99).to(DType::I32).to(dtype);
      };
      const Pair a = both(make(layout.a_base), layout.a_view);
      const Pair b = both(make(layout.b_base), layout.b_view);
      for (CompareOp op : {CompareOp::Eq, CompareOp::Ne, CompareOp::Lt, CompareOp::Le,
                           CompareOp::Gt, CompareOp::Ge}) {
        Tensor expected = Tensor::empty(a.cpu.shape(), TensorOptions(DType::U8));
        Tensor actual = poisoned(a.cpu.shape(), DType::U8, device());
        kernels::cpu::compare(op, a.cpu.view_desc(), b.cpu.view_desc(), expected.view_desc());
        RUN_KERNEL(device(), compare, op, a.dev.view_desc(), b.dev.view_desc(), actual.view_desc());
        EXPECT_TRUE(all_close(host_f64(actual), host_f64(expected), 0, 0))
            << "compare op " << static_cast<int>(op) << ", " << dtype_name(dtype) << ", "
            << layout.name;
      }
      // where(cond, a, b) with a broadcast condition column.
      if (a.cpu.dim() != 2) continue;  // the 1-D layout has no column to broadcast
      const Pair cond =
          both(random_tensor({a.cpu.shape()[0], 1}, seed++, DType::F32, 0, 1.99).to(DType::U8),
               [&](const Tensor& t) { return expand(t, a.cpu.shape()); });
      Tensor expected = Tensor::empty(a.cpu.shape(), TensorOptions(dtype));
      Tensor actual = poisoned(a.cpu.shape(), dtype, device());
      kernels::cpu::where(cond.cpu.view_desc(), a.cpu.view_desc(), b.cpu.view_desc(),
                          expected.view_desc());
      RUN_KERNEL(device(), where, cond.dev.view_desc(), a.dev.view_desc(), b.dev.view_desc(),
                 actual.view_desc());
      EXPECT_TRUE(all_close(host_f64(actual), host_f64(expected), 0, 0))
          << "where, " << dtype_name(dtype) << ", " << layout.name;
    }
  }
}

TEST_P(CudaKernels, CopyCastsBetweenEveryDtypePair) {
  const std::vector<DType> dtypes = {DType::F32, DType::F64, DType::BF16, DType::F16,
                                     DType::I32, DType::I64, DType::U8};
  uint64_t seed = 400;
  for (DType from : dtypes) {
    // Non-negative values below 100 are representable (after truncation) in every dtype.
    const Tensor base = random_tensor({67, 129}, seed++, DType::F64, 0.0, 100.0).to(from);
    for (const bool transposed : {false, true}) {
      const Pair src =
          both(base, [&](const Tensor& t) { return transposed ? t.transpose(0, 1) : t; });
      for (DType to : dtypes) {
        Tensor expected = Tensor::empty(src.cpu.shape(), TensorOptions(to));
        Tensor actual = poisoned(src.cpu.shape(), to, device());
        kernels::cpu::copy(src.cpu.view_desc(), expected.view_desc());
        RUN_KERNEL(device(), copy, src.dev.view_desc(), actual.view_desc());
        EXPECT_TRUE(all_close(host_f64(actual), host_f64(expected), 0, 0))
            << dtype_name(from) << " -> " << dtype_name(to)
            << (transposed ? " (transposed source)" : "");
      }
    }
  }
}

TEST_P(CudaKernels, FillAndArange) {
  for (DType dtype :
       {DType::F32, DType::F64, DType::BF16, DType::F16, DType::I32, DType::I64, DType::U8}) {
    for (const bool transposed : {false, true}) {
      const auto view = [&](const Tensor& t) { return transposed ? t.transpose(0, 1) : t; };
      for (double value : {3.7, 0.0}) {
        Tensor expected = Tensor::empty({33, 17}, TensorOptions(dtype));
        Tensor actual = poisoned({33, 17}, dtype, device());
        kernels::cpu::fill(view(expected).view_desc(), value);
        RUN_KERNEL(device(), fill, view(actual).view_desc(), value);
        EXPECT_TRUE(all_close(host_f64(actual), host_f64(expected), 0, 0))
            << "fill " << value << ", " << dtype_name(dtype);
      }
      Tensor expected = Tensor::empty({33, 17}, TensorOptions(dtype));
      Tensor actual = poisoned({33, 17}, dtype, device());
      kernels::cpu::arange(view(expected).view_desc(), 0.5, 0.25);
      RUN_KERNEL(device(), arange, view(actual).view_desc(), 0.5, 0.25);
      EXPECT_TRUE(all_close(host_f64(actual), host_f64(expected), 0, 0))
          << "arange, " << dtype_name(dtype);
    }
  }
}

// Tensors larger than the capped grid (max_grid_blocks() x 256 threads, about a million on an
// H100) make every grid-stride loop run more than one round.
TEST_P(CudaKernels, LargeTensorsWrapTheGridStrideLoops) {
  const Pair x = both(random_tensor({2000, 3000}, 1300, DType::F32, -3.0, 3.0));
  for (const bool transposed : {false, true}) {
    const Tensor xc = transposed ? x.cpu.transpose(0, 1) : x.cpu;
    const Tensor xd = transposed ? x.dev.transpose(0, 1) : x.dev;
    Tensor expected = Tensor::empty(xc.shape(), TensorOptions(DType::F32));
    Tensor actual = poisoned(xc.shape(), DType::F32, device());
    kernels::cpu::unary(UnaryOp::Tanh, xc.view_desc(), expected.view_desc(), 0.0);
    RUN_KERNEL(device(), unary, UnaryOp::Tanh, xd.view_desc(), actual.view_desc(), 0.0);
    EXPECT_TRUE(all_close(host_f64(actual), host_f64(expected), 1e-6, 1e-5))
        << (transposed ? "strided" : "vectorised");
  }
  // Many short rows: the warp-per-row kernels loop over rows.
  const int64_t rows = 200000, cols = 30;
  const Pair flat = both(x.cpu.reshape({2000 * 3000}));
  Tensor sums_cpu = Tensor::empty({rows}, TensorOptions(DType::F32));
  Tensor sums_dev = poisoned({rows}, DType::F32, device());
  kernels::cpu::reduce_rows(ReduceOp::Sum, flat.cpu.data_ptr(), DType::F32, rows, cols,
                            sums_cpu.data_ptr(), DType::F32, 0);
  RUN_KERNEL(device(), reduce_rows, ReduceOp::Sum, flat.dev.data_ptr(), DType::F32, rows, cols,
             sums_dev.data_ptr(), DType::F32, 0);
  EXPECT_TRUE(all_close(host_f64(sums_dev), host_f64(sums_cpu), 1e-5, 1e-5)) << "reduce";
  const Pair rows_view = both(x.cpu.reshape({rows, cols}));
  Tensor y_cpu = Tensor::empty({rows, cols}, TensorOptions(DType::F32));
  Tensor y_dev = poisoned({rows, cols}, DType::F32, device());
  kernels::cpu::softmax_forward(rows_view.cpu.view_desc(), rows, cols, false, y_cpu.view_desc());
  RUN_KERNEL(device(), softmax_forward, rows_view.dev.view_desc(), rows, cols, false,
             y_dev.view_desc());
  EXPECT_TRUE(all_close(host_f64(y_dev), host_f64(y_cpu), 1e-6, 1e-5)) << "softmax";
}

// ---------------------------------------------------------------- reductions

TEST_P(CudaKernels, ReduceRowsEveryPath) {
  // Warp rows (<= 1024 cols), block rows, and few long rows split across blocks.
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {7, 1}, {300, 33}, {5, 1024}, {5, 1025}, {3, 100000}, {2, 300001}, {1, 2000003}};
  struct Case {
    ReduceOp op;
    int64_t correction;
  };
  const std::vector<Case> cases = {{ReduceOp::Sum, 0}, {ReduceOp::Mean, 0},   {ReduceOp::Max, 0},
                                   {ReduceOp::Min, 0}, {ReduceOp::ArgMax, 0}, {ReduceOp::Var, 1},
                                   {ReduceOp::Var, 0}};
  uint64_t seed = 500;
  for (DType dtype : {DType::F32, DType::BF16, DType::F64, DType::I32}) {
    for (const auto& [rows, cols] : shapes) {
      // Smooth values for sums and variances; small integers (many ties) for extremes/argmax.
      const Pair smooth =
          both(random_tensor({rows, cols}, seed++, DType::F64, -2.0, 2.0).to(dtype));
      const Pair ties = both(
          random_tensor({rows, cols}, seed++, DType::F32, -5.99, 5.99).to(DType::I32).to(dtype));
      for (const Case& c : cases) {
        const bool integer = !is_floating(dtype);
        if (integer && (c.op == ReduceOp::Mean || c.op == ReduceOp::Var)) continue;
        const bool extreme =
            c.op == ReduceOp::Max || c.op == ReduceOp::Min || c.op == ReduceOp::ArgMax;
        const Pair& x = extreme ? ties : smooth;
        const DType out_dtype =
            c.op == ReduceOp::ArgMax || (integer && c.op == ReduceOp::Sum) ? DType::I64 : dtype;
        Tol tol{0, 0};
        if (!extreme && dtype == DType::F32) tol = {1e-2, 1e-4};
        if (!extreme && dtype == DType::BF16) tol = {2e-2, 1e-2};
        if (!extreme && dtype == DType::F64) tol = {1e-9, 1e-11};
        Tensor expected = Tensor::empty({rows}, TensorOptions(out_dtype));
        Tensor actual = poisoned({rows}, out_dtype, device());
        kernels::cpu::reduce_rows(c.op, x.cpu.data_ptr(), dtype, rows, cols, expected.data_ptr(),
                                  out_dtype, c.correction);
        RUN_KERNEL(device(), reduce_rows, c.op, x.dev.data_ptr(), dtype, rows, cols,
                   actual.data_ptr(), out_dtype, c.correction);
        EXPECT_TRUE(all_close(host_f64(actual), host_f64(expected), tol.atol, tol.rtol))
            << "reduce op " << static_cast<int>(c.op) << " (correction " << c.correction << "), "
            << dtype_name(dtype) << ", " << rows << " x " << cols;
      }
    }
  }
}

// ---------------------------------------------------------------- softmax

TEST_P(CudaKernels, SoftmaxForwardBackwardEveryRowLength) {
  // Register rows up to 1024, shared-memory cached rows, and rows too long for the cache.
  const std::vector<int64_t> col_counts = {1, 31, 32, 33, 100, 1000, 1024, 1025, 5000, 12000};
  uint64_t seed = 600;
  for (DType dtype : {DType::F32, DType::BF16, DType::F64}) {
    const Tol fwd = dtype == DType::F32   ? Tol{1e-6, 1e-5}
                    : dtype == DType::F64 ? Tol{1e-12, 1e-12}
                                          : Tol{1e-2, 1e-2};
    const Tol bwd = dtype == DType::F32   ? Tol{1e-4, 1e-4}
                    : dtype == DType::F64 ? Tol{1e-11, 1e-11}
                                          : Tol{2e-2, 2e-2};
    for (int64_t cols : col_counts) {
      const int64_t rows = cols > 1024 ? 3 : 37;
      const Pair x = both(random_tensor({rows, cols}, seed++, dtype, -4.0, 4.0));
      const Pair dy = both(random_tensor({rows, cols}, seed++, dtype, -1.0, 1.0));
      for (const bool log : {false, true}) {
        Tensor y_cpu = Tensor::empty({rows, cols}, TensorOptions(dtype));
        Tensor y_dev = poisoned({rows, cols}, dtype, device());
        kernels::cpu::softmax_forward(x.cpu.view_desc(), rows, cols, log, y_cpu.view_desc());
        RUN_KERNEL(device(), softmax_forward, x.dev.view_desc(), rows, cols, log,
                   y_dev.view_desc());
        EXPECT_TRUE(all_close(host_f64(y_dev), host_f64(y_cpu), fwd.atol, fwd.rtol))
            << (log ? "log_softmax" : "softmax") << " forward, " << dtype_name(dtype) << ", cols "
            << cols;
        // Backward from the same (CPU) forward output on both sides.
        const Pair y = both(y_cpu);
        Tensor dx_cpu = Tensor::empty({rows, cols}, TensorOptions(dtype));
        Tensor dx_dev = poisoned({rows, cols}, dtype, device());
        kernels::cpu::softmax_backward(y.cpu.view_desc(), dy.cpu.view_desc(), rows, cols, log,
                                       dx_cpu.view_desc());
        RUN_KERNEL(device(), softmax_backward, y.dev.view_desc(), dy.dev.view_desc(), rows, cols,
                   log, dx_dev.view_desc());
        EXPECT_TRUE(all_close(host_f64(dx_dev), host_f64(dx_cpu), bwd.atol, bwd.rtol))
            << (log ? "log_softmax" : "softmax") << " backward, " << dtype_name(dtype) << ", cols "
            << cols;
      }
    }
  }
}

// ---------------------------------------------------------------- layer norm

TEST_P(CudaKernels, LayerNormForwardBackwardEveryRowLength) {
  const std::vector<int64_t> col_counts = {1, 33, 768, 1024, 1025, 4096, 12000};
  uint64_t seed = 700;
  for (DType dtype : {DType::F32, DType::BF16, DType::F64}) {
    const DType stat_dtype = dtype == DType::F64 ? DType::F64 : DType::F32;
    const Tol fwd = dtype == DType::F32   ? Tol{1e-5, 1e-4}
                    : dtype == DType::F64 ? Tol{1e-11, 1e-11}
                                          : Tol{2e-2, 2e-2};
    const Tol bwd = dtype == DType::F32   ? Tol{1e-3, 1e-3}
                    : dtype == DType::F64 ? Tol{1e-10, 1e-10}
                                          : Tol{5e-2, 2e-2};
    for (int64_t cols : col_counts) {
      const int64_t rows = cols > 1024 ? 9 : 300;
      for (const bool affine : {true, false}) {
        // An offset mean checks that the mean is really subtracted.
        const Pair x = both(random_tensor({rows, cols}, seed++, dtype, 2.0, 8.0));
        const Pair gamma = both(random_tensor({cols}, seed++, dtype, 0.5, 1.5));
        const Pair beta = both(random_tensor({cols}, seed++, dtype, -1.0, 1.0));
        const Pair dy = both(random_tensor({rows, cols}, seed++, dtype, -1.0, 1.0));
        const kernels::View none{};
        const auto g_of = [&](const Tensor& t) { return affine ? t.view_desc() : none; };
        Tensor y_cpu = Tensor::empty({rows, cols}, TensorOptions(dtype));
        Tensor mean_cpu = Tensor::empty({rows}, TensorOptions(stat_dtype));
        Tensor rstd_cpu = Tensor::empty({rows}, TensorOptions(stat_dtype));
        Tensor y_dev = poisoned({rows, cols}, dtype, device());
        Tensor mean_dev = poisoned({rows}, stat_dtype, device());
        Tensor rstd_dev = poisoned({rows}, stat_dtype, device());
        kernels::cpu::layer_norm_forward(x.cpu.view_desc(), g_of(gamma.cpu), g_of(beta.cpu), rows,
                                         cols, 1e-5, y_cpu.view_desc(), mean_cpu.view_desc(),
                                         rstd_cpu.view_desc());
        RUN_KERNEL(device(), layer_norm_forward, x.dev.view_desc(), g_of(gamma.dev), g_of(beta.dev),
                   rows, cols, 1e-5, y_dev.view_desc(), mean_dev.view_desc(), rstd_dev.view_desc());
        const std::string what = std::string(dtype_name(dtype)) + ", cols " + std::to_string(cols) +
                                 (affine ? ", affine" : ", no affine");
        EXPECT_TRUE(all_close(host_f64(y_dev), host_f64(y_cpu), fwd.atol, fwd.rtol))
            << "y, " << what;
        EXPECT_TRUE(all_close(host_f64(mean_dev), host_f64(mean_cpu), 1e-5, 1e-5))
            << "mean, " << what;
        EXPECT_TRUE(all_close(host_f64(rstd_dev), host_f64(rstd_cpu), 1e-5, 1e-4))
            << "rstd, " << what;

        // Backward from the CPU statistics on both sides.
        const Pair mean = both(mean_cpu), rstd = both(rstd_cpu);
        Tensor dx_cpu = Tensor::empty({rows, cols}, TensorOptions(dtype));
        Tensor dgamma_cpu = Tensor::empty({cols}, TensorOptions(dtype));
        Tensor dbeta_cpu = Tensor::empty({cols}, TensorOptions(dtype));
        Tensor dx_dev = poisoned({rows, cols}, dtype, device());
        Tensor dgamma_dev = poisoned({cols}, dtype, device());
        Tensor dbeta_dev = poisoned({cols}, dtype, device());
        kernels::cpu::layer_norm_backward(x.cpu.view_desc(), g_of(gamma.cpu), mean.cpu.view_desc(),
                                          rstd.cpu.view_desc(), dy.cpu.view_desc(), rows, cols,
                                          dx_cpu.view_desc(), dgamma_cpu.view_desc(),
                                          dbeta_cpu.view_desc());
        RUN_KERNEL(device(), layer_norm_backward, x.dev.view_desc(), g_of(gamma.dev),
                   mean.dev.view_desc(), rstd.dev.view_desc(), dy.dev.view_desc(), rows, cols,
                   dx_dev.view_desc(), dgamma_dev.view_desc(), dbeta_dev.view_desc());
        EXPECT_TRUE(all_close(host_f64(dx_dev), host_f64(dx_cpu), bwd.atol, bwd.rtol))
            << "dx, " << what;
        EXPECT_TRUE(all_close(host_f64(dgamma_dev), host_f64(dgamma_cpu), bwd.atol, bwd.rtol))
            << "dgamma, " << what;
        EXPECT_TRUE(all_close(host_f64(dbeta_dev), host_f64(dbeta_cpu), bwd.atol, bwd.rtol))
            << "dbeta, " << what;
      }
    }
  }
}

// ---------------------------------------------------------------- GEMM

TEST_P(CudaKernels, GemmLayoutsBatchesAndBias) {
  enum Bias { kNone, kAligned, kUnaligned };
  struct Case {
    int64_t batch, m, n, k;
    bool trans_a, trans_b;
    Bias bias;
    double alpha, beta;
    bool broadcast_a, broadcast_b;  // batch stride 0
  };
  const std::vector<Case> cases = {
      {1, 1, 1, 1, false, false, kNone, 1.0, 0.0, false, false},
      {1, 33, 17, 65, false, false, kAligned, 1.0, 0.0, false, false},
      {1, 33, 17, 65, true, false, kUnaligned, 0.75, 0.5, false, false},
      {1, 33, 17, 65, false, true, kAligned, 1.0, 0.0, false, false},
      {3, 20, 31, 9, true, true, kNone, 1.0, 1.0, false, false},
      {4, 16, 24, 40, false, false, kAligned, 1.0, 0.0, false, true},  // folded into one GEMM
      {4, 16, 24, 40, false, true, kNone, 1.0, 0.0, true, false},      // shared A
      {2, 5, 7, 0, false, false, kAligned, 1.0, 0.5, false, false},    // empty inner dim
      {1, 256, 384, 512, false, true, kAligned, 1.0, 0.0, false, false},
  };
  uint64_t seed = 800;
  for (DType dtype : {DType::F32, DType::F64, DType::BF16, DType::F16}) {
    const Tol tol = dtype == DType::F32   ? Tol{1e-4, 1e-4}
                    : dtype == DType::F64 ? Tol{1e-10, 1e-10}
                    : dtype == DType::F16 ? Tol{5e-3, 5e-3}
                                          : Tol{2e-2, 1e-2};
    for (const Case& c : cases) {
      // Stored operand shapes with padded leading dims and gaps between batches.
      const int64_t a_rows = c.trans_a ? c.k : c.m, a_cols = c.trans_a ? c.m : c.k;
      const int64_t b_rows = c.trans_b ? c.n : c.k, b_cols = c.trans_b ? c.k : c.n;
      const int64_t lda = a_cols + 3, ldb = b_cols + 2, ldc = c.n + 1;
      const int64_t stride_a = c.broadcast_a ? 0 : a_rows * lda + 4;
      const int64_t stride_b = c.broadcast_b ? 0 : b_rows * ldb + 1;
      const int64_t stride_c = c.m * ldc + 5;
      const int64_t a_batches = c.broadcast_a ? 1 : c.batch,
                    b_batches = c.broadcast_b ? 1 : c.batch;
      // Exactly the extent the strides reach: a kernel reading past it fails under memcheck.
      const int64_t a_extent = (a_batches - 1) * stride_a + a_rows * lda;
      const int64_t b_extent = (b_batches - 1) * stride_b + b_rows * ldb;
      const Pair a =
          both(random_tensor({std::max<int64_t>(1, a_extent)}, seed++, dtype, -1.0, 1.0));
      const Pair b =
          both(random_tensor({std::max<int64_t>(1, b_extent)}, seed++, dtype, -1.0, 1.0));
      const Tensor c_init = random_tensor({c.batch * stride_c}, seed++, dtype, -1.0, 1.0);
      const Pair bias_buffer = both(random_tensor({c.n + 1}, seed++, dtype, -1.0, 1.0));
      Tensor c_cpu = c_init.clone();
      Tensor c_dev = c_init.to(device());
      const auto args_for = [&](const Tensor& ta, const Tensor& tb, const Tensor& tc,
                                const Tensor& tbias) {
        kernels::GemmArgs g;
        g.dtype = dtype;
        g.batch = c.batch;
        g.m = c.m;
        g.n = c.n;
        g.k = c.k;
        g.a = ta.data_ptr();
        g.lda = lda;
        g.stride_a = stride_a;
        g.trans_a = c.trans_a;
        g.b = tb.data_ptr();
        g.ldb = ldb;
        g.stride_b = stride_b;
        g.trans_b = c.trans_b;
        g.c = tc.data_ptr();
        g.ldc = ldc;
        g.stride_c = stride_c;
        g.alpha = c.alpha;
        g.beta = c.beta;
        if (c.bias != kNone)
          g.bias = static_cast<const char*>(tbias.data_ptr()) +
                   (c.bias == kUnaligned ? dtype_size(dtype) : 0);
        return g;
      };
      kernels::cpu::gemm(args_for(a.cpu, b.cpu, c_cpu, bias_buffer.cpu));
      RUN_KERNEL(device(), gemm, args_for(a.dev, b.dev, c_dev, bias_buffer.dev));
      // The whole C buffer, padding included: nothing outside the matrices may change.
      EXPECT_TRUE(all_close(host_f64(c_dev), host_f64(c_cpu), tol.atol, tol.rtol))
          << "gemm " << dtype_name(dtype) << " batch " << c.batch << " m " << c.m << " n " << c.n
          << " k " << c.k << (c.trans_a ? " A^T" : "") << (c.trans_b ? " B^T" : "") << " bias "
          << c.bias << " alpha " << c.alpha << " beta " << c.beta
          << (c.broadcast_a ? " shared A" : "") << (c.broadcast_b ? " shared B" : "");
    }
  }
}

// ---------------------------------------------------------------- indexing

kernels::IndexArgs index_args(DType dtype, DType index_dtype, int64_t outer, int64_t src_n,
                              int64_t idx_n, int64_t inner) {
  kernels::IndexArgs a;
  a.dtype = dtype;
  a.index_dtype = index_dtype;
  a.outer = outer;
  a.inner = inner;
  a.src_n = src_n;
  a.idx_n = idx_n;
  return a;
}

// Indices in [0, bound) with repeats.
Tensor random_indices(const Shape& shape, int64_t bound, uint64_t seed, DType index_dtype) {
  return random_tensor(shape, seed, DType::F64, 0.0, static_cast<double>(bound) - 0.01)
      .to(index_dtype);
}

TEST_P(CudaKernels, IndexSelectAndIndexAdd) {
  struct Case {
    DType dtype, index_dtype;
    int64_t outer, src_n, idx_n, inner;
  };
  // Row widths of 16-byte, 4-byte and 2-byte multiples; both index dtypes.
  const std::vector<Case> cases = {{DType::F32, DType::I64, 3, 50, 40, 64},
                                   {DType::F32, DType::I32, 3, 50, 40, 37},
                                   {DType::BF16, DType::I64, 2, 20, 61, 3},
                                   {DType::F64, DType::I32, 1, 1000, 3000, 5}};
  uint64_t seed = 900;
  for (const Case& c : cases) {
    const kernels::IndexArgs args =
        index_args(c.dtype, c.index_dtype, c.outer, c.src_n, c.idx_n, c.inner);
    const Pair src = both(random_tensor({c.outer, c.src_n, c.inner}, seed++, c.dtype));
    const Pair index = both(random_indices({c.idx_n}, c.src_n, seed++, c.index_dtype));
    Tensor out_cpu = Tensor::empty({c.outer, c.idx_n, c.inner}, TensorOptions(c.dtype));
    Tensor out_dev = poisoned({c.outer, c.idx_n, c.inner}, c.dtype, device());
    EXPECT_EQ(kernels::cpu::index_select(args, src.cpu.data_ptr(), index.cpu.data_ptr(),
                                         out_cpu.data_ptr()),
              -1);
    EXPECT_EQ(RUN_KERNEL(device(), index_select, args, src.dev.data_ptr(), index.dev.data_ptr(),
                         out_dev.data_ptr()),
              -1);
    EXPECT_TRUE(all_close(host_f64(out_dev), host_f64(out_cpu), 0, 0))
        << "index_select " << dtype_name(c.dtype) << " inner " << c.inner;

    // index_add accumulates repeated indices (atomics on the GPU: order differs, so a tolerance).
    const Pair grad = both(random_tensor({c.outer, c.idx_n, c.inner}, seed++, c.dtype));
    const Tensor dst_init = random_tensor({c.outer, c.src_n, c.inner}, seed++, c.dtype);
    Tensor dst_cpu = dst_init.clone();
    Tensor dst_dev = dst_init.to(device());
    EXPECT_EQ(kernels::cpu::index_add(args, grad.cpu.data_ptr(), index.cpu.data_ptr(),
                                      dst_cpu.data_ptr()),
              -1);
    EXPECT_EQ(RUN_KERNEL(device(), index_add, args, grad.dev.data_ptr(), index.dev.data_ptr(),
                         dst_dev.data_ptr()),
              -1);
    const Tol tol = c.dtype == DType::F32   ? Tol{1e-5, 1e-5}
                    : c.dtype == DType::F64 ? Tol{1e-12, 1e-12}
                                            : Tol{1e-1, 2e-2};
    EXPECT_TRUE(all_close(host_f64(dst_dev), host_f64(dst_cpu), tol.atol, tol.rtol))
        << "index_add " << dtype_name(c.dtype) << " inner " << c.inner;
  }
}

TEST_P(CudaKernels, GatherAndScatterAdd) {
  uint64_t seed = 1000;
  for (DType dtype : {DType::F32, DType::F64, DType::BF16}) {
    for (DType index_dtype : {DType::I64, DType::I32}) {
      const int64_t outer = 4, src_n = 30, idx_n = 45, inner = 7;
      const kernels::IndexArgs args = index_args(dtype, index_dtype, outer, src_n, idx_n, inner);
      const Pair src = both(random_tensor({outer, src_n, inner}, seed++, dtype));
      const Pair index = both(random_indices({outer, idx_n, inner}, src_n, seed++, index_dtype));
      Tensor out_cpu = Tensor::empty({outer, idx_n, inner}, TensorOptions(dtype));
      Tensor out_dev = poisoned({outer, idx_n, inner}, dtype, device());
      EXPECT_EQ(
          kernels::cpu::gather(args, src.cpu.data_ptr(), index.cpu.data_ptr(), out_cpu.data_ptr()),
          -1);
      EXPECT_EQ(RUN_KERNEL(device(), gather, args, src.dev.data_ptr(), index.dev.data_ptr(),
                           out_dev.data_ptr()),
                -1);
      EXPECT_TRUE(all_close(host_f64(out_dev), host_f64(out_cpu), 0, 0))
          << "gather " << dtype_name(dtype) << " / " << dtype_name(index_dtype);

      const Pair grad = both(random_tensor({outer, idx_n, inner}, seed++, dtype));
      const Tensor dst_init = random_tensor({outer, src_n, inner}, seed++, dtype);
      Tensor dst_cpu = dst_init.clone();
      Tensor dst_dev = dst_init.to(device());
      EXPECT_EQ(kernels::cpu::scatter_add(args, grad.cpu.data_ptr(), index.cpu.data_ptr(),
                                          dst_cpu.data_ptr()),
                -1);
      EXPECT_EQ(RUN_KERNEL(device(), scatter_add, args, grad.dev.data_ptr(), index.dev.data_ptr(),
                           dst_dev.data_ptr()),
                -1);
      const Tol tol = dtype == DType::F32   ? Tol{1e-5, 1e-5}
                      : dtype == DType::F64 ? Tol{1e-12, 1e-12}
                                            : Tol{1e-1, 2e-2};
      EXPECT_TRUE(all_close(host_f64(dst_dev), host_f64(dst_cpu), tol.atol, tol.rtol))
          << "scatter_add " << dtype_name(dtype) << " / " << dtype_name(index_dtype);
    }
  }
}

TEST_P(CudaKernels, BadIndicesReportTheFirstPositionAndWriteNothing) {
  const int64_t outer = 2, src_n = 10, idx_n = 20, inner = 3;
  const kernels::IndexArgs args = index_args(DType::F32, DType::I64, outer, src_n, idx_n, inner);
  std::vector<int64_t> idx(idx_n, 4);
  idx[12] = -1;
  idx[7] = src_n;  // the first bad position
  const Pair index = both(Tensor::from_vector(idx, {idx_n}));
  const Pair src = both(random_tensor({outer, src_n, inner}, 1100));
  Tensor out = poisoned({outer, idx_n, inner}, DType::F32, device());
  EXPECT_EQ(RUN_KERNEL(device(), index_select, args, src.dev.data_ptr(), index.dev.data_ptr(),
                       out.data_ptr()),
            7);
  for (double v : host_f64(out).to_double_vector()) EXPECT_TRUE(std::isnan(v));

  const Tensor dst_init = random_tensor({outer, src_n, inner}, 1101);
  Tensor dst = dst_init.to(device());
  const Pair grad = both(random_tensor({outer, idx_n, inner}, 1102));
  EXPECT_EQ(RUN_KERNEL(device(), index_add, args, grad.dev.data_ptr(), index.dev.data_ptr(),
                       dst.data_ptr()),
            7);
  EXPECT_TRUE(all_close(host_f64(dst), host_f64(dst_init), 0, 0)) << "index_add wrote output";

  // gather/scatter_add report the flat position in the [outer, idx_n, inner] index tensor.
  std::vector<int64_t> full(static_cast<size_t>(outer * idx_n * inner), 1);
  full[100] = -3;
  full[41] = 99;
  const Pair full_index = both(Tensor::from_vector(full, {outer, idx_n, inner}));
  Tensor gathered = poisoned({outer, idx_n, inner}, DType::F32, device());
  EXPECT_EQ(RUN_KERNEL(device(), gather, args, src.dev.data_ptr(), full_index.dev.data_ptr(),
                       gathered.data_ptr()),
            41);
  EXPECT_EQ(RUN_KERNEL(device(), scatter_add, args, grad.dev.data_ptr(), full_index.dev.data_ptr(),
                       dst.data_ptr()),
            41);
  EXPECT_TRUE(all_close(host_f64(dst), host_f64(dst_init), 0, 0)) << "scatter_add wrote output";
}

// ---------------------------------------------------------------- random

TEST_P(CudaKernels, RandomStreamsMatchTheCpu) {
  const uint64_t seed = 0x1234abcd5678ull, offset = 1000;
  for (DType dtype : {DType::F32, DType::BF16, DType::F64}) {
    for (const auto kind : {kernels::RandomKind::Uniform, kernels::RandomKind::Normal}) {
      Tensor expected = Tensor::empty({100003}, TensorOptions(dtype));
      Tensor actual = poisoned({100003}, dtype, device());
      kernels::cpu::random_fill(kind, expected.view_desc(), seed, offset, -1.0, 3.0);
      RUN_KERNEL(device(), random_fill, kind, actual.view_desc(), seed, offset, -1.0, 3.0);
      // Uniform is exact by construction; normal goes through log/cos, which the device libm
      // may round differently in the last double bit.
      const double tol = kind == kernels::RandomKind::Uniform ? 0.0 : 1e-12;
      EXPECT_TRUE(all_close(host_f64(actual), host_f64(expected), tol, tol))
          << dtype_name(dtype) << (kind == kernels::RandomKind::Uniform ? " uniform" : " normal");
    }
    const Pair x = both(random_tensor({100003}, 1200, dtype));
    Tensor out_cpu = Tensor::empty({100003}, TensorOptions(dtype));
    Tensor mask_cpu = Tensor::empty({100003}, TensorOptions(DType::U8));
    Tensor out_dev = poisoned({100003}, dtype, device());
    Tensor mask_dev = poisoned({100003}, DType::U8, device());
    kernels::cpu::dropout(x.cpu.view_desc(), 0.3, seed, offset, out_cpu.view_desc(),
                          mask_cpu.view_desc());
    RUN_KERNEL(device(), dropout, x.dev.view_desc(), 0.3, seed, offset, out_dev.view_desc(),
               mask_dev.view_desc());
    EXPECT_TRUE(all_close(host_f64(mask_dev), host_f64(mask_cpu), 0, 0)) << dtype_name(dtype);
    EXPECT_TRUE(all_close(host_f64(out_dev), host_f64(out_cpu), 0, 0)) << dtype_name(dtype);
  }
}

// ---------------------------------------------------------------- runtime services

TEST_P(CudaKernels, RuntimeServices) {
#if DISTILL_HAS_CUDA
  EXPECT_GE(kernels::cuda::device_count(), 1);
  const auto props = kernels::cuda::device_properties();
  ASSERT_FALSE(props.empty());
  EXPECT_FALSE(props[0].name.empty());
  EXPECT_GT(props[0].total_memory, 0u);
  EXPECT_NE(kernels::cuda::runtime_version_string().find("CUDA runtime"), std::string::npos);
  EXPECT_NE(kernels::cuda::stream(), nullptr);

  // An impossible allocation fails softly, and the next one works.
  std::string error;
  EXPECT_EQ(kernels::cuda::raw_malloc(size_t(1) << 60, &error), nullptr);
  EXPECT_FALSE(error.empty());
  void* block = kernels::cuda::raw_malloc(4096, &error);
  ASSERT_NE(block, nullptr);
  EXPECT_NO_THROW(kernels::cuda::check_last_error("after a failed allocation"));

  // Round trip through pinned host memory, with a device-side zero fill in between.
  auto* pinned = static_cast<uint8_t*>(kernels::cuda::host_pinned_malloc(4096));
  for (int i = 0; i < 4096; ++i) pinned[i] = static_cast<uint8_t>(i * 7);
  kernels::cuda::memcpy_h2d(block, pinned, 4096);
  kernels::cuda::memset_zero(static_cast<uint8_t*>(block) + 1024, 1024);
  std::vector<uint8_t> back(4096, 1);
  kernels::cuda::memcpy_d2h(back.data(), block, 4096);
  for (int i = 0; i < 4096; ++i)
    ASSERT_EQ(back[i], (i >= 1024 && i < 2048) ? 0 : static_cast<uint8_t>(i * 7)) << i;
  kernels::cuda::host_pinned_free(pinned);
  kernels::cuda::nvtx_push("test range");
  kernels::cuda::nvtx_pop();
  kernels::cuda::synchronize();
  kernels::cuda::raw_free(block);
#endif
}

// CUDA only: a CPU instance would compare the CPU kernels with themselves (useful once, to check
// this harness, by adding Device::cpu() here; too slow to keep in every run).
INSTANTIATE_TEST_SUITE_P(Cuda, CudaKernels, ::testing::Values(Device::cuda(0)),
                         testing::backend_name);

}  // namespace
}  // namespace distill
