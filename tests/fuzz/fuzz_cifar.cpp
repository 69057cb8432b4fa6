// CIFAR-10 / CIFAR-100 binary batches. The input's first byte picks the variant (bit 0), coarse
// labels (bit 1) and skip_bad_samples (bit 2); the rest is the test batch.
#include "data/cifar.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace distill::data;
  if (size < 1) return 0;
  const bool c100 = data[0] & 1;
  const auto dir = distill::fuzz::scratch_dir() / (c100 ? "cifar-100-binary" : "cifar-10");
  std::filesystem::create_directories(dir);
  distill::fuzz::write_bytes(dir / (c100 ? "test.bin" : "test_batch.bin"), data + 1, size - 1);
  distill::fuzz::expect_clean_failure([&] {
    ReaderOptions options;
    options.skip_bad_samples = data[0] & 4;
    CifarDataset ds(dir.string(), "test", /*coarse=*/c100 && (data[0] & 2), options);
    for (int64_t i = 0; i < ds.size(); ++i) {
      (void)ds.get(i);
      (void)ds.describe(i);
    }
  });
  return 0;
}
