// CLIP's tokenizer as open_clip's SimpleTokenizer runs it (clean="lower", no reduction):
// clean the text (data/unicode.h clip_clean), split it with
//   <start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
// (case-insensitive), map each piece's UTF-8 bytes to printable characters, BPE with "</w>" on
// the last character, and frame with <start_of_text> 49406 ... <end_of_text> 49407.
#include <filesystem>

#include "core/error.h"
#include "data/tokenizer.h"
#include "data/tokenizer_internal.h"
#include "data/unicode.h"

namespace distill {

using tokenizer_detail::BpeMerger;
using tokenizer_detail::byte_to_unicode;
using tokenizer_detail::bytes_from_byte_level;
using tokenizer_detail::invert_vocab;
using tokenizer_detail::is_printable_byte;
using tokenizer_detail::load_merges_txt;
using tokenizer_detail::load_vocab_json;
using tokenizer_detail::parse_merge_line;
using tokenizer_detail::read_text_file;
using tokenizer_detail::require_token;

namespace {

// open_clip's bpe_simple_vocab_16e6.txt: a header line, then 48,894 merges used (49152 ids less
// the 256 bytes and 2 specials); later lines are ignored, as open_clip does.
constexpr size_t kClipMergeCount = 49152 - 256 - 2;

// The special-token spellings open_clip recognises inside text (its vocabulary names them so;
// OpenAI's CLIP and Hugging Face spell them <|startoftext|> / <|endoftext|>).
constexpr std::u32string_view kStartText = U"<start_of_text>";
constexpr std::u32string_view kEndText = U"<end_of_text>";

enum class PieceKind { kText, kStart, kEnd };
struct Piece {
  size_t begin, length;
  PieceKind kind;
};

// U+0345 COMBINING GREEK YPOGEGRAMMENI case-folds to a letter (iota), so under IGNORECASE the
// `regex` module matches it with neither [\p{L}] nor [^\s\p{L}\p{N}]: it is skipped like a
// space. It is the only such character (checked over all code points against regex 2026.11.19).
constexpr char32_t kYpogegrammeni = 0x345;

bool is_clip_other(char32_t c) {
  return !unicode::is_white_space(c) && !unicode::is_letter(c) && !unicode::is_number(c) &&
         c != kYpogegrammeni;
}

// Length of a contraction ('s 't 're 've 'm 'll 'd) at text[i] == '\'', or 0. Case-insensitive
// as the pattern is: after lower-casing only U+017F LONG S still differs and folds to 's'.
size_t contraction_length(std::u32string_view text, size_t i) {
  if (i + 1 >= text.size()) return 0;
  const char32_t a = text[i + 1];
  const char32_t b = i + 2 < text.size() ? text[i + 2] : 0;
  if (a == 's' || a == 0x17F || a == 't' || a == 'm' || a == 'd') return 2;
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

std::vector<Piece> split_clip(std::u32string_view text) {
  std::vector<Piece> pieces;
  size_t i = 0;
  while (i < text.size()) {
    const char32_t c = text[i];
    if (c == '<' && text.substr(i, kStartText.size()) == kStartText) {
      pieces.push_back({i, kStartText.size(), PieceKind::kStart});
      i += kStartText.size();
      continue;
    }
    if (c == '<' && text.substr(i, kEndText.size()) == kEndText) {
      pieces.push_back({i, kEndText.size(), PieceKind::kEnd});
      i += kEndText.size();
      continue;
    }
    if (c == '\'') {
      if (const size_t n = contraction_length(text, i)) {
        pieces.push_back({i, n, PieceKind::kText});
        i += n;
        continue;
      }
    }
    size_t j = i + 1;
    if (unicode::is_letter(c)) {
      while (j < text.size() && unicode::is_letter(text[j])) ++j;
    } else if (unicode::is_number(c)) {
      // one digit per piece
    } else if (unicode::is_white_space(c) || c == kYpogegrammeni) {
      i = j;
      continue;
    } else {
      while (j < text.size() && is_clip_other(text[j])) ++j;
    }
    pieces.push_back({i, j - i, PieceKind::kText});
    i = j;
  }
  return pieces;
}

bool is_directory_or_json(const std::string& path) {
  namespace fs = std::filesystem;
  return fs::is_directory(path) || fs::path(path).extension() == ".json";
}

}  // namespace

struct ClipTokenizer::State {
  std::unordered_map<std::string, int64_t> vocab;
  std::vector<std::string> tokens;  // id -> token
  std::unique_ptr<BpeMerger> merger;
  int64_t byte_ids[256];      // a byte inside a word
  int64_t byte_end_ids[256];  // a byte ending a word ("</w>")
};

ClipTokenizer::ClipTokenizer(const std::string& path, int64_t context_length)
    : state_(std::make_unique<State>()), context_length_(context_length) {
  DISTILL_CHECK(context_length >= 2, "ClipTokenizer ", path, ": context length ", context_length,
                " leaves no room for the start and end tokens");
  const auto& bytes = byte_to_unicode();
  std::vector<std::pair<std::string, std::string>> merges;
  std::string source = path;
  if (is_directory_or_json(path)) {
    // Hugging Face's files: ids from vocab.json, merges from merges.txt.
    namespace fs = std::filesystem;
    const fs::path dir = fs::is_directory(path) ? fs::path(path) : fs::path(path).parent_path();
    const std::string vocab_path = fs::is_directory(path) ? (dir / "vocab.json").string() : path;
    state_->vocab = load_vocab_json(vocab_path);
    merges = load_merges_txt((dir / "merges.txt").string());
    source = vocab_path;
    start_id_ = require_token(state_->vocab, "<|startoftext|>", source);
    end_id_ = require_token(state_->vocab, "<|endoftext|>", source);
  } else {
    const std::string text = read_text_file(path, "CLIP BPE vocabulary");
    size_t pos = text.find('\n');  // skip the header line
    DISTILL_CHECK(pos != std::string::npos, "CLIP BPE vocabulary ", path,
                  ": no merges after the header line");
    ++pos;
    for (size_t line = 2; merges.size() < kClipMergeCount; ++line) {
      DISTILL_CHECK(pos < text.size(), "CLIP BPE vocabulary ", path, ": has ", merges.size(),
                    " merges, needs ", kClipMergeCount, " (a truncated file?)");
      size_t end = text.find('\n', pos);
      if (end == std::string::npos) end = text.size();
      merges.push_back(parse_merge_line(text.substr(pos, end - pos), "CLIP BPE vocabulary", path,
                                        static_cast<int64_t>(line)));
      pos = end + 1;
    }
    // Ids as open_clip assigns them: the 256 byte characters in bytes_to_unicode() order
    // (printable bytes first), the same with "</w>", one per merge, then the two specials.
    // A later duplicate replaces an earlier id, as Python's dict(zip(vocab, range)) does.
    std::vector<int> order;
    for (int b = 0; b < 256; ++b)
      if (is_printable_byte(b)) order.push_back(b);
    for (int b = 0; b < 256; ++b)
      if (!is_printable_byte(b)) order.push_back(b);
    int64_t next = 0;
    for (int b : order) state_->vocab[bytes[b]] = next++;
    for (int b : order) state_->vocab[bytes[b] + "</w>"] = next++;
    for (const auto& [left, right] : merges) state_->vocab[left + right] = next++;
    start_id_ = next++;
    end_id_ = next++;
    state_->vocab["<|startoftext|>"] = start_id_;
    state_->vocab["<|endoftext|>"] = end_id_;
  }
  for (int b = 0; b < 256; ++b) {
    state_->byte_ids[b] = require_token(state_->vocab, bytes[b], source);
    state_->byte_end_ids[b] = require_token(state_->vocab, bytes[b] + "</w>", source);
  }
  state_->merger = std::make_unique<BpeMerger>(merges, state_->vocab, source);
  state_->tokens = invert_vocab(state_->vocab);
}

ClipTokenizer::~ClipTokenizer() = default;

int64_t ClipTokenizer::vocab_size() const {
  return static_cast<int64_t>(state_->tokens.size());
}

std::vector<int64_t> ClipTokenizer::encode(const std::string& text) const {
  const std::u32string clean = unicode::clip_clean(unicode::decode_utf8(text));
  std::vector<int64_t> ids{start_id_};
  std::vector<int64_t> symbols;
  for (const Piece& piece : split_clip(clean)) {
    if (piece.kind != PieceKind::kText) {
      ids.push_back(piece.kind == PieceKind::kStart ? start_id_ : end_id_);
      continue;
    }
    const std::string word =
        unicode::encode_utf8(std::u32string_view(clean).substr(piece.begin, piece.length));
    symbols.clear();
    for (size_t i = 0; i < word.size(); ++i) {
      const auto b = static_cast<unsigned char>(word[i]);
      symbols.push_back(i + 1 == word.size() ? state_->byte_end_ids[b] : state_->byte_ids[b]);
    }
    const auto merged = state_->merger->merge(word, symbols);
    ids.insert(ids.end(), merged.begin(), merged.end());
  }
  ids.push_back(end_id_);
  // open_clip: cut to the context length and put the end token in the last position.
  if (static_cast<int64_t>(ids.size()) > context_length_) {
    ids.resize(static_cast<size_t>(context_length_));
    ids.back() = end_id_;
  }
  return ids;
}

std::string ClipTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string byte_level;
  for (int64_t id : ids) {
    if (id == start_id_ || id == end_id_ || id < 0 || id >= vocab_size()) continue;
    byte_level += state_->tokens[static_cast<size_t>(id)];
  }
  std::string text = bytes_from_byte_level(byte_level);
  std::string out;
  for (size_t pos = 0;;) {
    const size_t end = text.find("</w>", pos);
    out += text.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    if (end == std::string::npos) break;
    out += ' ';
    pos = end + 4;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return unicode::encode_utf8(unicode::decode_utf8(out));  // invalid UTF-8 -> U+FFFD
}

}  // namespace distill
