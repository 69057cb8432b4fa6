// `distill run --config FILE.json`: a whole experiment (train/experiment.h).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/distributed.h"
#include "core/error.h"
#include "data/dataset_spec.h"
#include "data/tokenizer.h"
#include "models/convert.h"
#include "tools/cli.h"
#include "train/experiment.h"
#include "train/interrupt.h"
#include "train/report_html.h"

namespace distill::cli {

namespace {

// The experiment config `path` as JSON; `who` starts the error messages.
nlohmann::json read_config_file(const std::string& who, const std::string& path) {
  // An ifstream opens a directory without an error; reading it would then report empty JSON.
  if (std::filesystem::is_directory(path))
    throw Error(who + ": --config " + path + " is a directory, not a JSON file");
  std::ifstream in(path);
  if (!in) throw Error(who + ": cannot open " + path);
  try {
    return nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw Error(who + ": " + path + " is not valid JSON: " + e.what());
  }
}

// `distill run --check`: resolves the config and opens every file it names, so that a run that
// would fail hours in (a missing checkpoint, a tokenizer path typo) fails now. Lists every
// problem, not only the first.
int check_config(const nlohmann::json& config, const std::string& path) {
  const nlohmann::json c = train::resolve_experiment_config(config, path);
  std::vector<std::string> problems;
  const auto check = [&](const std::string& what, const std::function<std::string()>& open) {
    try {
      std::printf("  %-18s ok: %s\n", what.c_str(), open().c_str());
    } catch (const std::exception& e) {
      std::printf("  %-18s FAILED: %s\n", what.c_str(), e.what());
      problems.push_back(what);
    }
  };
  std::printf("%s: config resolves (stages:", path.c_str());
  for (const auto& s : c["stages"]) std::printf(" %s", s.get<std::string>().c_str());
  std::printf(")\n");
  for (const char* split : {"train", "test"})
    check(std::string("data.") + split, [&] {
      const auto d = data::open_dataset(c["data"][split].get<std::string>(), split);
      return d.description + ", " + std::to_string(d.dataset->size()) + " items, " +
             std::to_string(d.dataset->num_classes()) + " classes";
    });
  for (const char* tower : {"teacher", "text"}) {
    const std::string ckpt = c[tower]["checkpoint"].get<std::string>();
    if (ckpt.empty()) continue;
    check(std::string(tower) + ".checkpoint", [&] {
      if (std::string(tower) == "teacher")
        return models::open_image_encoder(ckpt)->config_json().value("type", std::string("?"));
      return models::open_text_encoder(ckpt)->arch();
    });
  }
  if (const std::string tok = c["text"]["tokenizer"].get<std::string>(); !tok.empty())
    check("text.tokenizer",
          [&] { return "vocabulary of " + std::to_string(load_tokenizer(tok)->vocab_size()); });
  if (!problems.empty()) {
    std::printf("%zu problem(s): fix them before running\n", problems.size());
    return 1;
  }
  std::printf("everything the config names opens\n");
  return 0;
}

}  // namespace

namespace {

// `distill run`, and `train-head` / `train-student` (the same run with one stage): `command` is
// the subcommand's name, `stage_of` maps its parsed options to the stages to run (empty: the
// config's own).
int run_command(int argc, char** argv, const std::string& command, const std::string& summary_text,
                std::vector<OptionSpec> extra,
                const std::function<std::vector<std::string>(const Args&)>& stages_of) {
  std::vector<OptionSpec> specs = {{"config", true, "experiment config (JSON; see configs/)", ""},
                                   {"name", true, "run name (default: the config's name)", ""},
                                   {"runs-dir", true, "where run folders go", "runs"},
                                   {"quiet", false, "no progress output", ""}};
  if (command == "run") {
    specs.push_back({"resume", false, "continue the run folder from its last checkpoints", ""});
    specs.push_back({"check", false,
                     "only check the config and that its files (checkpoints, tokenizer, data) "
                     "open; run nothing",
                     ""});
  }
  specs.insert(specs.end(), extra.begin(), extra.end());
  specs.push_back({"help", false, "show this help", ""});
  Args args(command, specs);
  args.parse(argc, argv, 2);
  if (args.flag("help")) {
    std::fputs(args.help(summary_text).c_str(), stdout);
    return 0;
  }
  const std::string who = "distill " + command;
  if (!args.positional().empty())
    throw UsageError(who + ": unexpected argument '" + args.positional()[0] + "'");
  const auto path = args.value("config");
  if (!path) throw UsageError(who + ": --config FILE.json is required");
  const nlohmann::json config = read_config_file(who, *path);
  if (args.flag("check")) return check_config(config, *path);
  train::RunOptions opts;
  opts.runs_dir = args.value_or("runs-dir", "runs");
  opts.name = args.value_or("name", "");
  opts.resume = args.flag("resume");
  opts.quiet = args.flag("quiet");
  opts.only_stages = stages_of(args);
  nlohmann::json summary;
  try {
    train::StopOnSignal stop_on_signal;  // Ctrl-C: finish the step, checkpoint, then stop
    summary = train::run_experiment(config, *path, opts);
  } catch (const train::Interrupted& e) {
    if (dist::is_primary()) std::fprintf(stderr, "%s: %s\n", who.c_str(), e.what());
    return 128 + e.signal();
  }
  if (!dist::is_primary()) return 0;  // rank 0 writes the report and prints
  const std::string html = train::write_html_report(summary["run_dir"].get<std::string>());
  std::printf("run finished: %s (report.html, report.md, summary.json, metrics.jsonl)\n",
              summary["run_dir"].get<std::string>().c_str());
  std::printf("report: %s\n", html.c_str());
  for (const auto& [stage, r] : summary["stages"].items())
    if (r.contains("top1"))
      std::printf("  %-16s top-1 %6.2f%%  top-5 %6.2f%%\n", stage.c_str(),
                  100 * r["top1"].get<double>(), 100 * r["top5"].get<double>());
  return 0;
}

}  // namespace

int cmd_run(int argc, char** argv) {
  return run_command(
      argc, argv, "run",
      "Runs the stages a config names (teacher, probe, head, student_text, student_notext, "
      "student_labels, zeroshot, and the ablations) and writes runs/<name>/: config.json, "
      "metrics.jsonl, checkpoints, summary.json, report.md, report.html.",
      {}, [](const Args&) { return std::vector<std::string>{}; });
}

int cmd_eval(int argc, char** argv) {
  Args args(
      "eval",
      {{"config", true, "the experiment config the run folder was made with", ""},
       {"name", true, "run name (default: the config's name)", ""},
       {"runs-dir", true, "where run folders go", "runs"},
       {"stage", true,
        "comma-separated finished stages: teacher, probe, head, student_text, "
        "student_notext, student_labels",
        "student_text"},
       {"test", true, "evaluate on this dataset spec instead of the config's test split",
        "the config's data.test"},
       {"json", false, "print the metrics (per-class accuracy, confusion matrix) as JSON", ""},
       {"help", false, "show this help", ""}});
  args.parse(argc, argv, 2);
  if (args.flag("help")) {
    std::fputs(args.help("Evaluates finished stages of a run folder (runs/<name>/) on the "
                         "config's test split or another dataset (--test), without training or "
                         "changing the folder: top-1, top-5, per-class accuracy, confusion matrix.")
                   .c_str(),
               stdout);
    return 0;
  }
  if (!args.positional().empty())
    throw UsageError("distill eval: unexpected argument '" + args.positional()[0] + "'");
  const auto path = args.value("config");
  if (!path) throw UsageError("distill eval: --config FILE.json is required");
  const nlohmann::json config = read_config_file("distill eval", *path);
  train::RunOptions opts;
  opts.runs_dir = args.value_or("runs-dir", "runs");
  opts.name = args.value_or("name", "");
  opts.quiet = true;
  opts.evaluate_only = true;
  opts.evaluate_test = args.value_or("test", "");
  std::stringstream stages(args.value_or("stage", "student_text"));
  for (std::string s; std::getline(stages, s, ',');)
    if (!s.empty()) opts.only_stages.push_back(s);
  if (opts.only_stages.empty()) throw UsageError("distill eval: --stage is empty");
  const nlohmann::json result = train::run_experiment(config, *path, opts);
  if (!dist::is_primary()) return 0;
  if (args.flag("json")) {
    std::printf("%s\n", result.dump(2).c_str());
    return 0;
  }
  std::printf("%s on %s\n", result["run_dir"].get<std::string>().c_str(),
              result["test"].get<std::string>().c_str());
  for (const auto& [stage, r] : result["evaluations"].items())
    std::printf("  %-16s top-1 %6.2f%%  top-5 %6.2f%%  (%lld images)\n", stage.c_str(),
                100 * r["top1"].get<double>(), 100 * r["top5"].get<double>(),
                static_cast<long long>(r["metrics"]["count"].get<int64_t>()));
  return 0;
}

int cmd_train_head(int argc, char** argv) {
  return run_command(
      argc, argv, "train-head",
      "Stage 1 alone: trains the image-text head of a config's run folder (runs/<name>/), "
      "loading the teacher from the folder or the config's checkpoint (stage 0 runs first if "
      "neither exists). Continues an interrupted head from its last checkpoint.",
      {}, [](const Args&) { return std::vector<std::string>{"head"}; });
}

int cmd_train_student(int argc, char** argv) {
  return run_command(
      argc, argv, "train-student",
      "Stage 2 alone: distils one student in a config's run folder (runs/<name>/) from the "
      "teacher it names, loading the finished stages it needs (the head for 'text', the probe "
      "for 'notext') or running them first.",
      {{"teacher", true, "text (the head), notext (E_I + linear probe) or labels (no teacher)",
        "text"}},
      [](const Args& args) {
        const std::string t = args.value_or("teacher", "text");
        if (t != "text" && t != "notext" && t != "labels")
          throw UsageError(
              "distill train-student: --teacher accepts text, notext or labels; got '" + t + "'");
        return std::vector<std::string>{"student_" + t};
      });
}

}  // namespace distill::cli
