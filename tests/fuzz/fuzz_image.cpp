// Image decoding from memory: libjpeg-turbo for JPEG magic, stb_image for the rest.
#include "data/image.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  distill::fuzz::expect_clean_failure([&] {
    const auto image = distill::data::decode_image(data, size, "fuzz input");
    if (image.pixels.size() != static_cast<size_t>(image.height) * image.width * 3) std::abort();
  });
  return 0;
}
