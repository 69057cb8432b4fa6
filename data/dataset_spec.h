// Opens any supported dataset from one string, as `distill info --data SPEC` takes it:
//   a shard list or pattern      "dir/train-{0000..0004}.tar", "a.tar::b.tar"  -> WebDataset
//   an IDX pair                  "images-idx3-ubyte.gz,labels-idx1-ubyte.gz"     -> IDX
//   an IDX images file           "train-images-idx3-ubyte[.gz]" (labels found beside it)
//   a caption file               "captions.tsv", "captions.jsonl"                -> captions
//   a folder: CIFAR binary (split chosen by `split`), an IDX folder, else an ImageFolder root.
#pragma once

#include <memory>
#include <string>

#include "data/dataset.h"

namespace distill::data {

struct OpenedDataset {
  std::unique_ptr<Dataset> dataset;
  std::string format;       // "webdataset", "cifar10", "cifar100", "idx", "imagefolder", "captions"
  std::string description;  // e.g. "5 tar shards", "CIFAR-10 binary, train split"
};

// `split`: "train" or "test" for CIFAR and IDX folders. `coarse`: CIFAR-100 superclasses.
OpenedDataset open_dataset(const std::string& spec, const std::string& split = "train",
                           bool coarse = false, ReaderOptions options = {});

}  // namespace distill::data
