// `distill demo`: the whole method on Fashion-MNIST (or any dataset spec) with the real
// all-MiniLM-L6-v2 text encoder, as one experiment config for the same runner as `distill run`.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace distill::train {

// Where the demo looks for Fashion-MNIST (the Debian package dataset-fashion-mnist).
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

struct DemoOptions {
  std::string preset = "cpu";  // "cpu": ~5-8 min on 2 cores; "gpu": the full set, a bigger ViT
  bool quick = false;          // seconds, for CI: tiny subsets and models
  std::string train;           // dataset specs; empty: Fashion-MNIST from kFashionMnistDir
  std::string test;
  std::string class_names;  // data/classnames name, "" = the dataset's own
  std::string templates = "cifar";
  std::string text_checkpoint;   // a sentence-encoder folder; empty: a random text encoder
  std::string random_tokenizer;  // WordPiece vocab for the random text encoder
  std::string name = "demo-fashion-mnist";
};

// The experiment config the demo runs (unresolved; run_experiment fills the defaults).
nlohmann::json demo_config(const DemoOptions& options);

// The result table printed at the end: the five rows of result_rows() with top-1, top-5 and the
// wall time of each stage, then the total.
std::string format_result_table(const nlohmann::json& summary);

}  // namespace distill::train
