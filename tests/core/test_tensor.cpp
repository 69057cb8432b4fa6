#include "tests/test_util.h"

namespace distill {
namespace {

TEST(Tensor, EmptyHasContiguousStrides) {
  Tensor t = Tensor::empty({2, 3, 4});
  EXPECT_EQ(t.strides(), (Shape{12, 4, 1}));
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data_ptr()) % kCpuAlignment, 0u);
}

TEST(Tensor, TransposeIsAViewAndContiguousCopies) {
  Tensor t = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor tt = t.transpose(0, 1);
  EXPECT_EQ(tt.shape(), (Shape{3, 2}));
  EXPECT_FALSE(tt.is_contiguous());
  EXPECT_EQ(tt.storage(), t.storage());
  Tensor c = tt.contiguous();
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_EQ(c.to_float_vector(), (std::vector<float>{1, 4, 2, 5, 3, 6}));
}

TEST(Tensor, SliceAndReshapeViews) {
  Tensor t = arange(0, 24, 1, DType::F32).reshape({2, 3, 4});
  Tensor s = slice(t, 2, 1, 4, 2);  // columns 1 and 3
  EXPECT_EQ(s.shape(), (Shape{2, 3, 2}));
  EXPECT_EQ(s.to_float_vector(), (std::vector<float>{1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23}));
  Tensor r = reshape(t, {6, -1});
  EXPECT_EQ(r.shape(), (Shape{6, 4}));
  EXPECT_EQ(r.storage(), t.storage());
  EXPECT_THROW(view(t.transpose(0, 2), {24}), Error);
  EXPECT_EQ(reshape(t.transpose(0, 2), {24}).numel(), 24);
}

TEST(Tensor, CastRoundTripsBf16AndF16) {
  Tensor t = Tensor::from_vector(std::vector<float>{1.0f, -2.5f, 0.1f, 65504.0f, 1e-6f}, {5});
  auto bf = t.to(DType::BF16).to(DType::F32).to_float_vector();
  auto hf = t.to(DType::F16).to(DType::F32).to_float_vector();
  EXPECT_EQ(bf[0], 1.0f);
  EXPECT_EQ(bf[1], -2.5f);
  EXPECT_NEAR(bf[2], 0.1f, 0.1f / 128);
  EXPECT_EQ(hf[3], 65504.0f);
  EXPECT_NEAR(hf[2], 0.1f, 0.1f / 1024);
  EXPECT_NEAR(hf[4], 1e-6f, 6e-8f);  // f16 subnormal
}

TEST(Tensor, ErrorsNameTheOpAndShapes) {
  Tensor t = Tensor::empty({2, 3});
  try {
    (void)reshape(t, {4, 2});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("reshape"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[2, 3]"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace distill
