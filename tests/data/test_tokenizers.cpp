// Tokenizers against their Python references (tests/fixtures/tokenizers/reference.json, made by
// tools/fixtures/make_tokenizer_fixtures.py): open_clip's SimpleTokenizer, HF RobertaTokenizer
// and BertTokenizer, id for id on every string; plus loading, batching, decoding and bad input.
#include <unistd.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/error.h"
#include "data/tokenizer.h"
#include "data/unicode.h"
#include "tests/data/data_test_util.h"
#include "tests/test_util.h"

namespace distill {
namespace {

namespace fs = std::filesystem;

const std::string kFixtureDir = std::string(DISTILL_SOURCE_DIR) + "/tests/fixtures/tokenizers";
const std::string kSharedDir = std::string(DISTILL_SOURCE_DIR) + "/../shared/data/tokenizers";
const std::string kClipVocab = kSharedDir + "/clip/bpe_simple_vocab_16e6.txt.gz";
const std::string kRobertaDir = kSharedDir + "/roberta";
const std::string kBertVocab = kFixtureDir + "/bert-uncased-vocab.txt";

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

const nlohmann::json& reference() {
  static const nlohmann::json json =
      nlohmann::json::parse(read_bytes(kFixtureDir + "/reference.json"));
  return json;
}

// The shared vocabularies are read once for the whole suite.
const ClipTokenizer& clip() {
  static const ClipTokenizer t(kClipVocab);
  return t;
}
const RobertaTokenizer& roberta() {
  static const RobertaTokenizer t(kRobertaDir + "/vocab.json", kRobertaDir + "/merges.txt");
  return t;
}
const WordPieceTokenizer& bert() {
  static const WordPieceTokenizer t(kBertVocab);
  return t;
}

// Every fixture string encodes to the reference ids; reports each mismatch with its string.
void expect_matches_reference(const Tokenizer& tokenizer, const std::string& key) {
  const auto& ref = reference();
  const auto& strings = ref["strings"];
  const auto& expected = ref[key];
  ASSERT_EQ(strings.size(), expected.size());
  ASSERT_GE(strings.size(), 300u);
  size_t compared = 0, mismatched = 0;
  for (size_t i = 0; i < strings.size(); ++i) {
    if (expected[i].is_null()) continue;  // excluded by the fixture script, with a reason
    const auto text = strings[i].get<std::string>();
    const auto want = expected[i].get<std::vector<int64_t>>();
    const auto got = tokenizer.encode(text);
    ++compared;
    if (got != want) {
      ++mismatched;
      ADD_FAILURE() << key << " string " << i << " " << nlohmann::json(text).dump()
                    << "\n  expected " << nlohmann::json(want).dump() << "\n  got      "
                    << nlohmann::json(got).dump();
    }
  }
  EXPECT_EQ(mismatched, 0u) << "of " << compared;
  EXPECT_GE(compared + ref["excluded"].size(), strings.size());
}

TEST(Tokenizers, ClipMatchesOpenClip) {
  DISTILL_SKIP_WITHOUT_SHARED_DATA("tokenizers");
  expect_matches_reference(clip(), "clip");
}
TEST(Tokenizers, RobertaMatchesHuggingFace) {
  DISTILL_SKIP_WITHOUT_SHARED_DATA("tokenizers");
  expect_matches_reference(roberta(), "roberta");
}
TEST(Tokenizers, BertMatchesHuggingFace) {
  expect_matches_reference(bert(), "bert");
}

TEST(Tokenizers, ClipSplitsOutOpenClipSpecialTokens) {
  DISTILL_SKIP_WITHOUT_SHARED_DATA("tokenizers");
  const auto& specials = reference()["clip_specials"];
  ASSERT_FALSE(specials["strings"].empty());
  for (size_t i = 0; i < specials["strings"].size(); ++i) {
    const auto text = specials["strings"][i].get<std::string>();
    EXPECT_EQ(clip().encode(text), specials["ids"][i].get<std::vector<int64_t>>()) << text;
  }
}

// encode is const and shares one BPE cache: threads encoding at once get the same ids.
TEST(Tokenizers, ConcurrentEncodingAgrees) {
  DISTILL_SKIP_WITHOUT_SHARED_DATA("tokenizers");
  const auto& ref = reference();
  std::vector<std::thread> threads;
  std::vector<size_t> mismatches(4, 0);
  for (size_t t = 0; t < mismatches.size(); ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = t; i < ref["strings"].size(); i += 2) {
        const auto s = ref["strings"][i].get<std::string>();
        if (roberta().encode(s) != ref["roberta"][i].get<std::vector<int64_t>>()) ++mismatches[t];
        if (!ref["clip"][i].is_null() &&
            clip().encode(s) != ref["clip"][i].get<std::vector<int64_t>>())
          ++mismatches[t];
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (size_t t = 0; t < mismatches.size(); ++t) EXPECT_EQ(mismatches[t], 0u) << "thread " << t;
}

TEST(Tokenizers, FixtureNamesItsVersions) {
  EXPECT_EQ(reference()["versions"]["unicode"], unicode::unicode_version());
}

TEST(Tokenizers, SpecialIdsAndSizes) {
  DISTILL_SKIP_WITHOUT_SHARED_DATA("tokenizers");
  EXPECT_EQ(clip().start_id(), 49406);
  EXPECT_EQ(clip().end_id(), 49407);
  EXPECT_EQ(clip().vocab_size(), 49408);
  EXPECT_EQ(clip().max_length(), 77);
  EXPECT_EQ(clip().pad_id(), 0);
  EXPECT_EQ(roberta().vocab_size(), 50265);
  EXPECT_EQ(roberta().pad_id(), 1);
  EXPECT_EQ(roberta().max_length(), 512);
  EXPECT_EQ(bert().vocab_size(), 30522);
  EXPECT_EQ(bert().pad_id(), 0);
  EXPECT_EQ(bert().max_length(), 512);
  EXPECT_EQ(clip().kind(), "clip");
  EXPECT_EQ(roberta().kind(), "roberta");
  EXPECT_EQ(bert().kind(), "bert");
}

TEST(Tokenizers, EmptyTextIsJustTheSpecialTokens) {
  DISTILL_SKIP_WITHOUT_SHARED_DATA("tokenizers");
  EXPECT_EQ(clip().encode(""), (std::vector<int64_t>{49406, 49407}));
  EXPECT_EQ(roberta().encode(""), (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(bert().encode(""), (std::vector<int64_t>{101, 102}));
  EXPECT_EQ(clip().encode(" \n\t "), (std::vector<int64_t>{49406, 49407}));
}

TEST(Tokenizers, LongTextIsTruncatedKeepingTheEndToken) {
  DISTILL_SKIP_WITHOUT_SHARED_DATA("tokenizers");
  std::string text;
  for (int i = 0; i < 700; ++i) text += "word" + std::to_string(i) + " ";
  const auto c = clip().encode(text);
  ASSERT_EQ(c.size(), 77u);
  EXPECT_EQ(c.front(), 49406);
  EXPECT_EQ(c.back(), 49407);
  const auto r = roberta().encode(text);
  ASSERT_EQ(r.size(), 512u);
  EXPECT_EQ(r.front(), 0);
  EXPECT_EQ(r.back(), 2);
  const auto b = bert().encode(text);
  ASSERT_EQ(b.size(), 512u);
  EXPECT_EQ(b.front(), 101);
  EXPECT_EQ(b.back(), 102);
  // The kept tokens are the text's first ones.
  const auto short_ids = roberta().encode("word0 word1");
  EXPECT_TRUE(std::equal(short_ids.begin(), short_ids.end() - 1, r.begin()));
  // A custom length through load_tokenizer.
  const auto custom = load_tokenizer(kRobertaDir, 16);
  const auto cut = custom->encode(text);
  ASSERT_EQ(cut.size(), 16u);
  EXPECT_EQ(cut.back(), 2);
  EXPECT_TRUE(std::equal(cut.begin(), cut.end() - 1, r.begin()));
}

TEST(Tokenizers, InvalidUtf8BecomesReplacementCharacters) {
  DISTILL_SKIP_WITHOUT_SHARED_DATA("tokenizers");
  // As Python's bytes.decode("utf-8", errors="replace"): one U+FFFD per maximal invalid subpart.
  EXPECT_EQ(unicode::decode_utf8("a\xff"
                                 "b"),
            std::u32string(U"a\uFFFDb"));
  EXPECT_EQ(unicode::decode_utf8("\xe2\x82"), std::u32string(U"\uFFFD"));  // truncated
  EXPECT_EQ(unicode::decode_utf8("\xed\xa0\x80"), std::u32string(U"\uFFFD\uFFFD\uFFFD"));
  EXPECT_EQ(unicode::decode_utf8("\xc0\xaf"), std::u32string(U"\uFFFD\uFFFD"));  // overlong
  EXPECT_EQ(unicode::decode_utf8("\xf4\x90\x80\x80"), std::u32string(U"\uFFFD\uFFFD\uFFFD\uFFFD"));
  const std::string bad = "caf\xc3 ok \xff\xfe end \xe2\x82";
  const std::string replaced = "caf\uFFFD ok \uFFFD\uFFFD end \uFFFD";
  EXPECT_EQ(clip().encode(bad), clip().encode(replaced));
  EXPECT_EQ(roberta().encode(bad), roberta().encode(replaced));
  EXPECT_EQ(bert().encode(bad), bert().encode(replaced));
  // BERT's clean-up drops U+FFFD altogether.
  EXPECT_EQ(bert().encode("a\xff"
                          "b"),
            bert().encode("ab"));
}

TEST(Tokenizers, EncodeBatchPadsAndMasks) {
  DISTILL_SKIP_WITHOUT_SHARED_DATA("tokenizers");
  const std::vector<std::string> texts{"a photo of a dog.", "cat", ""};
  const TokenBatch c = clip().encode_batch(texts);
  EXPECT_EQ(c.ids.shape(), (Shape{3, 77}));
  EXPECT_EQ(c.ids.dtype(), DType::I64);
  EXPECT_EQ(c.attention_mask.dtype(), DType::I64);
  const auto ids = c.ids.to_double_vector();
  const auto mask = c.attention_mask.to_double_vector();
  const auto first = clip().encode(texts[0]);
  for (size_t i = 0; i < 77; ++i) {
    EXPECT_EQ(ids[i], i < first.size() ? first[i] : 0) << i;
    EXPECT_EQ(mask[i], i < first.size() ? 1 : 0) << i;
  }
  EXPECT_EQ(ids[2 * 77], 49406);
  EXPECT_EQ(ids[2 * 77 + 1], 49407);
  EXPECT_EQ(mask[2 * 77 + 2], 0);

  const TokenBatch r = roberta().encode_batch(texts);
  const auto longest = static_cast<int64_t>(roberta().encode(texts[0]).size());
  EXPECT_EQ(r.ids.shape(), (Shape{3, longest}));
  const auto rids = r.ids.to_double_vector();
  const auto rmask = r.attention_mask.to_double_vector();
  EXPECT_EQ(rids[static_cast<size_t>(2 * longest + 2)], 1);  // <pad>
  EXPECT_EQ(rmask[static_cast<size_t>(2 * longest + 1)], 1);
  EXPECT_EQ(rmask[static_cast<size_t>(2 * longest + 2)], 0);

  // An explicit length shorter than a row cuts it and keeps its end token.
  const TokenBatch b = bert().encode_batch(texts, 4);
  EXPECT_EQ(b.ids.shape(), (Shape{3, 4}));
  const auto bids = b.ids.to_double_vector();
  EXPECT_EQ(bids[0], 101);
  EXPECT_EQ(bids[3], 102);
  EXPECT_EQ(bids[8], 101);
  EXPECT_EQ(bids[9], 102);
  EXPECT_EQ(bids[10], 0);
}

TEST(Tokenizers, DecodeSkipsSpecialTokens) {
  DISTILL_SKIP_WITHOUT_SHARED_DATA("tokenizers");
  EXPECT_EQ(clip().decode(clip().encode("A photo of a DOG.")), "a photo of a dog .");
  const std::string text = "Hello, world! Ça va? 日本 😀";
  EXPECT_EQ(roberta().decode(roberta().encode(text)), text);
  EXPECT_EQ(bert().decode(bert().encode("A photo of the playground")), "a photo of the playground");
}

// Hugging Face's CLIP files (vocab.json + merges.txt), written here from the same merges.
TEST(Tokenizers, ClipFromHuggingFaceFiles) {
  DISTILL_SKIP_WITHOUT_SHARED_DATA("tokenizers");
  const fs::path dir =
      fs::temp_directory_path() / ("distill_tok_hfclip_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  gzFile gz = gzopen(kClipVocab.c_str(), "rb");
  ASSERT_NE(gz, nullptr);
  std::string text;
  char buffer[1 << 16];
  int n;
  while ((n = gzread(gz, buffer, sizeof(buffer))) > 0) text.append(buffer, static_cast<size_t>(n));
  gzclose(gz);
  std::vector<std::string> lines;
  for (size_t pos = 0; pos < text.size();) {
    const size_t end = std::min(text.find('\n', pos), text.size());
    lines.push_back(text.substr(pos, end - pos));
    pos = end + 1;
  }
  // bytes_to_unicode() order: printable bytes first, then the rest mapped from U+0100.
  const auto printable = [](int b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
  };
  std::vector<std::string> byte_chars;
  for (int b = 0; b < 256; ++b)
    if (printable(b)) byte_chars.push_back(unicode::encode_utf8(std::u32string(1, b)));
  char32_t next = 256;
  for (int b = 0; b < 256; ++b)
    if (!printable(b)) byte_chars.push_back(unicode::encode_utf8(std::u32string(1, next++)));
  nlohmann::json vocab = nlohmann::json::object();
  int64_t id = 0;
  for (const auto& c : byte_chars) vocab[c] = id++;
  for (const auto& c : byte_chars) vocab[c + "</w>"] = id++;
  std::string merges = "#version: 0.2\n";
  for (size_t i = 1; i <= 48894; ++i) {
    const size_t space = lines[i].find(' ');
    vocab[lines[i].substr(0, space) + lines[i].substr(space + 1)] = id++;
    merges += lines[i] + "\n";
  }
  vocab["<|startoftext|>"] = id++;
  vocab["<|endoftext|>"] = id++;
  write_bytes(dir / "vocab.json", vocab.dump());
  write_bytes(dir / "merges.txt", merges);

  const auto hf = load_tokenizer(dir.string());
  EXPECT_EQ(hf->kind(), "clip");
  EXPECT_EQ(hf->max_length(), 77);
  const auto& ref = reference();
  for (size_t i = 0; i < ref["strings"].size(); i += 7) {
    if (ref["clip"][i].is_null()) continue;
    const auto s = ref["strings"][i].get<std::string>();
    EXPECT_EQ(hf->encode(s), ref["clip"][i].get<std::vector<int64_t>>()) << s;
  }
  fs::remove_all(dir);
}

// Each test gets a fresh directory for the files it writes, removed afterwards.
class TokenizerFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("distill_tokenizers_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

// Runs `load` and checks that it throws distill::Error whose message contains every `parts`.
template <typename F>
void expect_error(F&& load, const std::vector<std::string>& parts) {
  try {
    load();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    for (const auto& p : parts) EXPECT_TRUE(testing::message_has(e, p)) << e.what();
  }
}

TEST_F(TokenizerFiles, LoadTokenizerDetectsTheKind) {
  DISTILL_SKIP_WITHOUT_SHARED_DATA("tokenizers");
  EXPECT_EQ(load_tokenizer(kClipVocab)->kind(), "clip");
  EXPECT_EQ(load_tokenizer(kRobertaDir)->kind(), "roberta");
  EXPECT_EQ(load_tokenizer(kRobertaDir + "/vocab.json")->kind(), "roberta");
  EXPECT_EQ(load_tokenizer(kBertVocab)->kind(), "bert");
  EXPECT_EQ(load_tokenizer(kClipVocab, 32)->max_length(), 32);
  EXPECT_EQ(load_tokenizer(kClipVocab)->encode("a photo of a dog."),
            clip().encode("a photo of a dog."));

  // A BERT directory whose config turns lower-casing off and sets the length.
  fs::copy_file(kBertVocab, path("vocab.txt"));
  write_bytes(path("tokenizer_config.json"),
              R"({"do_lower_case": false, "model_max_length": 128})");
  const auto cased = load_tokenizer(dir_.string());
  EXPECT_EQ(cased->kind(), "bert");
  EXPECT_EQ(cased->max_length(), 128);
  EXPECT_EQ(cased->encode("Hello hello"), (std::vector<int64_t>{101, 100, 7592, 102}));
  EXPECT_EQ(bert().encode("Hello hello"), (std::vector<int64_t>{101, 7592, 7592, 102}));

  fs::create_directories(path("empty"));
  expect_error([&] { load_tokenizer(path("empty")); }, {path("empty"), "not a tokenizer"});
  expect_error([&] { load_tokenizer(path("missing")); }, {path("missing"), "does not exist"});
}

TEST_F(TokenizerFiles, MissingFilesNameTheFile) {
  expect_error([&] { ClipTokenizer t(path("nope.txt.gz")); }, {path("nope.txt.gz"), "cannot open"});
  expect_error([&] { RobertaTokenizer t(path("vocab.json"), path("merges.txt")); },
               {path("vocab.json"), "cannot open"});
  expect_error([&] { WordPieceTokenizer t(path("vocab.txt")); },
               {path("vocab.txt"), "cannot open"});
}

TEST_F(TokenizerFiles, TruncatedGzipIsAnError) {
  DISTILL_SKIP_WITHOUT_SHARED_DATA("tokenizers");
  const std::string gz = read_bytes(kClipVocab);
  write_bytes(path("cut.txt.gz"), gz.substr(0, gz.size() / 2));
  expect_error([&] { ClipTokenizer t(path("cut.txt.gz")); }, {path("cut.txt.gz"), "truncated"});
  std::string corrupt = gz;
  for (size_t i = 100; i < 200; ++i) corrupt[i] = static_cast<char>(corrupt[i] ^ 0x5A);
  write_bytes(path("corrupt.txt.gz"), corrupt);
  expect_error([&] { ClipTokenizer t(path("corrupt.txt.gz")); }, {path("corrupt.txt.gz"), "gzip"});
}

TEST_F(TokenizerFiles, ShortOrMalformedClipMergesAreErrors) {
  write_bytes(path("bpe_simple_vocab_16e6.txt"), "header\ni n\nt h\n");
  expect_error([&] { ClipTokenizer t(path("bpe_simple_vocab_16e6.txt")); },
               {path("bpe_simple_vocab_16e6.txt"), "has 2 merges"});
  write_bytes(path("bad.txt"), "header\ni n\nthree parts here\n");
  expect_error([&] { ClipTokenizer t(path("bad.txt")); }, {path("bad.txt"), "line 3"});
}

TEST_F(TokenizerFiles, MalformedMergesLineIsAnError) {
  DISTILL_SKIP_WITHOUT_SHARED_DATA("tokenizers");
  fs::copy_file(kRobertaDir + "/vocab.json", path("vocab.json"));
  write_bytes(path("merges.txt"), "#version: 0.2\n\xc4\xa0 t\nonlyone\n");
  expect_error([&] { RobertaTokenizer t(path("vocab.json"), path("merges.txt")); },
               {path("merges.txt"), "line 3"});
  write_bytes(path("merges.txt"), "#version: 0.2\nqqq zzz\n");
  expect_error([&] { RobertaTokenizer t(path("vocab.json"), path("merges.txt")); },
               {path("merges.txt"), "qqq"});
}

TEST_F(TokenizerFiles, VocabJsonMustBeAnObject) {
  DISTILL_SKIP_WITHOUT_SHARED_DATA("tokenizers");
  fs::copy_file(kRobertaDir + "/merges.txt", path("merges.txt"));
  write_bytes(path("vocab.json"), "[1, 2, 3]");
  expect_error([&] { RobertaTokenizer t(path("vocab.json"), path("merges.txt")); },
               {path("vocab.json"), "JSON object"});
  write_bytes(path("vocab.json"), "{\"a\": 1,");
  expect_error([&] { RobertaTokenizer t(path("vocab.json"), path("merges.txt")); },
               {path("vocab.json"), "not valid JSON"});
  write_bytes(path("vocab.json"), "{\"a\": \"x\"}");
  expect_error([&] { RobertaTokenizer t(path("vocab.json"), path("merges.txt")); },
               {path("vocab.json"), "\"a\""});
}

TEST_F(TokenizerFiles, WordPieceVocabNeedsItsSpecialTokens) {
  write_bytes(path("vocab.txt"), "[PAD]\n[UNK]\nhello\n");
  expect_error([&] { WordPieceTokenizer t(path("vocab.txt")); }, {path("vocab.txt"), "[CLS]"});
}

TEST_F(TokenizerFiles, WrongKindOfFileOrDamagedConfigIsNamed) {
  write_bytes(path("merges.txt"), "#version: 0.2\na b\n");
  expect_error([&] { load_tokenizer(path("merges.txt")); },
               {path("merges.txt"), "not a tokenizer"});
  write_bytes(path("weights.bin"), "xx");
  expect_error([&] { load_tokenizer(path("weights.bin")); },
               {path("weights.bin"), "not a tokenizer"});
  write_bytes(path("vocab.json"), "{}");
  expect_error([&] { load_tokenizer(dir_.string()); }, {path("vocab.json"), "empty"});
  write_bytes(path("vocab.json"), R"({"a": -1})");
  expect_error([&] { load_tokenizer(dir_.string()); },
               {path("vocab.json"), "the id of token \"a\" is not a non-negative integer"});
  fs::remove(path("vocab.json"));
  fs::remove(path("merges.txt"));
  write_bytes(path("vocab.txt"), "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\n");
  write_bytes(path("tokenizer_config.json"), "[1, 2]");
  expect_error([&] { load_tokenizer(dir_.string()); },
               {path("tokenizer_config.json"), "not a JSON object"});
  write_bytes(path("vocab.txt"), "");
  write_bytes(path("tokenizer_config.json"), "{}");
  expect_error([&] { load_tokenizer(dir_.string()); }, {path("vocab.txt"), ": empty"});
}

TEST(Unicode, NormalisationAndCase) {
  EXPECT_EQ(unicode::nfd(U"\u00E9"), std::u32string(U"e\u0301"));
  EXPECT_EQ(unicode::nfc(U"e\u0301"), std::u32string(U"\u00E9"));
  EXPECT_EQ(unicode::nfc(U"\uD55C"), std::u32string(U"\uD55C"));  // Hangul round trip
  EXPECT_EQ(unicode::nfd(U"\uD55C"), std::u32string(U"\u1112\u1161\u11AB"));
  EXPECT_EQ(unicode::nfc(U"\u1112\u1161\u11AB"), std::u32string(U"\uD55C"));
  // Marks reorder by combining class: dot below (220) before acute (230).
  EXPECT_EQ(unicode::nfd(U"a\u0301\u0323"), std::u32string(U"a\u0323\u0301"));
  EXPECT_EQ(unicode::to_lower(U"\u039F\u0394\u039F\u03A3 \u03A3"),
            std::u32string(U"\u03BF\u03B4\u03BF\u03C2 \u03C3"));
  EXPECT_EQ(unicode::to_lower(U"\u0130"), std::u32string(U"i\u0307"));
  EXPECT_TRUE(unicode::is_letter(U'\u4E00'));
  EXPECT_TRUE(unicode::is_number(U'\u0663'));
  EXPECT_TRUE(unicode::is_punctuation(U'\u3001'));
  EXPECT_FALSE(unicode::is_punctuation(U'$'));
}

TEST(Unicode, HtmlUnescapeLikePython) {
  EXPECT_EQ(unicode::html_unescape(U"&amp;&lt;&gt;&quot;&#39;"), std::u32string(U"&<>\"'"));
  EXPECT_EQ(unicode::html_unescape(U"&ampx &notit; &#128; &#0; &#x110000; &#1;"),
            std::u32string(U"&x \u00ACit; \u20AC \uFFFD \uFFFD "));
  EXPECT_EQ(unicode::html_unescape(U"&unknown; & &#;"), std::u32string(U"&unknown; & &#;"));
}

}  // namespace
}  // namespace distill
