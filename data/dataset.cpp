#include "data/dataset.h"

#include "core/error.h"

namespace distill::data {

std::vector<int64_t> Dataset::class_counts() const {
  std::vector<int64_t> counts(class_names_.size(), 0);
  for (int64_t i = 0; i < size(); ++i) {
    const int64_t c = label(i);
    if (c >= 0 && c < static_cast<int64_t>(counts.size())) ++counts[static_cast<size_t>(c)];
  }
  return counts;
}

void check_label(int64_t label, int64_t num_classes, const std::string& where) {
  DISTILL_CHECK(label >= 0 && label < num_classes, where, ": label ", label, " is out of range (",
                num_classes, " classes)");
}

}  // namespace distill::data
