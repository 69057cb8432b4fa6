// GPT-2 byte-level BPE with RoBERTa's framing, as Hugging Face's RobertaTokenizer(Fast) runs it
// (add_prefix_space=False): no normalisation; pre-tokenise with GPT-2's pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// map each piece's UTF-8 bytes to printable characters, BPE, and frame as <s> ... </s>.
#include "core/error.h"
#include "data/tokenizer.h"
#include "data/tokenizer_internal.h"
#include "data/unicode.h"

namespace distill {

using tokenizer_detail::BpeMerger;
using tokenizer_detail::byte_to_unicode;
using tokenizer_detail::bytes_from_byte_level;
using tokenizer_detail::invert_vocab;
using tokenizer_detail::load_merges_txt;
using tokenizer_detail::load_vocab_json;
using tokenizer_detail::require_token;

namespace {

bool is_gpt2_other(char32_t c) {
  return !unicode::is_white_space(c) && !unicode::is_letter(c) && !unicode::is_number(c);
}

// Length of a (case-sensitive) contraction at text[i] == '\'', or 0.
size_t contraction_length(std::u32string_view text, size_t i) {
  if (i + 1 >= text.size()) return 0;
  const char32_t a = text[i + 1];
  const char32_t b = i + 2 < text.size() ? text[i + 2] : 0;
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

// Pieces as [begin, end) ranges of the text.
std::vector<std::pair<size_t, size_t>> split_gpt2(std::u32string_view text) {
  std::vector<std::pair<size_t, size_t>> pieces;
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    if (text[i] == '\'') {
      if (const size_t len = contraction_length(text, i)) {
        pieces.emplace_back(i, i + len);
        i += len;
        continue;
      }
    }
    // " ?" then a class: the optional space is taken only when the class follows it.
    const size_t body = (text[i] == ' ' && i + 1 < n) ? i + 1 : i;
    const char32_t c = text[body];
    size_t j = body + 1;
    if (unicode::is_letter(c)) {
      while (j < n && unicode::is_letter(text[j])) ++j;
    } else if (unicode::is_number(c)) {
      while (j < n && unicode::is_number(text[j])) ++j;
    } else if (is_gpt2_other(c)) {
      while (j < n && is_gpt2_other(text[j])) ++j;
    } else {
      // Whitespace: \s+(?!\S) leaves the last space of a run to the word after it; \s+ otherwise.
      j = i;
      while (j < n && unicode::is_white_space(text[j])) ++j;
      if (j < n && j - i >= 2) --j;
      if (j == i) j = i + 1;  // not reachable: text[i] is whitespace here
    }
    pieces.emplace_back(i, j);
    i = j;
  }
  return pieces;
}

}  // namespace

struct RobertaTokenizer::State {
  std::unordered_map<std::string, int64_t> vocab;
  std::vector<std::string> tokens;
  std::unique_ptr<BpeMerger> merger;
  int64_t byte_ids[256];
  std::vector<int64_t> special_ids;
};

RobertaTokenizer::RobertaTokenizer(const std::string& vocab_json, const std::string& merges_txt,
                                   int64_t max_length)
    : state_(std::make_unique<State>()), max_length_(max_length) {
  DISTILL_CHECK(max_length >= 2, "RobertaTokenizer ", vocab_json, ": max_length ", max_length,
                " leaves no room for <s> and </s>");
  state_->vocab = load_vocab_json(vocab_json);
  const auto merges = load_merges_txt(merges_txt);
  bos_id_ = require_token(state_->vocab, "<s>", vocab_json);
  eos_id_ = require_token(state_->vocab, "</s>", vocab_json);
  pad_id_ = require_token(state_->vocab, "<pad>", vocab_json);
  const auto& bytes = byte_to_unicode();
  for (int b = 0; b < 256; ++b)
    state_->byte_ids[b] = require_token(state_->vocab, bytes[b], vocab_json);
  for (const char* special : {"<s>", "</s>", "<pad>", "<unk>", "<mask>"}) {
    const auto it = state_->vocab.find(special);
    if (it != state_->vocab.end()) state_->special_ids.push_back(it->second);
  }
  state_->merger = std::make_unique<BpeMerger>(merges, state_->vocab, merges_txt);
  state_->tokens = invert_vocab(state_->vocab);
}

RobertaTokenizer::~RobertaTokenizer() = default;

int64_t RobertaTokenizer::vocab_size() const {
  return static_cast<int64_t>(state_->tokens.size());
}

std::vector<int64_t> RobertaTokenizer::encode(const std::string& text) const {
  const std::u32string chars = unicode::decode_utf8(text);
  std::vector<int64_t> ids{bos_id_};
  std::vector<int64_t> symbols;
  const auto limit = static_cast<size_t>(max_length_ - 1);  // room for </s>
  for (const auto& [begin, end] : split_gpt2(chars)) {
    if (ids.size() >= limit) break;
    const std::string word =
        unicode::encode_utf8(std::u32string_view(chars).substr(begin, end - begin));
    symbols.clear();
    for (char b : word) symbols.push_back(state_->byte_ids[static_cast<unsigned char>(b)]);
    const auto merged = state_->merger->merge(word, symbols);
    ids.insert(ids.end(), merged.begin(), merged.end());
  }
  if (ids.size() > limit) ids.resize(limit);
  ids.push_back(eos_id_);
  return ids;
}

std::string RobertaTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string byte_level;
  for (int64_t id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    bool special = false;
    for (int64_t s : state_->special_ids) special = special || s == id;
    if (!special) byte_level += state_->tokens[static_cast<size_t>(id)];
  }
  return unicode::encode_utf8(unicode::decode_utf8(bytes_from_byte_level(byte_level)));
}

}  // namespace distill
