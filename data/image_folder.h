// ImageFolder: root/<class>/<image>.{jpg,jpeg,png} (ImageNet's train/val layout, torchvision's
// ImageFolder). Classes are the sub-folders sorted by name (byte order, as Python's sorted());
// images are found recursively under each class folder, also sorted; extensions are matched
// case-insensitively. Images are decoded on get(), not when the folder is scanned.
#pragma once

#include <string>
#include <vector>

#include "data/dataset.h"

namespace distill::data {

class ImageFolder : public Dataset {
 public:
  // An empty class folder is an error (naming it), or a skipped-input message with
  // skip_bad_samples (the class is kept, with no samples, so label indices stay stable).
  explicit ImageFolder(const std::string& root, ReaderOptions options = {});

  int64_t size() const override { return static_cast<int64_t>(paths_.size()); }
  Sample get(int64_t i) const override;
  int64_t label(int64_t i) const override { return labels_.at(static_cast<size_t>(i)); }
  std::string describe(int64_t i) const override { return paths_.at(static_cast<size_t>(i)); }

  static bool is_image_file(const std::string& name);

 private:
  std::vector<std::string> paths_;
  std::vector<int64_t> labels_;
};

}  // namespace distill::data
