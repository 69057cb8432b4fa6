#include "data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "core/error.h"

namespace distill::data {

namespace fs = std::filesystem;

const std::vector<std::string>& fashion_mnist_class_names() {
  static const std::vector<std::string> names = {"T-shirt/top", "Trouser",   "Pullover", "Dress",
                                                 "Coat",        "Sandal",    "Shirt",    "Sneaker",
                                                 "Bag",         "Ankle boot"};
  return names;
}

namespace {

// Reads a whole raw or gzip file.
std::vector<uint8_t> read_maybe_gzip(const std::string& path) {
  DISTILL_CHECK(fs::exists(path), path, ": no such file");
  gzFile f = gzopen(path.c_str(), "rb");
  DISTILL_CHECK(f != nullptr, path, ": cannot open");
  std::vector<uint8_t> out;
  uint8_t buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) out.insert(out.end(), buf, buf + n);
  int err = Z_OK;
  const char* msg = n < 0 ? gzerror(f, &err) : nullptr;
  const std::string message = msg ? msg : "";
  gzclose(f);
  DISTILL_CHECK(n == 0, path, ": cannot decompress (", message, ")");
  return out;
}

uint32_t be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

std::string hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08X", v);
  return buf;
}

// Checks the header of an IDX file of unsigned bytes with `ndims` dimensions; returns them.
std::vector<int64_t> parse_header(const std::vector<uint8_t>& bytes, const std::string& path,
                                  int ndims, const char* what) {
  const uint32_t expected = 0x00000800u | static_cast<uint32_t>(ndims);
  DISTILL_CHECK(bytes.size() >= 4, path, ": too short for an IDX file (", bytes.size(), " bytes)");
  const uint32_t magic = be32(bytes.data());
  DISTILL_CHECK(magic == expected, path, ": IDX magic ", hex(magic), " does not match ",
                hex(expected), " (unsigned bytes, ", ndims, " dimensions: ", what, ")");
  const size_t header = 4 + 4 * static_cast<size_t>(ndims);
  DISTILL_CHECK(bytes.size() >= header, path, ": truncated IDX header");
  std::vector<int64_t> dims;
  // Each dimension is up to 2^32 - 1: the product of three overflows 64 bits, so compare with the
  // file size as it grows instead of trusting it.
  uint64_t total = 1;
  bool too_big = false;
  for (int d = 0; d < ndims; ++d) {
    dims.push_back(be32(bytes.data() + 4 + 4 * d));
    too_big = too_big || __builtin_mul_overflow(total, static_cast<uint64_t>(dims.back()), &total);
  }
  const std::string claimed = too_big ? "more than 2^64" : std::to_string(total);
  DISTILL_CHECK(!too_big && bytes.size() - header == total, path, ": IDX header says ", claimed,
                " bytes of data, the file has ", bytes.size() - header, " (truncated or corrupt)");
  return dims;
}

}  // namespace

IdxDataset::IdxDataset(const std::string& images_path, const std::string& labels_path,
                       ReaderOptions options, std::vector<std::string> class_names)
    : images_path_(images_path) {
  const auto image_bytes = read_maybe_gzip(images_path);
  const auto label_bytes = read_maybe_gzip(labels_path);
  const auto idims = parse_header(image_bytes, images_path, 3, "images");
  const auto ldims = parse_header(label_bytes, labels_path, 1, "labels");
  DISTILL_CHECK(idims[0] == ldims[0], images_path, " has ", idims[0], " images but ", labels_path,
                " has ", ldims[0], " labels");
  // Sizes that would not fit an Image's int sides (possible with zero images) are corrupt too.
  DISTILL_CHECK(idims[1] >= 1 && idims[1] <= 65535 && idims[2] >= 1 && idims[2] <= 65535,
                images_path, ": IDX image size ", idims[1], " x ", idims[2],
                " is not a plausible image size (corrupt header)");
  rows_ = static_cast<int>(idims[1]);
  cols_ = static_cast<int>(idims[2]);
  if (class_names.empty()) {
    std::string lower = images_path;
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (lower.find("fashion") != std::string::npos) {
      class_names = fashion_mnist_class_names();
    } else {
      for (int c = 0; c < 10; ++c) class_names.push_back(std::to_string(c));
    }
  }
  class_names_ = std::move(class_names);
  const size_t plane = static_cast<size_t>(rows_) * cols_;
  const uint8_t* px = image_bytes.data() + 16;
  for (int64_t i = 0; i < ldims[0]; ++i) {
    const int64_t label = label_bytes[8 + static_cast<size_t>(i)];
    if (label >= num_classes()) {
      const std::string msg = labels_path + ": label " + std::to_string(label) + " of sample " +
                              std::to_string(i) + " (offset " + std::to_string(8 + i) +
                              ") is out of range (" + std::to_string(num_classes()) + " classes)";
      if (!options.skip_bad_samples) fail(msg);
      skipped_.add(msg);
      continue;
    }
    labels_.push_back(label);
    source_index_.push_back(i);
    pixels_.insert(pixels_.end(), px + i * plane, px + (i + 1) * plane);
  }
}

Sample IdxDataset::get(int64_t i) const {
  DISTILL_CHECK(i >= 0 && i < size(), "IDX: index ", i, " out of range (", size(), " samples)");
  Sample s;
  s.label = labels_[static_cast<size_t>(i)];
  s.image.height = rows_;
  s.image.width = cols_;
  const size_t plane = static_cast<size_t>(rows_) * cols_;
  s.image.pixels.resize(plane * 3);
  const uint8_t* src = pixels_.data() + static_cast<size_t>(i) * plane;
  for (size_t p = 0; p < plane; ++p)
    s.image.pixels[3 * p] = s.image.pixels[3 * p + 1] = s.image.pixels[3 * p + 2] = src[p];
  return s;
}

std::string IdxDataset::describe(int64_t i) const {
  return images_path_ + " image " + std::to_string(source_index_.at(static_cast<size_t>(i)));
}

bool IdxDataset::find_in_folder(const std::string& dir, const std::string& split,
                                std::string& images_path, std::string& labels_path) {
  const std::string prefix = split == "test" ? "t10k" : split;
  for (const char* ext : {"", ".gz"}) {
    const fs::path im = fs::path(dir) / (prefix + "-images-idx3-ubyte" + ext);
    const fs::path lb = fs::path(dir) / (prefix + "-labels-idx1-ubyte" + ext);
    if (fs::exists(im) && fs::exists(lb)) {
      images_path = im.string();
      labels_path = lb.string();
      return true;
    }
  }
  return false;
}

void write_idx(const std::string& path, const std::vector<int32_t>& dims,
               const std::vector<uint8_t>& data) {
  std::vector<uint8_t> bytes = {0, 0, 0x08, static_cast<uint8_t>(dims.size())};
  for (int32_t d : dims)
    for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back(static_cast<uint8_t>(d >> shift));
  bytes.insert(bytes.end(), data.begin(), data.end());
  const bool gz = path.size() > 3 && path.compare(path.size() - 3, 3, ".gz") == 0;
  gzFile f = gzopen(path.c_str(), gz ? "wb" : "wbT");  // "T": write without compression
  DISTILL_CHECK(f != nullptr, path, ": cannot open for writing");
  const int n = gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  const int closed = gzclose(f);
  DISTILL_CHECK(n == static_cast<int>(bytes.size()) && closed == Z_OK, path, ": write error");
}

}  // namespace distill::data
