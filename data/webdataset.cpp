#include "data/webdataset.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"

namespace distill::data {

namespace fs = std::filesystem;

namespace {

// Expands the first brace group and recurses on the results.
void expand_braces(const std::string& s, std::vector<std::string>& out) {
  const size_t open = s.find('{');
  if (open == std::string::npos) {
    out.push_back(s);
    return;
  }
  const size_t close = s.find('}', open);
  DISTILL_CHECK(close != std::string::npos, "shard pattern '", s, "': unclosed '{'");
  const std::string body = s.substr(open + 1, close - open - 1);
  const std::string head = s.substr(0, open), tail = s.substr(close + 1);
  std::vector<std::string> items;
  const size_t dots = body.find("..");
  if (dots != std::string::npos) {
    const std::string lo_s = body.substr(0, dots), hi_s = body.substr(dots + 2);
    auto is_number = [](const std::string& t) {
      return !t.empty() &&
             std::all_of(t.begin(), t.end(), [](char c) { return c >= '0' && c <= '9'; });
    };
    DISTILL_CHECK(is_number(lo_s) && is_number(hi_s), "shard pattern '", s, "': range {", body,
                  "} needs two non-negative integers");
    const long long lo = std::stoll(lo_s), hi = std::stoll(hi_s);
    DISTILL_CHECK(lo <= hi && hi - lo < 1000000, "shard pattern '", s, "': bad range {", body, "}");
    const size_t width = lo_s.size();
    for (long long v = lo; v <= hi; ++v) {
      std::string num = std::to_string(v);
      if (num.size() < width) num.insert(0, width - num.size(), '0');
      items.push_back(num);
    }
  } else {
    size_t pos = 0;
    for (;;) {
      const size_t comma = body.find(',', pos);
      items.push_back(body.substr(pos, comma - pos));
      if (comma == std::string::npos) break;
      pos = comma + 1;
    }
  }
  for (const auto& item : items) expand_braces(head + item + tail, out);
}

// WebDataset's key/extension split: the key is the path up to the first dot of the file name.
bool split_key(const std::string& name, std::string& key, std::string& ext) {
  const size_t slash = name.rfind('/');
  const size_t base = slash == std::string::npos ? 0 : slash + 1;
  const size_t dot = name.find('.', base);
  if (dot == std::string::npos || dot == base) return false;
  key = name.substr(0, dot);
  ext = name.substr(dot + 1);
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return true;
}

bool is_image_ext(const std::string& ext) {
  return ext == "jpg" || ext == "jpeg" || ext == "png";
}

std::string member_where(const std::string& shard, const TarMember& m) {
  return shard + ": member '" + m.name + "' at offset " + std::to_string(m.header_offset);
}

}  // namespace

std::vector<std::string> expand_shard_pattern(const std::string& pattern) {
  std::vector<std::string> out;
  size_t pos = 0;
  for (;;) {
    const size_t sep = pattern.find("::", pos);
    const std::string part = pattern.substr(pos, sep - pos);
    if (!part.empty()) expand_braces(part, out);
    if (sep == std::string::npos) break;
    pos = sep + 2;
  }
  DISTILL_CHECK(!out.empty(), "shard pattern '", pattern, "' names no shard");
  return out;
}

std::vector<std::string> read_classes_beside(const std::string& shard) {
  std::ifstream in(fs::path(shard).parent_path() / "classes.txt");
  std::vector<std::string> names;
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) names.push_back(line);
  }
  return names;
}

ShardReader::ShardReader(const std::string& path, int shard_index, int64_t num_classes,
                         ReaderOptions options, bool read_images)
    : tar_(path),
      shard_(shard_index),
      num_classes_(num_classes),
      options_(options),
      read_images_(read_images) {}

bool ShardReader::read_member() {
  if (truncated_) return false;
  try {
    std::string key, ext;
    while (tar_.next(pending_member_))
      if (split_key(pending_member_.name, key, ext)) return pending_ = true;
  } catch (const Error& e) {
    if (!options_.skip_bad_samples) throw;
    skipped_.add(std::string(e.what()) + "; the rest of the shard is skipped");
    truncated_ = true;
  }
  return pending_ = false;
}

bool ShardReader::next(ShardSample& out) {
  for (;;) {
    if (!pending_ && !read_member()) return false;
    ShardSample s;
    std::string ext, key;
    split_key(pending_member_.name, s.key, ext);
    s.shard = shard_;
    s.where = member_where(tar_.path(), pending_member_);
    bool has_image = false, has_label = false;
    std::string problem;
    while (pending_ && split_key(pending_member_.name, key, ext) && key == s.key) {
      if (is_image_ext(ext)) {
        has_image = true;
        s.where = member_where(tar_.path(), pending_member_);
        s.image_offset = pending_member_.data_offset;
        s.image_size = pending_member_.size;
        if (read_images_) s.image = tar_.read_data();
      } else if (ext == "cls") {
        const std::vector<uint8_t> data = tar_.read_data();
        std::string text(data.begin(), data.end());
        while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back())))
          text.pop_back();
        const bool digits =
            !text.empty() && text.size() < 10 &&
            std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
        if (!digits) {
          problem = member_where(tar_.path(), pending_member_) + ": '" + text.substr(0, 20) +
                    "' is not a class index";
        } else {
          s.label = std::stoll(text);
          has_label = true;
          if (num_classes_ > 0 && s.label >= num_classes_)
            problem = member_where(tar_.path(), pending_member_) + ": label " +
                      std::to_string(s.label) + " is out of range (" +
                      std::to_string(num_classes_) + " classes)";
        }
      }
      pending_ = false;
      if (!read_member()) break;
    }
    if (problem.empty() && !has_image)
      problem = s.where + ": sample '" + s.key + "' has no .jpg/.jpeg/.png member";
    if (problem.empty() && !has_label)
      problem = s.where + ": sample '" + s.key + "' has no .cls member (its class label)";
    if (!problem.empty()) {
      if (!options_.skip_bad_samples) fail(problem);
      skipped_.add(problem);
      continue;
    }
    s.index_in_shard = count_++;
    out = std::move(s);
    return true;
  }
}

WebDataset::WebDataset(std::vector<std::string> shards, ReaderOptions options,
                       std::vector<std::string> class_names)
    : shards_(std::move(shards)) {
  DISTILL_CHECK(!shards_.empty(), "WebDataset: no shards given");
  if (class_names.empty()) class_names = read_classes_beside(shards_.front());
  const int64_t num_classes = static_cast<int64_t>(class_names.size());
  int64_t max_label = -1;
  for (size_t k = 0; k < shards_.size(); ++k) {
    ShardReader reader(shards_[k], static_cast<int>(k), num_classes, options, false);
    ShardSample s;
    while (reader.next(s)) {
      entries_.push_back({s.shard, s.label, s.image_offset, s.image_size, std::move(s.key)});
      max_label = std::max(max_label, s.label);
    }
    skipped_.merge(reader.skipped());
  }
  if (class_names.empty())
    for (int64_t c = 0; c <= max_label; ++c) class_names.push_back(std::to_string(c));
  class_names_ = std::move(class_names);
  for (const auto& path : shards_) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      for (int open_fd : fds_) ::close(open_fd);
      fail(path, ": cannot open (", std::strerror(errno), ")");
    }
    fds_.push_back(fd);
  }
}

WebDataset::~WebDataset() {
  for (int fd : fds_) ::close(fd);
}

std::vector<uint8_t> WebDataset::read_encoded(int64_t i) const {
  DISTILL_CHECK(i >= 0 && i < size(), "WebDataset: index ", i, " out of range (", size(),
                " samples)");
  const Entry& e = entries_[static_cast<size_t>(i)];
  std::vector<uint8_t> bytes(e.size);
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::pread(fds_[static_cast<size_t>(e.shard)], bytes.data() + done,
                              bytes.size() - done, static_cast<off_t>(e.offset + done));
    if (n < 0 && errno == EINTR) continue;
    DISTILL_CHECK(n > 0, describe(i), ": read failed (",
                  n < 0 ? std::strerror(errno) : "end of file", ")");
    done += static_cast<size_t>(n);
  }
  return bytes;
}

Sample WebDataset::get(int64_t i) const {
  const auto bytes = read_encoded(i);
  Sample s;
  s.image = decode_image(bytes.data(), bytes.size(), describe(i));
  s.label = entries_[static_cast<size_t>(i)].label;
  return s;
}

std::string WebDataset::describe(int64_t i) const {
  const Entry& e = entries_.at(static_cast<size_t>(i));
  return shards_[static_cast<size_t>(e.shard)] + ": sample '" + e.key + "' (image data at offset " +
         std::to_string(e.offset) + ")";
}

}  // namespace distill::data
