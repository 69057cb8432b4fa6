// The experiment runner: one JSON config -> the stages of DESIGN.md section 1 in order, writing
// runs/<name>/ (resolved config, metrics.jsonl, checkpoints, summary.json, report.md).
//
// Stages (config "stages", in this order; default: all that the config can run):
//   teacher         stage 0 when no pretrained image encoder is given: train E_I on the labels
//   probe           linear probe on the frozen teacher's pooled embedding (baseline column)
//   head            stage 1: the image-text head on frozen E_I tokens and class-prompt queries
//   student_text    stage 2 with the head as teacher (self-distillation with text)
//   student_notext  stage 2 with E_I + the linear probe as teacher (Born-Again, without text)
//   student_labels  the same student trained on the labels only
//   zeroshot        CLIP zero-shot accuracy (when E_I and E_T are CLIP towers of one model)
//   head_captions   ablation: the head trained on each image's own caption (data.train_captions)
//   retrieval       ablation: student embedding -> teacher image embedding (least squares), then
//                   image<->text recall@1/5/10 on data.captions
// Ablations (off unless the config asks):
//   data.labelled_per_class k   few-shot: the labelled stages (teacher, probe, head,
//                               student_labels) see k images per class; the distilled students
//                               train on every training image, unlabelled (alpha must be 1)
//   ablations.few_shot [k...]   one sub-run of those stages per k, stages named "<stage>@k<k>"
//   ablations.generations G     Born-Again: "student_text@g2".."@gG", each taught by the last
//   student.targets "cached"    teacher logits once per un-augmented training image, kept in
//                               <run>/<stage>.targets.npy (a resume reads them back)
// A stage whose final checkpoint exists in the run folder is loaded instead of retrained, and a
// stage interrupted after a periodic checkpoint continues from it (--resume).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace distill::train {

struct RunOptions {
  std::string runs_dir = "runs";
  std::string name;     // overrides the config's name
  bool resume = false;  // continue an existing run folder (else it must not exist)
  bool quiet = false;   // no progress output
  // Non-empty: run only these stages (`distill train-head`, `train-student`), in an existing run
  // folder or a new one. Finished stages they depend on are loaded from the folder; missing ones
  // are run first. The folder's config must match apart from its stage list.
  std::vector<std::string> only_stages;
  // `distill eval`: with only_stages, load those finished stages (teacher, probe, head,
  // student_*) from the run folder and evaluate them on the config's test split, or on
  // `evaluate_test` (a dataset spec) when given. Nothing trains and nothing in the folder changes;
  // run_experiment then returns {"run_dir", "test", "evaluations": {stage: metrics}}.
  bool evaluate_only = false;
  std::string evaluate_test;
};

// The config with every default filled in (what runs/<name>/config.json holds). Unknown keys and
// bad values are errors naming `where` and the key.
nlohmann::json resolve_experiment_config(const nlohmann::json& config, const std::string& where);

// Runs the experiment; returns the summary (also written to summary.json).
nlohmann::json run_experiment(const nlohmann::json& config, const std::string& where,
                              const RunOptions& options);

}  // namespace distill::train
