// Pieces shared by the tokenizers (data/tokenizer_*.cpp): file reading with errors that name the
// file, the byte <-> printable-character map of byte-level BPE, and the BPE merge engine.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace distill::tokenizer_detail {

// Whole file as bytes; gzip files (by content, not name) are decompressed. Throws naming the
// file when it is missing, unreadable or a damaged gzip stream.
std::string read_text_file(const std::string& path, const std::string& what);

// The bytes that bytes_to_unicode() maps to themselves ('!'..'~', U+00A1..U+00AC, U+00AE..U+00FF);
// the others map to U+0100 onwards, in byte order.
inline bool is_printable_byte(int b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

// GPT-2 / CLIP bytes_to_unicode(): each byte as one printable character, in UTF-8.
const std::vector<std::string>& byte_to_unicode();
// The inverse, from the code point of such a character to its byte (-1: not a byte character).
int byte_from_unicode(char32_t c);

// vocab.json: a JSON object of token -> id.
std::unordered_map<std::string, int64_t> load_vocab_json(const std::string& path);
// One "left right" line of a merges file (a trailing '\r' is ignored); throws naming the file
// (`what` and `path`) and the line when it is not two tokens separated by one space.
std::pair<std::string, std::string> parse_merge_line(std::string line, const std::string& what,
                                                     const std::string& path, int64_t line_number);

// merges.txt: "#version" header, then one "left right" pair per line.
std::vector<std::pair<std::string, std::string>> load_merges_txt(const std::string& path);

// Greedy BPE over vocabulary ids: repeatedly merges the adjacent pair with the lowest rank, every
// occurrence left to right (the reference Python loop). Results are cached per word.
class BpeMerger {
 public:
  // Every merge's parts and its concatenation must be vocabulary tokens; `source` names the file
  // for errors. A pair listed twice keeps its last rank (as the Python dict does).
  BpeMerger(const std::vector<std::pair<std::string, std::string>>& merges,
            const std::unordered_map<std::string, int64_t>& vocab, const std::string& source);
  // Merges the symbols of one pre-token; `key` identifies the word for the cache.
  std::vector<int64_t> merge(const std::string& key, std::vector<int64_t> symbols) const;

 private:
  struct Merge {
    int32_t rank;
    int64_t merged;
  };
  std::unordered_map<uint64_t, Merge> merges_;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int64_t>> cache_;
};

// Looks a token up, throwing with the file name when the vocabulary lacks it.
int64_t require_token(const std::unordered_map<std::string, int64_t>& vocab,
                      const std::string& token, const std::string& source);

// ids -> token strings, for decode.
std::vector<std::string> invert_vocab(const std::unordered_map<std::string, int64_t>& vocab);

// Byte-level BPE text back to UTF-8 (bytes that are not byte characters are kept as UTF-8).
std::string bytes_from_byte_level(std::string_view byte_level);

}  // namespace distill::tokenizer_detail
