// The Unicode the tokenizers need: UTF-8 coding, general categories, Python's str.lower() and
// str.isspace(), NFC/NFD, and the text clean-up open_clip applies before tokenizing (ftfy's
// fixes for normal text, html.unescape). Tables come from tools/fixtures/make_unicode_tables.py;
// unicode_version() names the Unicode version they were made from.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace distill::unicode {

// The Unicode general categories, in the order of the generated tables.
// clang-format off
enum class Category : uint8_t {
  Lu, Ll, Lt, Lm, Lo, Mn, Mc, Me, Nd, Nl, No, Pc, Pd, Ps, Pe, Pi, Pf, Po,
  Sm, Sc, Sk, So, Zs, Zl, Zp, Cc, Cf, Cs, Co, Cn
};
// clang-format on

const char* unicode_version();

// UTF-8 -> code points. Invalid input (bad lead or continuation bytes, overlong forms,
// surrogates, code points past U+10FFFF, truncated sequences) becomes U+FFFD, one per maximal
// invalid subpart: exactly what Python's bytes.decode("utf-8", errors="replace") produces.
std::u32string decode_utf8(std::string_view bytes);
std::string encode_utf8(std::u32string_view text);
void append_utf8(std::string& out, char32_t c);

Category category(char32_t c);
bool is_letter(char32_t c);         // \p{L}
bool is_number(char32_t c);         // \p{N}
bool is_punctuation(char32_t c);    // \p{P}
bool is_python_space(char32_t c);   // str.isspace(): what str.split() and str.strip() use
bool is_white_space(char32_t c);    // the White_Space property: \s in the `regex` module and HF
bool is_cjk_ideograph(char32_t c);  // the CJK blocks BERT's BasicTokenizer splits out

// Python's str.lower(): full lowercase mapping (U+0130 -> "i" U+0307) and, with final_sigma,
// the Final_Sigma rule. Without it each character is lowered alone (capital sigma is always
// U+03C3), as transformers' slow tokenizers do: they lower text one character at a time.
std::u32string to_lower(std::u32string_view text, bool final_sigma = true);
std::u32string nfd(std::u32string_view text);
std::u32string nfc(std::u32string_view text);

// Python's html.unescape (HTML5 named references, numeric references with the browser fix-ups).
std::u32string html_unescape(std::u32string_view text);

// What open_clip's basic_clean + whitespace_clean + lower() leave of a text:
// ftfy.fix_text, html.unescape twice, whitespace runs to one space, strip, lower-case.
// ftfy is reproduced except its mojibake repair (fix_encoding: text that was decoded with the
// wrong codec, e.g. "cafÃ©"), which needs ftfy's statistical heuristics; such text is kept as is.
std::u32string clip_clean(std::u32string_view text);
// The ftfy.fix_text part of it alone (see above for what is not reproduced).
std::u32string ftfy_fix_text(std::u32string_view text);

}  // namespace distill::unicode
