#include "train/experiment.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <set>
#include <sstream>

#include "core/autocast.h"
#include "core/autograd.h"
#include "core/error.h"
#include "core/npy.h"
#include "core/safetensors.h"
#include "data/dataset_spec.h"
#include "data/loader.h"
#include "data/prompts.h"
#include "data/sampling.h"
#include "data/tokenizer.h"
#include "models/bert.h"
#include "models/convert.h"
#include "models/head.h"
#include "train/atomic_file.h"
#include "train/checkpoint.h"
#include "train/losses.h"
#include "train/metrics.h"
#include "train/optimizer.h"
#include "train/schedule.h"
#include "train/text_queries.h"

namespace distill::train {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::vector<std::string> kAllStages = {
    "teacher", "probe", "head", "student_text", "student_notext", "student_labels", "zeroshot"};

// ---- config

// Fills `defaults` with the user's values, recursively for objects, rejecting unknown keys.
json merge_config(const json& defaults, const json& user, const std::string& where,
                  const std::string& path, const std::set<std::string>& free_form) {
  DISTILL_CHECK(user.is_object(), where, ": '", path.empty() ? "(top level)" : path,
                "' must be a JSON object");
  json out = defaults;
  for (const auto& [key, value] : user.items()) {
    const std::string full = path.empty() ? key : path + "." + key;
    DISTILL_CHECK(defaults.contains(key), where, ": unknown config key '", full, "'");
    if (defaults[key].is_object() && !free_form.count(full) && !value.is_null())
      out[key] = merge_config(defaults[key], value, where, full, free_form);
    else
      out[key] = value;
  }
  return out;
}

json default_config() {
  const json adamw = {{"kind", "adamw"}, {"weight_decay", 0.05}};
  const json cosine = {{"kind", "cosine"},
                       {"base_lr", 1e-3},
                       {"warmup_steps", 0},
                       {"total_steps", 0},
                       {"min_lr_ratio", 0.0}};
  return {
      {"name", "run"},
      {"seed", 0},
      {"device", "cpu"},
      {"precision", "f32"},  // "bf16": autocast (bf16 matrix ops, fp32 master weights and norms)
      {"stages", kAllStages},
      {"checkpoint_every", 0},  // optimizer steps between mid-stage checkpoints (0: stage ends)
      {"log_every", 10},
      {"data",
       {{"train", ""},
        {"test", ""},
        {"class_names", ""},  // "" = the dataset's own; else a data/classnames name
        {"templates", "cifar"},
        {"train_per_class", 0},  // 0: every training image
        {"test_per_class", 0},
        {"workers", 2},
        {"batch_size", 64},
        {"eval_batch_size", 128},
        {"augment", {{"scale_min", 0.5}, {"scale_max", 1.0}, {"flip_probability", 0.5}}}}},
      {"teacher", {{"checkpoint", ""}, {"arch", json::object()}}},
      {"text", {{"checkpoint", ""}, {"tokenizer", ""}, {"random", nullptr}}},
      {"stage0", {{"epochs", 1}, {"optimizer", adamw}, {"schedule", cosine}}},
      {"probe",
       {{"epochs", 20},
        {"batch_size", 256},
        {"optimizer", {{"kind", "adamw"}, {"weight_decay", 0.0}}},
        {"schedule", {{"kind", "cosine"}, {"base_lr", 1e-2}, {"total_steps", 0}}}}},
      {"head",
       {{"epochs", 1},
        {"config", {{"width", 512}, {"heads", 8}, {"mlp_ratio", 4}, {"dropout", 0.0}}},
        {"optimizer", adamw},
        {"schedule", cosine}}},
      {"student",
       {{"epochs", 1}, {"alpha", 1.0}, {"tau", 1.0}, {"optimizer", adamw}, {"schedule", cosine}}},
  };
}

// ---- context of one run

struct Run {
  json config;
  fs::path dir;
  Device device = Device::cpu();
  bool bf16 = false;  // config "precision": "bf16"
  std::unique_ptr<MetricsLog> log;
  bool quiet = false;
  bool resume = false;
  json summary = {{"stages", json::object()}};

  std::shared_ptr<data::Dataset> train_set, test_set;
  std::vector<int64_t> train_subset, test_subset;
  std::vector<std::string> class_names;
  int64_t num_classes = 0;
  int image_size = 0;

  std::shared_ptr<models::ImageEncoder> teacher;
  json teacher_config;
  std::string teacher_origin;  // "stage0" or the checkpoint path
  std::shared_ptr<nn::Linear> probe;
  std::shared_ptr<models::ImageTextHead> head;
  std::shared_ptr<models::TextEncoder> text;
  Tensor class_queries;  // [C, d_T]

  void write_summary() const {
    write_file_atomically((dir / "summary.json").string(), summary.dump(2) + "\n");
  }
};

uint64_t stage_seed(const Run& run, const std::string& stage) {
  uint64_t h = static_cast<uint64_t>(run.config["seed"].get<int64_t>()) * 0x9E3779B97F4A7C15ull;
  for (char c : stage) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001B3ull;
  return h;
}

std::shared_ptr<data::DataLoader> make_loader(const Run& run, bool train, uint64_t seed,
                                              bool augment) {
  const json& d = run.config["data"];
  data::LoaderOptions o;
  o.batch_size = (train ? d["batch_size"] : d["eval_batch_size"]).get<int64_t>();
  o.workers = d["workers"].get<int>();
  o.shuffle = train && augment;
  o.drop_last = false;
  o.seed = seed;
  std::shared_ptr<const data::Transform> transform;
  if (augment) {
    data::AugmentOptions a;
    a.size = run.image_size;
    a.scale_min = d["augment"]["scale_min"].get<double>();
    a.scale_max = d["augment"]["scale_max"].get<double>();
    a.flip_probability = d["augment"]["flip_probability"].get<double>();
    transform = std::make_shared<data::TrainAugment>(a);
  } else {
    transform = std::make_shared<data::ClipPreprocess>(run.image_size);
  }
  return std::make_shared<data::DataLoader>(train ? run.train_set : run.test_set, transform, o,
                                            train ? run.train_subset : run.test_subset);
}

// A schedule whose total_steps is 0 in the config ("the whole stage") gets the stage's step count.
LrSchedule stage_schedule(const json& j, int64_t total_steps, const std::string& where) {
  json filled = j;
  if (filled.value("total_steps", int64_t{0}) == 0)
    filled["total_steps"] =
        std::max<int64_t>(total_steps, filled.value("warmup_steps", int64_t{0}) + 1);
  return lr_schedule_from_json(filled, where);
}

// ---- training and evaluation loops

struct StageResult {
  json metrics;  // eval metrics (top1, top5, per-class, confusion)
  double seconds = 0;
};

// One optimisation stage over the training loader. `loss_of` returns the batch loss (a scalar
// with a graph into `model`'s parameters). Periodic checkpoints go to <run>/checkpoints/<stage>.
void train_stage(Run& run, const std::string& stage, nn::Module& model, const json& stage_cfg,
                 int64_t epochs, const std::function<Tensor(const data::Batch&)>& loss_of) {
  auto loader = make_loader(run, /*train=*/true, stage_seed(run, stage + "/data"), true);
  const int64_t per_epoch = loader->batches_per_epoch();
  OptimizerConfig oc = optimizer_config_from_json(stage_cfg["optimizer"], stage + ".optimizer");
  const int64_t total = epochs * ((per_epoch + oc.accumulation_steps - 1) / oc.accumulation_steps);
  const LrSchedule schedule = stage_schedule(stage_cfg["schedule"], total, stage + ".schedule");
  Optimizer optimizer(model, oc, schedule);

  CheckpointManager manager((run.dir / "checkpoints" / stage).string(), 2, stage);
  int64_t start_epoch = 0, skip_batches = 0;
  std::string last_ckpt;
  if (auto latest = manager.latest(); latest && run.resume) {
    const TrainingProgress p = load_training_checkpoint(*latest, model, &optimizer);
    start_epoch = p.data_position.at("epoch").get<int64_t>();
    skip_batches = p.data_position.at("batch").get<int64_t>();
    last_ckpt = *latest;
    MetricsLog::rewind(run.log->path(), stage, optimizer.step_count());
  }
  const int64_t every = run.config["checkpoint_every"].get<int64_t>();
  const int64_t log_every = std::max<int64_t>(1, run.config["log_every"].get<int64_t>());
  ProgressOptions po;
  po.stage = stage;
  po.total_steps = epochs * per_epoch;
  po.log_every = log_every;
  std::ostringstream discard;  // --quiet
  ProgressReporter progress(po, run.quiet ? static_cast<std::ostream&>(discard) : std::cerr,
                            !run.quiet && ProgressReporter::stderr_is_tty());
  model.train();
  for (int64_t epoch = start_epoch; epoch < epochs; ++epoch) {
    loader->start_epoch(epoch);
    data::Batch batch;
    int64_t index = 0;
    while (loader->next(batch)) {
      if (epoch == start_epoch && index < skip_batches) {
        ++index;
        continue;
      }
      const data::Batch on_device = batch.to(run.device);
      Tensor loss;
      {
        AutocastGuard autocast(DType::BF16, run.bf16);  // the forward; backward follows its dtypes
        loss = loss_of(on_device);
      }
      const double loss_value = loss.item();
      check_finite(loss_value, optimizer.step_count(), last_ckpt);
      const StepInfo info = optimizer.accumulate(loss);
      ++index;
      progress.update(epoch, epoch * per_epoch + index, loss_value, batch.size());
      if (info.stepped && info.step % log_every == 0)
        run.log->write({{"stage", stage},
                        {"step", info.step},
                        {"epoch", epoch},
                        {"loss", loss_value},
                        {"lr", info.lr}});
      if (info.stepped && every > 0 && info.step % every == 0) {
        TrainingProgress p;
        p.step = info.step;
        p.epoch = epoch;
        p.data_position = {{"epoch", epoch}, {"batch", index}};
        p.config = run.config;
        last_ckpt = manager.save(model, &optimizer, p);
      }
    }
    const auto skipped = loader->epoch_skipped();
    if (skipped.count > 0)
      progress.log(stage + ": skipped " + std::to_string(skipped.count) + " bad samples");
  }
  progress.finish();
  model.eval();
}

ClassificationMetrics evaluate(Run& run,
                               const std::function<Tensor(const data::Batch&)>& logits_of) {
  auto loader = make_loader(run, /*train=*/false, 0, /*augment=*/false);
  ClassificationMetrics metrics(run.num_classes);
  NoGradGuard no_grad;
  AutocastGuard autocast(DType::BF16, run.bf16);
  loader->start_epoch(0);
  data::Batch batch;
  while (loader->next(batch)) {
    const data::Batch b = batch.to(run.device);
    metrics.update(to_device(to_dtype(logits_of(b), DType::F32), Device::cpu()), batch.labels);
  }
  return metrics;
}

// ---- stage bookkeeping: a finished stage leaves <run>/<stage>.safetensors

fs::path stage_file(const Run& run, const std::string& stage) {
  return run.dir / (stage + ".safetensors");
}

bool load_finished(Run& run, const std::string& stage, nn::Module& model) {
  const fs::path f = stage_file(run, stage);
  if (!fs::exists(f)) return false;
  const TrainingProgress p = load_training_checkpoint(f.string(), model, nullptr);
  run.summary["stages"][stage] = p.extra;
  model.eval();
  return true;
}

void finish_stage(Run& run, const std::string& stage, nn::Module& model,
                  const ClassificationMetrics& metrics, double seconds) {
  json result = {{"top1", metrics.top1()},
                 {"top5", metrics.top5()},
                 {"seconds", seconds},
                 {"metrics", metrics.to_json(true)}};
  run.log->write({{"stage", stage},
                  {"eval", "test"},
                  {"top1", metrics.top1()},
                  {"top5", metrics.top5()},
                  {"seconds", seconds}});
  TrainingProgress p;
  p.config = run.config;
  p.extra = result;
  save_training_checkpoint(stage_file(run, stage).string(), model, nullptr, p);
  run.summary["stages"][stage] = result;
  run.write_summary();
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

Tensor teacher_tokens(Run& run, const data::Batch& b) {
  NoGradGuard no_grad;
  return run.teacher->encode(b.images).tokens.detach();
}

// ---- stages

void stage_teacher(Run& run) {
  Generator gen(stage_seed(run, "teacher/init"));
  auto encoder = models::make_image_encoder(run.config["teacher"]["arch"], "teacher.arch", &gen);
  models::EncoderClassifier model(encoder, run.num_classes, &gen);
  model.to(run.device);
  if (!load_finished(run, "teacher", model)) {
    const auto t0 = std::chrono::steady_clock::now();
    train_stage(
        run, "teacher", model, run.config["stage0"], run.config["stage0"]["epochs"].get<int64_t>(),
        [&](const data::Batch& b) { return cross_entropy(model.forward(b.images), b.labels); });
    finish_stage(run, "teacher", model,
                 evaluate(run, [&](const data::Batch& b) { return model.forward(b.images); }),
                 seconds_since(t0));
  }
  run.teacher = encoder;
  run.teacher->requires_grad_(false);
  run.teacher->eval();
  run.teacher_config = encoder->config_json();
  run.teacher_origin = "stage0";
}

void stage_probe(Run& run) {
  Generator gen(stage_seed(run, "probe/init"));
  run.probe = std::make_shared<nn::Linear>(run.teacher->embed_dim(), run.num_classes, true, &gen);
  run.probe->to(run.device);
  if (load_finished(run, "probe", *run.probe)) return;
  const auto t0 = std::chrono::steady_clock::now();
  // Features of the un-augmented training images, computed once (a linear probe's usual setup).
  auto loader = make_loader(run, /*train=*/true, 0, /*augment=*/false);
  std::vector<Tensor> feats, labels;
  {
    NoGradGuard no_grad;
    AutocastGuard autocast(DType::BF16, run.bf16);
    loader->start_epoch(0);
    data::Batch batch;
    while (loader->next(batch)) {
      feats.push_back(
          to_dtype(run.teacher->encode(batch.to(run.device).images).pooled, DType::F32));
      labels.push_back(batch.labels);
    }
  }
  const Tensor x = concat(feats, 0), y = concat(labels, 0);
  const json& cfg = run.config["probe"];
  const int64_t n = x.size(0), bs = cfg["batch_size"].get<int64_t>();
  const int64_t epochs = cfg["epochs"].get<int64_t>();
  OptimizerConfig oc = optimizer_config_from_json(cfg["optimizer"], "probe.optimizer");
  const LrSchedule schedule =
      stage_schedule(cfg["schedule"], epochs * ((n + bs - 1) / bs), "probe.schedule");
  Optimizer optimizer(*run.probe, oc, schedule);
  for (int64_t e = 0; e < epochs; ++e) {
    const auto order =
        data::seeded_permutation(n, data::derive_key(stage_seed(run, "probe"), e, 0));
    for (int64_t s = 0; s < n; s += bs) {
      std::vector<int64_t> idx(order.begin() + s, order.begin() + std::min(n, s + bs));
      const Tensor index = Tensor::from_vector(idx, {static_cast<int64_t>(idx.size())});
      const Tensor loss =
          cross_entropy(run.probe->forward(index_select(x, 0, to_device(index, x.device()))),
                        index_select(y, 0, index));
      const StepInfo info = optimizer.accumulate(loss);
      if (info.stepped && info.step % 50 == 0)
        run.log->write({{"stage", "probe"}, {"step", info.step}, {"loss", loss.item()}});
    }
  }
  finish_stage(run, "probe", *run.probe,
               evaluate(run,
                        [&](const data::Batch& b) {
                          return run.probe->forward(run.teacher->encode(b.images).pooled);
                        }),
               seconds_since(t0));
}

void load_text_queries(Run& run) {
  if (run.class_queries.defined()) return;
  const json& t = run.config["text"];
  const std::string tok_path = t["tokenizer"].get<std::string>();
  DISTILL_CHECK(!tok_path.empty(), "config: text.tokenizer is required for the head");
  std::unique_ptr<Tokenizer> tokenizer;
  if (!t["random"].is_null()) {
    // A randomly initialised text encoder (tests and smoke runs without pretrained weights).
    tokenizer = load_tokenizer(tok_path);
    json cfg = t["random"];
    const std::string arch = cfg.value("flavour", std::string("bert"));
    cfg["vocab_size"] = tokenizer->vocab_size();
    Generator gen(stage_seed(run, "text/init"));
    run.text = models::make_text_encoder(arch, cfg, "text.random", &gen);
  } else {
    const std::string path = t["checkpoint"].get<std::string>();
    DISTILL_CHECK(!path.empty(), "config: text.checkpoint (or text.random) is required");
    run.text = models::open_text_encoder(path);
    tokenizer = load_tokenizer(tok_path, run.text->max_length());
  }
  run.text->eval();
  run.text->to(run.device);
  const std::vector<std::string> templates =
      data::load_templates(run.config["data"]["templates"].get<std::string>());
  run.class_queries = class_text_embeddings(*run.text, *tokenizer, run.class_names, templates);
  save_npy((run.dir / "class_queries.npy").string(), run.class_queries);
}

void stage_head(Run& run) {
  load_text_queries(run);
  models::HeadConfig hc =
      models::head_config_from_json(run.config["head"]["config"], "head.config");
  hc.query_dim = run.class_queries.size(1);
  hc.token_dim = run.teacher->token_dim();
  hc.num_classes = run.num_classes;
  Generator gen(stage_seed(run, "head/init"));
  run.head = std::make_shared<models::ImageTextHead>(hc, &gen);
  run.head->to(run.device);
  if (load_finished(run, "head", *run.head)) return;
  const auto t0 = std::chrono::steady_clock::now();
  train_stage(run, "head", *run.head, run.config["head"],
              run.config["head"]["epochs"].get<int64_t>(), [&](const data::Batch& b) {
                return cross_entropy(run.head->forward(teacher_tokens(run, b), run.class_queries),
                                     b.labels);
              });
  finish_stage(run, "head", *run.head,
               evaluate(run,
                        [&](const data::Batch& b) {
                          return run.head->forward(run.teacher->encode(b.images).tokens,
                                                   run.class_queries);
                        }),
               seconds_since(t0));
}

// Stage 2: a fresh encoder of the teacher's architecture plus a classifier; `teacher_logits`
// null means labels only.
void stage_student(Run& run, const std::string& stage,
                   const std::function<Tensor(const data::Batch&)>& teacher_logits) {
  Generator gen(stage_seed(run, "student/init"));  // the same initial student for every variant
  auto encoder = models::make_image_encoder(run.teacher_config, "student", &gen);
  models::EncoderClassifier student(encoder, run.num_classes, &gen);
  student.to(run.device);
  if (load_finished(run, stage, student)) return;
  const json& cfg = run.config["student"];
  DistillationOptions opts;
  opts.alpha = teacher_logits ? cfg["alpha"].get<double>() : 0.0;
  opts.temperature = cfg["tau"].get<double>();
  const auto t0 = std::chrono::steady_clock::now();
  train_stage(run, stage, student, cfg, cfg["epochs"].get<int64_t>(), [&](const data::Batch& b) {
    Tensor target;
    if (teacher_logits) {
      NoGradGuard no_grad;
      target = teacher_logits(b).detach();
    }
    return distillation_loss(student.forward(b.images), target, b.labels, opts).total;
  });
  finish_stage(run, stage, student,
               evaluate(run, [&](const data::Batch& b) { return student.forward(b.images); }),
               seconds_since(t0));
}

void stage_zeroshot(Run& run) {
  load_text_queries(run);
  if (run.text->arch() != "clip-text" || run.teacher->embed_dim() != run.class_queries.size(1)) {
    run.summary["stages"]["zeroshot"] = {
        {"skipped", "needs CLIP image and text towers with one embedding space"}};
    run.write_summary();
    return;
  }
  const auto t0 = std::chrono::steady_clock::now();
  const ClassificationMetrics m = evaluate(run, [&](const data::Batch& b) {
    const Tensor e = run.teacher->encode(b.images).pooled;
    const Tensor n = div(e, sqrt(sum(mul(e, e), {1}, true)));
    return matmul(n, transpose(run.class_queries, 0, 1));
  });
  run.summary["stages"]["zeroshot"] = {
      {"top1", m.top1()}, {"top5", m.top5()}, {"seconds", seconds_since(t0)}};
  run.log->write({{"stage", "zeroshot"}, {"eval", "test"}, {"top1", m.top1()}, {"top5", m.top5()}});
  run.write_summary();
}

// ---- the report

std::string pct(const json& stages, const std::string& stage, const char* key = "top1") {
  if (!stages.contains(stage) || !stages[stage].contains(key)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", 100.0 * stages[stage][key].get<double>());
  return buf;
}

void write_report(const Run& run) {
  const json& s = run.summary["stages"];
  const json& c = run.config;
  std::string teacher = run.teacher_origin == "stage0"
                            ? "stage 0 (" + run.teacher_config.value("type", std::string("?")) + ")"
                            : c["teacher"]["checkpoint"].get<std::string>();
  std::string text = !c["text"]["random"].is_null() ? std::string("random (untrained)")
                                                    : c["text"]["checkpoint"].get<std::string>();
  std::string r;
  r += "# " + c["name"].get<std::string>() + "\n\n";
  r += "Top-1 accuracy (%) on the test split (" +
       std::to_string(run.test_subset.empty() ? run.test_set->size()
                                              : static_cast<int64_t>(run.test_subset.size())) +
       " images, " + std::to_string(run.num_classes) + " classes); '-': not run.\n\n";
  r += "## Table 3.1\n\n";
  r += "| Teacher | Text encoder | Dataset | Linear probe | Head | Self-distillation without text "
       "| Self-distillation with text | Student, labels only | Zero-shot |\n";
  r += "|---|---|---|---|---|---|---|---|---|\n";
  r += "| " + teacher + " | " + text + " | " + c["data"]["train"].get<std::string>() + " | " +
       pct(s, "probe") + " | " + pct(s, "head") + " | " + pct(s, "student_notext") + " | " +
       pct(s, "student_text") + " | " + pct(s, "student_labels") + " | " + pct(s, "zeroshot") +
       " |\n\n";
  r += "## Every stage\n\n| Stage | Top-1 | Top-5 | Wall time (s) |\n|---|---|---|---|\n";
  for (const auto& stage : kAllStages) {
    if (!s.contains(stage)) continue;
    char secs[32] = "-";
    if (s[stage].contains("seconds"))
      std::snprintf(secs, sizeof secs, "%.1f", s[stage]["seconds"].get<double>());
    r += "| " + stage + " | " + pct(s, stage) + " | " + pct(s, stage, "top5") + " | " + secs +
         " |\n";
  }
  r += "\nAblations (few-shot, caption queries, generations, retrieval): not run by this runner "
       "yet.\n\n## Config\n\n```json\n" +
       c.dump(2) + "\n```\n";
  write_file_atomically((run.dir / "report.md").string(), r);
}

}  // namespace

json resolve_experiment_config(const json& config, const std::string& where) {
  json c = merge_config(default_config(), config, where, "",
                        {"teacher.arch", "text.random", "stage0.optimizer", "stage0.schedule",
                         "probe.optimizer", "probe.schedule", "head.optimizer", "head.schedule",
                         "student.optimizer", "student.schedule", "head.config"});
  DISTILL_CHECK(c["name"].is_string() && !c["name"].get<std::string>().empty() &&
                    c["name"].get<std::string>().find('/') == std::string::npos,
                where, ": 'name' must be a non-empty string without '/'");
  DISTILL_CHECK(c["stages"].is_array(), where, ": 'stages' must be a list");
  for (const auto& s : c["stages"])
    DISTILL_CHECK(s.is_string() && std::find(kAllStages.begin(), kAllStages.end(),
                                             s.get<std::string>()) != kAllStages.end(),
                  where, ": unknown stage ", s.dump());
  DISTILL_CHECK(!c["data"]["train"].get<std::string>().empty(), where,
                ": data.train (a dataset spec) is required");
  DISTILL_CHECK(!c["data"]["test"].get<std::string>().empty(), where,
                ": data.test (a dataset spec) is required");
  const bool pretrained = !c["teacher"]["checkpoint"].get<std::string>().empty();
  DISTILL_CHECK(pretrained || !c["teacher"]["arch"].empty(), where,
                ": teacher needs a checkpoint or an arch (a vit/resnet config) for stage 0");
  DISTILL_CHECK(c["precision"] == "f32" || c["precision"] == "bf16", where,
                ": precision must be \"f32\" or \"bf16\", got ", c["precision"].dump());
  const double alpha = c["student"]["alpha"].get<double>();
  DISTILL_CHECK(alpha >= 0 && alpha <= 1, where, ": student.alpha must be in [0, 1]");
  DISTILL_CHECK(c["student"]["tau"].get<double>() > 0, where, ": student.tau must be > 0");
  // Parse the nested optimizer/schedule/head blocks now so a typo fails before any training.
  for (const char* stage : {"stage0", "probe", "head", "student"}) {
    optimizer_config_from_json(c[stage]["optimizer"], where + ": " + stage + ".optimizer");
    stage_schedule(c[stage]["schedule"], 1000, where + ": " + stage + ".schedule");
  }
  models::head_config_from_json(c["head"]["config"], where + ": head.config");
  return c;
}

json run_experiment(const json& user_config, const std::string& where, const RunOptions& options) {
  Run run;
  run.config = resolve_experiment_config(user_config, where);
  if (!options.name.empty()) run.config["name"] = options.name;
  run.quiet = options.quiet;
  run.resume = options.resume;
  run.dir = fs::path(options.runs_dir) / run.config["name"].get<std::string>();
  if (fs::exists(run.dir / "config.json")) {
    DISTILL_CHECK(options.resume, "run folder ", run.dir.string(),
                  " exists; pass --resume to continue it or --name to start another");
    const json previous = json::parse(std::ifstream(run.dir / "config.json"));
    DISTILL_CHECK(previous == run.config, "--resume: the config differs from the one in ",
                  (run.dir / "config.json").string(), "; a resumed run must use the same config");
    if (fs::exists(run.dir / "summary.json"))
      run.summary = json::parse(std::ifstream(run.dir / "summary.json"));
  }
  fs::create_directories(run.dir);
  write_file_atomically((run.dir / "config.json").string(), run.config.dump(2) + "\n");
  run.log = std::make_unique<MetricsLog>((run.dir / "metrics.jsonl").string());
  const std::string device = run.config["device"].get<std::string>();
  if (device == "cuda") {
    DISTILL_CHECK(cuda_available(), where, ": device 'cuda' but no CUDA device is available");
    run.device = Device::cuda(0);
  } else {
    DISTILL_CHECK(device == "cpu", where, ": device must be cpu or cuda, got '", device, "'");
  }
  run.bf16 = run.config["precision"].get<std::string>() == "bf16";
  manual_seed(static_cast<uint64_t>(run.config["seed"].get<int64_t>()));

  // Data.
  const json& d = run.config["data"];
  run.train_set = std::shared_ptr<data::Dataset>(
      data::open_dataset(d["train"].get<std::string>(), "train").dataset.release());
  run.test_set = std::shared_ptr<data::Dataset>(
      data::open_dataset(d["test"].get<std::string>(), "test").dataset.release());
  run.num_classes = run.train_set->num_classes();
  DISTILL_CHECK(run.test_set->num_classes() == run.num_classes, where, ": the train set has ",
                run.num_classes, " classes but the test set ", run.test_set->num_classes());
  const std::string names = d["class_names"].get<std::string>();
  run.class_names = names.empty() ? run.train_set->class_names() : data::load_class_names(names);
  DISTILL_CHECK(static_cast<int64_t>(run.class_names.size()) == run.num_classes, where, ": ",
                run.class_names.size(), " class names for ", run.num_classes, " classes");
  const uint64_t seed = static_cast<uint64_t>(run.config["seed"].get<int64_t>());
  if (const int64_t k = d["train_per_class"].get<int64_t>(); k > 0)
    run.train_subset = data::few_shot_indices(*run.train_set, k, seed);
  if (const int64_t k = d["test_per_class"].get<int64_t>(); k > 0)
    run.test_subset = data::few_shot_indices(*run.test_set, k, seed + 1);

  // The teacher image encoder: pretrained, or trained by stage 0.
  const std::string teacher_ckpt = run.config["teacher"]["checkpoint"].get<std::string>();
  if (!teacher_ckpt.empty()) {
    run.teacher = models::open_image_encoder(teacher_ckpt);
    run.teacher->to(run.device);
    run.teacher->requires_grad_(false);
    run.teacher->eval();
    run.teacher_config = run.teacher->config_json();
    run.teacher_origin = teacher_ckpt;
  } else {
    run.teacher_config = nullptr;
  }
  run.image_size = static_cast<int>(
      run.teacher ? run.teacher->image_size()
                  : models::make_image_encoder(run.config["teacher"]["arch"], "teacher.arch")
                        ->image_size());

  std::set<std::string> stages;
  for (const auto& s : run.config["stages"]) stages.insert(s.get<std::string>());
  if (!run.teacher) stage_teacher(run);
  auto wants = [&](const char* s) { return stages.count(s) > 0; };
  if (wants("probe") || wants("student_notext")) stage_probe(run);
  if (wants("head") || wants("student_text")) stage_head(run);
  if (wants("student_text"))
    stage_student(run, "student_text", [&](const data::Batch& b) {
      return run.head->forward(run.teacher->encode(b.images).tokens, run.class_queries);
    });
  if (wants("student_notext"))
    stage_student(run, "student_notext", [&](const data::Batch& b) {
      return run.probe->forward(run.teacher->encode(b.images).pooled);
    });
  if (wants("student_labels")) stage_student(run, "student_labels", nullptr);
  if (wants("zeroshot")) stage_zeroshot(run);

  run.summary["name"] = run.config["name"];
  run.summary["run_dir"] = run.dir.string();
  run.write_summary();
  write_report(run);
  return run.summary;
}

}  // namespace distill::train
