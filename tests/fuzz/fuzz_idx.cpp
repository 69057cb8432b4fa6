// IDX (MNIST) images + labels files. The input's first byte splits it: the labels file is the
// next `first byte` bytes, the images file the rest (both raw; gzip goes through zlib).
#include "data/idx.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace distill::data;
  if (size < 1) return 0;
  const size_t label_size = std::min<size_t>(data[0], size - 1);
  const auto images = distill::fuzz::scratch_dir() / "images-idx3-ubyte";
  const auto labels = distill::fuzz::scratch_dir() / "labels-idx1-ubyte";
  distill::fuzz::write_bytes(labels, data + 1, label_size);
  distill::fuzz::write_bytes(images, data + 1 + label_size, size - 1 - label_size);
  for (bool skip : {false, true}) {
    distill::fuzz::expect_clean_failure([&] {
      ReaderOptions options;
      options.skip_bad_samples = skip;
      IdxDataset ds(images.string(), labels.string(), options);
      for (int64_t i = 0; i < ds.size(); ++i) (void)ds.get(i);
    });
  }
  return 0;
}
