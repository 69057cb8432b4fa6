// The real CIFAR-10 WebDataset shards in ../shared/data (the training tests' data) and the skip
// every test reading them starts with.
#pragma once

#include <filesystem>
#include <string>

namespace distill::testing {

inline std::string shards() {
  return std::string(DISTILL_SOURCE_DIR) + "/../shared/data/cifar10-jpg";
}

}  // namespace distill::testing

#define SKIP_WITHOUT_SHARDS()                                                    \
  if (!std::filesystem::exists(::distill::testing::shards() + "/test-0000.tar")) \
  GTEST_SKIP() << "real CIFAR-10 shards not found at " << ::distill::testing::shards()
