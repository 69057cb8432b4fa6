#include "train/experiment.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <unordered_map>

#include "core/allocator.h"
#include "core/autocast.h"
#include "core/autograd.h"
#include "core/distributed.h"
#include "core/error.h"
#include "core/npy.h"
#include "core/safetensors.h"
#include "data/captions.h"
#include "data/dataset_spec.h"
#include "data/loader.h"
#include "data/prompts.h"
#include "data/sampling.h"
#include "data/tokenizer.h"
#include "data/webdataset.h"
#include "kernels/device.h"
#include "layers/sync_batch_norm.h"
#include "models/bert.h"
#include "models/config.h"
#include "models/convert.h"
#include "models/head.h"
#include "train/atomic_file.h"
#include "train/checkpoint.h"
#include "train/data_parallel.h"
#include "train/interrupt.h"
#include "train/losses.h"
#include "train/metrics.h"
#include "train/optimizer.h"
#include "train/schedule.h"
#include "train/text_queries.h"

namespace distill::train {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::vector<std::string> kAllStages = {"teacher",      "probe",          "head",
                                             "student_text", "student_notext", "student_labels",
                                             "zeroshot",     "head_captions",  "retrieval"};

// ---- config

// Fills `defaults` with the user's values, recursively for objects, rejecting unknown keys.
// What a user value must be to replace `def` ("" when it fits): a value of the wrong JSON type
// (say "batch_size": "64") fails here, naming the key, not as a bare JSON type error mid-run.
std::string expected_kind(const json& def, const json& value) {
  if (def.is_boolean() && !value.is_boolean()) return "true or false";
  if (def.is_number_integer() && !value.is_number_integer()) return "an integer";
  if (def.is_number_float() && !value.is_number()) return "a number";
  if (def.is_string() && !value.is_string()) return "a string";
  if (def.is_array() && !value.is_array()) return "a list";
  if (def.is_object() && !value.is_object()) return "a JSON object";
  return "";
}

json merge_config(const json& defaults, const json& user, const std::string& where,
                  const std::string& path, const std::set<std::string>& free_form) {
  DISTILL_CHECK(user.is_object(), where, ": '", path.empty() ? "(top level)" : path,
                "' must be a JSON object");
  json out = defaults;
  for (const auto& [key, value] : user.items()) {
    const std::string full = path.empty() ? key : path + "." + key;
    DISTILL_CHECK(defaults.contains(key), where, ": unknown config key '", full, "'");
    const std::string kind = expected_kind(defaults[key], value);
    DISTILL_CHECK(kind.empty(), where, ": '", full, "' must be ", kind, ", got ", value.dump());
    if (defaults[key].is_object() && !free_form.count(full))
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
        {"train_per_class", 0},     // 0: every training image
        {"labelled_per_class", 0},  // few-shot: labels for k images per class (0: all)
        {"captions", ""},           // image<TAB>caption pairs (image files): retrieval
        {"train_captions", ""},     // key<TAB>caption for training images: head_captions
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
       {{"epochs", 1},
        {"alpha", 1.0},
        {"tau", 1.0},
        {"targets", "online"},  // "cached": teacher logits once per un-augmented image
        {"optimizer", adamw},
        {"schedule", cosine}}},
      {"ablations",
       {{"few_shot", json::array()},     // k values: one sub-run of the labelled stages per k
        {"generations", 0}}},            // >= 2: Born-Again students after student_text
      {"retrieval", {{"ridge", 1e-3}}},  // relative ridge of the student -> teacher linear map
      // Multi-process runs (mpirun / srun; docs/distributed.md). data.batch_size is per rank.
      {"distributed", to_json(DataParallelConfig{})},
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
  bool evaluate_only = false;  // distill eval: load finished stages, train nothing
  std::set<std::string> evaluate_stages;
  json evaluations = json::object();
  DataParallelConfig data_parallel;  // config "distributed"; used when dist::distributed()

  std::shared_ptr<data::Dataset> train_set, test_set;
  std::vector<int64_t> train_subset, test_subset;
  // Few-shot: the training images whose labels the labelled stages (teacher, probe, head,
  // student_labels) see; the distilled students still train on the whole train_subset.
  int64_t labelled_per_class = 0;  // 0: every image is labelled
  std::vector<int64_t> labelled_subset;
  std::vector<int64_t> captioned_subset;  // head_captions: labelled images with a caption
  std::string suffix;                     // appended to stage names in an ablation sub-run ("@k4")
  std::vector<std::string> class_names;
  int64_t num_classes = 0;
  int image_size = 0;

  std::shared_ptr<models::ImageEncoder> teacher;
  json teacher_config;
  std::string teacher_origin;  // "stage0" or the checkpoint path
  std::shared_ptr<nn::Linear> probe;
  std::shared_ptr<models::ImageTextHead> head;
  std::shared_ptr<models::TextEncoder> text;
  std::unique_ptr<Tokenizer> tokenizer;
  Tensor class_queries;                                                        // [C, d_T]
  std::map<std::string, std::shared_ptr<models::EncoderClassifier>> students;  // by stage name

  // Rank 0 alone writes the run folder's files.
  void write_summary() const {
    if (dist::is_primary())
      write_file_atomically((dir / "summary.json").string(), summary.dump(2) + "\n");
  }
};

uint64_t stage_seed(const Run& run, const std::string& stage) {
  uint64_t h = static_cast<uint64_t>(run.config["seed"].get<int64_t>()) * 0x9E3779B97F4A7C15ull;
  for (char c : stage) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001B3ull;
  return h;
}

std::string named(const Run& run, const std::string& stage) {
  return stage + run.suffix;
}

// Which images a loader reads: the labelled training images (few-shot), every training image
// of the run (unlabelled use), the test split, or the labelled images with a caption.
enum class Split { labelled, train, test, captioned };

// `shard`: in a multi-process run, this rank reads its share only (data/sampling.h rank_slice);
// a training loader (augment) then drops the last incomplete global batch, so that every rank
// takes the same number of steps with a full batch.
std::shared_ptr<data::DataLoader> make_loader(const Run& run, Split split, uint64_t seed,
                                              bool augment, bool shard = false) {
  const json& d = run.config["data"];
  const bool train = split != Split::test;
  data::LoaderOptions o;
  o.batch_size = (train ? d["batch_size"] : d["eval_batch_size"]).get<int64_t>();
  o.workers = d["workers"].get<int>();
  o.shuffle = train && augment;
  o.drop_last = false;
  o.seed = seed;
  if (shard && dist::distributed()) {
    o.rank = dist::rank();
    o.world_size = dist::world_size();
    o.drop_last = train && augment;
  }
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
  const std::vector<int64_t>& subset = split == Split::test        ? run.test_subset
                                       : split == Split::captioned ? run.captioned_subset
                                       : split == Split::labelled && run.labelled_per_class > 0
                                           ? run.labelled_subset
                                           : run.train_subset;
  return std::make_shared<data::DataLoader>(train ? run.train_set : run.test_set, transform, o,
                                            subset);
}

// A schedule whose total_steps is 0 in the config ("the whole stage") gets the stage's step count.
LrSchedule stage_schedule(const json& j, int64_t total_steps, const std::string& where) {
  json filled = j;
  // Only a missing or zero total_steps is filled in; a value of the wrong type is left for
  // lr_schedule_from_json to name.
  const bool fill =
      filled.is_object() && (!filled.contains("total_steps") || filled["total_steps"] == 0);
  if (fill) {
    const json warmup = filled.value("warmup_steps", json(0));
    filled["total_steps"] = std::max<int64_t>(
        total_steps, (warmup.is_number_integer() ? warmup.get<int64_t>() : 0) + 1);
  }
  return lr_schedule_from_json(filled, where);
}

// ---- training and evaluation loops

json seen_json(const std::vector<int64_t>& class_counts) {
  int64_t total = 0;
  for (int64_t c : class_counts) total += c;
  return {{"train_images", total}, {"class_counts", class_counts}};
}

struct StageResult {
  json metrics;  // eval metrics (top1, top5, per-class, confusion)
  double seconds = 0;
};

// One optimisation stage over the training loader. `loss_of` returns the batch loss (a scalar
// with a graph into `model`'s parameters). Periodic checkpoints go to <run>/checkpoints/<stage>.
// Returns what the last epoch read: {"train_images", "class_counts"} (evidence of the split).
json train_stage(Run& run, const std::string& stage, nn::Module& model, const json& stage_cfg,
                 int64_t epochs, Split split,
                 const std::function<Tensor(const data::Batch&)>& loss_of) {
  auto loader = make_loader(run, split, stage_seed(run, stage + "/data"), true, /*shard=*/true);
  const int64_t per_epoch = loader->batches_per_epoch();
  DISTILL_CHECK(per_epoch > 0, stage, ": the training set has fewer images than one global batch (",
                run.config["data"]["batch_size"].get<int64_t>(), " per rank x ", dist::world_size(),
                " ranks)");
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
    if (dist::is_primary()) MetricsLog::rewind(run.log->path(), stage, optimizer.step_count());
  }
  // Data parallel: every rank starts from rank 0's weights and reduces gradients in buckets
  // during the backward. One process keeps the plain path (bit-identical to before).
  std::unique_ptr<GradientBuckets> buckets;
  if (dist::distributed()) {
    broadcast_parameters(model);
    buckets = std::make_unique<GradientBuckets>(model, run.data_parallel.bucket_mb);
    optimizer.set_gradient_reducer(buckets.get());
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
  std::vector<int64_t> class_counts(static_cast<size_t>(run.num_classes), 0);
  try {
    for (int64_t epoch = start_epoch; epoch < epochs; ++epoch) {
      loader->start_epoch(epoch);
      std::fill(class_counts.begin(), class_counts.end(), 0);
      data::Batch batch;
      int64_t index = 0;
      while (loader->next(batch)) {
        const int64_t* labels = batch.labels.data<int64_t>();
        for (int64_t i = 0; i < batch.size(); ++i) ++class_counts[static_cast<size_t>(labels[i])];
        if (epoch == start_epoch && index < skip_batches) {
          ++index;
          continue;
        }
        const data::Batch on_device = batch.to(run.device);
        Tensor loss;
        {  // autocast covers the forward; the backward follows its dtypes
          AutocastGuard autocast(DType::BF16, run.bf16);
          loss = loss_of(on_device);
        }
        const double loss_value = loss.item();
        check_finite(loss_value, optimizer.step_count(), last_ckpt);
        const StepInfo info = optimizer.accumulate(loss);
        ++index;
        // Images per second over all ranks (each rank reads a batch of the same size).
        progress.update(epoch, epoch * per_epoch + index, loss_value,
                        batch.size() * dist::world_size());
        if (info.stepped && info.step % log_every == 0) {
          double logged_loss = loss_value;  // the mean over ranks in a multi-process run
          if (dist::distributed()) {
            std::vector<double> sum{loss_value};
            dist::all_reduce_sum(sum);
            logged_loss = sum[0] / dist::world_size();
          }
          run.log->write({{"stage", stage},
                          {"step", info.step},
                          {"epoch", epoch},
                          {"loss", logged_loss},
                          {"lr", info.lr}});
        }
        const auto save_checkpoint = [&] {
          TrainingProgress p;
          p.step = info.step;
          p.epoch = epoch;
          p.data_position = {{"epoch", epoch}, {"batch", index}};
          p.config = run.config;
          if (dist::is_primary()) {
            last_ckpt = manager.save(model, &optimizer, p);
          } else {
            last_ckpt = manager.path_for_step(info.step);
          }
        };
        if (info.stepped && every > 0 && info.step % every == 0) save_checkpoint();
        // SIGINT/SIGTERM (train/interrupt.h): stop at an optimizer-step boundary with a
        // checkpoint. The ranks agree on the step (a signal may reach them at different steps).
        int sig = info.stepped ? stop_signal() : 0;
        if (info.stepped && dist::distributed()) sig = static_cast<int>(dist::all_reduce_max(sig));
        if (sig != 0) {
          save_checkpoint();
          dist::barrier();  // the checkpoint is complete before any rank exits
          progress.finish();
          throw Interrupted(sig, "stopped by " + signal_name(sig) + " in stage " + stage +
                                     " after step " + std::to_string(info.step) +
                                     "; checkpoint saved to " + last_ckpt +
                                     "\nresume with the same command plus --resume");
        }
      }
      const auto skipped = loader->epoch_skipped();
      if (skipped.count > 0)
        progress.log(stage + ": skipped " + std::to_string(skipped.count) + " bad samples");
    }
  } catch (const OutOfMemory& e) {
    // Say what to change, not only which allocation failed; the last checkpoint is untouched.
    progress.finish();
    const std::string precision = run.config["precision"].get<std::string>();
    const std::string context = "in stage " + stage + " at step " +
                                std::to_string(optimizer.step_count() + 1) + " (batch size " +
                                std::to_string(run.config["data"]["batch_size"].get<int64_t>()) +
                                ", precision " + precision + ")";
    std::string advice = "lower the batch size (data.batch_size)";
    if (precision != "bf16") advice += " or use \"precision\": \"bf16\"";
    if (e.details().limited) advice += " or raise DISTILL_MEMORY_LIMIT";
    advice += last_ckpt.empty() ? "; no checkpoint of this stage was written yet"
                                : "; the last checkpoint is " + last_ckpt +
                                      " (continue with the same command plus --resume)";
    throw OutOfMemory(out_of_memory_message(e, context, "the step", advice), e.details());
  }
  progress.finish();
  model.eval();
  dist::all_reduce_sum(class_counts);  // what the ranks read together
  return seen_json(class_counts);
}

// One pass without gradients, in the run's precision, over a loader (evaluation, features,
// cached targets): `fn` gets each batch as loaded (host labels and ids) and on the run's device.
void for_each_batch(
    Run& run, data::DataLoader& loader,
    const std::function<void(const data::Batch& host, const data::Batch& dev)>& fn) {
  NoGradGuard no_grad;
  AutocastGuard autocast(DType::BF16, run.bf16);
  loader.start_epoch(0);
  data::Batch batch;
  while (loader.next(batch)) fn(batch, batch.to(run.device));
}

// In a multi-process run each rank evaluates its share of the test set and the counts are
// summed over ranks, so every rank ends with the exact metrics of the whole set.
ClassificationMetrics evaluate(Run& run,
                               const std::function<Tensor(const data::Batch&)>& logits_of) {
  auto loader = make_loader(run, Split::test, 0, /*augment=*/false, /*shard=*/true);
  ClassificationMetrics metrics(run.num_classes);
  for_each_batch(run, *loader, [&](const data::Batch& host, const data::Batch& dev) {
    metrics.update(to_device(to_dtype(logits_of(dev), DType::F32), Device::cpu()), host.labels);
  });
  if (dist::distributed()) {
    std::vector<int64_t> counts = metrics.counts();
    dist::all_reduce_sum(counts);
    metrics.set_counts(counts);
  }
  return metrics;
}

// ---- stage bookkeeping: a finished stage leaves <run>/<stage>.safetensors

fs::path stage_file(const Run& run, const std::string& stage) {
  return run.dir / (stage + ".safetensors");
}

bool load_finished(Run& run, const std::string& stage, nn::Module& model) {
  const fs::path f = stage_file(run, stage);
  if (!fs::exists(f)) {
    DISTILL_CHECK(!run.evaluate_only, "eval: stage '", stage, "' has not finished in ",
                  run.dir.string(), " (no ", f.filename().string(),
                  "); train it first with distill run, train-head or train-student");
    return false;
  }
  const TrainingProgress p = load_training_checkpoint(f.string(), model, nullptr);
  run.summary["stages"][stage] = p.extra;
  model.eval();
  return true;
}

void finish_stage(Run& run, const std::string& stage, nn::Module& model,
                  const ClassificationMetrics& metrics, double seconds, const json& extra = {}) {
  json result = {{"top1", metrics.top1()},
                 {"top5", metrics.top5()},
                 {"seconds", seconds},
                 {"metrics", metrics.to_json(true)}};
  if (extra.is_object()) result.update(extra);
  run.log->write({{"stage", stage},
                  {"eval", "test"},
                  {"top1", metrics.top1()},
                  {"top5", metrics.top5()},
                  {"seconds", seconds}});
  TrainingProgress p;
  p.config = run.config;
  p.extra = result;
  if (dist::is_primary())
    save_training_checkpoint(stage_file(run, stage).string(), model, nullptr, p);
  run.summary["stages"][stage] = result;
  run.write_summary();
  dist::barrier();  // the stage file exists for every rank from here on
}

// distill eval: a loaded stage asked for is evaluated again (on the eval's test set).
void reevaluate(Run& run, const std::string& stage,
                const std::function<Tensor(const data::Batch&)>& logits_of) {
  if (!run.evaluate_only || run.evaluate_stages.count(stage) == 0) return;
  const auto t0 = std::chrono::steady_clock::now();
  const ClassificationMetrics metrics = evaluate(run, logits_of);
  run.evaluations[stage] = {
      {"top1", metrics.top1()},
      {"top5", metrics.top5()},
      {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()},
      {"metrics", metrics.to_json(true)}};
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

Tensor teacher_tokens(Run& run, const data::Batch& b) {
  NoGradGuard no_grad;
  return run.teacher->encode(b.images).tokens.detach();
}

// ---- stages

using LogitsFn = std::function<Tensor(const data::Batch&)>;

void stage_teacher(Run& run) {
  const std::string stage = named(run, "teacher");
  Generator gen(stage_seed(run, "teacher/init"));
  auto encoder = models::make_image_encoder(run.config["teacher"]["arch"], "teacher.arch", &gen);
  models::EncoderClassifier model(encoder, run.num_classes, &gen);
  model.to(run.device);
  if (load_finished(run, stage, model)) {
    reevaluate(run, stage, [&](const data::Batch& b) { return model.forward(b.images); });
  } else {
    const auto t0 = std::chrono::steady_clock::now();
    const json seen = train_stage(
        run, stage, model, run.config["stage0"], run.config["stage0"]["epochs"].get<int64_t>(),
        Split::labelled,
        [&](const data::Batch& b) { return cross_entropy(model.forward(b.images), b.labels); });
    finish_stage(run, stage, model,
                 evaluate(run, [&](const data::Batch& b) { return model.forward(b.images); }),
                 seconds_since(t0), seen);
  }
  run.teacher = encoder;
  run.teacher->requires_grad_(false);
  run.teacher->eval();
  run.teacher_config = encoder->config_json();
  run.teacher_origin = "stage0";
}

void stage_probe(Run& run) {
  const std::string stage = named(run, "probe");
  Generator gen(stage_seed(run, "probe/init"));
  run.probe = std::make_shared<nn::Linear>(run.teacher->embed_dim(), run.num_classes, true, &gen);
  run.probe->to(run.device);
  if (load_finished(run, stage, *run.probe)) {
    reevaluate(run, stage, [&](const data::Batch& b) {
      return run.probe->forward(run.teacher->encode(b.images).pooled);
    });
    return;
  }
  const auto t0 = std::chrono::steady_clock::now();
  // Features of the un-augmented training images, computed once (a linear probe's usual setup).
  auto loader = make_loader(run, Split::labelled, 0, /*augment=*/false);
  std::vector<Tensor> feats, labels;
  std::vector<int64_t> class_counts(static_cast<size_t>(run.num_classes), 0);
  for_each_batch(run, *loader, [&](const data::Batch& host, const data::Batch& dev) {
    feats.push_back(to_dtype(run.teacher->encode(dev.images).pooled, DType::F32));
    labels.push_back(host.labels);
    for (int64_t i = 0; i < host.size(); ++i)
      ++class_counts[static_cast<size_t>(host.labels.data<int64_t>()[i])];
  });
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
        run.log->write({{"stage", stage}, {"step", info.step}, {"loss", loss.item()}});
    }
  }
  broadcast_parameters(*run.probe);  // every rank fitted the same probe; rank 0's is kept
  finish_stage(run, stage, *run.probe,
               evaluate(run,
                        [&](const data::Batch& b) {
                          return run.probe->forward(run.teacher->encode(b.images).pooled);
                        }),
               seconds_since(t0), seen_json(class_counts));
}

void load_text_queries(Run& run) {
  if (run.class_queries.defined()) return;
  const json& t = run.config["text"];
  const std::string tok_path = t["tokenizer"].get<std::string>();
  DISTILL_CHECK(!tok_path.empty(), "config: text.tokenizer is required for the head");
  if (!t["random"].is_null()) {
    // A randomly initialised text encoder (tests and smoke runs without pretrained weights).
    run.tokenizer = load_tokenizer(tok_path);
    json cfg = t["random"];
    const std::string arch = cfg.value("flavour", std::string("bert"));
    cfg["vocab_size"] = run.tokenizer->vocab_size();
    Generator gen(stage_seed(run, "text/init"));
    run.text = models::make_text_encoder(arch, cfg, "text.random", &gen);
  } else {
    const std::string path = t["checkpoint"].get<std::string>();
    DISTILL_CHECK(!path.empty(), "config: text.checkpoint (or text.random) is required");
    run.text = models::open_text_encoder(path);
    run.tokenizer = load_tokenizer(tok_path, run.text->max_length());
  }
  run.text->eval();
  run.text->to(run.device);
  const std::vector<std::string> templates =
      data::load_templates(run.config["data"]["templates"].get<std::string>());
  run.class_queries = class_text_embeddings(*run.text, *run.tokenizer, run.class_names, templates);
  if (!run.evaluate_only && dist::is_primary())
    save_npy((run.dir / "class_queries.npy").string(), run.class_queries);
}

void stage_head(Run& run) {
  const std::string stage = named(run, "head");
  load_text_queries(run);
  models::HeadConfig hc =
      models::head_config_from_json(run.config["head"]["config"], "head.config");
  hc.query_dim = run.class_queries.size(1);
  hc.token_dim = run.teacher->token_dim();
  hc.num_classes = run.num_classes;
  Generator gen(stage_seed(run, "head/init"));
  run.head = std::make_shared<models::ImageTextHead>(hc, &gen);
  run.head->to(run.device);
  if (load_finished(run, stage, *run.head)) {
    reevaluate(run, stage, [&](const data::Batch& b) {
      return run.head->forward(run.teacher->encode(b.images).tokens, run.class_queries);
    });
    return;
  }
  const auto t0 = std::chrono::steady_clock::now();
  const json seen = train_stage(
      run, stage, *run.head, run.config["head"], run.config["head"]["epochs"].get<int64_t>(),
      Split::labelled, [&](const data::Batch& b) {
        return cross_entropy(run.head->forward(teacher_tokens(run, b), run.class_queries),
                             b.labels);
      });
  finish_stage(run, stage, *run.head,
               evaluate(run,
                        [&](const data::Batch& b) {
                          return run.head->forward(run.teacher->encode(b.images).tokens,
                                                   run.class_queries);
                        }),
               seconds_since(t0), seen);
}

// Cached teacher targets (student.targets = "cached"): the teacher's logits for every training
// image of the run, on the un-augmented image, computed once. Kept in <run>/<stage>.targets.npy
// with the sample ids in <stage>.target_ids.npy, so a resumed run reads them back.
struct CachedTargets {
  Tensor logits;                             // [N, C] on the run's device
  std::unordered_map<int64_t, int64_t> row;  // sample id -> row of `logits`
  std::string source;                        // "computed" or "loaded"
};

CachedTargets cache_targets(Run& run, const std::string& stage, const LogitsFn& teacher_logits) {
  const fs::path logits_file = run.dir / (stage + ".targets.npy");
  const fs::path ids_file = run.dir / (stage + ".target_ids.npy");
  CachedTargets c;
  Tensor ids;
  if (fs::exists(logits_file) && fs::exists(ids_file)) {
    c.logits = load_npy(logits_file.string());
    ids = load_npy(ids_file.string());
    c.source = "loaded";
  } else {
    // Multi-process: each rank computes the targets of its share of the images, then every rank
    // gathers all of them (its batches in later epochs may hold any image).
    auto loader = make_loader(run, Split::train, 0, /*augment=*/false, /*shard=*/true);
    std::vector<Tensor> rows;
    std::vector<int64_t> id_list;
    for_each_batch(run, *loader, [&](const data::Batch& host, const data::Batch& dev) {
      rows.push_back(to_device(to_dtype(teacher_logits(dev), DType::F32), Device::cpu()));
      id_list.insert(id_list.end(), host.ids.begin(), host.ids.end());
    });
    if (dist::distributed()) {
      std::vector<float> local;
      for (const Tensor& r : rows) {
        const Tensor rc = r.contiguous();
        local.insert(local.end(), rc.data<float>(), rc.data<float>() + rc.numel());
      }
      const std::vector<float> all = dist::all_gather(local);
      id_list = dist::all_gather(id_list);
      c.logits = Tensor::from_vector(all, {static_cast<int64_t>(id_list.size()), run.num_classes});
    } else {
      c.logits = concat(rows, 0).contiguous();
    }
    ids = Tensor::from_vector(id_list, {static_cast<int64_t>(id_list.size())});
    if (dist::is_primary()) {
      // The ids go first: a logits file (save_npy renames it into place) marks a complete cache.
      save_npy(ids_file.string(), ids);
      save_npy(logits_file.string(), c.logits);
    }
    dist::barrier();
    c.source = "computed";
  }
  DISTILL_CHECK(ids.dim() == 1 && c.logits.dim() == 2 && ids.size(0) == c.logits.size(0) &&
                    c.logits.size(1) == run.num_classes,
                logits_file.string(), ": cached targets do not match this run (", ids.size(0),
                " ids, logits ", c.logits.size(0), "x", c.logits.size(1), ")");
  const Tensor ids64 = to_dtype(ids, DType::I64).contiguous();
  for (int64_t i = 0; i < ids64.size(0); ++i) c.row[ids64.data<int64_t>()[i]] = i;
  c.logits = to_device(c.logits, run.device);
  run.log->write({{"stage", stage}, {"targets", c.source}, {"images", c.logits.size(0)}});
  return c;
}

// Stage 2: a fresh encoder of the teacher's architecture plus a classifier; `teacher_logits`
// null means labels only. Distilled students read every training image of the run (unlabelled
// when alpha = 1); the labels-only student reads the labelled images.
std::shared_ptr<models::EncoderClassifier> stage_student(Run& run, const std::string& stage,
                                                         const LogitsFn& teacher_logits) {
  Generator gen(stage_seed(run, "student/init"));  // the same initial student for every variant
  auto encoder = models::make_image_encoder(run.teacher_config, "student", &gen);
  auto student = std::make_shared<models::EncoderClassifier>(encoder, run.num_classes, &gen);
  student->to(run.device);
  run.students[stage] = student;
  if (load_finished(run, stage, *student)) {
    reevaluate(run, stage, [&](const data::Batch& b) { return student->forward(b.images); });
    return student;
  }
  const json& cfg = run.config["student"];
  DistillationOptions opts;
  opts.alpha = teacher_logits ? cfg["alpha"].get<double>() : 0.0;
  opts.temperature = cfg["tau"].get<double>();
  const auto t0 = std::chrono::steady_clock::now();
  json extra = {{"targets", "online"}};
  CachedTargets cached;
  if (teacher_logits && cfg["targets"] == "cached") {
    cached = cache_targets(run, stage, teacher_logits);
    extra = {{"targets", "cached"}, {"targets_source", cached.source}};
  }
  const json seen = train_stage(
      run, stage, *student, cfg, cfg["epochs"].get<int64_t>(),
      teacher_logits ? Split::train : Split::labelled, [&](const data::Batch& b) {
        Tensor target;
        if (cached.logits.defined()) {
          std::vector<int64_t> rows;
          for (int64_t id : b.ids) {
            const auto it = cached.row.find(id);
            DISTILL_CHECK(it != cached.row.end(), stage, ": no cached teacher target for sample ",
                          id);
            rows.push_back(it->second);
          }
          const Tensor index = Tensor::from_vector(rows, {static_cast<int64_t>(rows.size())});
          target = index_select(cached.logits, 0, to_device(index, run.device));
        } else if (teacher_logits) {
          NoGradGuard no_grad;
          target = teacher_logits(b).detach();
        }
        // Pure distillation reads no label at all (the few-shot students' images are unlabelled).
        const Tensor labels = opts.alpha == 1.0 ? Tensor() : b.labels;
        return distillation_loss(student->forward(b.images), target, labels, opts).total;
      });
  extra.update(seen);
  finish_stage(run, stage, *student,
               evaluate(run, [&](const data::Batch& b) { return student->forward(b.images); }),
               seconds_since(t0), extra);
  return student;
}

// Born-Again generations: student g+1 is distilled from student g (generation 1 = student_text),
// same architecture, initialisation, loss and schedule.
void stage_generations(Run& run) {
  const int64_t generations = run.config["ablations"]["generations"].get<int64_t>();
  auto previous = run.students.at("student_text");
  for (int64_t g = 2; g <= generations; ++g) {
    auto teacher = previous;
    previous =
        stage_student(run, "student_text@g" + std::to_string(g),
                      [teacher](const data::Batch& b) { return teacher->forward(b.images); });
  }
}

// The labelled images of a k-shot run: k per class from the run's training images, by a
// seeded per-class order that does not depend on k (the 4-shot set holds the 2-shot set).
std::vector<int64_t> labelled_images(const Run& run, int64_t k) {
  const uint64_t seed = static_cast<uint64_t>(run.config["seed"].get<int64_t>()) + 2;
  if (run.train_subset.empty()) return data::few_shot_indices(*run.train_set, k, seed);
  std::vector<int64_t> labels;
  for (int64_t i : run.train_subset) labels.push_back(run.train_set->label(i));
  std::vector<int64_t> picked;
  for (int64_t p : data::few_shot_indices(labels, run.num_classes, k, seed))
    picked.push_back(run.train_subset[static_cast<size_t>(p)]);
  std::sort(picked.begin(), picked.end());
  return picked;
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

// The teacher-side and student stages the config asks for, under the run's current few-shot
// setting and stage-name suffix.
void run_labelled_pipeline(Run& run, const std::set<std::string>& stages) {
  auto wants = [&](const char* s) { return stages.count(s) > 0; };
  if (!run.teacher) stage_teacher(run);
  if (wants("probe") || wants("student_notext")) stage_probe(run);
  if (wants("head") || wants("student_text")) stage_head(run);
  if (wants("student_text"))
    stage_student(run, named(run, "student_text"), [&](const data::Batch& b) {
      return run.head->forward(run.teacher->encode(b.images).tokens, run.class_queries);
    });
  if (wants("student_notext"))
    stage_student(run, named(run, "student_notext"), [&](const data::Batch& b) {
      return run.probe->forward(run.teacher->encode(b.images).pooled);
    });
  if (wants("student_labels")) stage_student(run, named(run, "student_labels"), nullptr);
}

// ablations.few_shot: one full sub-run of the labelled stages per k (stage names "<stage>@k<k>";
// a stage-0 teacher is retrained on the k-shot labels too), then the main run's state back.
void few_shot_sweep(Run& run, const std::set<std::string>& stages) {
  const auto teacher = run.teacher;
  const json teacher_config = run.teacher_config;
  const std::string teacher_origin = run.teacher_origin;
  const auto probe = run.probe;
  const auto head = run.head;
  const int64_t labelled_per_class = run.labelled_per_class;
  const std::vector<int64_t> labelled_subset = run.labelled_subset;
  for (const auto& kj : run.config["ablations"]["few_shot"]) {
    const int64_t k = kj.get<int64_t>();
    run.suffix = "@k" + std::to_string(k);
    run.labelled_per_class = k;
    run.labelled_subset = labelled_images(run, k);
    if (teacher_origin == "stage0") run.teacher.reset();
    run.probe.reset();
    run.head.reset();
    run_labelled_pipeline(run, stages);
  }
  run.suffix.clear();
  run.teacher = teacher;
  run.teacher_config = teacher_config;
  run.teacher_origin = teacher_origin;
  run.probe = probe;
  run.head = head;
  run.labelled_per_class = labelled_per_class;
  run.labelled_subset = labelled_subset;
}

// ---- image-text retrieval ablation

Tensor normalise_rows(const Tensor& x) {
  return div(x, add(sqrt(sum(mul(x, x), {1}, /*keepdim=*/true)), 1e-12));
}

// Pooled text embeddings of `texts`, L2-normalised: [K, d_T] F32 on the CPU.
Tensor encode_texts(Run& run, const std::vector<std::string>& texts) {
  NoGradGuard no_grad;
  std::vector<Tensor> out;
  for (size_t start = 0; start < texts.size(); start += 64) {
    const size_t end = std::min(texts.size(), start + 64);
    const TokenBatch t = run.tokenizer->encode_batch(
        std::vector<std::string>(texts.begin() + start, texts.begin() + end));
    const Tensor pooled =
        run.text->encode(to_device(t.ids, run.device), to_device(t.attention_mask, run.device))
            .pooled;
    out.push_back(to_device(to_dtype(pooled, DType::F32), Device::cpu()));
  }
  return normalise_rows(concat(out, 0)).contiguous();
}

// Pooled embeddings of every image a loader reads, one [N, d] F32 CPU tensor per encoder.
std::vector<Tensor> pooled_embeddings(Run& run, data::DataLoader& loader,
                                      const std::vector<models::ImageEncoder*>& encoders) {
  std::vector<std::vector<Tensor>> parts(encoders.size());
  for_each_batch(run, loader, [&](const data::Batch&, const data::Batch& dev) {
    for (size_t e = 0; e < encoders.size(); ++e)
      parts[e].push_back(
          to_device(to_dtype(encoders[e]->encode(dev.images).pooled, DType::F32), Device::cpu()));
  });
  std::vector<Tensor> out;
  for (const auto& p : parts) out.push_back(concat(p, 0).contiguous());
  return out;
}

Tensor with_bias_column(const Tensor& x) {
  return concat({x, ones({x.size(0), 1}, TensorOptions(x.dtype(), x.device()))}, 1);
}

// W [(d+1), e] minimising |[x 1] W - y|^2 + lambda |W|^2 (lambda = ridge * mean diagonal of the
// normal matrix: a small relative ridge, so fewer images than dimensions still solve), by
// Cholesky in double precision.
Tensor fit_linear_map(const Tensor& x, const Tensor& y, double ridge) {
  const Tensor xa = with_bias_column(to_dtype(x, DType::F64));
  const Tensor xt = transpose(xa, 0, 1);
  const Tensor a_t = matmul(xt, xa).contiguous();
  const Tensor b_t = matmul(xt, to_dtype(y, DType::F64)).contiguous();
  const int64_t d = a_t.size(0), e = b_t.size(1);
  std::vector<double> a(a_t.data<double>(), a_t.data<double>() + d * d);
  const double* b = b_t.data<double>();
  double trace = 0;
  for (int64_t i = 0; i < d; ++i) trace += a[static_cast<size_t>(i * d + i)];
  const double lambda = ridge * trace / static_cast<double>(d) + 1e-12;
  for (int64_t i = 0; i < d; ++i) a[static_cast<size_t>(i * d + i)] += lambda;
  auto at = [&](std::vector<double>& m, int64_t i, int64_t j) -> double& {
    return m[static_cast<size_t>(i * d + j)];
  };
  std::vector<double> l(static_cast<size_t>(d * d), 0.0);
  for (int64_t j = 0; j < d; ++j) {
    double s = at(a, j, j);
    for (int64_t k = 0; k < j; ++k) s -= at(l, j, k) * at(l, j, k);
    DISTILL_CHECK(s > 0, "retrieval: the least-squares system is not positive definite");
    at(l, j, j) = std::sqrt(s);
    for (int64_t i = j + 1; i < d; ++i) {
      double t = at(a, i, j);
      for (int64_t k = 0; k < j; ++k) t -= at(l, i, k) * at(l, j, k);
      at(l, i, j) = t / at(l, j, j);
    }
  }
  std::vector<double> w(static_cast<size_t>(d * e)), z(static_cast<size_t>(d));
  for (int64_t c = 0; c < e; ++c) {
    for (int64_t i = 0; i < d; ++i) {
      double s = b[i * e + c];
      for (int64_t k = 0; k < i; ++k) s -= at(l, i, k) * z[static_cast<size_t>(k)];
      z[static_cast<size_t>(i)] = s / at(l, i, i);
    }
    for (int64_t i = d - 1; i >= 0; --i) {
      double s = z[static_cast<size_t>(i)];
      for (int64_t k = i + 1; k < d; ++k) s -= at(l, k, i) * w[static_cast<size_t>(k * e + c)];
      w[static_cast<size_t>(i * e + c)] = s / at(l, i, i);
    }
  }
  return to_dtype(Tensor::from_vector(w, {d, e}), DType::F32);
}

// Recall@1/5/10 both ways. image_emb [M, d] and text_emb [K, d] L2-normalised; caption j belongs
// to image owner[j]. An image is found at k when one of its captions ranks in the top k; ties
// count in the query's favour.
json retrieval_recall(const Tensor& image_emb, const Tensor& text_emb,
                      const std::vector<int64_t>& owner) {
  const Tensor sim_t = matmul(image_emb, transpose(text_emb, 0, 1)).contiguous();
  const float* sim = sim_t.data<float>();
  const int64_t m = sim_t.size(0), k_count = sim_t.size(1);
  std::vector<int64_t> image_rank(static_cast<size_t>(m)), text_rank(static_cast<size_t>(k_count));
  for (int64_t i = 0; i < m; ++i) {
    float best = -2;
    for (int64_t j = 0; j < k_count; ++j)
      if (owner[static_cast<size_t>(j)] == i) best = std::max(best, sim[i * k_count + j]);
    int64_t rank = 0;
    for (int64_t j = 0; j < k_count; ++j) rank += sim[i * k_count + j] > best;
    image_rank[static_cast<size_t>(i)] = rank;
  }
  for (int64_t j = 0; j < k_count; ++j) {
    const float own = sim[owner[static_cast<size_t>(j)] * k_count + j];
    int64_t rank = 0;
    for (int64_t i = 0; i < m; ++i) rank += sim[i * k_count + j] > own;
    text_rank[static_cast<size_t>(j)] = rank;
  }
  auto recall = [](const std::vector<int64_t>& ranks, int64_t k) {
    int64_t hits = 0;
    for (int64_t r : ranks) hits += r < k;
    return ranks.empty() ? 0.0 : static_cast<double>(hits) / static_cast<double>(ranks.size());
  };
  json out;
  for (const auto& [name, k] : {std::pair<const char*, int64_t>{"r1", 1}, {"r5", 5}, {"r10", 10}}) {
    out["image_to_text"][name] = recall(image_rank, k);
    out["text_to_image"][name] = recall(text_rank, k);
  }
  return out;
}

// Stage "retrieval": each student's pooled embedding is mapped linearly (least squares on the
// run's un-augmented training images) onto the teacher's image embedding, then ranked against
// the caption embeddings of data.captions. The teacher's own embedding is the reference row.
// The numbers mean something only when the teacher and text towers share one space (CLIP).
void stage_retrieval(Run& run) {
  load_text_queries(run);
  const auto t0 = std::chrono::steady_clock::now();
  const std::string path = run.config["data"]["captions"].get<std::string>();
  json result = {
      {"captions", path},
      {"shared_space", run.text->arch() == "clip-text" && run.teacher_origin != "stage0"}};
  if (run.teacher->embed_dim() != run.text->embed_dim()) {
    result["skipped"] = "the teacher's image embedding (" +
                        std::to_string(run.teacher->embed_dim()) + ") and the text embedding (" +
                        std::to_string(run.text->embed_dim()) + ") differ in width";
    run.summary["stages"]["retrieval"] = result;
    run.write_summary();
    return;
  }
  auto captions = std::make_shared<data::CaptionDataset>(path);
  std::vector<std::string> texts;
  std::vector<int64_t> owner;
  for (int64_t i = 0; i < captions->size(); ++i)
    for (const auto& c : captions->captions(i)) {
      texts.push_back(c);
      owner.push_back(i);
    }
  const Tensor text_emb = encode_texts(run, texts);

  std::vector<std::string> names = {"teacher"};
  std::vector<models::ImageEncoder*> encoders = {run.teacher.get()};
  for (const auto& [stage, student] : run.students) {
    if (stage.find('@') != std::string::npos) continue;  // ablation sub-runs and generations
    names.push_back(stage);
    encoders.push_back(student->encoder.get());
  }
  auto train_loader = make_loader(run, Split::train, 0, /*augment=*/false);
  const std::vector<Tensor> fit = pooled_embeddings(run, *train_loader, encoders);
  data::LoaderOptions o;
  o.batch_size = run.config["data"]["eval_batch_size"].get<int64_t>();
  o.workers = run.config["data"]["workers"].get<int>();
  o.shuffle = false;
  data::DataLoader caption_loader(captions, std::make_shared<data::ClipPreprocess>(run.image_size),
                                  o);
  const std::vector<Tensor> images = pooled_embeddings(run, caption_loader, encoders);

  result["images"] = captions->size();
  result["texts"] = static_cast<int64_t>(texts.size());
  result["fit_images"] = fit[0].size(0);
  result["recall"]["teacher"] = retrieval_recall(normalise_rows(images[0]), text_emb, owner);
  const double ridge = run.config["retrieval"]["ridge"].get<double>();
  for (size_t s = 1; s < encoders.size(); ++s) {
    const Tensor w = fit_linear_map(fit[s], fit[0], ridge);
    const Tensor mapped = matmul(with_bias_column(images[s]), w);
    result["recall"][names[s]] = retrieval_recall(normalise_rows(mapped), text_emb, owner);
  }
  result["seconds"] = seconds_since(t0);
  run.summary["stages"]["retrieval"] = result;
  run.log->write({{"stage", "retrieval"}, {"recall", result["recall"]}});
  run.write_summary();
}

// ---- caption-query ablation

// The key a caption file names a training image by: a WebDataset sample's key, else the file
// name without its extension.
std::string sample_key(const data::Dataset& dataset, int64_t i) {
  if (const auto* wds = dynamic_cast<const data::WebDataset*>(&dataset)) return wds->key(i);
  return fs::path(dataset.describe(i)).stem().string();
}

// data.train_captions (key<TAB>caption, the key a training image's file name with or without
// its extension) -> the first caption of each key. A key may recur; later captions are ignored.
std::unordered_map<std::string, std::string> read_train_captions(const std::string& path) {
  std::ifstream in(path);
  DISTILL_CHECK(in.good(), path, ": cannot open caption file (data.train_captions)");
  std::unordered_map<std::string, std::string> out;
  std::string line;
  for (int64_t line_no = 1; std::getline(in, line); ++line_no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const size_t tab = line.find('\t');
    DISTILL_CHECK(tab != std::string::npos, path, ":", line_no, ": expected key<TAB>caption");
    const std::string key = fs::path(line.substr(0, tab)).stem().string();
    if (line_no == 1 && (key == "image" || key == "file" || key == "filename" || key == "key"))
      continue;  // header
    out.emplace(key, line.substr(tab + 1));
  }
  return out;
}

// Stage "head_captions": the head trained in caption mode, its queries the token features of
// each labelled training image's own caption (images without a caption are left out). Test
// images have no captions, so it is evaluated with each class's prompt (the first template) as
// the caption: the score of class c is logit c given class c's prompt.
void stage_head_captions(Run& run) {
  const std::string stage = "head_captions";
  load_text_queries(run);
  const std::string path = run.config["data"]["train_captions"].get<std::string>();
  const auto captions = read_train_captions(path);
  std::vector<int64_t> base = run.labelled_per_class > 0 ? run.labelled_subset : run.train_subset;
  if (base.empty())
    for (int64_t i = 0; i < run.train_set->size(); ++i) base.push_back(i);
  std::vector<int64_t> captioned;
  std::vector<std::string> texts;
  std::unordered_map<int64_t, int64_t> row;  // sample id (dataset index) -> caption row
  for (int64_t i : base) {
    const auto it = captions.find(sample_key(*run.train_set, i));
    if (it == captions.end()) continue;
    row[i] = static_cast<int64_t>(texts.size());
    captioned.push_back(i);
    texts.push_back(it->second);
  }
  DISTILL_CHECK(!captioned.empty(), path,
                ": no caption matches a training image of the run "
                "(keys are the images' file names, e.g. '",
                sample_key(*run.train_set, base[0]), "')");
  const TokenBatch caption_ids = run.tokenizer->encode_batch(texts);
  std::vector<std::string> prompts;
  const auto templates = data::load_templates(run.config["data"]["templates"].get<std::string>());
  for (const auto& name : run.class_names)
    prompts.push_back(data::fill_template(templates[0], name));
  const TokenBatch prompt_ids = run.tokenizer->encode_batch(prompts);
  auto text_tokens = [&](const Tensor& ids, const Tensor& mask) {
    NoGradGuard no_grad;
    return run.text->encode(to_device(ids, run.device), to_device(mask, run.device))
        .tokens.detach();
  };
  const Tensor prompt_tokens = text_tokens(prompt_ids.ids, prompt_ids.attention_mask);
  const Tensor prompt_mask = to_device(to_dtype(prompt_ids.attention_mask, DType::F32), run.device);

  models::HeadConfig hc =
      models::head_config_from_json(run.config["head"]["config"], "head.config");
  hc.query_dim = prompt_tokens.size(2);
  hc.token_dim = run.teacher->token_dim();
  hc.num_classes = run.num_classes;
  Generator gen(stage_seed(run, "head/init"));
  auto head = std::make_shared<models::ImageTextHead>(hc, &gen);
  head->to(run.device);
  if (load_finished(run, stage, *head)) return;
  const auto t0 = std::chrono::steady_clock::now();
  run.captioned_subset = captioned;
  json seen = train_stage(
      run, stage, *head, run.config["head"], run.config["head"]["epochs"].get<int64_t>(),
      Split::captioned, [&](const data::Batch& b) {
        std::vector<int64_t> rows;
        for (int64_t id : b.ids) rows.push_back(row.at(id));
        const Tensor index = Tensor::from_vector(rows, {static_cast<int64_t>(rows.size())});
        const Tensor mask = index_select(caption_ids.attention_mask, 0, index);
        const Tensor tokens = text_tokens(index_select(caption_ids.ids, 0, index), mask);
        return cross_entropy(
            head->forward_captions(teacher_tokens(run, b), tokens,
                                   to_device(to_dtype(mask, DType::F32), run.device)),
            b.labels);
      });
  seen["captioned_images"] = static_cast<int64_t>(captioned.size());
  seen["evaluated_with"] = "class prompts as captions";
  finish_stage(
      run, stage, *head,
      evaluate(run,
               [&](const data::Batch& b) {
                 const Tensor tokens = run.teacher->encode(b.images).tokens;
                 const int64_t n = tokens.size(0);
                 std::vector<Tensor> columns;
                 for (int64_t c = 0; c < run.num_classes; ++c) {
                   const Tensor pick =
                       to_device(Tensor::from_vector(std::vector<int64_t>(n, c), {n}), run.device);
                   const Tensor logits =
                       head->forward_captions(tokens, index_select(prompt_tokens, 0, pick),
                                              index_select(prompt_mask, 0, pick));
                   columns.push_back(index_select(
                       logits, 1,
                       to_device(Tensor::from_vector(std::vector<int64_t>{c}, {1}), run.device)));
                 }
                 return concat(columns, 1);
               }),
      seconds_since(t0), seen);
}

// ---- the report

std::string pct(const json& stages, const std::string& stage, const char* key = "top1") {
  if (!stages.contains(stage) || !stages[stage].contains(key)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", 100.0 * stages[stage][key].get<double>());
  return buf;
}

double top1_or_nan(const json& stages, const std::string& stage) {
  if (!stages.contains(stage) || !stages[stage].contains("top1")) return std::nan("");
  return stages[stage]["top1"].get<double>();
}

json number_or_null(double x) {
  return std::isnan(x) ? json(nullptr) : json(x);
}

// The ablation numbers gathered from the stages that ran (summary["ablations"]): null where a
// stage did not run.
json ablation_summary(const Run& run) {
  const json& s = run.summary["stages"];
  const json& c = run.config;
  json out;
  auto few_shot_row = [&](int64_t k, const std::string& suffix) {
    json row = {{"k", k}};
    for (const char* stage :
         {"teacher", "probe", "head", "student_text", "student_notext", "student_labels"})
      row[stage] = number_or_null(top1_or_nan(s, stage + suffix));
    for (const char* stage : {"teacher", "probe", "head"})
      if (s.contains(stage + suffix) && s[stage + suffix].contains("train_images")) {
        row["labelled_images"] = s[stage + suffix]["train_images"];
        break;
      }
    return row;
  };
  out["few_shot"] = json::array();
  if (const int64_t k = c["data"]["labelled_per_class"].get<int64_t>(); k > 0)
    out["few_shot"].push_back(few_shot_row(k, ""));
  for (const auto& k : c["ablations"]["few_shot"])
    out["few_shot"].push_back(
        few_shot_row(k.get<int64_t>(), "@k" + std::to_string(k.get<int64_t>())));
  out["generations"] = json::array();
  const int64_t generations = c["ablations"]["generations"].get<int64_t>();
  for (int64_t g = 1; g <= generations && generations >= 2; ++g) {
    const std::string stage = g == 1 ? "student_text" : "student_text@g" + std::to_string(g);
    out["generations"].push_back(
        {{"generation", g}, {"stage", stage}, {"top1", number_or_null(top1_or_nan(s, stage))}});
  }
  out["captions"] = {{"head_class_queries", number_or_null(top1_or_nan(s, "head"))},
                     {"head_captions", number_or_null(top1_or_nan(s, "head_captions"))}};
  out["retrieval"] = s.contains("retrieval") ? s["retrieval"] : json(nullptr);
  return out;
}

std::string pct_value(const json& v) {
  if (!v.is_number()) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", 100.0 * v.get<double>());
  return buf;
}

std::string ablation_report(const json& a) {
  std::string r = "## Ablations\n\n'-': not run.\n\n";
  r += "### Few-shot\n\nThe teacher side (stage-0 teacher, linear probe, head, labels-only "
       "student) sees k labelled images per class; the distilled students train on every "
       "training image of the run, unlabelled.\n\n";
  r += "| k | Labelled images | Teacher (stage 0) | Linear probe | Head | Self-distillation with "
       "text | Self-distillation without text | Student, labels only |\n";
  r += "|---|---|---|---|---|---|---|---|\n";
  if (a["few_shot"].empty()) r += "| - | - | - | - | - | - | - | - |\n";
  for (const auto& row : a["few_shot"])
    r += "| " + std::to_string(row["k"].get<int64_t>()) + " | " +
         (row.contains("labelled_images") ? row["labelled_images"].dump() : "-") + " | " +
         pct_value(row["teacher"]) + " | " + pct_value(row["probe"]) + " | " +
         pct_value(row["head"]) + " | " + pct_value(row["student_text"]) + " | " +
         pct_value(row["student_notext"]) + " | " + pct_value(row["student_labels"]) + " |\n";
  r += "\n### Repeated generations\n\nBorn-Again: student g+1 is distilled from student g "
       "(generation 1 is the student distilled from the head).\n\n| Generation | Stage | Top-1 "
       "|\n|---|---|---|\n";
  if (a["generations"].empty()) r += "| - | - | - |\n";
  for (const auto& row : a["generations"])
    r += "| " + std::to_string(row["generation"].get<int64_t>()) + " | " +
         row["stage"].get<std::string>() + " | " + pct_value(row["top1"]) + " |\n";
  r += "\n### Caption queries\n\nThe head trained on each image's own caption instead of the "
       "class prompts. Test images have no captions, so both heads are evaluated with class "
       "prompts as the queries (for the caption head, each class prompt is the caption; its "
       "score for that class is the class's logit).\n\n| Head training queries | Top-1 "
       "|\n|---|---|\n";
  r += "| class prompts (head) | " + pct_value(a["captions"]["head_class_queries"]) + " |\n";
  r += "| image captions (head_captions) | " + pct_value(a["captions"]["head_captions"]) + " |\n";
  r += "\n### Image-text retrieval\n\nA linear map (least squares) from each student's pooled "
       "embedding to the teacher's image embedding, then recall@k (%) against the caption "
       "embeddings.\n\n";
  const json& ret = a["retrieval"];
  if (ret.is_object() && ret.contains("skipped")) {
    r += "Skipped: " + ret["skipped"].get<std::string>() + ".\n";
  } else {
    r += "| Image embedding | Image->text R@1 | R@5 | R@10 | Text->image R@1 | R@5 | R@10 "
         "|\n|---|---|---|---|---|---|---|\n";
    if (!ret.is_object()) r += "| - | - | - | - | - | - | - |\n";
    if (ret.is_object())
      for (const auto& [name, rec] : ret["recall"].items()) {
        r += "| " + name;
        for (const char* dir : {"image_to_text", "text_to_image"})
          for (const char* k : {"r1", "r5", "r10"}) r += " | " + pct_value(rec[dir][k]);
        r += " |\n";
      }
    if (ret.is_object())
      r += "\n" + std::to_string(ret["images"].get<int64_t>()) + " images, " +
           std::to_string(ret["texts"].get<int64_t>()) + " captions (" +
           ret["captions"].get<std::string>() + "); map fitted on " +
           std::to_string(ret["fit_images"].get<int64_t>()) + " training images." +
           (ret["shared_space"].get<bool>()
                ? ""
                : " The teacher and text towers do not share a pretrained embedding space here, "
                  "so these numbers test the pipeline, not the method.") +
           "\n";
  }
  return r + "\n";
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
  std::vector<std::string> order = kAllStages;  // then the ablations' sub-run stages
  for (const auto& [stage, result] : s.items())
    if (std::find(kAllStages.begin(), kAllStages.end(), stage) == kAllStages.end())
      order.push_back(stage);
  for (const auto& stage : order) {
    if (!s.contains(stage)) continue;
    char secs[32] = "-";
    if (s[stage].contains("seconds"))
      std::snprintf(secs, sizeof secs, "%.1f", s[stage]["seconds"].get<double>());
    r += "| " + stage + " | " + pct(s, stage) + " | " + pct(s, stage, "top5") + " | " + secs +
         " |\n";
  }
  r += "\n" + ablation_report(run.summary["ablations"]);
  r += "## Config\n\n```json\n" + c.dump(2) + "\n```\n";
  write_file_atomically((run.dir / "report.md").string(), r);
}

}  // namespace

namespace {
// A JSON file the run folder holds (hand edits and torn copies happen): errors name the file.
json read_run_json(const fs::path& path) {
  std::ifstream in(path);
  DISTILL_CHECK(in.good(), path.string(), ": cannot open");
  try {
    return json::parse(in);
  } catch (const std::exception& e) {
    fail(path.string(), " is not valid JSON (", e.what(), "); fix or remove the run folder");
  }
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
  if (!pretrained) {  // the arch's own checks now, not when stage 0 starts
    const json& arch = c["teacher"]["arch"];
    const std::string arch_where = where + ": teacher.arch";
    const json type = arch.value("type", json());
    if (type == "vit")
      models::vit_config_from_json(arch, arch_where);
    else if (type == "resnet")
      models::resnet_config_from_json(arch, arch_where);
    else
      fail(arch_where, ": \"type\" must be \"vit\" or \"resnet\", got ", type.dump());
  }
  DISTILL_CHECK(c["precision"] == "f32" || c["precision"] == "bf16", where,
                ": precision must be \"f32\" or \"bf16\", got ", c["precision"].dump());
  DISTILL_CHECK(c["device"] == "cpu" || c["device"] == "cuda", where,
                ": device must be \"cpu\" or \"cuda\", got ", c["device"].dump());
  DISTILL_CHECK(c["text"]["random"].is_null() || c["text"]["random"].is_object(), where,
                ": text.random must be a text encoder config (a JSON object) or null");
  // Counts and sizes the loops divide by or count down: a zero batch size would divide by zero.
  const auto at_least = [&](const json& v, const std::string& field, int64_t min) {
    DISTILL_CHECK(v.get<int64_t>() >= min, where, ": ", field, " must be >= ", min, ", got ",
                  v.dump());
  };
  at_least(c["seed"], "seed", 0);
  at_least(c["checkpoint_every"], "checkpoint_every", 0);
  at_least(c["log_every"], "log_every", 0);
  at_least(c["data"]["workers"], "data.workers", 1);
  at_least(c["data"]["batch_size"], "data.batch_size", 1);
  at_least(c["data"]["eval_batch_size"], "data.eval_batch_size", 1);
  at_least(c["data"]["test_per_class"], "data.test_per_class", 0);
  at_least(c["probe"]["batch_size"], "probe.batch_size", 1);
  for (const char* stage : {"stage0", "probe", "head", "student"})
    at_least(c[stage]["epochs"], std::string(stage) + ".epochs", 1);
  const json& augment = c["data"]["augment"];
  const double scale_min = augment["scale_min"].get<double>();
  const double scale_max = augment["scale_max"].get<double>();
  const double flip = augment["flip_probability"].get<double>();
  DISTILL_CHECK(scale_min > 0 && scale_min <= scale_max && scale_max <= 1, where,
                ": data.augment needs 0 < scale_min <= scale_max <= 1, got ", scale_min, " and ",
                scale_max);
  DISTILL_CHECK(flip >= 0 && flip <= 1, where,
                ": data.augment.flip_probability must be in [0, 1], got ", flip);
  const double alpha = c["student"]["alpha"].get<double>();
  DISTILL_CHECK(alpha >= 0 && alpha <= 1, where, ": student.alpha must be in [0, 1]");
  DISTILL_CHECK(c["student"]["tau"].get<double>() > 0, where, ": student.tau must be > 0");
  // Parse the nested optimizer/schedule/head blocks now so a typo fails before any training.
  for (const char* stage : {"stage0", "probe", "head", "student"}) {
    optimizer_config_from_json(c[stage]["optimizer"], where + ": " + stage + ".optimizer");
    stage_schedule(c[stage]["schedule"], 1000, where + ": " + stage + ".schedule");
  }
  models::head_config_from_json(c["head"]["config"], where + ": head.config");

  // Ablations.
  const json& d = c["data"];
  auto count_field = [&](const json& v, const std::string& field, int64_t min) {
    DISTILL_CHECK(v.is_number_integer() && v.get<int64_t>() >= min, where, ": ", field,
                  " must be an integer >= ", min, ", got ", v.dump());
    return v.get<int64_t>();
  };
  const int64_t per_class = count_field(d["train_per_class"], "data.train_per_class", 0);
  const int64_t labelled = count_field(d["labelled_per_class"], "data.labelled_per_class", 0);
  DISTILL_CHECK(per_class == 0 || labelled <= per_class, where, ": data.labelled_per_class (",
                labelled, ") exceeds data.train_per_class (", per_class, ")");
  const json& few_shot = c["ablations"]["few_shot"];
  DISTILL_CHECK(few_shot.is_array(), where, ": ablations.few_shot must be a list of k values");
  std::set<int64_t> ks;
  for (const auto& k : few_shot) {
    const int64_t v = count_field(k, "ablations.few_shot", 1);
    DISTILL_CHECK(per_class == 0 || v <= per_class, where, ": ablations.few_shot k = ", v,
                  " exceeds data.train_per_class (", per_class, ")");
    DISTILL_CHECK(ks.insert(v).second, where, ": ablations.few_shot repeats k = ", v);
  }
  DISTILL_CHECK(alpha == 1.0 || (labelled == 0 && few_shot.empty()), where,
                ": student.alpha must be 1 with few-shot (data.labelled_per_class or "
                "ablations.few_shot): the distilled students' images are unlabelled");
  count_field(c["ablations"]["generations"], "ablations.generations", 0);
  DISTILL_CHECK(c["student"]["targets"] == "online" || c["student"]["targets"] == "cached", where,
                ": student.targets must be \"online\" or \"cached\", got ",
                c["student"]["targets"].dump());
  const double ridge =
      c["retrieval"]["ridge"].is_number() ? c["retrieval"]["ridge"].get<double>() : -1;
  DISTILL_CHECK(ridge >= 0, where, ": retrieval.ridge must be a number >= 0");
  for (const char* field : {"captions", "train_captions"})
    DISTILL_CHECK(d[field].is_string(), where, ": data.", field, " must be a path string");
  data_parallel_config_from_json(c["distributed"], where + ": distributed");
  if (!config.contains("stages")) {  // the default list: the caption stages need caption files
    json stages = json::array();
    for (const auto& st : kAllStages)
      if (!(st == "retrieval" && d["captions"] == "") &&
          !(st == "head_captions" && d["train_captions"] == ""))
        stages.push_back(st);
    c["stages"] = stages;
  }
  for (const auto& st : c["stages"]) {
    DISTILL_CHECK(st != "retrieval" || d["captions"] != "", where,
                  ": stage 'retrieval' needs data.captions (image<TAB>caption pairs)");
    DISTILL_CHECK(st != "head_captions" || d["train_captions"] != "", where,
                  ": stage 'head_captions' needs data.train_captions (key<TAB>caption for "
                  "training images)");
  }
  // The text stages need a tokenizer; without one they would fail only after stage 0 trained.
  for (const char* st : {"head", "student_text", "zeroshot", "head_captions", "retrieval"})
    DISTILL_CHECK(
        std::find(c["stages"].begin(), c["stages"].end(), json(st)) == c["stages"].end() ||
            !c["text"]["tokenizer"].get<std::string>().empty(),
        where, ": stage '", st, "' needs text.tokenizer (a tokenizer file or folder)");
  const bool has_student_text =
      std::find(c["stages"].begin(), c["stages"].end(), json("student_text")) != c["stages"].end();
  DISTILL_CHECK(c["ablations"]["generations"].get<int64_t>() < 2 || has_student_text, where,
                ": ablations.generations needs the stage 'student_text' (generation 1)");
  return c;
}

json run_experiment(const json& user_config, const std::string& where, const RunOptions& options) {
  Run run;
  run.config = resolve_experiment_config(user_config, where);
  if (!options.name.empty()) run.config["name"] = options.name;
  run.quiet = options.quiet;
  run.resume = options.resume;
  run.quiet = options.quiet || !dist::is_primary();  // progress from rank 0 only
  run.data_parallel =
      data_parallel_config_from_json(run.config["distributed"], where + ": distributed");
  nn::set_sync_batch_norm(run.data_parallel.sync_batch_norm);
  run.dir = fs::path(options.runs_dir) / run.config["name"].get<std::string>();
  const bool single_stages = !options.only_stages.empty();
  DISTILL_CHECK(!options.evaluate_only || single_stages, "eval: name the stages to evaluate");
  run.evaluate_only = options.evaluate_only;
  if (run.evaluate_only) {
    for (const auto& stage : options.only_stages) {
      DISTILL_CHECK(stage == "teacher" || stage == "probe" || stage == "head" ||
                        stage.rfind("student_", 0) == 0,
                    "eval: stage '", stage,
                    "' cannot be evaluated alone (teacher, probe, head, student_text, "
                    "student_notext, student_labels can)");
      run.evaluate_stages.insert(stage);
    }
    DISTILL_CHECK(fs::exists(run.dir / "config.json"), "eval: no run folder at ", run.dir.string(),
                  " (", where, " has not been run with these --runs-dir/--name)");
  }
  json written = run.config;  // what config.json holds: every stage this folder has been asked for
  if (single_stages) {
    for (const auto& stage : options.only_stages)
      DISTILL_CHECK(std::find(kAllStages.begin(), kAllStages.end(), stage) != kAllStages.end(),
                    "unknown stage '", stage, "'");
    run.config["stages"] = options.only_stages;
    written["stages"] = options.only_stages;
    run.resume = true;  // continue whatever the folder holds
  }
  // A typo in --name or --runs-dir would otherwise silently start the whole run again.
  DISTILL_CHECK(!options.resume || fs::exists(run.dir / "config.json"),
                "--resume: no run folder at ", run.dir.string(),
                " to continue (run without --resume to start it)");
  if (fs::exists(run.dir / "config.json")) {
    DISTILL_CHECK(options.resume || single_stages, "run folder ", run.dir.string(),
                  " exists; pass --resume to continue it or --name to start another");
    json previous = read_run_json(run.dir / "config.json");
    json a = previous, b = run.config;
    if (single_stages) a.erase("stages"), b.erase("stages");
    DISTILL_CHECK(a == b, "--resume: the config differs from the one in ",
                  (run.dir / "config.json").string(), "; a resumed run must use the same config");
    if (single_stages) {
      written = previous;
      for (const auto& stage : options.only_stages)
        if (std::find(written["stages"].begin(), written["stages"].end(), stage) ==
            written["stages"].end())
          written["stages"].push_back(stage);
    }
    if (fs::exists(run.dir / "summary.json")) run.summary = read_run_json(run.dir / "summary.json");
  }
  const std::string device = run.config["device"].get<std::string>();
  if (device == "cuda") {
    DISTILL_CHECK(cuda_available(), where, ": device 'cuda' but no CUDA device is available");
    // One GPU per process: the local rank's (core/distributed.h made it current).
    run.device = Device::cuda(dist::local_rank() % std::max(1, kernels::cuda::device_count()));
  } else {
    DISTILL_CHECK(device == "cpu", where, ": device must be cpu or cuda, got '", device, "'");
  }
  run.bf16 = run.config["precision"].get<std::string>() == "bf16";
  manual_seed(static_cast<uint64_t>(run.config["seed"].get<int64_t>()));

  // Data.
  const json& d = run.config["data"];
  run.train_set = std::shared_ptr<data::Dataset>(
      data::open_dataset(d["train"].get<std::string>(), "train").dataset.release());
  const std::string test_spec =
      options.evaluate_test.empty() ? d["test"].get<std::string>() : options.evaluate_test;
  auto opened_test = data::open_dataset(test_spec, "test");
  const std::string test_description = test_spec + " (" + opened_test.description + ")";
  run.test_set = std::shared_ptr<data::Dataset>(opened_test.dataset.release());
  DISTILL_CHECK(run.train_set->size() > 0, where, ": data.train ", d["train"].get<std::string>(),
                " holds no samples");
  DISTILL_CHECK(run.test_set->size() > 0, where, ": the test set ", test_spec, " holds no samples");
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
  if (const int64_t k = d["test_per_class"].get<int64_t>(); k > 0 && options.evaluate_test.empty())
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

  if (const int64_t k = d["labelled_per_class"].get<int64_t>(); k > 0) {
    run.labelled_per_class = k;
    run.labelled_subset = labelled_images(run, k);
  }

  // The folder is made only now that the data and the teacher checkpoint have opened: a run that
  // fails on a bad path leaves no folder behind to block the corrected run.
  // Every rank has checked the folder before rank 0 creates it (else a slower rank would find
  // the new config.json and refuse to start); every rank sees it after the second barrier.
  dist::barrier();
  if (!run.evaluate_only) {  // eval leaves the folder as it is
    if (dist::is_primary()) {
      fs::create_directories(run.dir);
      write_file_atomically((run.dir / "config.json").string(), written.dump(2) + "\n");
      run.log = std::make_unique<MetricsLog>((run.dir / "metrics.jsonl").string());
    } else {
      run.log = std::make_unique<MetricsLog>("/dev/null");  // rank 0 alone writes metrics
    }
  }
  dist::barrier();

  std::set<std::string> stages;
  for (const auto& s : run.config["stages"]) stages.insert(s.get<std::string>());
  auto wants = [&](const char* s) { return stages.count(s) > 0; };
  run_labelled_pipeline(run, stages);
  if (run.evaluate_only)
    return {{"run_dir", run.dir.string()},
            {"test", test_description},
            {"evaluations", run.evaluations}};
  if (wants("student_text") && run.config["ablations"]["generations"].get<int64_t>() >= 2)
    stage_generations(run);
  if (wants("zeroshot")) stage_zeroshot(run);
  if (wants("head_captions")) stage_head_captions(run);
  if (wants("retrieval")) stage_retrieval(run);
  if (!run.config["ablations"]["few_shot"].empty()) few_shot_sweep(run, stages);
  run.summary["ablations"] = ablation_summary(run);

  run.summary["name"] = run.config["name"];
  run.summary["run_dir"] = run.dir.string();
  run.write_summary();
  if (dist::is_primary()) write_report(run);
  dist::barrier();
  return run.summary;
}

}  // namespace distill::train
