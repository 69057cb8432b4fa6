// Fused attention: float64 gradient checks for every mask kind (Lq != Lk, strided inputs, fully
// masked rows), the CPU kernel against a composition of public ops (matmul, softmax), the
// log-sum-exp, error messages, and every backend against the CPU reference across head dims,
// sequence lengths and masks, with outputs poisoned (NaN) before each kernel launch.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/ops/dispatch.h"
#include "kernels/attention.h"
#include "tests/kernels/backend_compare.h"
#include "tests/test_util.h"

namespace distill {
namespace {

using testing::all_close;
using testing::f64;
using testing::gradcheck;
using testing::message_has;
using testing::random_tensor;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

enum class MaskKind { None, Causal, Padding, CausalPadding };
constexpr MaskKind kAllMasks[] = {MaskKind::None, MaskKind::Causal, MaskKind::Padding,
                                  MaskKind::CausalPadding};

const char* mask_name(MaskKind m) {
  switch (m) {
    case MaskKind::None:
      return "none";
    case MaskKind::Causal:
      return "causal";
    case MaskKind::Padding:
      return "padding";
    case MaskKind::CausalPadding:
      return "causal+padding";
  }
  return "?";
}

// Key padding like a real batch: batch b keeps a prefix of the keys (shorter for larger b, never
// empty) and batch 1 also loses every 7th key from the 4th on. U8 [B, Lk] on the CPU, 1 = keep.
Tensor padding_keep(int64_t batch, int64_t kv_len) {
  std::vector<uint8_t> keep(static_cast<size_t>(batch * kv_len));
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t valid = std::max<int64_t>(1, kv_len - (b + 1) * kv_len / 4);
    for (int64_t j = 0; j < kv_len; ++j)
      keep[b * kv_len + j] = j < valid && !(b == 1 && j % 7 == 3);
  }
  return Tensor::from_host(keep.data(), {batch, kv_len}, DType::U8);
}

AttentionMask make_mask(MaskKind kind, int64_t batch, int64_t kv_len, Device device) {
  AttentionMask m;
  m.causal = kind == MaskKind::Causal || kind == MaskKind::CausalPadding;
  if (kind == MaskKind::Padding || kind == MaskKind::CausalPadding)
    m.key_keep = padding_keep(batch, kv_len).to(device);
  return m;
}

// The same attention written with public ops: softmax(scale q k^T, masked with -inf) v. Rows
// with every key masked would be NaN here, so callers avoid them.
Tensor composed_attention(const Tensor& q, const Tensor& k, const Tensor& v, MaskKind kind,
                          double scale) {
  const int64_t batch = q.size(0), lq = q.size(2), lk = k.size(2);
  Tensor scores = mul(matmul(q, transpose(k, -2, -1)), scale);
  std::vector<uint8_t> masked(static_cast<size_t>(batch * lq * lk), 0);
  const bool causal = kind == MaskKind::Causal || kind == MaskKind::CausalPadding;
  const bool padding = kind == MaskKind::Padding || kind == MaskKind::CausalPadding;
  const auto keep = padding_keep(batch, lk).to_int_vector();
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < lq; ++i)
      for (int64_t j = 0; j < lk; ++j)
        masked[(b * lq + i) * lk + j] = (causal && j > i) || (padding && keep[b * lk + j] == 0);
  const Tensor mask = Tensor::from_host(masked.data(), {batch, 1, lq, lk}, DType::U8);
  scores = masked_fill(scores, mask, -std::numeric_limits<double>::infinity());
  return matmul(softmax(scores, -1), v);
}

// Largest finite magnitude (a fully masked row's log-sum-exp is -inf).
double max_abs(const Tensor& t) {
  double m = 0;
  for (double x : t.to_double_vector())
    if (std::isfinite(x)) m = std::max(m, std::fabs(x));
  return m;
}

// |a - b| <= tol * (max|b| + |b|): errors are judged against the tensor's scale, since attention
// outputs and gradients are sums whose small elements come from cancellation.
::testing::AssertionResult close_to(const Tensor& actual, const Tensor& expected, double tol) {
  return all_close(actual, expected, tol * std::max(1.0, max_abs(expected)), tol);
}

// ---------------------------------------------------------------- float64 gradient checks

TEST(AttentionGrad, EveryMaskKindSelfAndCrossAttention) {
  struct Case {
    int64_t batch, heads, lq, lk, d;
  };
  const Case cases[] = {{2, 2, 3, 5, 4}, {2, 1, 5, 3, 3}, {1, 2, 4, 4, 2}, {2, 1, 1, 6, 3}};
  uint64_t seed = 10;
  for (const Case& c : cases) {
    for (MaskKind kind : kAllMasks) {
      SCOPED_TRACE(std::string(mask_name(kind)) + " Lq " + std::to_string(c.lq) + " Lk " +
                   std::to_string(c.lk));
      const AttentionMask mask = make_mask(kind, c.batch, c.lk, Device::cpu());
      EXPECT_TRUE(gradcheck(
          [&](const auto& in) { return attention(in[0], in[1], in[2], mask); },
          {f64({c.batch, c.heads, c.lq, c.d}, seed), f64({c.batch, c.heads, c.lk, c.d}, seed + 1),
           f64({c.batch, c.heads, c.lk, c.d}, seed + 2)}));
      seed += 3;
    }
  }
}

TEST(AttentionGrad, StridedInputsAndExplicitScale) {
  // q, k, v arrive as [B, L, H, D] and are permuted to [B, H, L, D] (non-contiguous views).
  const AttentionMask mask{.causal = true, .key_keep = padding_keep(2, 4)};
  EXPECT_TRUE(gradcheck(
      [&](const auto& in) {
        return attention(permute(in[0], {0, 2, 1, 3}), permute(in[1], {0, 2, 1, 3}),
                         permute(in[2], {0, 2, 1, 3}), mask, 0.7);
      },
      {f64({2, 3, 2, 4}, 40), f64({2, 4, 2, 4}, 41), f64({2, 4, 2, 4}, 42)}));
}

TEST(AttentionGrad, FullyMaskedRowsGiveZerosAndZeroGradients) {
  // Batch 1 masks every key; with causal + key 0 masked, query 0 of batch 0 sees nothing either.
  const std::vector<uint8_t> keep{0, 1, 1, 1, 0, 0, 0, 0};
  const Tensor keep_t = Tensor::from_host(keep.data(), {2, 4}, DType::U8);
  const AttentionMask mask{.causal = true, .key_keep = keep_t};
  Tensor q = f64({2, 2, 3, 4}, 50), k = f64({2, 2, 4, 4}, 51), v = f64({2, 2, 4, 4}, 52);
  for (Tensor* t : {&q, &k, &v}) t->set_requires_grad(true);
  const Tensor out = attention(q, k, v, mask);
  const auto values = out.to_double_vector();
  for (double x : values) EXPECT_FALSE(std::isnan(x));
  for (int64_t h = 0; h < 2; ++h) {
    for (int64_t d = 0; d < 4; ++d) EXPECT_EQ(values[((0 * 2 + h) * 3 + 0) * 4 + d], 0.0);
    for (int64_t i = 0; i < 3; ++i)
      for (int64_t d = 0; d < 4; ++d) EXPECT_EQ(values[((1 * 2 + h) * 3 + i) * 4 + d], 0.0);
  }
  sum(mul(out, out)).backward();
  for (const Tensor* t : {&q, &k, &v}) {
    const auto g = t->grad().to_double_vector();
    for (double x : g) EXPECT_FALSE(std::isnan(x));
    for (size_t i = g.size() / 2; i < g.size(); ++i) EXPECT_EQ(g[i], 0.0) << i;  // batch 1
  }
  EXPECT_TRUE(gradcheck([&](const auto& in) { return attention(in[0], in[1], in[2], mask); },
                        {f64({2, 2, 3, 4}, 53), f64({2, 2, 4, 4}, 54), f64({2, 2, 4, 4}, 55)}));
}

// ---------------------------------------------------------------- CPU reference

TEST(Attention, CpuMatchesComposedOpsForwardAndBackward) {
  struct Case {
    int64_t lq, lk, d;
  };
  const Case cases[] = {{50, 50, 64}, {10, 50, 32}, {100, 197, 64}, {77, 77, 32}, {49, 20, 128}};
  uint64_t seed = 100;
  for (const Case& c : cases) {
    for (MaskKind kind : kAllMasks) {
      SCOPED_TRACE(std::string(mask_name(kind)) + " Lq " + std::to_string(c.lq) + " Lk " +
                   std::to_string(c.lk) + " D " + std::to_string(c.d));
      const AttentionMask mask = make_mask(kind, 2, c.lk, Device::cpu());
      const double scale = 1.0 / std::sqrt(static_cast<double>(c.d));
      const std::vector<Tensor> inputs{random_tensor({2, 3, c.lq, c.d}, seed),
                                       random_tensor({2, 3, c.lk, c.d}, seed + 1),
                                       random_tensor({2, 3, c.lk, c.d}, seed + 2)};
      seed += 3;
      const auto fused = testing::run_on_backend(
          [&](const auto& in) { return attention(in[0], in[1], in[2], mask); }, inputs,
          Device::cpu(), DType::F32);
      const auto composed = testing::run_on_backend(
          [&](const auto& in) { return composed_attention(in[0], in[1], in[2], kind, scale); },
          inputs, Device::cpu(), DType::F32);
      // f32 on both sides (dot products of length D and sums over L in float, in different
      // orders): agreement to a few float ulps of the tensor's scale.
      EXPECT_TRUE(close_to(fused[0], composed[0], 1e-5)) << "forward";
      for (size_t i = 1; i < 4; ++i)
        EXPECT_TRUE(close_to(fused[i], composed[i], 1e-5)) << "grad " << i - 1;
    }
  }
}

TEST(Attention, LogSumExpOfScaledMaskedScores) {
  const Tensor q = random_tensor({2, 2, 5, 8}, 200, DType::F64);
  const Tensor k = random_tensor({2, 2, 7, 8}, 201, DType::F64);
  const Tensor v = random_tensor({2, 2, 7, 8}, 202, DType::F64);
  const AttentionMask mask{.causal = true, .key_keep = padding_keep(2, 7)};
  const AttentionForwardResult r = attention_forward(q, k, v, mask, 0.3);
  ASSERT_EQ(r.lse.dtype(), DType::F64);
  const auto lse = r.lse.to_double_vector();
  const auto qv = q.to_double_vector(), kv = k.to_double_vector();
  const auto keep = padding_keep(2, 7).to_int_vector();
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t i = 0; i < 5; ++i) {
        double total = 0;
        for (int64_t j = 0; j <= i && j < 7; ++j) {
          if (!keep[b * 7 + j]) continue;
          double dot = 0;
          for (int64_t d = 0; d < 8; ++d)
            dot += qv[((b * 2 + h) * 5 + i) * 8 + d] * kv[((b * 2 + h) * 7 + j) * 8 + d];
          total += std::exp(0.3 * dot);
        }
        EXPECT_NEAR(lse[(b * 2 + h) * 5 + i], std::log(total), 1e-12);
      }
}

TEST(Attention, MaskBroadcastAndDtypes) {
  const Tensor q = random_tensor({2, 2, 6, 8}, 300);
  const Tensor k = random_tensor({2, 2, 9, 8}, 301);
  const Tensor v = random_tensor({2, 2, 9, 8}, 302);
  const Tensor row = slice(padding_keep(2, 9), 0, 1, 2);  // [1, 9]: batch 1's pattern
  const Tensor both = concat({row, row}, 0);
  const Tensor expected = attention(q, k, v, {.key_keep = both});
  EXPECT_TRUE(all_close(attention(q, k, v, {.key_keep = row}), expected, 0, 0));
  EXPECT_TRUE(all_close(attention(q, k, v, {.key_keep = both.to(DType::I64)}), expected, 0, 0));
  EXPECT_TRUE(
      all_close(attention(q, k, v, {.key_keep = mul(both.to(DType::F32), 3.0)}), expected, 0, 0));
  // The default scale is 1/sqrt(D).
  EXPECT_TRUE(
      all_close(attention(q, k, v, {}, 0), attention(q, k, v, {}, 1.0 / std::sqrt(8.0)), 0, 0));
}

TEST(Attention, EmptyKeysAndQueries) {
  const Tensor q = random_tensor({1, 2, 3, 4}, 400).set_requires_grad(true);
  const Tensor k = zeros({1, 2, 0, 4}).set_requires_grad(true);
  const Tensor v = zeros({1, 2, 0, 4}).set_requires_grad(true);
  const Tensor out = attention(q, k, v);
  for (double x : out.to_double_vector()) EXPECT_EQ(x, 0.0);  // no keys: every row fully masked
  sum(out).backward();
  for (double x : q.grad().to_double_vector()) EXPECT_EQ(x, 0.0);
  EXPECT_EQ(attention(zeros({1, 2, 0, 4}), random_tensor({1, 2, 5, 4}, 401),
                      random_tensor({1, 2, 5, 4}, 402))
                .shape(),
            (Shape{1, 2, 0, 4}));
}

TEST(Attention, ErrorsNameTheOpAndShapes) {
  const Tensor q = random_tensor({2, 3, 5, 8}, 500);
  const Tensor k = random_tensor({2, 3, 7, 8}, 501);
  const Tensor v = random_tensor({2, 3, 7, 8}, 502);
  const auto expect_error = [](const std::function<void()>& fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "expected an error mentioning '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_TRUE(message_has(e, "attention")) << e.what();
      EXPECT_TRUE(message_has(e, needle)) << e.what();
    }
  };
  expect_error([&] { attention(reshape(q, {6, 5, 8}), k, v); }, "4-D");
  expect_error([&] { attention(q, k, random_tensor({2, 3, 6, 8}, 503)); }, "[2, 3, 6, 8]");
  expect_error(
      [&] {
        attention(q, random_tensor({2, 3, 7, 4}, 504), random_tensor({2, 3, 7, 4}, 505));
      },
      "agree in B, H and D");
  expect_error([&] { attention(q, k.to(DType::F64), v); }, "one dtype");
  expect_error([&] { attention(q.to(DType::I32), k.to(DType::I32), v.to(DType::I32)); }, "f32");
  expect_error([&] { attention(q, k, v, {.key_keep = padding_keep(2, 6)}); }, "key_keep");
  expect_error([&] { attention(q, k, v, {.key_keep = padding_keep(3, 7)}); }, "[3, 7]");
  expect_error([&] { attention(q, k, v, {}, std::numeric_limits<double>::infinity()); }, "scale");
}

// ---------------------------------------------------------------- backends

// Direct kernel calls with every output pre-filled with NaN, so an element a kernel fails to
// write shows up as a mismatch.
kernels::AttentionOperand operand(const Tensor& t) {
  return {t.data_ptr(), t.strides()[0], t.strides()[1], t.strides()[2]};
}

struct KernelRun {
  Tensor out, lse;                // forward
  Tensor grad_q, grad_k, grad_v;  // backward
};

Tensor poisoned(const Shape& shape, DType dtype, Device device) {
  return full(shape, kNaN, TensorOptions(dtype, device));
}

kernels::AttentionArgs args_for(const Tensor& q, const Tensor& k, const Tensor& v,
                                const AttentionMask& mask, double scale) {
  kernels::AttentionArgs a;
  a.dtype = q.dtype();
  a.batch = q.size(0);
  a.heads = q.size(1);
  a.q_len = q.size(2);
  a.kv_len = k.size(2);
  a.head_dim = q.size(3);
  a.scale = scale;
  a.causal = mask.causal;
  if (mask.key_keep.defined()) {
    a.key_keep = mask.key_keep.data<uint8_t>();
    a.key_keep_stride_b = mask.key_keep.size(1);
  }
  a.q = operand(q);
  a.k = operand(k);
  a.v = operand(v);
  return a;
}

// Runs the forward kernel, then the backward kernel on the given (reference) out, lse and dO so
// that the backward comparison does not inherit forward differences. Inputs are on `device`.
KernelRun run_kernels(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMask& mask,
                      double scale, const Tensor& ref_out, const Tensor& ref_lse,
                      const Tensor& grad_out) {
  const Device device = q.device();
  const DType lse_dtype = kernels::attention_lse_dtype(q.dtype());
  KernelRun r;
  r.out = poisoned(q.shape(), q.dtype(), device);
  r.lse = poisoned({q.size(0), q.size(1), q.size(2)}, lse_dtype, device);
  kernels::AttentionArgs a = args_for(q, k, v, mask, scale);
  a.out = operand(r.out);
  a.lse = r.lse.data_ptr();
  DISTILL_DISPATCH(device, attention_forward, a);

  const Tensor out = ref_out.defined() ? ref_out : r.out;
  const Tensor lse = ref_lse.defined() ? ref_lse : r.lse;
  r.grad_q = poisoned(q.shape(), q.dtype(), device);
  r.grad_k = poisoned(k.shape(), q.dtype(), device);
  r.grad_v = poisoned(v.shape(), q.dtype(), device);
  kernels::AttentionArgs b = args_for(q, k, v, mask, scale);
  b.out = operand(out);
  b.lse = lse.data_ptr();
  b.grad_out = operand(grad_out);
  b.grad_q = operand(r.grad_q);
  b.grad_k = operand(r.grad_k);
  b.grad_v = operand(r.grad_v);
  DISTILL_DISPATCH(device, attention_backward, b);
  return r;
}

struct SweepCase {
  int64_t lq, lk, d;
};

// Every (head dim, length pair) of the sweep: self-attention at the odd lengths of the issue and
// cross-attention both ways (class queries over image tokens, and more queries than keys).
std::vector<SweepCase> sweep_cases() {
  std::vector<SweepCase> cases;
  for (int64_t d : {32, 64, 128})
    for (auto [lq, lk] : std::vector<std::pair<int64_t, int64_t>>{{1, 1},
                                                                  {49, 49},
                                                                  {50, 50},
                                                                  {77, 77},
                                                                  {197, 197},
                                                                  {10, 50},
                                                                  {100, 197},
                                                                  {197, 50},
                                                                  {1, 77}})
      cases.push_back({lq, lk, d});
  return cases;
}

// Compares `device` with the CPU kernels in one dtype. tol: see the callers.
void expect_kernels_match_cpu(Device device, DType dtype, const SweepCase& c, MaskKind kind,
                              uint64_t seed, double tol) {
  const int64_t batch = 2, heads = 3;
  SCOPED_TRACE(std::string(dtype_name(dtype)) + " " + mask_name(kind) + " Lq " +
               std::to_string(c.lq) + " Lk " + std::to_string(c.lk) + " D " + std::to_string(c.d));
  const Tensor q = random_tensor({batch, heads, c.lq, c.d}, seed).to(dtype);
  const Tensor k = random_tensor({batch, heads, c.lk, c.d}, seed + 1).to(dtype);
  const Tensor v = random_tensor({batch, heads, c.lk, c.d}, seed + 2).to(dtype);
  const Tensor dout = random_tensor({batch, heads, c.lq, c.d}, seed + 3).to(dtype);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.d));
  const AttentionMask cpu_mask = make_mask(kind, batch, c.lk, Device::cpu());
  const KernelRun ref = run_kernels(q, k, v, cpu_mask, scale, Tensor(), Tensor(), dout);

  const AttentionMask dev_mask = make_mask(kind, batch, c.lk, device);
  const KernelRun got = run_kernels(q.to(device), k.to(device), v.to(device), dev_mask, scale,
                                    ref.out.to(device), ref.lse.to(device), dout.to(device));
  EXPECT_TRUE(close_to(got.out.to(Device::cpu()), ref.out, tol)) << "out";
  EXPECT_TRUE(close_to(got.lse.to(Device::cpu()), ref.lse, tol)) << "lse";
  EXPECT_TRUE(close_to(got.grad_q.to(Device::cpu()), ref.grad_q, tol)) << "grad q";
  EXPECT_TRUE(close_to(got.grad_k.to(Device::cpu()), ref.grad_k, tol)) << "grad k";
  EXPECT_TRUE(close_to(got.grad_v.to(Device::cpu()), ref.grad_v, tol)) << "grad v";
}

class AttentionBackend : public testing::BackendTest {};

// The CPU instance runs a small part of the sweep (CPU against itself, poisoned outputs); the
// CUDA instances run all of it.
std::vector<SweepCase> cases_for(Device device) {
  auto all = sweep_cases();
  if (device.is_cuda()) return all;
  return {all[3], all[6]};
}

TEST_P(AttentionBackend, F32KernelsMatchCpu) {
  // fp32 SIMT math against the CPU's fp32 math with a double softmax normaliser: the only
  // differences are summation orders, ~1e-6 of each tensor's scale; 1e-5 leaves a 10x margin.
  uint64_t seed = 1000;
  for (const SweepCase& c : cases_for(device()))
    for (MaskKind kind : kAllMasks)
      expect_kernels_match_cpu(device(), DType::F32, c, kind, seed += 4, 1e-5);
}

TEST_P(AttentionBackend, Bf16KernelsMatchCpu) {
  // Same bf16 inputs on both sides; the CPU computes in fp32 and rounds once, the tensor-core
  // kernels also round P and dS to bf16 before their GEMMs (FlashAttention-2's choice), and
  // every output is bf16 (8 bits of mantissa, relative step 2^-8 = 4e-3): 1e-2 of the scale.
  uint64_t seed = 5000;
  for (const SweepCase& c : cases_for(device()))
    for (MaskKind kind : kAllMasks)
      expect_kernels_match_cpu(device(), DType::BF16, c, kind, seed += 4, 1e-2);
}

TEST_P(AttentionBackend, OtherPathsMatchCpu) {
  // f16 on tensor cores; head dims that are not a multiple of 8 (bf16 falls back to the SIMT
  // kernel) or not a multiple of 16 (tensor cores with zero padding); f64 on the SIMT kernel.
  uint64_t seed = 9000;
  const MaskKind kinds[] = {MaskKind::None, MaskKind::CausalPadding};
  for (MaskKind kind : kinds) {
    expect_kernels_match_cpu(device(), DType::F16, {77, 77, 64}, kind, seed += 4, 1e-2);
    expect_kernels_match_cpu(device(), DType::F16, {10, 197, 128}, kind, seed += 4, 1e-2);
    expect_kernels_match_cpu(device(), DType::BF16, {50, 50, 20}, kind, seed += 4, 1e-2);
    expect_kernels_match_cpu(device(), DType::BF16, {50, 77, 40}, kind, seed += 4, 1e-2);
    expect_kernels_match_cpu(device(), DType::F32, {50, 50, 20}, kind, seed += 4, 1e-5);
    // f64 in double on both sides: agreement to ~1e-15 of the scale, checked at 1e-12.
    expect_kernels_match_cpu(device(), DType::F64, {49, 77, 64}, kind, seed += 4, 1e-12);
  }
}

TEST_P(AttentionBackend, AutogradThroughPublicOpMatchesCpu) {
  // The public op end to end (strided [B, L, H, D] -> [B, H, L, D] views, mask on the device,
  // autograd) against the CPU. Tolerances as in the kernel tests above.
  const std::vector<Tensor> inputs{random_tensor({2, 50, 3, 64}, 700),
                                   random_tensor({2, 77, 3, 64}, 701),
                                   random_tensor({2, 77, 3, 64}, 702)};
  for (MaskKind kind : kAllMasks) {
    SCOPED_TRACE(mask_name(kind));
    const AttentionMask mask = make_mask(kind, 2, 77, device());
    const AttentionMask cpu_mask = make_mask(kind, 2, 77, Device::cpu());
    for (DType dtype : {DType::F32, DType::BF16}) {
      const double tol = dtype == DType::F32 ? 1e-5 : 1e-2;
      const auto fn = [](const AttentionMask& m) {
        return [m](const std::vector<Tensor>& in) {
          return attention(permute(in[0], {0, 2, 1, 3}), permute(in[1], {0, 2, 1, 3}),
                           permute(in[2], {0, 2, 1, 3}), m);
        };
      };
      const auto expected = testing::run_on_backend(fn(cpu_mask), inputs, Device::cpu(), dtype);
      const auto actual = testing::run_on_backend(fn(mask), inputs, device(), dtype);
      for (size_t i = 0; i < expected.size(); ++i)
        EXPECT_TRUE(close_to(actual[i], expected[i], tol)) << dtype_name(dtype) << " result " << i;
    }
  }
}

TEST_P(AttentionBackend, FullyMaskedRowsAreZeroNotNaN) {
  const std::vector<uint8_t> keep{0, 1, 1, 1, 1, 0, 0, 0, 0, 0};
  const AttentionMask mask{
      .causal = true, .key_keep = Tensor::from_host(keep.data(), {2, 5}, DType::U8).to(device())};
  for (DType dtype : {DType::F32, DType::BF16}) {
    const Tensor q = random_tensor({2, 2, 70, 64}, 800).to(dtype).to(device());
    const Tensor k = random_tensor({2, 2, 5, 64}, 801).to(dtype).to(device());
    const Tensor v = random_tensor({2, 2, 5, 64}, 802).to(dtype).to(device());
    const Tensor dout = random_tensor({2, 2, 70, 64}, 803).to(dtype).to(device());
    const KernelRun r = run_kernels(q, k, v, mask, 0.125, Tensor(), Tensor(), dout);
    const auto out = r.out.to(Device::cpu()).to_double_vector();
    const auto lse = r.lse.to(Device::cpu()).to_double_vector();
    for (int64_t h = 0; h < 2; ++h) {
      for (int64_t d = 0; d < 64; ++d) EXPECT_EQ(out[((0 * 2 + h) * 70 + 0) * 64 + d], 0.0);
      EXPECT_EQ(lse[(0 * 2 + h) * 70], -std::numeric_limits<double>::infinity());
      for (int64_t i = 0; i < 70; ++i)
        EXPECT_EQ(lse[(1 * 2 + h) * 70 + i], -std::numeric_limits<double>::infinity());
    }
    for (const Tensor& t : {r.out, r.grad_q, r.grad_k, r.grad_v}) {
      const auto vals = t.to(Device::cpu()).to_double_vector();
      for (size_t i = 0; i < vals.size(); ++i) ASSERT_FALSE(std::isnan(vals[i])) << i;
      for (size_t i = vals.size() / 2; i < vals.size(); ++i)
        ASSERT_EQ(vals[i], 0.0) << i;  // batch 1
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, AttentionBackend, ::testing::ValuesIn(testing::all_backends()),
                         testing::backend_name);

}  // namespace
}  // namespace distill
