#include "data/cifar.h"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/error.h"

namespace distill::data {

namespace fs = std::filesystem;

const std::vector<std::string>& cifar10_class_names() {
  static const std::vector<std::string> names = {
      "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};
  return names;
}

const std::vector<std::string>& cifar100_fine_class_names() {
  static const std::vector<std::string> names = {
      "apple",       "aquarium_fish", "baby",      "bear",       "beaver",       "bed",
      "bee",         "beetle",        "bicycle",   "bottle",     "bowl",         "boy",
      "bridge",      "bus",           "butterfly", "camel",      "can",          "castle",
      "caterpillar", "cattle",        "chair",     "chimpanzee", "clock",        "cloud",
      "cockroach",   "couch",         "crab",      "crocodile",  "cup",          "dinosaur",
      "dolphin",     "elephant",      "flatfish",  "forest",     "fox",          "girl",
      "hamster",     "house",         "kangaroo",  "keyboard",   "lamp",         "lawn_mower",
      "leopard",     "lion",          "lizard",    "lobster",    "man",          "maple_tree",
      "motorcycle",  "mountain",      "mouse",     "mushroom",   "oak_tree",     "orange",
      "orchid",      "otter",         "palm_tree", "pear",       "pickup_truck", "pine_tree",
      "plain",       "plate",         "poppy",     "porcupine",  "possum",       "rabbit",
      "raccoon",     "ray",           "road",      "rocket",     "rose",         "sea",
      "seal",        "shark",         "shrew",     "skunk",      "skyscraper",   "snail",
      "snake",       "spider",        "squirrel",  "streetcar",  "sunflower",    "sweet_pepper",
      "table",       "tank",          "telephone", "television", "tiger",        "tractor",
      "train",       "trout",         "tulip",     "turtle",     "wardrobe",     "whale",
      "willow_tree", "wolf",          "woman",     "worm"};
  return names;
}

const std::vector<std::string>& cifar100_coarse_class_names() {
  static const std::vector<std::string> names = {"aquatic_mammals",
                                                 "fish",
                                                 "flowers",
                                                 "food_containers",
                                                 "fruit_and_vegetables",
                                                 "household_electrical_devices",
                                                 "household_furniture",
                                                 "insects",
                                                 "large_carnivores",
                                                 "large_man-made_outdoor_things",
                                                 "large_natural_outdoor_scenes",
                                                 "large_omnivores_and_herbivores",
                                                 "medium_mammals",
                                                 "non-insect_invertebrates",
                                                 "people",
                                                 "reptiles",
                                                 "small_mammals",
                                                 "trees",
                                                 "vehicles_1",
                                                 "vehicles_2"};
  return names;
}

namespace {

// The folder that holds the .bin files: `dir` itself or the official subfolder inside it.
std::string resolve_dir(const std::string& dir) {
  for (const char* sub : {"", "cifar-10-batches-bin", "cifar-100-binary"}) {
    const fs::path d = sub[0] ? fs::path(dir) / sub : fs::path(dir);
    if (fs::exists(d / "data_batch_1.bin") || fs::exists(d / "test_batch.bin") ||
        fs::exists(d / "train.bin") || fs::exists(d / "test.bin"))
      return d.string();
  }
  return "";
}

// Names from an official .txt (one a line, blank lines ignored), or `fallback` when absent.
std::vector<std::string> names_from(const fs::path& file, const std::vector<std::string>& fallback,
                                    size_t expected) {
  std::ifstream in(file);
  if (!in) return fallback;
  std::vector<std::string> names;
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) names.push_back(line);
  }
  DISTILL_CHECK(names.size() == expected, file.string(), ": expected ", expected,
                " class names, found ", names.size());
  return names;
}

}  // namespace

bool CifarDataset::looks_like(const std::string& dir) {
  return !resolve_dir(dir).empty();
}

CifarDataset::CifarDataset(const std::string& dir, const std::string& split, bool coarse,
                           ReaderOptions options) {
  DISTILL_CHECK(split == "train" || split == "test",
                "CIFAR: split must be 'train' or 'test', got '", split, "'");
  dir_ = resolve_dir(dir);
  DISTILL_CHECK(!dir_.empty(), dir,
                ": no CIFAR binary files (expected data_batch_1.bin ... test_batch.bin or "
                "train.bin / test.bin, or a cifar-10-batches-bin / cifar-100-binary folder)");
  const fs::path d(dir_);
  if (fs::exists(d / "train.bin") || fs::exists(d / "test.bin")) {
    variant_ = CifarVariant::Cifar100;
    files_ = {(d / (split + ".bin")).string()};
    fine_names_ = names_from(d / "fine_label_names.txt", cifar100_fine_class_names(), 100);
    coarse_names_ = names_from(d / "coarse_label_names.txt", cifar100_coarse_class_names(), 20);
    class_names_ = coarse ? coarse_names_ : fine_names_;
  } else {
    DISTILL_CHECK(!coarse, dir_, ": coarse labels exist only in CIFAR-100");
    variant_ = CifarVariant::Cifar10;
    if (split == "train") {
      for (int b = 1; b <= 5; ++b)
        files_.push_back((d / ("data_batch_" + std::to_string(b) + ".bin")).string());
    } else {
      files_ = {(d / "test_batch.bin").string()};
    }
    class_names_ = names_from(d / "batches.meta.txt", cifar10_class_names(), 10);
    fine_names_ = class_names_;
  }
  for (size_t f = 0; f < files_.size(); ++f) load_file(f, options);
  if (variant_ == CifarVariant::Cifar100) labels_ = coarse ? coarse_ : fine_;
}

void CifarDataset::load_file(size_t file_index, ReaderOptions options) {
  const std::string& path = files_[file_index];
  const bool c100 = variant_ == CifarVariant::Cifar100;
  const size_t label_bytes = c100 ? 2 : 1;
  const size_t record = label_bytes + kPixelBytes;
  const std::vector<uint8_t> bytes = read_file_bytes(path);
  const char* format = c100 ? "CIFAR-100" : "CIFAR-10";
  if (bytes.size() % record != 0 || bytes.empty()) {
    const std::string msg = path + ": " + std::to_string(bytes.size()) +
                            " bytes is not a whole number of " + std::to_string(record) + "-byte " +
                            format + " records (truncated, or not a " + format + " file)";
    if (!options.skip_bad_samples || bytes.empty()) fail(msg);
    skipped_.add(msg + "; the trailing partial record is skipped");
  }
  const size_t n = bytes.size() / record;
  pixels_.reserve(pixels_.size() + n * kPixelBytes);
  for (size_t r = 0; r < n; ++r) {
    const uint8_t* rec = bytes.data() + r * record;
    const int64_t fine = rec[label_bytes - 1];
    const int64_t coarse = c100 ? rec[0] : -1;
    const bool fine_ok = fine < static_cast<int64_t>(c100 ? 100 : 10);
    const bool coarse_ok = !c100 || coarse < 20;
    if (!fine_ok || !coarse_ok) {
      const std::string msg = path + ": record " + std::to_string(r) + " at offset " +
                              std::to_string(r * record) + ": label " +
                              std::to_string(fine_ok ? coarse : fine) + " is out of range (" +
                              std::to_string(fine_ok ? 20 : (c100 ? 100 : 10)) + " classes)";
      if (!options.skip_bad_samples) fail(msg);
      skipped_.add(msg);
      continue;
    }
    fine_.push_back(fine);
    if (c100) coarse_.push_back(coarse);
    if (!c100) labels_.push_back(fine);
    pixels_.insert(pixels_.end(), rec + label_bytes, rec + record);
    origin_.emplace_back(static_cast<int32_t>(file_index), static_cast<int32_t>(r));
  }
}

Sample CifarDataset::get(int64_t i) const {
  DISTILL_CHECK(i >= 0 && i < size(), "CIFAR: index ", i, " out of range (", size(), " samples)");
  Sample s;
  s.label = labels_[static_cast<size_t>(i)];
  s.image.height = s.image.width = kSide;
  s.image.pixels.resize(kPixelBytes);
  // Planar (CHW) on disk -> interleaved (HWC).
  const uint8_t* src = pixels_.data() + static_cast<size_t>(i) * kPixelBytes;
  constexpr int plane = kSide * kSide;
  for (int p = 0; p < plane; ++p)
    for (int c = 0; c < 3; ++c) s.image.pixels[p * 3 + c] = src[c * plane + p];
  return s;
}

std::string CifarDataset::describe(int64_t i) const {
  const auto& o = origin_.at(static_cast<size_t>(i));
  return files_[static_cast<size_t>(o.first)] + " record " + std::to_string(o.second);
}

void write_cifar_binary(const std::string& path, CifarVariant variant,
                        const std::vector<Image>& images, const std::vector<int64_t>& labels,
                        const std::vector<int64_t>& coarse) {
  const bool c100 = variant == CifarVariant::Cifar100;
  DISTILL_CHECK(images.size() == labels.size() && (!c100 || coarse.size() == labels.size()),
                "write_cifar_binary: ", images.size(), " images but ", labels.size(), " labels");
  std::ofstream out(path, std::ios::binary);
  DISTILL_CHECK(out.good(), path, ": cannot open for writing");
  std::vector<uint8_t> rec;
  for (size_t k = 0; k < images.size(); ++k) {
    const Image& im = images[k];
    DISTILL_CHECK(im.height == CifarDataset::kSide && im.width == CifarDataset::kSide, path,
                  ": CIFAR images are 32x32, got ", im.width, "x", im.height);
    rec.clear();
    if (c100) rec.push_back(static_cast<uint8_t>(coarse[k]));
    rec.push_back(static_cast<uint8_t>(labels[k]));
    for (int c = 0; c < 3; ++c)
      for (int p = 0; p < CifarDataset::kSide * CifarDataset::kSide; ++p)
        rec.push_back(im.pixels[static_cast<size_t>(p) * 3 + c]);
    out.write(reinterpret_cast<const char*>(rec.data()), static_cast<std::streamsize>(rec.size()));
  }
  DISTILL_CHECK(out.good(), path, ": write error");
}

}  // namespace distill::data
