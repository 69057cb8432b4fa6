// The generated tables behind data/unicode.h (data/unicode_tables.cpp, data/html_entities.cpp,
// both written by tools/fixtures/make_unicode_tables.py). Internal to the tokenizers.
#pragma once

#include <cstddef>
#include <cstdint>

namespace distill::unicode::tables {

struct CodepointRange {
  char32_t first, last;
};
struct CategoryRun {
  char32_t first;
  uint8_t category;  // index into unicode::Category
};
struct LowerRun {
  char32_t first, last;
  int32_t delta;
  uint8_t stride;
};
struct Decomposition {
  char32_t code, first, second;  // second == 0: a singleton decomposition
  bool composes;                 // the pair recomposes under NFC
};
struct CombiningRun {
  char32_t first, last;
  uint8_t combining_class;
};
struct Replacement {
  char32_t code;
  const char32_t* text;
};
struct Entity {
  const char* name;
  const char32_t* text;
};

extern const char* const kUnicodeVersion;
extern const CategoryRun kCategoryRuns[];
extern const size_t kCategoryRunsCount;
extern const LowerRun kLowerRuns[];
extern const size_t kLowerRunsCount;
extern const CodepointRange kCasedNotIgnorable[];
extern const size_t kCasedNotIgnorableCount;
extern const CodepointRange kCaseIgnorable[];
extern const size_t kCaseIgnorableCount;
extern const Decomposition kDecompositions[];
extern const size_t kDecompositionsCount;
extern const CombiningRun kCombiningRuns[];
extern const size_t kCombiningRunsCount;
extern const CodepointRange kPythonSpace[];
extern const size_t kPythonSpaceCount;
extern const Replacement kWidthMap[];
extern const size_t kWidthMapCount;

extern const Entity kHtml5Entities[];
extern const size_t kHtml5EntitiesCount;
extern const Entity kFtfyUpperEntities[];
extern const size_t kFtfyUpperEntitiesCount;
extern const Replacement kInvalidCharrefs[];
extern const size_t kInvalidCharrefsCount;
extern const CodepointRange kInvalidCodepoints[];
extern const size_t kInvalidCodepointsCount;

}  // namespace distill::unicode::tables
