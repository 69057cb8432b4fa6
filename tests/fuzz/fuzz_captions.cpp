// Caption files, TSV and JSON lines (the input's first byte picks: even TSV, odd JSON lines).
// The folder holds images a.jpg and b.png so that inputs naming them get past the existence
// check into the rest of the reader.
#include "data/captions.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace distill::data;
  if (size < 1) return 0;
  const auto& dir = distill::fuzz::scratch_dir();
  static const bool images_made = [&] {
    const uint8_t byte = 0;
    distill::fuzz::write_bytes(dir / "a.jpg", &byte, 1);
    distill::fuzz::write_bytes(dir / "b.png", &byte, 1);
    return true;
  }();
  (void)images_made;
  const auto path = dir / ((data[0] & 1) ? "captions.jsonl" : "captions.tsv");
  distill::fuzz::write_bytes(path, data + 1, size - 1);
  for (bool skip : {false, true}) {
    distill::fuzz::expect_clean_failure([&] {
      ReaderOptions options;
      options.skip_bad_samples = skip;
      BadSampleLog log;
      (void)read_captions(path.string(), "", options, &log);
    });
  }
  return 0;
}
