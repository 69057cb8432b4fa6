// Philox known answers, the random fills' statistics and reproducibility, dropout, and CPU/CUDA
// agreement of the streams.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernels/philox.h"
#include "tests/test_util.h"

namespace distill {
namespace {

using kernels::Philox4;
using testing::all_close;

// ---------------------------------------------------------------- Philox-4x32-10

// Known-answer vectors from Random123's kat_vectors (philox4x32, 10 rounds): counter words
// ctr[0..3], key words key[0..1], expected output words.
TEST(Philox, MatchesRandom123KnownAnswers) {
  struct Kat {
    Philox4 ctr;
    uint32_t k0, k1;
    Philox4 expected;
  };
  const Kat kats[] = {
      {{{0u, 0u, 0u, 0u}}, 0u, 0u, {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}}},
      {{{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}},
       0xffffffffu,
       0xffffffffu,
       {{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}}},
      {{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}},
       0xa4093822u,
       0x299f31d0u,
       {{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}}},
  };
  for (const Kat& k : kats) {
    const Philox4 got = kernels::philox4x32_10_words(k.ctr, k.k0, k.k1);
    for (int w = 0; w < 4; ++w) EXPECT_EQ(got.v[w], k.expected.v[w]) << "word " << w;
  }
  // The engine's (counter, seed) form packs words (lo, hi, 0, 0) and (lo, hi): the zero vector
  // is therefore reachable directly.
  const Philox4 zero = kernels::philox4x32_10(0, 0);
  EXPECT_EQ(zero.v[0], 0x6627e8d5u);
  EXPECT_EQ(zero.v[3], 0x9b00dbd8u);
  const Philox4 packed = kernels::philox4x32_10(0x0000000200000001ull, 0x0000000400000003ull);
  const Philox4 words = kernels::philox4x32_10_words({{1u, 2u, 0u, 0u}}, 3u, 4u);
  for (int w = 0; w < 4; ++w) EXPECT_EQ(packed.v[w], words.v[w]);
}

// ---------------------------------------------------------------- fills

struct Moments {
  double mean, std, min, max;
};
Moments moments(const Tensor& t) {
  const auto v = t.to_double_vector();
  const double mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  double sq = 0, lo = v[0], hi = v[0];
  for (double x : v) {
    sq += (x - mean) * (x - mean);
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  return {mean, std::sqrt(sq / static_cast<double>(v.size() - 1)), lo, hi};
}

// Tolerances are 5 standard errors for n = 1e5: the mean of U[0,1) has standard error
// 0.2887/316 = 9e-4, the mean of N(0,1) 3.2e-3, a sample std of N(0,1) 2.2e-3.
constexpr int64_t kSamples = 100000;

TEST(Random, UniformStatistics) {
  Generator g(2024);
  const Moments m = moments(rand({kSamples}, {}, &g));
  EXPECT_NEAR(m.mean, 0.5, 5e-3);
  EXPECT_NEAR(m.std, std::sqrt(1.0 / 12.0), 3e-3);
  EXPECT_GE(m.min, 0.0);
  EXPECT_LT(m.max, 1.0);
  const Moments r = moments(uniform({kSamples}, -3.0, 5.0, DType::F64, &g));
  EXPECT_NEAR(r.mean, 1.0, 8 * 5e-3);
  EXPECT_GE(r.min, -3.0);
  EXPECT_LT(r.max, 5.0);
}

TEST(Random, NormalStatistics) {
  Generator g(7);
  const Moments m = moments(randn({kSamples}, {}, &g));
  EXPECT_NEAR(m.mean, 0.0, 1.6e-2);
  EXPECT_NEAR(m.std, 1.0, 1.1e-2);
  const Moments s = moments(normal({kSamples}, 3.0, 0.5, DType::F64, &g));
  EXPECT_NEAR(s.mean, 3.0, 0.5 * 1.6e-2);
  EXPECT_NEAR(s.std, 0.5, 0.5 * 1.1e-2);
  // Tails: P(|x| > 3) = 0.0027, so 270 of 1e5 expected, standard deviation 16; 5 of them.
  const auto v = randn({kSamples}, {}, &g).to_double_vector();
  const auto beyond = std::count_if(v.begin(), v.end(), [](double x) { return std::fabs(x) > 3; });
  EXPECT_GT(beyond, 270 - 82);
  EXPECT_LT(beyond, 270 + 82);
}

TEST(Random, ValuesFollowTheDocumentedStream) {
  // Element i of a draw at offset o is philox_uniform(seed, o + i), exactly (24-bit values are
  // exact in f32 and f64).
  Generator g(99);
  g.set_state(99, 1000);
  const auto v = rand({16}, DType::F64, &g).to_double_vector();
  for (int i = 0; i < 16; ++i)
    EXPECT_EQ(v[i], static_cast<double>(kernels::philox_uniform(99, 1000 + i)));
  g.set_state(99, 1000);
  const auto n = randn({16}, DType::F64, &g).to_double_vector();
  for (int i = 0; i < 16; ++i) EXPECT_EQ(n[i], kernels::philox_normal(99, 1000 + i));
}

TEST(Random, SameSeedAndOffsetGiveSameValues) {
  Generator a(5), b(5), c(6);
  Tensor ta = randn({3, 7}, {}, &a);
  Tensor tb = randn({3, 7}, {}, &b);
  Tensor tc = randn({3, 7}, {}, &c);
  EXPECT_EQ(ta.to_float_vector(), tb.to_float_vector());
  EXPECT_NE(ta.to_float_vector(), tc.to_float_vector());
  // A second draw continues the stream rather than repeating it.
  EXPECT_NE(randn({3, 7}, {}, &a).to_float_vector(), ta.to_float_vector());
}

TEST(Random, GeneratorOffsetAdvancesByNumel) {
  Generator g(1);
  EXPECT_EQ(g.offset(), 0u);
  Tensor first = rand({2, 5}, {}, &g);
  EXPECT_EQ(g.offset(), 10u);
  Tensor second = rand({4}, {}, &g);
  EXPECT_EQ(g.offset(), 14u);
  // Two draws equal one draw of the combined size: the stream is split, not restarted.
  Generator whole(1);
  const auto all = rand({14}, {}, &whole).to_float_vector();
  auto parts = first.to_float_vector();
  const auto tail = second.to_float_vector();
  parts.insert(parts.end(), tail.begin(), tail.end());
  EXPECT_EQ(parts, all);
}

TEST(Random, ManualSeedResetsTheDefaultGenerator) {
  manual_seed(42);
  const auto a = randn({8}).to_float_vector();
  EXPECT_EQ(default_generator().offset(), 8u);
  manual_seed(42);
  EXPECT_EQ(randn({8}).to_float_vector(), a);
}

TEST(Random, NeedsFloatingDtype) {
  EXPECT_THROW(rand({3}, DType::I32), Error);
}

// ---------------------------------------------------------------- dropout

TEST(Dropout, MaskRateScalingAndGradient) {
  const double p = 0.3;
  Generator g(11);
  Tensor x = testing::random_tensor({kSamples}, 3, DType::F32, 0.5, 1.5).set_requires_grad(true);
  Tensor y = dropout(x, p, true, &g);
  EXPECT_EQ(g.offset(), static_cast<uint64_t>(kSamples));
  const auto xv = x.to_float_vector(), yv = y.to_float_vector();
  int64_t kept = 0;
  for (size_t i = 0; i < yv.size(); ++i) {
    if (yv[i] == 0.0f) continue;  // x is never 0, so 0 means dropped
    ++kept;
    EXPECT_NEAR(yv[i], xv[i] / (1.0 - p), 1e-6 * std::fabs(yv[i]));
  }
  // Kept fraction 0.7: standard error sqrt(0.21 / 1e5) = 1.4e-3; 5 of them.
  EXPECT_NEAR(static_cast<double>(kept) / kSamples, 1.0 - p, 7.5e-3);
  // Gradient: 1/(1-p) where kept, 0 where dropped.
  sum(y).backward();
  const auto gv = x.grad().to_float_vector();
  for (size_t i = 0; i < gv.size(); ++i) {
    const float expected = yv[i] == 0.0f ? 0.0f : static_cast<float>(1.0 / (1.0 - p));
    ASSERT_EQ(gv[i], expected) << "element " << i;
  }
}

TEST(Dropout, FollowsTheDocumentedMaskRule) {
  // mask[i] = philox_uniform(seed, offset + i) >= p.
  Generator g(77);
  g.set_state(77, 500);
  Tensor y = dropout(ones({64}, DType::F64), 0.5, true, &g);
  const auto v = y.to_double_vector();
  for (int i = 0; i < 64; ++i) {
    const bool keep = kernels::philox_uniform(77, 500 + i) >= 0.5;
    EXPECT_EQ(v[i], keep ? 2.0 : 0.0) << "element " << i;
  }
}

TEST(Dropout, Gradcheck) {
  // Fresh generator with the same state on every call, so each evaluation draws the same mask.
  EXPECT_TRUE(testing::gradcheck(
      [](const auto& in) {
        Generator g(13);
        return dropout(transpose(in[0], 0, 1), 0.4, true, &g);
      },
      {testing::random_tensor({4, 5}, 14, DType::F64)}));
}

TEST(Dropout, IdentityCasesAndErrors) {
  Tensor x = testing::random_tensor({3, 4}, 1);
  Generator g(1);
  EXPECT_TRUE(dropout(x, 0.5, /*training=*/false, &g).same(x));
  EXPECT_TRUE(dropout(x, 0.0, true, &g).same(x));
  EXPECT_EQ(g.offset(), 0u);  // nothing drawn
  Tensor xr = x.detach().set_requires_grad(true);
  Tensor all_dropped = dropout(xr, 1.0, true, &g);
  for (float v : all_dropped.to_float_vector()) EXPECT_EQ(v, 0.0f);
  sum(all_dropped).backward();
  for (float v : xr.grad().to_float_vector()) EXPECT_EQ(v, 0.0f);
  EXPECT_THROW(dropout(x, 1.5, true, &g), Error);
  EXPECT_THROW(dropout(x, -0.1, true, &g), Error);
  EXPECT_THROW(dropout(zeros({3}, DType::I32), 0.5, true, &g), Error);
}

// ---------------------------------------------------------------- CPU vs device

class RandomBackend : public testing::BackendTest {};

TEST_P(RandomBackend, StreamsMatchCpu) {
  for (DType dtype : {DType::F32, DType::BF16, DType::F64}) {
    SCOPED_TRACE(dtype_name(dtype));
    Generator cpu_gen(31), dev_gen(31);
    // Uniform: 24-bit values and one fma, identical bit for bit.
    Tensor u_cpu = uniform({1000}, -1.0, 3.0, TensorOptions(dtype, Device::cpu()), &cpu_gen);
    Tensor u_dev = uniform({1000}, -1.0, 3.0, TensorOptions(dtype, device()), &dev_gen);
    EXPECT_EQ(to_device(u_dev, Device::cpu()).to_double_vector(), u_cpu.to_double_vector());
    // Normal: the double log/cos of the two math libraries may differ in the last bit, which
    // can flip the final rounding by one ulp: 1e-6 relative covers f32 (bf16 and f64 are
    // compared at their own ulp scale).
    Tensor n_cpu = randn({1000}, TensorOptions(dtype, Device::cpu()), &cpu_gen);
    Tensor n_dev = randn({1000}, TensorOptions(dtype, device()), &dev_gen);
    const double rtol = dtype == DType::BF16 ? 8e-3 : dtype == DType::F32 ? 1e-6 : 1e-14;
    EXPECT_TRUE(all_close(to_device(n_dev, Device::cpu()), n_cpu, 1e-12, rtol));
    EXPECT_EQ(cpu_gen.offset(), dev_gen.offset());
  }
}

TEST_P(RandomBackend, DropoutMatchesCpu) {
  for (DType dtype : {DType::F32, DType::BF16}) {
    SCOPED_TRACE(dtype_name(dtype));
    Tensor x = testing::random_tensor({37, 53}, 5).to(dtype);
    Generator cpu_gen(8), dev_gen(8);
    Tensor xc = x.detach().set_requires_grad(true);
    Tensor xd = to_device(x, device()).detach().set_requires_grad(true);
    Tensor yc = dropout(xc, 0.25, true, &cpu_gen);
    Tensor yd = dropout(xd, 0.25, true, &dev_gen);
    // Same mask and the same single multiply: exact.
    EXPECT_EQ(to_device(yd, Device::cpu()).to_double_vector(), yc.to_double_vector());
    Tensor w = testing::random_tensor({37, 53}, 6).to(dtype);
    yc.backward(w);
    yd.backward(to_device(w, device()));
    EXPECT_EQ(to_device(xd.grad(), Device::cpu()).to_double_vector(), xc.grad().to_double_vector());
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, RandomBackend, ::testing::ValuesIn(testing::all_backends()),
                         testing::backend_name);

}  // namespace
}  // namespace distill
