// The real CIFAR-10 shards in ../shared/data/cifar10-jpg (skipped with a message when absent):
// sample and per-class counts from the .cls members, and a sample of decoded images.
#include <gtest/gtest.h>

#include "data/loader.h"
#include "data/webdataset.h"
#include "tests/data/data_test_util.h"

namespace distill::data {
namespace {

std::string cifar_jpg() {
  return testing::shared_data_dir() + "/cifar10-jpg/";
}

TEST(RealCifar10Shards, TrainAndTestCounts) {
  DISTILL_SKIP_WITHOUT_SHARED_DATA("cifar10-jpg/train-0000.tar");
  WebDataset train(cifar_jpg() + "train-{0000..0004}.tar");
  EXPECT_EQ(train.size(), 50000);
  ASSERT_EQ(train.num_classes(), 10);
  EXPECT_EQ(train.class_names().front(), "airplane");
  EXPECT_EQ(train.class_names().back(), "truck");
  for (int64_t c : train.class_counts()) EXPECT_EQ(c, 5000);
  WebDataset test(cifar_jpg() + "test-0000.tar");
  EXPECT_EQ(test.size(), 10000);
  for (int64_t c : test.class_counts()) EXPECT_EQ(c, 1000);
  EXPECT_EQ(train.skipped().count + test.skipped().count, 0);
  // Keys name their class ("airplane_0042").
  for (int64_t i = 0; i < 200; ++i)
    EXPECT_EQ(test.key(i).rfind(test.class_names()[static_cast<size_t>(test.label(i))] + "_", 0),
              0u)
        << test.key(i);
  // A sample of decoded images: 32x32 RGB.
  for (int64_t i = 0; i < test.size(); i += 97) {
    const Sample s = test.get(i);
    ASSERT_EQ(s.image.width, 32);
    ASSERT_EQ(s.image.height, 32);
  }
}

TEST(RealCifar10Shards, StreamingLoaderReadsTheTestShard) {
  DISTILL_SKIP_WITHOUT_SHARED_DATA("cifar10-jpg/test-0000.tar");
  LoaderOptions o;
  o.batch_size = 500;
  o.workers = 2;
  o.shuffle_buffer = 1000;
  DataLoader loader({cifar_jpg() + "test-0000.tar"}, 10, std::make_shared<ClipPreprocess>(16), o);
  loader.start_epoch(0);
  Batch b;
  int64_t n = 0;
  std::vector<int64_t> counts(10, 0);
  while (loader.next(b)) {
    n += b.size();
    for (int64_t label : b.labels.to_int_vector()) ++counts[static_cast<size_t>(label)];
  }
  EXPECT_EQ(n, 10000);
  for (int64_t c : counts) EXPECT_EQ(c, 1000);
  EXPECT_EQ(loader.epoch_skipped().count, 0);
}

}  // namespace
}  // namespace distill::data
