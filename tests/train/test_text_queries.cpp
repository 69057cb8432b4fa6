// Class queries: template filling, per-prompt normalisation, template averaging.
#include <cmath>

#include "data/prompts.h"
#include "models/bert.h"
#include "tests/test_util.h"
#include "train/text_queries.h"

namespace distill::testing {
namespace {

std::string bert_vocab() {
  return std::string(DISTILL_SOURCE_DIR) + "/tests/fixtures/tokenizers/bert-uncased-vocab.txt";
}

TEST(TextQueries, AveragesNormalisedPromptEmbeddingsPerClass) {
  auto tok = load_tokenizer(bert_vocab());
  models::BertConfig c;
  c.vocab_size = tok->vocab_size();
  c.hidden = 16;
  c.layers = 1;
  c.heads = 2;
  c.intermediate = 32;
  c.pooling = "mean";
  Generator g(1);
  models::BertModel enc(c, &g);
  enc.eval();
  const std::vector<std::string> classes = {"cat", "airplane", "pull over"};
  const std::vector<std::string> templates = {"a photo of a {}.", "a blurry photo of the {}.",
                                              "{}"};
  const Tensor t = train::class_text_embeddings(enc, *tok, classes, templates, /*batch=*/4);
  ASSERT_EQ(t.shape(), (Shape{3, 16}));
  // By hand for class 1: normalise each prompt's embedding, average, renormalise.
  NoGradGuard guard;
  std::vector<double> acc(16, 0.0);
  for (const auto& templ : templates) {
    const TokenBatch b = tok->encode_batch({data::fill_template(templ, classes[1])});
    const auto e = enc.encode(b.ids, b.attention_mask).pooled.to_double_vector();
    double n = 0;
    for (double v : e) n += v * v;
    for (size_t i = 0; i < e.size(); ++i) acc[i] += e[i] / std::sqrt(n);
  }
  double n = 0;
  for (double v : acc) n += v * v;
  const auto row = select(t, 0, 1).to_double_vector();
  for (size_t i = 0; i < acc.size(); ++i) EXPECT_NEAR(row[i], acc[i] / std::sqrt(n), 1e-5);
}

}  // namespace
}  // namespace distill::testing
