#include "train/demo.h"

#include <cstdio>

#include "core/error.h"
#include "train/report_html.h"

namespace distill::train {

using nlohmann::json;

json demo_config(const DemoOptions& o) {
  DISTILL_CHECK(o.preset == "cpu" || o.preset == "gpu", "distill demo: unknown preset '", o.preset,
                "' (expected cpu or gpu)");
  const bool gpu = o.preset == "gpu";
  const std::string train = o.train.empty() ? kFashionMnistDir : o.train;
  const std::string test = o.test.empty() ? train : o.test;
  // Sizes for ~5-8 minutes on 2 cores (28x28 images, 7x7 patches of 4 pixels): small enough to
  // finish, big enough that every stage learns well above chance. Measured 6:40 on 2 idle cores
  // (teacher 75 s, students 75-104 s), 11:21 while another build shared them.
  json c = {
      {"name", o.name},
      {"seed", 0},
      {"device", gpu ? "cuda" : "cpu"},
      {"log_every", 10},
      {"checkpoint_every", 0},
      {"stages", {"teacher", "probe", "head", "student_text", "student_notext", "student_labels"}},
      {"data",
       {{"train", train},
        {"test", test},
        {"class_names", o.class_names},
        {"templates", o.templates},
        {"train_per_class", gpu ? 0 : 450},  // 0: all 60,000 training images
        {"test_per_class", gpu ? 0 : 200},
        {"workers", gpu ? 8 : 2},
        {"batch_size", gpu ? 256 : 64},
        {"eval_batch_size", gpu ? 1000 : 250},
        {"augment", {{"scale_min", 0.7}, {"scale_max", 1.0}, {"flip_probability", 0.5}}}}},
      {"teacher",
       {{"arch",
         {{"type", "vit"},
          {"image_size", 28},
          {"patch_size", 4},
          {"width", gpu ? 192 : 64},
          {"layers", gpu ? 6 : 3},
          {"heads", gpu ? 6 : 4},
          {"mlp_dim", gpu ? 768 : 128},
          {"output_dim", gpu ? 192 : 64},
          {"act", "gelu"}}}}},
      {"stage0",
       {{"epochs", gpu ? 15 : 5},
        {"schedule", {{"kind", "cosine"}, {"base_lr", 0.002}, {"warmup_steps", 20}}}}},
      {"probe", {{"epochs", 30}}},
      {"head",
       {{"epochs", gpu ? 5 : 3},
        {"config", {{"width", gpu ? 256 : 128}, {"heads", 4}, {"mlp_ratio", 2}}},
        {"schedule", {{"kind", "cosine"}, {"base_lr", 0.002}}}}},
      {"student",
       {{"epochs", gpu ? 15 : 5},
        {"schedule", {{"kind", "cosine"}, {"base_lr", 0.002}, {"warmup_steps", 20}}}}},
  };
  if (o.quick) {
    // Seconds on a CPU: the same stages, tiny everything.
    c["log_every"] = 2;
    c["data"]["train_per_class"] = 12;
    c["data"]["test_per_class"] = 6;
    c["data"]["batch_size"] = 40;
    c["data"]["eval_batch_size"] = 60;
    c["teacher"]["arch"] = {{"type", "vit"}, {"image_size", 28}, {"patch_size", 7},
                            {"width", 32},   {"layers", 1},      {"heads", 2},
                            {"mlp_dim", 64}, {"output_dim", 32}, {"act", "gelu"}};
    c["stage0"]["epochs"] = 2;
    c["probe"]["epochs"] = 10;
    c["head"]["epochs"] = 2;
    c["head"]["config"] = {{"width", 32}, {"heads", 2}, {"mlp_ratio", 2}};
    c["student"]["epochs"] = 2;
    c["student"]["schedule"]["warmup_steps"] = 0;
    c["stage0"]["schedule"]["warmup_steps"] = 0;
  }
  if (o.text_checkpoint.empty()) {
    c["text"] = {{"tokenizer", o.random_tokenizer},
                 {"random",
                  {{"flavour", "bert"},
                   {"hidden", 64},
                   {"layers", 2},
                   {"heads", 2},
                   {"intermediate", 128},
                   {"pooling", "mean"}}}};
  } else {
    c["text"] = {{"checkpoint", o.text_checkpoint}, {"tokenizer", o.text_checkpoint}};
  }
  return c;
}

std::string format_result_table(const json& summary) {
  const json stages = summary.value("stages", json::object());
  const std::string best = best_student(summary);
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "  %-42s %8s %8s %9s\n", "model", "top-1", "top-5", "time (s)");
  out += line;
  out += "  " + std::string(42 + 3 * 9 + 1, '-') + "\n";
  double total = 0;
  for (const auto& row : result_rows()) {
    const json r = stages.value(row.stage, json::object());
    auto pct = [&](const char* key) {
      char b[32] = "-";
      if (r.contains(key) && r[key].is_number())
        std::snprintf(b, sizeof b, "%.2f%%", 100 * r[key].get<double>());
      return std::string(b);
    };
    char secs[32] = "-";
    if (r.contains("seconds") && r["seconds"].is_number()) {
      std::snprintf(secs, sizeof secs, "%.1f", r["seconds"].get<double>());
      total += r["seconds"].get<double>();
    }
    std::snprintf(line, sizeof line, "%s %-42s %8s %8s %9s\n", row.stage == best ? "*" : " ",
                  row.label, pct("top1").c_str(), pct("top5").c_str(), secs);
    out += line;
  }
  if (stages.contains("teacher") && stages["teacher"].contains("seconds")) {
    total += stages["teacher"]["seconds"].get<double>();
    std::snprintf(line, sizeof line,
                  "  (stage-0 teacher: top-1 %.2f%%, %.1f s; all stages %.1f s)\n",
                  100 * stages["teacher"].value("top1", 0.0),
                  stages["teacher"]["seconds"].get<double>(), total);
    out += line;
  }
  if (!best.empty()) out += "  * best student\n";
  return out;
}

}  // namespace distill::train
