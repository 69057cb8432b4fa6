// `distill encode-text` and `distill encode-image`: embeddings from a converted checkpoint,
// printed one row per input and written as .npy with --out.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/autograd.h"
#include "core/error.h"
#include "core/npy.h"
#include "data/image.h"
#include "data/tokenizer.h"
#include "data/transforms.h"
#include "models/convert.h"
#include "tools/cli.h"

namespace distill::cli {

namespace {

Device parse_device(const Args& args, const char* command) {
  const std::string d = args.value_or("device", "cpu");
  if (d == "cpu") return Device::cpu();
  // "cuda" or "cuda:N" with N a small decimal index; anything else is refused before the GPU check.
  const std::string index = d.rfind("cuda:", 0) == 0 ? d.substr(5) : "";
  const bool index_ok = !index.empty() && index.size() <= 3 &&
                        index.find_first_not_of("0123456789") == std::string::npos;
  if (d != "cuda" && !index_ok)
    throw UsageError(std::string("distill ") + command +
                     ": --device must be cpu or cuda[:N], got '" + d + "'");
  if (!cuda_available())
    throw UsageError(std::string("distill ") + command + ": --device " + d +
                     " but no CUDA device is available");
  return d == "cuda" ? Device::cuda(0) : Device::cuda(std::stoi(index));
}

Tensor l2_normalise(const Tensor& x) {
  return div(x, sqrt(sum(mul(x, x), {1}, /*keepdim=*/true)));
}

void print_rows(const Tensor& emb, const std::vector<std::string>& labels, bool as_json) {
  const auto v = emb.to_float_vector();
  const int64_t n = emb.size(0), d = emb.size(1);
  if (as_json) {
    nlohmann::json rows = nlohmann::json::array();
    for (int64_t i = 0; i < n; ++i)
      rows.push_back(
          {{"input", labels[i]},
           {"embedding", std::vector<float>(v.begin() + i * d, v.begin() + (i + 1) * d)}});
    std::printf("%s\n", rows.dump().c_str());
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    std::printf("%s\t", labels[i].c_str());
    for (int64_t j = 0; j < d; ++j) std::printf(j ? " %.7g" : "%.7g", v[i * d + j]);
    std::printf("\n");
  }
}

// sentence-transformers folders say how long their inputs may be (max_seq_length).
int64_t sentence_max_length(const std::string& tokenizer_path) {
  const auto file = std::filesystem::path(tokenizer_path) / "sentence_bert_config.json";
  if (!std::filesystem::exists(file)) return 0;
  try {
    auto j = nlohmann::json::parse(std::ifstream(file));
    return j.value("max_seq_length", int64_t{0});
  } catch (const std::exception& e) {
    throw Error(file.string() + " is not valid JSON: " + e.what());
  }
}

}  // namespace

int cmd_encode_text(int argc, char** argv) {
  Args args("encode-text",
            {{"checkpoint", true, "converted checkpoint (distill convert)", ""},
             {"tokenizer", true,
              "tokenizer file or folder (bpe_simple_vocab_16e6.txt.gz, "
              "vocab.json + merges.txt, vocab.txt)",
              ""},
             {"out", true, "also write the embeddings as an [N, D] float32 .npy", ""},
             {"raw", false, "do not L2-normalise the embeddings", ""},
             {"json", false, "print JSON", ""},
             {"device", true, "cpu or cuda[:N]", "cpu"},
             {"help", false, "show this help", ""}});
  args.parse(argc, argv, 2);
  if (args.flag("help")) {
    std::fputs(args.help("Prints the text embedding of each TEXT argument (one line each): CLIP: "
                         "the end-of-text token through the text projection; RoBERTa: the <s> "
                         "token; BERT sentence encoders: the masked mean. L2-normalised unless "
                         "--raw (sentence-transformers' pipelines normalise too).\n\n"
                         "usage: distill encode-text --checkpoint F --tokenizer DIR TEXT...")
                   .c_str(),
               stdout);
    return 0;
  }
  const auto ckpt = args.value("checkpoint");
  const auto tok_path = args.value("tokenizer");
  if (!ckpt) throw UsageError("distill encode-text: --checkpoint FILE is required");
  if (!tok_path) throw UsageError("distill encode-text: --tokenizer PATH is required");
  const auto& texts = args.positional();
  if (texts.empty()) throw UsageError("distill encode-text: give at least one TEXT to encode");
  const Device device = parse_device(args, "encode-text");

  auto encoder = models::load_text_encoder(*ckpt);
  int64_t max_len = encoder->max_length();
  if (const int64_t s = sentence_max_length(*tok_path); s > 0) max_len = std::min(max_len, s);
  auto tokenizer = load_tokenizer(*tok_path, max_len);
  const std::string expected = encoder->arch() == "clip-text" ? "clip" : encoder->arch();
  if (tokenizer->kind() != expected)
    throw Error("distill encode-text: " + *tok_path + " is a " + tokenizer->kind() +
                " tokenizer but " + *ckpt + " holds a " + encoder->arch() + " model");
  encoder->to(device);
  NoGradGuard no_grad;
  const TokenBatch batch = tokenizer->encode_batch(texts);
  Tensor emb = encoder->encode(batch.ids, batch.attention_mask).pooled;
  if (!args.flag("raw")) emb = l2_normalise(emb);
  emb = to_device(emb, Device::cpu());
  if (const auto out = args.value("out")) save_npy(*out, emb);
  print_rows(emb, texts, args.flag("json"));
  return 0;
}

int cmd_encode_image(int argc, char** argv) {
  Args args("encode-image",
            {{"checkpoint", true, "converted checkpoint with an image tower (distill convert)", ""},
             {"out", true, "also write the embeddings as an [N, D] float32 .npy", ""},
             {"tokens", false, "with --out: write the token sequences [N, T, D] instead", ""},
             {"raw", false, "do not L2-normalise the embeddings", ""},
             {"json", false, "print JSON", ""},
             {"device", true, "cpu or cuda[:N]", "cpu"},
             {"help", false, "show this help", ""}});
  args.parse(argc, argv, 2);
  if (args.flag("help")) {
    std::fputs(args.help("Prints the image embedding of each IMAGE file (JPEG, PNG, ...) after "
                         "CLIP's preprocessing (shortest side resized to the tower's input size "
                         "with bicubic antialiasing, center crop, CLIP mean/std). L2-normalised "
                         "unless --raw.\n\n"
                         "usage: distill encode-image --checkpoint F IMAGE...")
                   .c_str(),
               stdout);
    return 0;
  }
  const auto ckpt = args.value("checkpoint");
  if (!ckpt) throw UsageError("distill encode-image: --checkpoint FILE is required");
  const auto& files = args.positional();
  if (files.empty()) throw UsageError("distill encode-image: give at least one IMAGE to encode");
  if (args.flag("tokens") && !args.value("out"))
    throw UsageError("distill encode-image: --tokens needs --out FILE.npy");
  const Device device = parse_device(args, "encode-image");
  auto encoder = models::load_image_encoder(*ckpt);
  encoder->to(device);
  const int size = static_cast<int>(encoder->image_size());
  const data::ClipPreprocess preprocess(size);
  const int64_t n = static_cast<int64_t>(files.size());
  Tensor pixels = Tensor::empty({n, 3, size, size});
  for (int64_t i = 0; i < n; ++i)
    preprocess.apply(data::decode_image_file(files[i]), 0, 0, 0,
                     pixels.data<float>() + i * 3 * size * size);
  NoGradGuard no_grad;
  const models::ImageFeatures f = encoder->encode(to_device(pixels, device));
  Tensor emb = args.flag("raw") ? f.pooled : l2_normalise(f.pooled);
  emb = to_device(emb, Device::cpu());
  if (const auto out = args.value("out"))
    save_npy(*out, args.flag("tokens") ? to_device(f.tokens, Device::cpu()) : emb);
  print_rows(emb, files, args.flag("json"));
  return 0;
}

}  // namespace distill::cli
