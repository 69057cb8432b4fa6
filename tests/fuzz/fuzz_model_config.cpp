// Model config JSON: each tower's from_json, and its to_json round trip.
#include <nlohmann/json.hpp>

#include "models/config.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace distill::models;
  const auto j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  distill::fuzz::expect_clean_failure([&] { (void)to_json(vit_config_from_json(j, "fuzz")); });
  distill::fuzz::expect_clean_failure([&] { (void)to_json(resnet_config_from_json(j, "fuzz")); });
  distill::fuzz::expect_clean_failure(
      [&] { (void)to_json(clip_text_config_from_json(j, "fuzz")); });
  distill::fuzz::expect_clean_failure([&] { (void)to_json(bert_config_from_json(j, "fuzz")); });
  return 0;
}
