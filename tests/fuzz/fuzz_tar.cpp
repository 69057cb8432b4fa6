// Tar archives and WebDataset shards: the streaming TarReader over every member, then the
// WebDataset index (keys, .cls labels) and each sample's decode.
#include "data/tar.h"
#include "data/webdataset.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace distill::data;
  const auto path = distill::fuzz::scratch_dir() / "shard.tar";
  distill::fuzz::write_bytes(path, data, size);
  distill::fuzz::expect_clean_failure([&] {
    TarReader tar(path.string());
    TarMember member;
    for (int i = 0; tar.next(member); ++i)
      if (i % 2 == 0) (void)tar.read_data();  // read some, skip others
  });
  for (bool skip : {false, true}) {
    distill::fuzz::expect_clean_failure([&] {
      ReaderOptions options;
      options.skip_bad_samples = skip;
      WebDataset ds(std::vector<std::string>{path.string()}, options);
      for (int64_t i = 0; i < ds.size(); ++i) {
        distill::fuzz::expect_clean_failure([&] {
          (void)ds.label(i);
          (void)ds.describe(i);
          (void)ds.get(i);
        });
      }
    });
  }
  return 0;
}
