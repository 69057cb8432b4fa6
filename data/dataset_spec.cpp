#include "data/dataset_spec.h"

#include <filesystem>

#include "core/error.h"
#include "data/captions.h"
#include "data/cifar.h"
#include "data/idx.h"
#include "data/image_folder.h"
#include "data/webdataset.h"

namespace distill::data {

namespace fs = std::filesystem;

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

OpenedDataset open_dataset(const std::string& spec, const std::string& split, bool coarse,
                           ReaderOptions options) {
  DISTILL_CHECK(!spec.empty(), "open_dataset: empty dataset spec");
  OpenedDataset out;
  if (spec.find(".tar") != std::string::npos || spec.find('{') != std::string::npos ||
      spec.find("::") != std::string::npos) {
    const auto shards = expand_shard_pattern(spec);
    for (const auto& s : shards) DISTILL_CHECK(fs::exists(s), s, ": no such shard");
    out.dataset = std::make_unique<WebDataset>(shards, options);
    out.format = "webdataset";
    out.description =
        std::to_string(shards.size()) + " tar shard" + (shards.size() == 1 ? "" : "s");
    return out;
  }
  if (const size_t comma = spec.find(','); comma != std::string::npos) {
    out.dataset =
        std::make_unique<IdxDataset>(spec.substr(0, comma), spec.substr(comma + 1), options);
    out.format = "idx";
    out.description = "IDX images and labels";
    return out;
  }
  if (fs::is_regular_file(spec)) {
    if (ends_with(spec, ".tsv") || ends_with(spec, ".jsonl") || ends_with(spec, ".json")) {
      out.dataset = std::make_unique<CaptionDataset>(spec, "", options);
      out.format = "captions";
      out.description = "caption file (each image is its own class)";
      return out;
    }
    const size_t at = spec.rfind("images-idx3");
    DISTILL_CHECK(at != std::string::npos, spec,
                  ": not a recognised dataset file (expected a .tar shard, an IDX images file "
                  "*-images-idx3-ubyte[.gz], or a .tsv/.jsonl caption file)");
    std::string labels = spec;
    labels.replace(at, 11, "labels-idx1");
    out.dataset = std::make_unique<IdxDataset>(spec, labels, options);
    out.format = "idx";
    out.description = "IDX images and labels";
    return out;
  }
  DISTILL_CHECK(fs::is_directory(spec), spec, ": no such file or folder");
  if (CifarDataset::looks_like(spec)) {
    auto cifar = std::make_unique<CifarDataset>(spec, split, coarse, options);
    const bool c100 = cifar->variant() == CifarVariant::Cifar100;
    out.format = c100 ? "cifar100" : "cifar10";
    out.description = std::string(c100 ? "CIFAR-100" : "CIFAR-10") + " binary, " + split +
                      " split" + (coarse ? ", coarse labels" : "");
    out.dataset = std::move(cifar);
    return out;
  }
  std::string images, labels;
  if (IdxDataset::find_in_folder(spec, split == "test" ? "t10k" : split, images, labels)) {
    out.dataset = std::make_unique<IdxDataset>(images, labels, options);
    out.format = "idx";
    out.description = "IDX images and labels, " + split + " split";
    return out;
  }
  out.dataset = std::make_unique<ImageFolder>(spec, options);
  out.format = "imagefolder";
  out.description = "ImageFolder";
  return out;
}

}  // namespace distill::data
