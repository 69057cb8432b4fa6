// Tokenizers on arbitrary bytes (invalid UTF-8 included) with the real vocabularies: encode,
// decode of the result, and decode of arbitrary ids.
#include <cstring>
#include <memory>
#include <vector>

#include "data/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

// The real vocabularies: CLIP's and RoBERTa's from the shared data folder when it is there (they
// are too big for the repository), BERT's from the test fixtures.
const std::vector<std::unique_ptr<distill::Tokenizer>>& tokenizers() {
  static const auto all = [] {
    namespace fs = std::filesystem;
    std::vector<std::unique_ptr<distill::Tokenizer>> out;
    const fs::path shared = "/work/shared/data/tokenizers";
    if (fs::exists(shared / "clip/bpe_simple_vocab_16e6.txt.gz"))
      out.push_back(std::make_unique<distill::ClipTokenizer>(
          (shared / "clip/bpe_simple_vocab_16e6.txt.gz").string()));
    if (fs::exists(shared / "roberta/vocab.json"))
      out.push_back(std::make_unique<distill::RobertaTokenizer>(
          (shared / "roberta/vocab.json").string(), (shared / "roberta/merges.txt").string()));
    out.push_back(std::make_unique<distill::WordPieceTokenizer>(
        DISTILL_SOURCE_DIR "/tests/fixtures/tokenizers/bert-uncased-vocab.txt"));
    return out;
  }();
  return all;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (const auto& tok : tokenizers()) {
    distill::fuzz::expect_clean_failure([&] {
      const auto ids = tok->encode(text);
      if (ids.empty() || static_cast<int64_t>(ids.size()) > tok->max_length()) std::abort();
      for (int64_t id : ids)
        if (id < 0 || id >= tok->vocab_size()) std::abort();
      (void)tok->decode(ids);
    });
    // Ids from a stranger's file (e.g. a cached tokenisation): out-of-range ones must not crash.
    std::vector<int64_t> raw(size / 8);
    if (!raw.empty()) std::memcpy(raw.data(), data, raw.size() * 8);
    distill::fuzz::expect_clean_failure([&] { (void)tok->decode(raw); });
  }
  return 0;
}
