// Class queries for the image-text head (DESIGN.md section 1): for each class and each prompt
// template, encode the filled-in prompt, pool, L2-normalise, average over the templates and
// renormalise. Computed once per run and cached.
#pragma once

#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "models/encoder.h"

namespace distill::train {

// T [C, d_T] (F32, on the encoder's device), rows of unit norm. Prompts are encoded in batches of
// `batch` texts without autograd.
Tensor class_text_embeddings(models::TextEncoder& encoder, const Tokenizer& tokenizer,
                             const std::vector<std::string>& class_names,
                             const std::vector<std::string>& templates, int64_t batch = 256);

}  // namespace distill::train
