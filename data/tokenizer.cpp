#include "data/tokenizer.h"

#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/tokenizer_internal.h"
#include "data/unicode.h"

namespace distill {

namespace tokenizer_detail {

namespace {

std::string gunzip(const std::string& compressed, const std::string& path,
                   const std::string& what) {
  z_stream stream{};
  // 16 + MAX_WBITS: expect a gzip header and trailer.
  DISTILL_CHECK(inflateInit2(&stream, 16 + MAX_WBITS) == Z_OK, what, " ", path,
                ": cannot initialise zlib");
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(compressed.data()));
  stream.avail_in = static_cast<uInt>(compressed.size());
  std::string out;
  char buffer[1 << 16];
  int status = Z_OK;
  while (status == Z_OK) {
    stream.next_out = reinterpret_cast<Bytef*>(buffer);
    stream.avail_out = sizeof(buffer);
    status = inflate(&stream, Z_NO_FLUSH);
    out.append(buffer, sizeof(buffer) - stream.avail_out);
    if (status == Z_BUF_ERROR && stream.avail_in == 0) break;  // input ended mid-stream
  }
  const std::string message = stream.msg != nullptr ? stream.msg : "";
  inflateEnd(&stream);
  if (status != Z_STREAM_END)
    fail(what, " ", path, ": damaged gzip data (",
         status == Z_BUF_ERROR
             ? "truncated: the stream ends early"
             : (message.empty() ? "zlib error " + std::to_string(status) : message),
         ")");
  return out;
}

}  // namespace

std::string read_text_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  DISTILL_CHECK(in.good(), what, " ", path, ": cannot open the file");
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  DISTILL_CHECK(!in.bad(), what, " ", path, ": read error");
  if (bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == 0x1F &&
      static_cast<unsigned char>(bytes[1]) == 0x8B)
    return gunzip(bytes, path, what);
  return bytes;
}

const std::vector<std::string>& byte_to_unicode() {
  // Printable Latin-1 bytes stand for themselves; the rest map to U+0100 onwards, in byte order.
  static const std::vector<std::string> table = [] {
    std::vector<std::string> t(256);
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      unicode::append_utf8(t[b], is_printable_byte(b) ? static_cast<char32_t>(b) : next++);
    }
    return t;
  }();
  return table;
}

int byte_from_unicode(char32_t c) {
  static const std::unordered_map<char32_t, int> inverse = [] {
    std::unordered_map<char32_t, int> m;
    const auto& forward = byte_to_unicode();
    for (int b = 0; b < 256; ++b) m[unicode::decode_utf8(forward[b])[0]] = b;
    return m;
  }();
  const auto it = inverse.find(c);
  return it == inverse.end() ? -1 : it->second;
}

std::unordered_map<std::string, int64_t> load_vocab_json(const std::string& path) {
  const std::string text = read_text_file(path, "tokenizer vocabulary");
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("tokenizer vocabulary ", path, ": not valid JSON (", e.what(), ")");
  }
  DISTILL_CHECK(json.is_object(), "tokenizer vocabulary ", path,
                ": expected a JSON object of token -> id, got ", json.type_name());
  std::unordered_map<std::string, int64_t> vocab;
  vocab.reserve(json.size());
  for (const auto& [token, id] : json.items()) {
    DISTILL_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0, "tokenizer vocabulary ", path,
                  ": the id of token \"", token, "\" is not a non-negative integer: ", id.dump());
    vocab.emplace(token, id.get<int64_t>());
  }
  DISTILL_CHECK(!vocab.empty(), "tokenizer vocabulary ", path, ": empty");
  return vocab;
}

std::pair<std::string, std::string> parse_merge_line(std::string line, const std::string& what,
                                                     const std::string& path, int64_t line_number) {
  if (!line.empty() && line.back() == '\r') line.pop_back();
  const size_t space = line.find(' ');
  DISTILL_CHECK(space != std::string::npos && space > 0 && space + 1 < line.size() &&
                    line.find(' ', space + 1) == std::string::npos,
                what, " ", path, ": line ", line_number,
                " is not two tokens separated by one space: \"", line.substr(0, 80), "\"");
  return {line.substr(0, space), line.substr(space + 1)};
}

std::vector<std::pair<std::string, std::string>> load_merges_txt(const std::string& path) {
  const std::string text = read_text_file(path, "BPE merges file");
  std::vector<std::pair<std::string, std::string>> merges;
  size_t pos = 0;
  int64_t line_number = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_number == 1 && line.rfind("#version", 0) == 0)) continue;
    merges.push_back(parse_merge_line(line, "BPE merges file", path, line_number));
  }
  DISTILL_CHECK(!merges.empty(), "BPE merges file ", path, ": no merges");
  return merges;
}

int64_t require_token(const std::unordered_map<std::string, int64_t>& vocab,
                      const std::string& token, const std::string& source) {
  const auto it = vocab.find(token);
  DISTILL_CHECK(it != vocab.end(), "tokenizer ", source, ": the vocabulary has no token \"", token,
                "\"");
  return it->second;
}

std::vector<std::string> invert_vocab(const std::unordered_map<std::string, int64_t>& vocab) {
  int64_t size = 0;
  for (const auto& entry : vocab) size = std::max(size, entry.second + 1);
  std::vector<std::string> tokens(static_cast<size_t>(size));
  for (const auto& [token, id] : vocab) tokens[static_cast<size_t>(id)] = token;
  return tokens;
}

std::string bytes_from_byte_level(std::string_view byte_level) {
  std::string out;
  for (char32_t c : unicode::decode_utf8(byte_level)) {
    const int b = byte_from_unicode(c);
    if (b >= 0)
      out.push_back(static_cast<char>(b));
    else
      unicode::append_utf8(out, c);
  }
  return out;
}

namespace {
uint64_t pair_key(int64_t a, int64_t b) {
  return (static_cast<uint64_t>(a) << 32) | static_cast<uint64_t>(b);
}
// Enough for every distinct word of a large prompt set; cleared past it to bound memory.
constexpr size_t kMaxCachedWords = 1 << 18;
}  // namespace

BpeMerger::BpeMerger(const std::vector<std::pair<std::string, std::string>>& merges,
                     const std::unordered_map<std::string, int64_t>& vocab,
                     const std::string& source) {
  merges_.reserve(merges.size() * 2);
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    const int64_t a = require_token(vocab, left, source);
    const int64_t b = require_token(vocab, right, source);
    const int64_t merged = require_token(vocab, left + right, source);
    DISTILL_CHECK(a < (int64_t{1} << 32) && b < (int64_t{1} << 32), "tokenizer ", source,
                  ": token id too large");
    merges_[pair_key(a, b)] = Merge{static_cast<int32_t>(rank), merged};
  }
}

std::vector<int64_t> BpeMerger::merge(const std::string& key, std::vector<int64_t> word) const {
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    const auto it = cache_.find(key);
    if (it != cache_.end()) return it->second;
  }
  std::vector<int64_t> next;
  while (word.size() > 1) {
    const Merge* best = nullptr;
    int64_t first = 0, second = 0;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      const auto it = merges_.find(pair_key(word[i], word[i + 1]));
      if (it != merges_.end() && (best == nullptr || it->second.rank < best->rank)) {
        best = &it->second;
        first = word[i];
        second = word[i + 1];
      }
    }
    if (best == nullptr) break;
    next.clear();
    for (size_t i = 0; i < word.size(); ++i) {
      if (i + 1 < word.size() && word[i] == first && word[i + 1] == second) {
        next.push_back(best->merged);
        ++i;
      } else {
        next.push_back(word[i]);
      }
    }
    word.swap(next);
  }
  std::lock_guard<std::mutex> lock(cache_mutex_);
  if (cache_.size() >= kMaxCachedWords) cache_.clear();
  cache_.emplace(key, word);
  return word;
}

}  // namespace tokenizer_detail

TokenBatch Tokenizer::encode_batch(const std::vector<std::string>& texts, int64_t length) const {
  DISTILL_CHECK(length >= 0, "Tokenizer::encode_batch: negative length ", length);
  std::vector<std::vector<int64_t>> rows;
  rows.reserve(texts.size());
  int64_t longest = 0;
  for (const auto& text : texts) {
    rows.push_back(encode(text));
    longest = std::max(longest, static_cast<int64_t>(rows.back().size()));
  }
  if (length == 0) length = kind() == "clip" ? max_length() : longest;
  const auto n = static_cast<int64_t>(texts.size());
  std::vector<int64_t> ids(static_cast<size_t>(n * length), pad_id());
  std::vector<int64_t> mask(static_cast<size_t>(n * length), 0);
  for (int64_t r = 0; r < n; ++r) {
    auto& row = rows[static_cast<size_t>(r)];
    if (static_cast<int64_t>(row.size()) > length && length > 0) {
      const int64_t end_token = row.back();
      row.resize(static_cast<size_t>(length));
      row.back() = end_token;
    }
    for (size_t i = 0; i < row.size() && static_cast<int64_t>(i) < length; ++i) {
      ids[static_cast<size_t>(r * length) + i] = row[i];
      mask[static_cast<size_t>(r * length) + i] = 1;
    }
  }
  return TokenBatch{Tensor::from_vector(ids, {n, length}), Tensor::from_vector(mask, {n, length})};
}

namespace {

namespace fs = std::filesystem;

// tokenizer_config.json beside the vocabulary, or null when there is none.
nlohmann::json read_tokenizer_config(const fs::path& dir) {
  const fs::path path = dir / "tokenizer_config.json";
  if (!fs::exists(path)) return nullptr;
  const std::string text = tokenizer_detail::read_text_file(path.string(), "tokenizer config");
  try {
    auto json = nlohmann::json::parse(text);
    DISTILL_CHECK(json.is_object(), "tokenizer config ", path.string(), ": not a JSON object");
    return json;
  } catch (const nlohmann::json::exception& e) {
    fail("tokenizer config ", path.string(), ": not valid JSON (", e.what(), ")");
  }
}

// model_max_length when the config gives a sensible one (HF writes 1e30 for "no limit").
int64_t config_max_length(const nlohmann::json& config, int64_t fallback) {
  if (config.is_object() && config.contains("model_max_length") &&
      config["model_max_length"].is_number()) {
    const double v = config["model_max_length"].get<double>();
    if (v >= 2 && v <= 1e6) return static_cast<int64_t>(v);
  }
  return fallback;
}

bool vocab_json_has(const fs::path& path, const std::string& token) {
  const std::string text = tokenizer_detail::read_text_file(path.string(), "tokenizer vocabulary");
  return text.find("\"" + token + "\"") != std::string::npos;
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path_string, int64_t max_length) {
  DISTILL_CHECK(max_length >= 0, "load_tokenizer ", path_string, ": negative max_length ",
                max_length);
  const fs::path path(path_string);
  DISTILL_CHECK(fs::exists(path), "load_tokenizer: ", path_string, " does not exist");
  const std::string name = path.filename().string();
  if (fs::is_regular_file(path) && name.rfind("bpe_simple_vocab", 0) == 0)
    return std::make_unique<ClipTokenizer>(path_string, max_length > 0 ? max_length : 77);

  fs::path dir = fs::is_directory(path) ? path : path.parent_path();
  const bool json_bpe = fs::is_directory(path)
                            ? fs::exists(dir / "vocab.json") && fs::exists(dir / "merges.txt")
                            : name == "vocab.json" && fs::exists(dir / "merges.txt");
  if (json_bpe) {
    const fs::path vocab = dir / "vocab.json";
    // CLIP's vocabulary has <|startoftext|>; RoBERTa's keeps GPT-2's <|endoftext|>, so that one
    // cannot tell them apart.
    if (vocab_json_has(vocab, "<|startoftext|>"))
      return std::make_unique<ClipTokenizer>(vocab.string(), max_length > 0 ? max_length : 77);
    const int64_t length =
        max_length > 0 ? max_length : config_max_length(read_tokenizer_config(dir), 512);
    return std::make_unique<RobertaTokenizer>(vocab.string(), (dir / "merges.txt").string(),
                                              length);
  }
  // vocab.txt, or any other .txt file named directly (e.g. bert-base-uncased-vocab.txt).
  const fs::path vocab_txt = fs::is_directory(path) ? dir / "vocab.txt" : path;
  if (fs::is_regular_file(vocab_txt) && vocab_txt.extension() == ".txt" && name != "merges.txt") {
    const nlohmann::json config = read_tokenizer_config(dir);
    bool lower_case = true;
    if (config.is_object() && config.contains("do_lower_case") &&
        config["do_lower_case"].is_boolean())
      lower_case = config["do_lower_case"].get<bool>();
    const int64_t length = max_length > 0 ? max_length : config_max_length(config, 512);
    return std::make_unique<WordPieceTokenizer>(vocab_txt.string(), lower_case, length);
  }
  fail("load_tokenizer: ", path_string,
       " is not a tokenizer: expected bpe_simple_vocab_16e6.txt(.gz), a directory with "
       "vocab.json + merges.txt, or vocab.txt");
}

}  // namespace distill
