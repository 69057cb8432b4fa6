// WebDataset tar shards: each sample is consecutive members sharing a key, `<key>.jpg|jpeg|png`
// (the image) and `<key>.cls` (the class index as ASCII decimal). Shards are named by lists and
// brace patterns ("train-{0000..0004}.tar", "a.tar::b.tar"). Two ways in:
//   ShardReader streams one shard sequentially (what the loader uses for shard-order shuffling);
//   WebDataset indexes all shards in one pass over the tar headers and the .cls members (images
//   are skipped, not read) and then reads any sample by offset — a Dataset like the others.
// Class names come from a classes.txt beside the shards when there is one.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/tar.h"

namespace distill::data {

// Expands "{0000..0004}" ranges (zero padding kept from the first bound), "{a,b}" alternatives
// and "::"-separated lists, in order. A pattern without braces is returned as is.
std::vector<std::string> expand_shard_pattern(const std::string& pattern);

struct ShardSample {
  std::string key;
  int shard = 0;               // index in the shard list
  int64_t index_in_shard = 0;  // the sample's position in its shard
  uint64_t image_offset = 0;   // data offset of the image member in the shard
  uint64_t image_size = 0;
  std::vector<uint8_t> image;  // encoded bytes (empty when the reader skips image data)
  int64_t label = -1;
  std::string where;  // "shard.tar: member 'key.jpg' at offset N"
};

class ShardReader {
 public:
  // `num_classes` > 0 checks labels against it. With read_images false the image data is skipped
  // (fast counting and indexing).
  ShardReader(const std::string& path, int shard_index, int64_t num_classes,
              ReaderOptions options = {}, bool read_images = true);
  // The next complete sample; false at the end of the shard. Bad samples throw naming the shard,
  // the member and its offset, or are skipped into skipped() with skip_bad_samples.
  bool next(ShardSample& out);
  const BadSampleLog& skipped() const { return skipped_; }

 private:
  bool read_member();  // loads the next member into pending_*; false at the end
  TarReader tar_;
  int shard_;
  int64_t num_classes_;
  ReaderOptions options_;
  bool read_images_;
  int64_t count_ = 0;
  bool pending_ = false;
  bool truncated_ = false;
  TarMember pending_member_;
  BadSampleLog skipped_;
};

class WebDataset : public Dataset {
 public:
  // `shards`: paths (already expanded). `class_names`: empty to read classes.txt beside the
  // first shard, or to number the classes 0..max label.
  WebDataset(std::vector<std::string> shards, ReaderOptions options = {},
             std::vector<std::string> class_names = {});
  explicit WebDataset(const std::string& pattern, ReaderOptions options = {})
      : WebDataset(expand_shard_pattern(pattern), options) {}
  ~WebDataset() override;

  int64_t size() const override { return static_cast<int64_t>(entries_.size()); }
  Sample get(int64_t i) const override;
  int64_t label(int64_t i) const override { return entries_.at(static_cast<size_t>(i)).label; }
  std::string describe(int64_t i) const override;
  const std::vector<std::string>& shards() const { return shards_; }
  // The shard of sample i (samples are numbered shard by shard, in shard order).
  int shard_of(int64_t i) const { return entries_.at(static_cast<size_t>(i)).shard; }
  const std::string& key(int64_t i) const { return entries_.at(static_cast<size_t>(i)).key; }
  // Encoded image bytes of sample i.
  std::vector<uint8_t> read_encoded(int64_t i) const;

 private:
  struct Entry {
    int shard;
    int64_t label;
    uint64_t offset, size;
    std::string key;
  };
  std::vector<std::string> shards_;
  std::vector<int> fds_;  // one read-only descriptor per shard, for pread from any thread
  std::vector<Entry> entries_;
};

// classes.txt beside `shard` (one name a line), or empty when there is none.
std::vector<std::string> read_classes_beside(const std::string& shard);

}  // namespace distill::data
