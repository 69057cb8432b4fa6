// Text tokenizers for the text encoders, matching their Python references id for id:
//   ClipTokenizer       open_clip's SimpleTokenizer (CLIP's BPE with "</w>" word ends)
//   RobertaTokenizer    GPT-2 byte-level BPE as Hugging Face's RobertaTokenizer(Fast) runs it
//   WordPieceTokenizer  Hugging Face's BertTokenizer (bert-base-uncased style, all-MiniLM-L6-v2)
// Text is UTF-8; invalid UTF-8 is decoded with one U+FFFD per invalid sequence, as Python's
// bytes.decode("utf-8", errors="replace") does (a Python caller could not pass such text at all).
// All methods are const and safe to call from several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace distill {

struct TokenBatch {
  Tensor ids;             // [N, L] I64 on the CPU
  Tensor attention_mask;  // [N, L] I64 on the CPU: 1 = real token, 0 = padding
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string kind() const = 0;  // "clip" | "roberta" | "bert"
  // Token ids with the special tokens, truncated to max_length() (the end token is kept).
  virtual std::vector<int64_t> encode(const std::string& text) const = 0;
  // Best effort text of the ids, skipping the special tokens.
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;
  virtual int64_t pad_id() const = 0;      // CLIP 0 (open_clip pads with 0), RoBERTa 1, BERT 0
  virtual int64_t max_length() const = 0;  // CLIP 77 (context length), RoBERTa/BERT 512
  virtual int64_t vocab_size() const = 0;
  // Pads every row to `length` with pad_id(): 0 means the longest row of the batch (CLIP: always
  // its context length, as open_clip does). A row longer than an explicit `length` is cut to it,
  // its last position keeping the end token.
  TokenBatch encode_batch(const std::vector<std::string>& texts, int64_t length = 0) const;
};

// CLIP's BPE. `path`: bpe_simple_vocab_16e6.txt(.gz) (open_clip/OpenAI format: the merges, ids
// built from them), or Hugging Face's files: a directory with vocab.json + merges.txt, or the
// vocab.json itself with merges.txt beside it.
class ClipTokenizer : public Tokenizer {
 public:
  explicit ClipTokenizer(const std::string& path, int64_t context_length = 77);
  ~ClipTokenizer() override;
  std::string kind() const override { return "clip"; }
  std::vector<int64_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  int64_t pad_id() const override { return 0; }
  int64_t max_length() const override { return context_length_; }
  int64_t vocab_size() const override;
  int64_t start_id() const { return start_id_; }
  int64_t end_id() const { return end_id_; }

 private:
  struct State;
  std::unique_ptr<State> state_;
  int64_t context_length_;
  int64_t start_id_ = 0, end_id_ = 0;
};

// GPT-2 byte-level BPE with RoBERTa's special tokens: <s> ... </s>, pad <pad>, unknown <unk>.
class RobertaTokenizer : public Tokenizer {
 public:
  RobertaTokenizer(const std::string& vocab_json, const std::string& merges_txt,
                   int64_t max_length = 512);
  ~RobertaTokenizer() override;
  std::string kind() const override { return "roberta"; }
  std::vector<int64_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  int64_t pad_id() const override { return pad_id_; }
  int64_t max_length() const override { return max_length_; }
  int64_t vocab_size() const override;

 private:
  struct State;
  std::unique_ptr<State> state_;
  int64_t max_length_;
  int64_t bos_id_ = 0, eos_id_ = 2, pad_id_ = 1;
};

// BERT's WordPiece: [CLS] ... [SEP], "##" continuation pieces, [UNK] for words it cannot spell.
class WordPieceTokenizer : public Tokenizer {
 public:
  explicit WordPieceTokenizer(const std::string& vocab_txt, bool lower_case = true,
                              int64_t max_length = 512);
  ~WordPieceTokenizer() override;
  std::string kind() const override { return "bert"; }
  std::vector<int64_t> encode(const std::string& text) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  int64_t pad_id() const override { return pad_id_; }
  int64_t max_length() const override { return max_length_; }
  int64_t vocab_size() const override;

 private:
  struct State;
  std::unique_ptr<State> state_;
  bool lower_case_;
  int64_t max_length_;
  int64_t cls_id_ = 0, sep_id_ = 0, pad_id_ = 0, unk_id_ = 0;
};

// Detects the kind from a file or directory: bpe_simple_vocab_16e6.txt(.gz) -> CLIP; a directory
// with vocab.json + merges.txt -> CLIP if the vocabulary has "<|startoftext|>" (not
// "<|endoftext|>": RoBERTa's vocabulary keeps GPT-2's), else RoBERTa's byte-level BPE; vocab.txt
// (or a directory with one) -> WordPiece, lower-casing unless tokenizer_config.json beside it says
// "do_lower_case": false. max_length 0: the kind's default (RoBERTa/BERT: tokenizer_config.json's
// model_max_length when it has a sensible one, else 512). Throws naming the path when nothing
// matches.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path, int64_t max_length = 0);

}  // namespace distill
