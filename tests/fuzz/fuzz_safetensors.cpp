// safetensors reader: header length, JSON header, tensor table, then every tensor's data.
#include "core/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = distill::fuzz::scratch_dir() / "input.safetensors";
  distill::fuzz::write_bytes(path, data, size);
  distill::fuzz::expect_clean_failure([&] {
    distill::SafetensorsFile file(path.string());
    for (const auto& [name, t] : file.load_all()) {
      // Touch the first and last byte so a bad view is caught by ASan.
      if (t.nbytes() > 0) {
        volatile uint8_t sink = static_cast<const uint8_t*>(t.data_ptr())[0];
        sink = static_cast<const uint8_t*>(t.data_ptr())[t.nbytes() - 1];
        (void)sink;
      }
    }
  });
  return 0;
}
