#include "data/captions.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "core/error.h"

namespace distill::data {

namespace fs = std::filesystem;

std::vector<CaptionedImage> read_captions(const std::string& path, const std::string& image_root,
                                          ReaderOptions options, BadSampleLog* skipped) {
  std::ifstream in(path);
  DISTILL_CHECK(in.good(), path, ": cannot open caption file");
  const fs::path root = image_root.empty() ? fs::path(path).parent_path() : fs::path(image_root);
  const std::string ext = fs::path(path).extension().string();
  const bool jsonl = ext == ".jsonl" || ext == ".json";
  std::vector<CaptionedImage> items;
  std::unordered_map<std::string, size_t> index;
  BadSampleLog local;
  std::string line;
  for (int64_t line_no = 1; std::getline(in, line); ++line_no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(line_no);
    std::string image;
    std::vector<std::string> captions;
    if (jsonl) {
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        fail(where, ": not a JSON object (", e.what(), ")");
      }
      DISTILL_CHECK(j.is_object() && j.contains("image") && j["image"].is_string(), where,
                    ": expected {\"image\": ..., \"caption\": ...}");
      image = j["image"].get<std::string>();
      if (j.contains("caption") && j["caption"].is_string())
        captions.push_back(j["caption"].get<std::string>());
      if (j.contains("captions") && j["captions"].is_array())
        for (const auto& c : j["captions"])
          if (c.is_string()) captions.push_back(c.get<std::string>());
      DISTILL_CHECK(!captions.empty(), where, ": no \"caption\" string or \"captions\" list");
    } else {
      const size_t tab = line.find('\t');
      DISTILL_CHECK(tab != std::string::npos, where, ": expected image<TAB>caption");
      image = line.substr(0, tab);
      const std::string caption = line.substr(tab + 1);
      if (line_no == 1 &&
          (image == "image" || image == "filepath" || image == "file" || image == "filename"))
        continue;  // header
      captions.push_back(caption);
    }
    const std::string resolved = fs::path(image).is_absolute() ? image : (root / image).string();
    if (!fs::is_regular_file(resolved)) {
      const std::string msg = where + ": image '" + resolved + "' does not exist";
      if (!options.skip_bad_samples) fail(msg);
      local.add(msg);
      continue;
    }
    auto it = index.find(resolved);
    if (it == index.end()) {
      index.emplace(resolved, items.size());
      items.push_back({resolved, std::move(captions)});
    } else {
      auto& dst = items[it->second].captions;
      dst.insert(dst.end(), captions.begin(), captions.end());
    }
  }
  if (skipped) skipped->merge(local);
  return items;
}

CaptionDataset::CaptionDataset(const std::string& path, const std::string& image_root,
                               ReaderOptions options)
    : items_(read_captions(path, image_root, options, &skipped_)) {
  DISTILL_CHECK(!items_.empty(), path, ": no captioned images");
  for (const auto& item : items_) class_names_.push_back(item.image);
}

Sample CaptionDataset::get(int64_t i) const {
  Sample s;
  s.image = decode_image_file(items_.at(static_cast<size_t>(i)).image);
  s.label = i;
  return s;
}

}  // namespace distill::data
