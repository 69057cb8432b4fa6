#include "data/unicode.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <unordered_map>

#include "data/unicode_tables.h"

namespace distill::unicode {
namespace {

namespace t = tables;

constexpr char32_t kReplacement = 0xFFFD;

bool in_ranges(const t::CodepointRange* ranges, size_t count, char32_t c) {
  const auto* end = ranges + count;
  const auto* it = std::upper_bound(
      ranges, end, c, [](char32_t v, const t::CodepointRange& r) { return v < r.first; });
  return it != ranges && c <= (it - 1)->last;
}

// Hangul syllables decompose and compose algorithmically (Unicode section 3.12).
constexpr char32_t kHangulS = 0xAC00, kHangulL = 0x1100, kHangulV = 0x1161, kHangulT = 0x11A7;
constexpr char32_t kHangulLCount = 19, kHangulVCount = 21, kHangulTCount = 28;
constexpr char32_t kHangulNCount = kHangulVCount * kHangulTCount;
constexpr char32_t kHangulSCount = kHangulLCount * kHangulNCount;

const t::Decomposition* find_decomposition(char32_t c) {
  const auto* begin = t::kDecompositions;
  const auto* end = begin + t::kDecompositionsCount;
  const auto* it = std::lower_bound(
      begin, end, c, [](const t::Decomposition& d, char32_t v) { return d.code < v; });
  return it != end && it->code == c ? it : nullptr;
}

uint8_t combining_class(char32_t c) {
  const auto* begin = t::kCombiningRuns;
  const auto* end = begin + t::kCombiningRunsCount;
  const auto* it = std::upper_bound(
      begin, end, c, [](char32_t v, const t::CombiningRun& r) { return v < r.first; });
  if (it == begin || c > (it - 1)->last) return 0;
  return (it - 1)->combining_class;
}

void decompose_into(char32_t c, std::u32string& out) {
  if (c >= kHangulS && c < kHangulS + kHangulSCount) {
    const char32_t s = c - kHangulS;
    out.push_back(kHangulL + s / kHangulNCount);
    out.push_back(kHangulV + (s % kHangulNCount) / kHangulTCount);
    if (s % kHangulTCount != 0) out.push_back(kHangulT + s % kHangulTCount);
    return;
  }
  const auto* d = find_decomposition(c);
  if (d == nullptr) {
    out.push_back(c);
    return;
  }
  decompose_into(d->first, out);
  if (d->second != 0) decompose_into(d->second, out);
}

// Canonical ordering: a stable sort of each run of non-starters by combining class.
void reorder_marks(std::u32string& text) {
  size_t i = 0;
  while (i < text.size()) {
    if (combining_class(text[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < text.size() && combining_class(text[j]) != 0) ++j;
    std::stable_sort(text.begin() + static_cast<std::ptrdiff_t>(i),
                     text.begin() + static_cast<std::ptrdiff_t>(j), [](char32_t a, char32_t b) {
                       return combining_class(a) < combining_class(b);
                     });
    i = j;
  }
}

uint64_t pair_key(char32_t a, char32_t b) {
  return (static_cast<uint64_t>(a) << 32) | b;
}

const std::unordered_map<uint64_t, char32_t>& compositions() {
  static const std::unordered_map<uint64_t, char32_t> table = [] {
    std::unordered_map<uint64_t, char32_t> m;
    for (size_t i = 0; i < t::kDecompositionsCount; ++i) {
      const auto& d = t::kDecompositions[i];
      if (d.composes) m.emplace(pair_key(d.first, d.second), d.code);
    }
    return m;
  }();
  return table;
}

char32_t compose_pair(char32_t a, char32_t b) {
  if (a >= kHangulL && a < kHangulL + kHangulLCount && b >= kHangulV &&
      b < kHangulV + kHangulVCount)
    return kHangulS + ((a - kHangulL) * kHangulVCount + (b - kHangulV)) * kHangulTCount;
  if (a >= kHangulS && a < kHangulS + kHangulSCount && (a - kHangulS) % kHangulTCount == 0 &&
      b > kHangulT && b < kHangulT + kHangulTCount)
    return a + (b - kHangulT);
  const auto& table = compositions();
  const auto it = table.find(pair_key(a, b));
  return it == table.end() ? 0 : it->second;
}

char32_t lower_simple(char32_t c) {
  const auto* begin = t::kLowerRuns;
  const auto* end = begin + t::kLowerRunsCount;
  const auto* it =
      std::upper_bound(begin, end, c, [](char32_t v, const t::LowerRun& r) { return v < r.first; });
  if (it == begin) return c;
  const auto& run = *(it - 1);
  if (c > run.last || (c - run.first) % run.stride != 0) return c;
  return static_cast<char32_t>(static_cast<int64_t>(c) + run.delta);
}

bool is_case_ignorable(char32_t c) {
  return in_ranges(t::kCaseIgnorable, t::kCaseIgnorableCount, c);
}
bool is_cased_not_ignorable(char32_t c) {
  return in_ranges(t::kCasedNotIgnorable, t::kCasedNotIgnorableCount, c);
}

// CPython's handle_capital_sigma: final when a cased letter precedes (skipping case-ignorable
// characters) and none follows.
bool is_final_sigma(std::u32string_view text, size_t i) {
  size_t j = i;
  while (j > 0 && is_case_ignorable(text[j - 1])) --j;
  if (j == 0 || !is_cased_not_ignorable(text[j - 1])) return false;
  size_t k = i + 1;
  while (k < text.size() && is_case_ignorable(text[k])) ++k;
  return k == text.size() || !is_cased_not_ignorable(text[k]);
}

const char32_t* find_replacement(const t::Replacement* table, size_t count, char32_t c) {
  const auto* end = table + count;
  const auto* it = std::lower_bound(table, end, c,
                                    [](const t::Replacement& r, char32_t v) { return r.code < v; });
  return it != end && it->code == c ? it->text : nullptr;
}

const char32_t* find_entity(const t::Entity* table, size_t count, const std::string& name) {
  const auto* end = table + count;
  const auto* it = std::lower_bound(table, end, name, [](const t::Entity& e, const std::string& v) {
    return std::strcmp(e.name, v.c_str()) < 0;
  });
  return it != end && name == it->name ? it->text : nullptr;
}

// The ASCII spelling of a code point sequence, or "" when it has non-ASCII characters (no entity
// name has any).
std::string ascii_name(std::u32string_view s) {
  std::string out;
  for (char32_t c : s) {
    if (c >= 0x80) return "";
    out.push_back(static_cast<char>(c));
  }
  return out;
}

bool is_ascii_digit(char32_t c) {
  return c >= '0' && c <= '9';
}
bool is_ascii_hex(char32_t c) {
  return is_ascii_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
bool is_ascii_alnum(char32_t c) {
  return is_ascii_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

// html._replace_charref for a numeric reference whose digits are s[begin, end).
std::u32string numeric_charref(std::u32string_view digits, int base) {
  uint64_t value = 0;
  for (char32_t c : digits) {
    const uint64_t d = is_ascii_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10;
    value = std::min<uint64_t>(value * base + d, 0x7FFFFFFF);  // saturate: all large are invalid
  }
  const auto code = static_cast<char32_t>(value);
  if (const char32_t* r = find_replacement(t::kInvalidCharrefs, t::kInvalidCharrefsCount, code))
    return r;
  if ((code >= 0xD800 && code <= 0xDFFF) || code > 0x10FFFF) return std::u32string(1, kReplacement);
  if (in_ranges(t::kInvalidCodepoints, t::kInvalidCodepointsCount, code)) return {};
  return std::u32string(1, code);
}

// ftfy.fixes.unescape_html: "&#?[0-9A-Za-z]{1,24};" references, named ones (plus upper-cased
// names) only with their ';'.
std::u32string ftfy_unescape(std::u32string_view text) {
  std::u32string out;
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] != '&') {
      out.push_back(text[i++]);
      continue;
    }
    size_t j = i + 1;
    if (j < text.size() && text[j] == '#') ++j;
    size_t k = j;
    while (k < text.size() && is_ascii_alnum(text[k]) && k - j < 25) ++k;
    if (k == j || k - j > 24 || k >= text.size() || text[k] != ';') {
      out.push_back(text[i++]);
      continue;
    }
    const std::u32string_view match = text.substr(i, k + 1 - i);
    const std::string name = ascii_name(match.substr(1));
    const char32_t* value = find_entity(t::kHtml5Entities, t::kHtml5EntitiesCount, name);
    if (value == nullptr)
      value = find_entity(t::kFtfyUpperEntities, t::kFtfyUpperEntitiesCount, name);
    if (value != nullptr) {
      out += value;
    } else if (match[1] == '#') {
      const std::u32string decoded = html_unescape(match);
      out += decoded.find(U';') == std::u32string::npos ? decoded : std::u32string(match);
    } else {
      out += match;
    }
    i = k + 1;
  }
  return out;
}

bool is_ftfy_control(char32_t c) {
  return c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F ||
         (c >= 0x206A && c <= 0x206F) || c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC);
}

const char32_t* latin_ligature(char32_t c) {
  switch (c) {
    case 0x132:
      return U"IJ";
    case 0x133:
      return U"ij";
    case 0x149:
      return U"\u02BCn";
    case 0x1F1:
      return U"DZ";
    case 0x1F2:
      return U"Dz";
    case 0x1F3:
      return U"dz";
    case 0x1C4:
      return U"D\u017D";
    case 0x1C5:
      return U"D\u017E";
    case 0x1C6:
      return U"d\u017E";
    case 0x1C7:
      return U"LJ";
    case 0x1C8:
      return U"Lj";
    case 0x1C9:
      return U"lj";
    case 0x1CA:
      return U"NJ";
    case 0x1CB:
      return U"Nj";
    case 0x1CC:
      return U"nj";
    case 0xFB00:
      return U"ff";
    case 0xFB01:
      return U"fi";
    case 0xFB02:
      return U"fl";
    case 0xFB03:
      return U"ffi";
    case 0xFB04:
      return U"ffl";
    case 0xFB05:
      return U"\u017Ft";
    case 0xFB06:
      return U"st";
    default:
      return nullptr;
  }
}

// One pass of the character-level fixes ftfy.fix_and_explain applies after unescaping, in its
// order: fix_c1_controls, fix_latin_ligatures, fix_character_width, uncurl_quotes,
// fix_line_breaks, (fix_surrogates: none survive UTF-8 decoding), remove_terminal_escapes,
// remove_control_chars, NFC.
std::u32string ftfy_character_fixes(std::u32string_view in) {
  std::u32string text;
  for (char32_t c : in) {
    if (c >= 0x80 && c <= 0x9F) {  // C1 controls as Windows-1252 ("sloppy": undefined stay)
      text += find_replacement(t::kInvalidCharrefs, t::kInvalidCharrefsCount, c);
    } else if (const char32_t* lig = latin_ligature(c)) {
      text += lig;
    } else if (const char32_t* w = find_replacement(t::kWidthMap, t::kWidthMapCount, c)) {
      text += w;
    } else {
      text.push_back(c);
    }
  }
  for (char32_t& c : text) {
    if (c == 0x2BC || (c >= 0x2018 && c <= 0x201B)) c = '\'';
    if (c >= 0x201C && c <= 0x201F) c = '"';
  }
  std::u32string lines;
  for (size_t i = 0; i < text.size(); ++i) {
    const char32_t c = text[i];
    if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') continue;
    lines.push_back(c == '\r' || c == 0x2028 || c == 0x2029 || c == 0x85 ? U'\n' : c);
  }
  std::u32string cleaned;
  for (size_t i = 0; i < lines.size(); ++i) {
    // ANSI terminal escapes: ESC [ (digits or ;)* letter
    if (lines[i] == 0x1B && i + 1 < lines.size() && lines[i + 1] == '[') {
      size_t j = i + 2;
      while (j < lines.size() && (lines[j] == ';' || category(lines[j]) == Category::Nd)) ++j;
      if (j < lines.size() && lines[j] < 0x80 &&
          ((lines[j] | 0x20) >= 'a' && (lines[j] | 0x20) <= 'z')) {
        i = j;
        continue;
      }
    }
    if (!is_ftfy_control(lines[i])) cleaned.push_back(lines[i]);
  }
  return nfc(cleaned);
}

std::u32string ftfy_fix_segment(std::u32string text, bool unescape) {
  while (true) {
    const std::u32string before = text;
    if (unescape) text = ftfy_unescape(text);
    text = ftfy_character_fixes(text);
    if (text == before) return text;
  }
}

std::u32string python_strip(std::u32string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && is_python_space(s[b])) ++b;
  while (e > b && is_python_space(s[e - 1])) --e;
  return std::u32string(s.substr(b, e - b));
}

}  // namespace

const char* unicode_version() {
  return t::kUnicodeVersion;
}

std::u32string decode_utf8(std::string_view bytes) {
  std::u32string out;
  out.reserve(bytes.size());
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char b = p[i];
    if (b < 0x80) {
      out.push_back(b);
      ++i;
      continue;
    }
    int need = 0;
    char32_t code = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // the valid range of the second byte
    if (b >= 0xC2 && b <= 0xDF) {
      need = 1, code = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
      need = 2, code = b & 0x0F;
      if (b == 0xE0) lo = 0xA0;  // overlong
      if (b == 0xED) hi = 0x9F;  // surrogates
    } else if (b >= 0xF0 && b <= 0xF4) {
      need = 3, code = b & 0x07;
      if (b == 0xF0) lo = 0x90;  // overlong
      if (b == 0xF4) hi = 0x8F;  // past U+10FFFF
    } else {
      out.push_back(kReplacement);
      ++i;
      continue;
    }
    size_t j = i + 1;
    bool ok = true;
    for (int k = 0; k < need; ++k, ++j) {
      const unsigned char lo_k = k == 0 ? lo : 0x80, hi_k = k == 0 ? hi : 0xBF;
      if (j >= n || p[j] < lo_k || p[j] > hi_k) {
        ok = false;
        break;
      }
      code = (code << 6) | (p[j] & 0x3F);
    }
    out.push_back(ok ? code : kReplacement);  // the maximal invalid subpart is one U+FFFD
    i = j;
  }
  return out;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

std::string encode_utf8(std::u32string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t c : text) append_utf8(out, c);
  return out;
}

Category category(char32_t c) {
  if (c > 0x10FFFF) return Category::Cn;
  const auto* begin = t::kCategoryRuns;
  const auto* end = begin + t::kCategoryRunsCount;
  const auto* it = std::upper_bound(
      begin, end, c, [](char32_t v, const t::CategoryRun& r) { return v < r.first; });
  return static_cast<Category>((it - 1)->category);
}

bool is_letter(char32_t c) {
  if (c < 0x80) return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
  return category(c) <= Category::Lo;
}
bool is_number(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  const Category k = category(c);
  return k >= Category::Nd && k <= Category::No;
}
bool is_punctuation(char32_t c) {
  const Category k = category(c);
  return k >= Category::Pc && k <= Category::Po;
}
bool is_python_space(char32_t c) {
  if (c < 0x80) return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20);
  return in_ranges(t::kPythonSpace, t::kPythonSpaceCount, c);
}
bool is_white_space(char32_t c) {
  // Python's isspace set less U+001C..U+001F (separators for str, not White_Space in Unicode).
  return is_python_space(c) && !(c >= 0x1C && c <= 0x1F);
}
bool is_cjk_ideograph(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

std::u32string to_lower(std::u32string_view text, bool final_sigma) {
  std::u32string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const char32_t c = text[i];
    if (c < 0x80) {
      out.push_back(c >= 'A' && c <= 'Z' ? c + 32 : c);
    } else if (c == 0x130) {  // LATIN CAPITAL LETTER I WITH DOT ABOVE: "i" + COMBINING DOT ABOVE
      out.push_back('i');
      out.push_back(0x307);
    } else if (c == 0x3A3) {
      out.push_back(final_sigma && is_final_sigma(text, i) ? 0x3C2 : 0x3C3);
    } else {
      out.push_back(lower_simple(c));
    }
  }
  return out;
}

std::u32string nfd(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  for (char32_t c : text) {
    if (c < 0xC0)
      out.push_back(c);  // nothing below U+00C0 decomposes
    else
      decompose_into(c, out);
  }
  reorder_marks(out);
  return out;
}

std::u32string nfc(std::u32string_view text) {
  bool ascii = true;
  for (char32_t c : text) ascii = ascii && c < 0x80;
  if (ascii) return std::u32string(text);
  const std::u32string decomposed = nfd(text);
  std::u32string out;
  out.reserve(decomposed.size());
  size_t starter = std::u32string::npos;
  uint8_t last_class = 0;
  for (char32_t c : decomposed) {
    const uint8_t cls = combining_class(c);
    if (starter != std::u32string::npos) {
      // Blocked when a character in between has class 0 or a class >= this one.
      const bool adjacent = out.size() == starter + 1;
      const bool blocked = !adjacent && (last_class == 0 || last_class >= cls);
      if (!blocked) {
        if (const char32_t composed = compose_pair(out[starter], c)) {
          out[starter] = composed;
          continue;
        }
      }
    }
    if (cls == 0) starter = out.size();
    last_class = cls;
    out.push_back(c);
  }
  return out;
}

std::u32string html_unescape(std::u32string_view text) {
  if (text.find(U'&') == std::u32string_view::npos) return std::u32string(text);
  std::u32string out;
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] != '&' || i + 1 >= text.size()) {
      out.push_back(text[i++]);
      continue;
    }
    const size_t start = i + 1;
    if (text[start] == '#') {
      // "#[0-9]+;?" or "#[xX][0-9a-fA-F]+;?"
      size_t j = start + 1;
      int base = 10;
      if (j < text.size() && is_ascii_digit(text[j])) {
        while (j < text.size() && is_ascii_digit(text[j])) ++j;
      } else if (j + 1 < text.size() && (text[j] == 'x' || text[j] == 'X') &&
                 is_ascii_hex(text[j + 1])) {
        base = 16;
        ++j;
        while (j < text.size() && is_ascii_hex(text[j])) ++j;
      } else {
        out.push_back(text[i++]);
        continue;
      }
      const size_t digits_begin = start + (base == 16 ? 2 : 1);
      out += numeric_charref(text.substr(digits_begin, j - digits_begin), base);
      i = (j < text.size() && text[j] == ';') ? j + 1 : j;
      continue;
    }
    // "[^\t\n\f <&#;]{1,32};?"
    size_t j = start;
    while (j < text.size() && j - start < 32) {
      const char32_t c = text[j];
      if (c == '\t' || c == '\n' || c == '\f' || c == ' ' || c == '<' || c == '&' || c == '#' ||
          c == ';')
        break;
      ++j;
    }
    if (j == start) {
      out.push_back(text[i++]);
      continue;
    }
    if (j < text.size() && text[j] == ';') ++j;
    const std::u32string_view ref = text.substr(start, j - start);
    i = j;
    const std::string name = ascii_name(ref);
    if (const char32_t* v = find_entity(t::kHtml5Entities, t::kHtml5EntitiesCount, name);
        !name.empty() && v != nullptr) {
      out += v;
      continue;
    }
    // The longest prefix that is an entity (only the legacy names without ';' can be one).
    bool replaced = false;
    for (size_t x = ref.size() - 1; x >= 2 && !replaced; --x) {
      const std::string prefix = ascii_name(ref.substr(0, x));
      if (prefix.empty()) continue;
      if (const char32_t* v = find_entity(t::kHtml5Entities, t::kHtml5EntitiesCount, prefix)) {
        out += v;
        out += ref.substr(x);
        replaced = true;
      }
    }
    if (!replaced) {
      out.push_back('&');
      out += ref;
    }
  }
  return out;
}

std::u32string ftfy_fix_text(std::u32string_view text) {
  // ftfy.fix_text fixes line by line; HTML unescaping ("auto") stops for good at the first line
  // that contains a '<'.
  std::u32string out;
  bool unescape = true;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t newline = text.find(U'\n', pos);
    const size_t end = newline == std::u32string_view::npos ? text.size() : newline + 1;
    const std::u32string_view segment = text.substr(pos, end - pos);
    if (segment.find(U'<') != std::u32string_view::npos) unescape = false;
    out += ftfy_fix_segment(std::u32string(segment), unescape);
    pos = end;
  }
  return out;
}

std::u32string clip_clean(std::u32string_view text) {
  const std::u32string fixed = html_unescape(html_unescape(ftfy_fix_text(text)));
  // " ".join(text.split()): whitespace runs become one space, ends stripped.
  std::u32string joined;
  for (char32_t c : python_strip(fixed)) {
    if (is_python_space(c)) {
      if (joined.empty() || joined.back() != ' ') joined.push_back(' ');
    } else {
      joined.push_back(c);
    }
  }
  return to_lower(joined);
}

}  // namespace distill::unicode
