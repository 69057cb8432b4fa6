// Caption files: which image has which captions (several per image allowed), for caption-query
// training and image-text retrieval. Two forms:
//   TSV:         image<TAB>caption             (one caption a line; an image may recur)
//   JSON lines:  {"image": "a.jpg", "caption": "..."} or {"image": "a.jpg", "captions": [...]}
// Image paths are relative to the caption file's folder (or `image_root`). Every image must
// exist: a missing one is an error naming the caption file, the line and the image.
#pragma once

#include <string>
#include <vector>

#include "data/dataset.h"

namespace distill::data {

struct CaptionedImage {
  std::string image;  // path as resolved (root joined)
  std::vector<std::string> captions;
};

// The format is chosen by extension: .jsonl / .json -> JSON lines, anything else -> TSV. A first
// TSV line "image<TAB>caption" (or filepath/file/filename) is taken as a header.
std::vector<CaptionedImage> read_captions(const std::string& path,
                                          const std::string& image_root = "",
                                          ReaderOptions options = {},
                                          BadSampleLog* skipped = nullptr);

// Images with their captions as a Dataset: label(i) = i (each image is its own class, which is
// what retrieval evaluation needs); class_names() are the image paths.
class CaptionDataset : public Dataset {
 public:
  explicit CaptionDataset(const std::string& path, const std::string& image_root = "",
                          ReaderOptions options = {});
  int64_t size() const override { return static_cast<int64_t>(items_.size()); }
  Sample get(int64_t i) const override;
  int64_t label(int64_t i) const override { return i; }
  std::string describe(int64_t i) const override { return items_.at(static_cast<size_t>(i)).image; }
  const std::vector<std::string>& captions(int64_t i) const {
    return items_.at(static_cast<size_t>(i)).captions;
  }

 private:
  std::vector<CaptionedImage> items_;
};

}  // namespace distill::data
