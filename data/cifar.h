// CIFAR-10 and CIFAR-100 in their official binary formats, read whole into memory (CIFAR-10
// train is 150 MB):
//   cifar-10-batches-bin/data_batch_{1..5}.bin, test_batch.bin: records of 1 label byte + 3072
//     pixel bytes (1024 red, 1024 green, 1024 blue, rows of 32);
//   cifar-100-binary/train.bin, test.bin: records of a coarse and a fine label byte + 3072 bytes.
// Class names come from batches.meta.txt / fine_label_names.txt / coarse_label_names.txt when the
// folder has them, else the official names built in.
#pragma once

#include <string>
#include <vector>

#include "data/dataset.h"

namespace distill::data {

enum class CifarVariant { Cifar10, Cifar100 };

class CifarDataset : public Dataset {
 public:
  static constexpr int kSide = 32;
  static constexpr int kPixelBytes = kSide * kSide * 3;

  // `dir`: the folder holding the .bin files (or its parent, holding cifar-10-batches-bin or
  // cifar-100-binary). `split`: "train" or "test". `coarse`: CIFAR-100's 20 superclasses as the
  // label instead of the 100 fine classes.
  CifarDataset(const std::string& dir, const std::string& split, bool coarse = false,
               ReaderOptions options = {});

  int64_t size() const override { return static_cast<int64_t>(labels_.size()); }
  Sample get(int64_t i) const override;
  int64_t label(int64_t i) const override { return labels_.at(static_cast<size_t>(i)); }
  std::string describe(int64_t i) const override;

  CifarVariant variant() const { return variant_; }
  // CIFAR-100 only: both labels of sample i whichever one label() returns.
  int64_t fine_label(int64_t i) const { return fine_.at(static_cast<size_t>(i)); }
  int64_t coarse_label(int64_t i) const { return coarse_.at(static_cast<size_t>(i)); }
  const std::vector<std::string>& fine_class_names() const { return fine_names_; }
  const std::vector<std::string>& coarse_class_names() const { return coarse_names_; }
  const std::vector<std::string>& files() const { return files_; }

  // Whether `dir` (or a CIFAR folder inside it) holds CIFAR binary files.
  static bool looks_like(const std::string& dir);

 private:
  void load_file(size_t file_index, ReaderOptions options);

  CifarVariant variant_ = CifarVariant::Cifar10;
  std::string dir_;
  std::vector<std::string> files_;
  std::vector<uint8_t> pixels_;  // size() * kPixelBytes, CHW per record as stored
  std::vector<int64_t> labels_, fine_, coarse_;
  std::vector<std::pair<int32_t, int32_t>> origin_;  // (file index, record index)
  std::vector<std::string> fine_names_, coarse_names_;
};

// The official class names built into the reader.
const std::vector<std::string>& cifar10_class_names();
const std::vector<std::string>& cifar100_fine_class_names();
const std::vector<std::string>& cifar100_coarse_class_names();

// Writes records in the official format (for tests and for exporting data). `coarse` is used for
// CIFAR-100 only; pixels are HWC images of 32x32.
void write_cifar_binary(const std::string& path, CifarVariant variant,
                        const std::vector<Image>& images, const std::vector<int64_t>& labels,
                        const std::vector<int64_t>& coarse = {});

}  // namespace distill::data
