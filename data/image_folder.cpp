#include "data/image_folder.h"

#include <algorithm>
#include <filesystem>

#include "core/error.h"

namespace distill::data {

namespace fs = std::filesystem;

bool ImageFolder::is_image_file(const std::string& name) {
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const char* ext : {".jpg", ".jpeg", ".png"}) {
    const size_t n = std::char_traits<char>::length(ext);
    if (lower.size() > n && lower.compare(lower.size() - n, n, ext) == 0) return true;
  }
  return false;
}

ImageFolder::ImageFolder(const std::string& root, ReaderOptions options) {
  DISTILL_CHECK(fs::is_directory(root), root,
                ": not a folder (ImageFolder expects root/<class>/<image>)");
  for (const auto& entry : fs::directory_iterator(root))
    if (entry.is_directory()) class_names_.push_back(entry.path().filename().string());
  std::sort(class_names_.begin(), class_names_.end());
  DISTILL_CHECK(!class_names_.empty(), root,
                ": no class folders (ImageFolder expects root/<class>/<image>)");
  for (size_t c = 0; c < class_names_.size(); ++c) {
    const fs::path dir = fs::path(root) / class_names_[c];
    std::vector<std::string> files;
    for (const auto& entry :
         fs::recursive_directory_iterator(dir, fs::directory_options::follow_directory_symlink))
      if (entry.is_regular_file() && is_image_file(entry.path().filename().string()))
        files.push_back(entry.path().string());
    if (files.empty()) {
      const std::string msg = dir.string() + ": class folder '" + class_names_[c] +
                              "' has no .jpg, .jpeg or .png images";
      if (!options.skip_bad_samples) fail(msg);
      skipped_.add(msg);
      continue;
    }
    std::sort(files.begin(), files.end());
    for (auto& f : files) {
      paths_.push_back(std::move(f));
      labels_.push_back(static_cast<int64_t>(c));
    }
  }
}

Sample ImageFolder::get(int64_t i) const {
  DISTILL_CHECK(i >= 0 && i < size(), "ImageFolder: index ", i, " out of range (", size(),
                " samples)");
  Sample s;
  s.image = decode_image_file(paths_[static_cast<size_t>(i)]);
  s.label = labels_[static_cast<size_t>(i)];
  return s;
}

}  // namespace distill::data
