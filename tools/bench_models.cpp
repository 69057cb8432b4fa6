// `distill bench models`: forward speed of the preset towers (images/s, texts/s) at a batch,
// in eval mode without autograd — the engine's side of tools/bench/models_side_by_side.sh, which
// runs tools/bench/torch_models.py (open_clip / transformers) on the same machine beside it.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/autocast.h"
#include "core/autograd.h"
#include "core/threads.h"
#include "models/encoder.h"
#include "tools/bench_util.h"
#include "tools/cli.h"

namespace distill::cli {

int bench_models(const Args& args, const Device& device) {
  const int64_t batch = args.int_or("batch", 32);
  const int iters = static_cast<int>(args.int_or("iters", device.is_cpu() ? 2 : 10));
  if (batch < 1) throw UsageError("distill bench models: --batch must be at least 1");
  if (iters < 1) throw UsageError("distill bench models: --iters must be at least 1");
  const std::string dtype = args.value_or("dtype", "f32");
  if (dtype != "f32" && dtype != "bf16")
    throw UsageError("distill bench models: --dtype accepts f32 or bf16, got '" + dtype + "'");
  const std::vector<std::string> all = {"clip-vit-b-32", "clip-vit-b-16",  "clip-rn50",
                                        "clip-text-b",   "clip-text-rn50", "roberta-base"};
  std::vector<std::string> wanted;
  std::stringstream ss(args.value_or("only", ""));
  for (std::string tok; std::getline(ss, tok, ',');) {
    if (std::find(all.begin(), all.end(), tok) == all.end())
      throw UsageError(
          "distill bench models: --only accepts clip-vit-b-32, clip-vit-b-16, "
          "clip-rn50, clip-text-b, clip-text-rn50, roberta-base; got '" +
          tok + "'");
    wanted.push_back(tok);
  }
  if (wanted.empty()) wanted = all;
  const bool json = args.flag("json");
  const int64_t text_len = 77;
  if (!json)
    std::printf("model forward on %s, batch %lld, %s, %d threads (median of %d)\n",
                device.str().c_str(), static_cast<long long>(batch), dtype.c_str(), num_threads(),
                iters);
  for (const auto& name : wanted) {
    Generator gen(1);
    auto model = models::make_preset(name, &gen);
    model->eval();
    model->to(device);
    NoGradGuard no_grad;
    AutocastGuard autocast(DType::BF16, dtype == "bf16");
    std::function<void()> step;
    std::string kind;
    if (auto* image = dynamic_cast<models::ImageEncoder*>(model.get())) {
      kind = "image";
      const int64_t s = image->image_size();
      const Tensor pixels =
          to_device(randn({batch, 3, s, s}, TensorOptions(DType::F32), &gen), device);
      step = [image, pixels] { image->encode(pixels); };
    } else {
      auto* text = dynamic_cast<models::TextEncoder*>(model.get());
      kind = "text";
      // Random ids in the vocabulary, the end token (largest id) last, like real prompts.
      const int64_t vocab = model->state_dict().front().second.size(0);
      Tensor ids = add(mul(rand({batch, text_len}, TensorOptions(DType::F64), &gen),
                           static_cast<double>(vocab - 3)),
                       2.0);
      ids = to_dtype(ids, DType::I64);
      step = [text, ids] { text->encode(ids); };
    }
    const double sec = median_seconds(step, device.is_cuda(), 1, iters);
    nlohmann::json row = {{"model", name},
                          {"kind", kind},
                          {"batch", batch},
                          {"items_per_s", batch / sec},
                          {"ms_per_batch", sec * 1e3},
                          {"device", device.str()},
                          {"threads", num_threads()},
                          {"dtype", dtype},
                          {"iters", iters},
                          {"impl", "distill"}};
    if (json)
      std::printf("%s\n", row.dump().c_str());
    else
      std::printf("  %-16s %-5s %10.1f %s/s %10.1f ms/batch\n", name.c_str(), kind.c_str(),
                  batch / sec, kind == "image" ? "images" : "texts", sec * 1e3);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace distill::cli
