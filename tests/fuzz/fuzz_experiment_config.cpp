// Experiment config JSON: parse, then fill in and validate every default.
#include <nlohmann/json.hpp>

#include "tests/fuzz/fuzz_util.h"
#include "train/experiment.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  distill::fuzz::expect_clean_failure([&] {
    const auto resolved = distill::train::resolve_experiment_config(j, "fuzz.json");
    // The resolved config is written to runs/<name>/config.json: it must serialise.
    (void)resolved.dump();
  });
  return 0;
}
