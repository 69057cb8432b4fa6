// `distill run --config FILE.json`: a whole experiment (train/experiment.h).
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tools/cli.h"
#include "train/experiment.h"
#include "train/report_html.h"

namespace distill::cli {

int cmd_run(int argc, char** argv) {
  Args args("run", {{"config", true, "experiment config (JSON; see configs/)", ""},
                    {"name", true, "run name (default: the config's name)", ""},
                    {"runs-dir", true, "where run folders go", "runs"},
                    {"resume", false, "continue the run folder from its last checkpoints", ""},
                    {"quiet", false, "no progress output", ""},
                    {"help", false, "show this help", ""}});
  args.parse(argc, argv, 2);
  if (args.flag("help")) {
    std::fputs(
        args.help("Runs the stages a config names (teacher, probe, head, student_text, "
                  "student_notext, student_labels, zeroshot) and writes runs/<name>/: "
                  "config.json, metrics.jsonl, checkpoints, summary.json, report.md, report.html.")
            .c_str(),
        stdout);
    return 0;
  }
  if (!args.positional().empty())
    throw UsageError("distill run: unexpected argument '" + args.positional()[0] + "'");
  const auto path = args.value("config");
  if (!path) throw UsageError("distill run: --config FILE.json is required");
  std::ifstream in(*path);
  if (!in) throw Error("distill run: cannot open " + *path);
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw Error("distill run: " + *path + " is not valid JSON: " + e.what());
  }
  train::RunOptions opts;
  opts.runs_dir = args.value_or("runs-dir", "runs");
  opts.name = args.value_or("name", "");
  opts.resume = args.flag("resume");
  opts.quiet = args.flag("quiet");
  const nlohmann::json summary = train::run_experiment(config, *path, opts);
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

}  // namespace distill::cli
