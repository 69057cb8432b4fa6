// FlopCounter: the matrix ops count what PyTorch's flop counter counts, only while a counter is
// alive, and nested counters each see their own span.
#include "core/flops.h"
#include "core/ops.h"
#include "core/ops_attention.h"
#include "core/ops_conv.h"
#include "tests/test_util.h"

namespace distill {
namespace {

TEST(FlopCounter, CountsMatmulConvAndAttentionLikePyTorch) {
  const Tensor x = testing::random_tensor({4, 3, 5}, 1);
  const Tensor w = testing::random_tensor({7, 5}, 2);
  FlopCounter outer;
  {
    FlopCounter counter;
    linear(x, w, Tensor());  // [12, 5] @ [5, 7]
    EXPECT_DOUBLE_EQ(counter.flops(), 2.0 * 12 * 7 * 5);
  }
  const double after_linear = outer.flops();
  EXPECT_DOUBLE_EQ(after_linear, 2.0 * 12 * 7 * 5);

  FlopCounter conv_counter;
  const Tensor img = testing::random_tensor({2, 3, 8, 8}, 3);
  const Tensor kernel = testing::random_tensor({6, 3, 3, 3}, 4);
  conv2d(img, kernel, Tensor(), 2, 1);  // -> [2, 6, 4, 4]
  EXPECT_DOUBLE_EQ(conv_counter.flops(), 2.0 * (2 * 6 * 4 * 4) * 3 * 3 * 3);

  FlopCounter attn_counter;
  const Tensor q = testing::random_tensor({2, 3, 10, 8}, 5);
  const Tensor kv = testing::random_tensor({2, 3, 50, 8}, 6);
  attention(q, kv, kv);
  EXPECT_DOUBLE_EQ(attn_counter.flops(), 4.0 * 2 * 3 * 10 * 50 * 8);
}

TEST(FlopCounter, NothingIsCountedWithoutACounter) {
  double before;
  {
    FlopCounter c;
    before = c.flops();
  }
  EXPECT_FALSE(flops::counting());
  matmul(testing::random_tensor({3, 4}, 1), testing::random_tensor({4, 5}, 2));
  FlopCounter c;
  EXPECT_EQ(c.flops(), 0.0);
  EXPECT_EQ(before, 0.0);
}

}  // namespace
}  // namespace distill
