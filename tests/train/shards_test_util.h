// Shared by the training tests that run `distill` end to end: the real CIFAR-10 WebDataset shards
// in ../shared/data, the skip every test reading them starts with, and waiting for a run's first
// logged step.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>

namespace distill::testing {

inline std::string shards() {
  return std::string(DISTILL_SOURCE_DIR) + "/../shared/data/cifar10-jpg";
}

// Polls (up to 30 s) until `metrics` (a run's metrics.jsonl) holds a logged step, then calls `act`
// (say, signal the run); false when nothing was logged in time.
inline bool once_a_step_is_logged(const std::filesystem::path& metrics,
                                  const std::function<void()>& act) {
  for (int i = 0; i < 6000; ++i) {
    if (std::filesystem::exists(metrics) && std::filesystem::file_size(metrics) > 0) {
      act();
      return true;
    }
    usleep(5000);
  }
  return false;
}

}  // namespace distill::testing

#define SKIP_WITHOUT_SHARDS()                                                    \
  if (!std::filesystem::exists(::distill::testing::shards() + "/test-0000.tar")) \
  GTEST_SKIP() << "real CIFAR-10 shards not found at " << ::distill::testing::shards()
