// The common interface of the map-style readers: a fixed number of samples, each an RGB image and
// a class label, addressable by index. get() is const and thread-safe: the loader calls it from
// several worker threads at once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/image.h"

namespace distill::data {

struct Sample {
  Image image;
  int64_t label = -1;
};

// What a reader did with inputs it was told to skip (skip_bad_samples): the count and a few of
// the messages, for the caller to print. Readers and the loader never print.
struct BadSampleLog {
  int64_t count = 0;
  std::vector<std::string> messages;  // the first kMaxMessages

  static constexpr size_t kMaxMessages = 20;
  void add(const std::string& message) {
    ++count;
    if (messages.size() < kMaxMessages) messages.push_back(message);
  }
  void merge(const BadSampleLog& other) {
    count += other.count;
    for (const auto& m : other.messages)
      if (messages.size() < kMaxMessages) messages.push_back(m);
  }
};

struct ReaderOptions {
  // Skip unreadable samples with a message in Dataset::skipped() instead of throwing.
  bool skip_bad_samples = false;
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  // Decodes sample i (0 <= i < size()).
  virtual Sample get(int64_t i) const = 0;
  // The label alone, without decoding (for counts, few-shot selection, class balance).
  virtual int64_t label(int64_t i) const = 0;
  const std::vector<std::string>& class_names() const { return class_names_; }
  int64_t num_classes() const { return static_cast<int64_t>(class_names_.size()); }
  // Where sample i comes from, for messages ("root/cat/001.jpg", "data_batch_1.bin record 7").
  virtual std::string describe(int64_t i) const = 0;
  // Inputs skipped while opening the dataset (with skip_bad_samples).
  const BadSampleLog& skipped() const { return skipped_; }

  // Samples per class, indexed by label.
  std::vector<int64_t> class_counts() const;

 protected:
  std::vector<std::string> class_names_;
  BadSampleLog skipped_;
};

// Throws naming `where` when a label is outside [0, num_classes).
void check_label(int64_t label, int64_t num_classes, const std::string& where);

}  // namespace distill::data
