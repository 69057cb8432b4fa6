// BERT's WordPiece as Hugging Face's BertTokenizer runs it (BasicTokenizer + WordpieceTokenizer):
// drop NUL, U+FFFD and C* characters (controls, format, unassigned), turn whitespace into spaces,
// put spaces around CJK ideographs, NFC, split on whitespace, lower-case and strip accents (NFD,
// drop Mn) when lower-casing, split out punctuation, then greedy longest-match WordPiece with "##"
// continuations; a word longer than 100 characters or that cannot be spelled is [UNK].
#include "core/error.h"
#include "data/tokenizer.h"
#include "data/tokenizer_internal.h"
#include "data/unicode.h"

namespace distill {

using tokenizer_detail::invert_vocab;
using tokenizer_detail::read_text_file;
using tokenizer_detail::require_token;

namespace {

constexpr size_t kMaxInputCharsPerWord = 100;

bool is_bert_whitespace(char32_t c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' ||
         unicode::category(c) == unicode::Category::Zs;
}

// Every C* category: controls, format characters, private use, surrogates and unassigned.
bool is_bert_control(char32_t c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  return unicode::category(c) >= unicode::Category::Cc;
}

// BERT counts all non-alphanumeric ASCII as punctuation ("^", "$", "`" are not P* in Unicode).
bool is_bert_punctuation(char32_t c) {
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
      (c >= 123 && c <= 126))
    return true;
  return unicode::is_punctuation(c);
}

// str.split(): runs of str.isspace() characters separate words.
std::vector<std::u32string> split_whitespace(std::u32string_view text) {
  std::vector<std::u32string> words;
  std::u32string current;
  for (char32_t c : text) {
    if (unicode::is_python_space(c)) {
      if (!current.empty()) words.push_back(std::move(current));
      current.clear();
    } else {
      current.push_back(c);
    }
  }
  if (!current.empty()) words.push_back(std::move(current));
  return words;
}

}  // namespace

struct WordPieceTokenizer::State {
  std::unordered_map<std::string, int64_t> vocab;
  std::vector<std::string> tokens;
  std::vector<int64_t> special_ids;
};

WordPieceTokenizer::WordPieceTokenizer(const std::string& vocab_txt, bool lower_case,
                                       int64_t max_length)
    : state_(std::make_unique<State>()), lower_case_(lower_case), max_length_(max_length) {
  DISTILL_CHECK(max_length >= 2, "WordPieceTokenizer ", vocab_txt, ": max_length ", max_length,
                " leaves no room for [CLS] and [SEP]");
  const std::string text = read_text_file(vocab_txt, "WordPiece vocabulary");
  // One token per line, id = line index; a later duplicate wins, as in transformers' load_vocab.
  int64_t id = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    state_->vocab[text.substr(pos, end - pos)] = id++;
    pos = end + 1;
  }
  DISTILL_CHECK(id > 0, "WordPiece vocabulary ", vocab_txt, ": empty");
  cls_id_ = require_token(state_->vocab, "[CLS]", vocab_txt);
  sep_id_ = require_token(state_->vocab, "[SEP]", vocab_txt);
  pad_id_ = require_token(state_->vocab, "[PAD]", vocab_txt);
  unk_id_ = require_token(state_->vocab, "[UNK]", vocab_txt);
  for (const char* special : {"[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"}) {
    const auto it = state_->vocab.find(special);
    if (it != state_->vocab.end()) state_->special_ids.push_back(it->second);
  }
  state_->tokens = invert_vocab(state_->vocab);
}

WordPieceTokenizer::~WordPieceTokenizer() = default;

int64_t WordPieceTokenizer::vocab_size() const {
  return static_cast<int64_t>(state_->tokens.size());
}

std::vector<int64_t> WordPieceTokenizer::encode(const std::string& input) const {
  // BasicTokenizer._clean_text and _tokenize_chinese_chars.
  std::u32string text;
  for (char32_t c : unicode::decode_utf8(input)) {
    if (c == 0 || c == 0xFFFD || is_bert_control(c)) continue;
    if (is_bert_whitespace(c)) {
      text.push_back(' ');
    } else if (unicode::is_cjk_ideograph(c)) {
      text.push_back(' ');
      text.push_back(c);
      text.push_back(' ');
    } else {
      text.push_back(c);
    }
  }
  std::vector<std::u32string> words;
  for (std::u32string& token : split_whitespace(unicode::nfc(text))) {
    if (lower_case_) {
      std::u32string stripped;
      // PreTrainedTokenizer.tokenize lowers the text one character at a time before
      // BasicTokenizer sees it, so a capital sigma never becomes the final form.
      for (char32_t c : unicode::nfd(unicode::to_lower(token, /*final_sigma=*/false)))
        if (unicode::category(c) != unicode::Category::Mn) stripped.push_back(c);
      token = std::move(stripped);
    }
    // _run_split_on_punc: each punctuation character is a word of its own.
    std::u32string current;
    for (char32_t c : token) {
      if (is_bert_punctuation(c)) {
        if (!current.empty()) words.push_back(std::move(current));
        current.clear();
        words.emplace_back(1, c);
      } else {
        current.push_back(c);
      }
    }
    if (!current.empty()) words.push_back(std::move(current));
  }

  std::vector<int64_t> ids{cls_id_};
  const auto limit = static_cast<size_t>(max_length_ - 1);  // room for [SEP]
  std::vector<int64_t> pieces;
  for (const std::u32string& word : words) {
    if (ids.size() >= limit) break;
    if (word.size() > kMaxInputCharsPerWord) {
      ids.push_back(unk_id_);
      continue;
    }
    pieces.clear();
    bool bad = false;
    size_t start = 0;
    while (start < word.size()) {
      size_t end = word.size();
      int64_t found = -1;
      while (start < end) {
        std::string piece = start > 0 ? "##" : "";
        piece += unicode::encode_utf8(std::u32string_view(word).substr(start, end - start));
        const auto it = state_->vocab.find(piece);
        if (it != state_->vocab.end()) {
          found = it->second;
          break;
        }
        --end;
      }
      if (found < 0) {
        bad = true;
        break;
      }
      pieces.push_back(found);
      start = end;
    }
    if (bad)
      ids.push_back(unk_id_);
    else
      ids.insert(ids.end(), pieces.begin(), pieces.end());
  }
  if (ids.size() > limit) ids.resize(limit);
  ids.push_back(sep_id_);
  return ids;
}

std::string WordPieceTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  for (int64_t id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    bool special = false;
    for (int64_t s : state_->special_ids) special = special || s == id;
    if (special) continue;
    const std::string& token = state_->tokens[static_cast<size_t>(id)];
    if (token.rfind("##", 0) == 0) {
      out += token.substr(2);
    } else {
      if (!out.empty()) out += ' ';
      out += token;
    }
  }
  return out;
}

}  // namespace distill
