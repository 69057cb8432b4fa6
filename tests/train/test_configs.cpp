// Every committed config (configs/*.json, configs/thesis/*.json) resolves: no unknown keys, no bad
// values, every optimizer/schedule/head block parses. Catches configs drifting from the runner.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tests/test_util.h"
#include "train/experiment.h"

namespace distill {
namespace {

namespace fs = std::filesystem;

TEST(Configs, EveryCommittedConfigResolves) {
  const fs::path root = fs::path(DISTILL_SOURCE_DIR) / "configs";
  int checked = 0;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (entry.path().extension() != ".json") continue;
    SCOPED_TRACE(entry.path().string());
    std::ifstream in(entry.path());
    const nlohmann::json config = nlohmann::json::parse(in);
    EXPECT_NO_THROW(train::resolve_experiment_config(config, entry.path().string()));
    ++checked;
  }
  // The thesis grid (3 teachers x 2 text encoders x 3 datasets) plus the smoke/CPU configs.
  EXPECT_GE(checked, 18 + 3);
}

}  // namespace
}  // namespace distill
