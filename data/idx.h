// IDX files (MNIST, Fashion-MNIST): an images file (magic 0x00000803: unsigned bytes, 3
// dimensions N x rows x cols) and a labels file (magic 0x00000801: N unsigned bytes), raw or
// gzip-compressed (zlib reads both). Grey pixels are replicated to RGB.
#pragma once

#include <string>
#include <vector>

#include "data/dataset.h"

namespace distill::data {

class IdxDataset : public Dataset {
 public:
  // `class_names` empty: Fashion-MNIST's names when a path mentions "fashion", else "0".."9".
  IdxDataset(const std::string& images_path, const std::string& labels_path,
             ReaderOptions options = {}, std::vector<std::string> class_names = {});

  int64_t size() const override { return static_cast<int64_t>(labels_.size()); }
  Sample get(int64_t i) const override;
  int64_t label(int64_t i) const override { return labels_.at(static_cast<size_t>(i)); }
  std::string describe(int64_t i) const override;
  int rows() const { return rows_; }
  int cols() const { return cols_; }

  // The images/labels pair for a split ("train" or "t10k"/"test") in a folder holding the
  // official file names (train-images-idx3-ubyte[.gz] ...). Returns false when absent.
  static bool find_in_folder(const std::string& dir, const std::string& split,
                             std::string& images_path, std::string& labels_path);

 private:
  std::string images_path_;
  int rows_ = 0, cols_ = 0;
  std::vector<uint8_t> pixels_;
  std::vector<int64_t> labels_;
  std::vector<int64_t> source_index_;  // index in the files (differs when samples were skipped)
};

const std::vector<std::string>& fashion_mnist_class_names();

// Writes an IDX file (raw, or gzip when the path ends in .gz): for tests and tools.
void write_idx(const std::string& path, const std::vector<int32_t>& dims,
               const std::vector<uint8_t>& data);

}  // namespace distill::data
