// Helpers for the model fidelity tests: fixture paths and a scale-relative comparison.
#pragma once

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>

#include "core/safetensors.h"
#include "models/config.h"
#include "tests/test_util.h"

namespace distill::testing {

inline std::string model_fixture(const std::string& name) {
  return std::string(DISTILL_SOURCE_DIR) + "/tests/fixtures/models/" + name;
}

// A fresh temporary directory removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() /
            ("distill_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  static int& counter() {
    static int c = 0;
    return c;
  }
  std::filesystem::path path_;
};

// Small but non-degenerate towers for unit tests (1 layer, 2 heads).
inline models::VitConfig tiny_vit_config(int64_t image_size = 16, int64_t patch_size = 8,
                                         int64_t width = 16, int64_t output_dim = 8) {
  models::VitConfig c;
  c.image_size = image_size;
  c.patch_size = patch_size;
  c.width = width;
  c.layers = 1;
  c.heads = 2;
  c.mlp_dim = 2 * width;
  c.output_dim = output_dim;
  return c;
}

inline models::BertConfig tiny_bert_config(int64_t vocab_size, int64_t hidden = 16) {
  models::BertConfig c;
  c.vocab_size = vocab_size;
  c.hidden = hidden;
  c.layers = 1;
  c.heads = 2;
  c.intermediate = 2 * hidden;
  c.max_position = 64;
  return c;
}

// max |got - want| / max |want| <= tol: the error relative to the tensor's scale (an elementwise
// relative error is meaningless for values that cross zero).
inline ::testing::AssertionResult close_to_reference(const Tensor& got, const Tensor& want,
                                                     double tol) {
  if (got.shape() != want.shape())
    return ::testing::AssertionFailure()
           << "shape " << got.describe() << " vs reference " << want.describe();
  const auto a = got.to_double_vector();
  const auto b = want.to_double_vector();
  double worst = 0, scale = 0;
  size_t at = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, std::fabs(b[i]));
    const double d = std::fabs(a[i] - b[i]);
    if (!(d <= worst)) {
      worst = d;
      at = i;
    }
  }
  const double rel = worst / std::max(scale, 1e-30);
  if (rel <= tol) return ::testing::AssertionSuccess() << "relative error " << rel;
  return ::testing::AssertionFailure()
         << "relative error " << rel << " > " << tol << " (element " << at << ": " << a[at]
         << " vs " << b[at] << ", scale " << scale << ")";
}

}  // namespace distill::testing
