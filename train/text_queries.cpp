#include "train/text_queries.h"

#include "core/autograd.h"
#include "core/error.h"
#include "data/prompts.h"

namespace distill::train {

namespace {
Tensor normalise_rows(const Tensor& x) {
  return div(x, sqrt(sum(mul(x, x), {1}, /*keepdim=*/true)));
}
}  // namespace

Tensor class_text_embeddings(models::TextEncoder& encoder, const Tokenizer& tokenizer,
                             const std::vector<std::string>& class_names,
                             const std::vector<std::string>& templates, int64_t batch) {
  DISTILL_CHECK(!class_names.empty(), "class_text_embeddings: no class names");
  DISTILL_CHECK(!templates.empty(), "class_text_embeddings: no prompt templates");
  DISTILL_CHECK(batch >= 1, "class_text_embeddings: batch must be positive");
  NoGradGuard no_grad;
  std::vector<std::string> prompts;
  for (const auto& name : class_names)
    for (const auto& t : templates) prompts.push_back(data::fill_template(t, name));
  std::vector<Tensor> pooled;
  for (size_t start = 0; start < prompts.size(); start += static_cast<size_t>(batch)) {
    const size_t end = std::min(prompts.size(), start + static_cast<size_t>(batch));
    const TokenBatch tokens = tokenizer.encode_batch(
        std::vector<std::string>(prompts.begin() + start, prompts.begin() + end));
    pooled.push_back(
        to_dtype(encoder.encode(tokens.ids, tokens.attention_mask).pooled, DType::F32));
  }
  const int64_t c = static_cast<int64_t>(class_names.size());
  const int64_t m = static_cast<int64_t>(templates.size());
  const Tensor all = normalise_rows(concat(pooled, 0));  // [C*M, d]
  const Tensor mean_per_class = mean(reshape(all, {c, m, all.size(1)}), {1});
  return contiguous(normalise_rows(mean_per_class));
}

}  // namespace distill::train
