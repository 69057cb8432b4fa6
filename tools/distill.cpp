// The `distill` command-line tool: one binary, one subcommand per job.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "core/allocator.h"
#include "core/distributed.h"
#include "core/error.h"
#include "tools/cli.h"

namespace {

struct Command {
  const char* name;
  const char* summary;
  int (*run)(int, char**);
};

const Command kCommands[] = {
    {"info", "print the version, backends, GPUs, BLAS and threads", distill::cli::cmd_info},
    {"run", "run an experiment config: teacher, head, students, baselines, report",
     distill::cli::cmd_run},
    {"train-head", "stage 1 alone: train the image-text head in a run folder",
     distill::cli::cmd_train_head},
    {"train-student", "stage 2 alone: distil a student (--teacher text|notext|labels)",
     distill::cli::cmd_train_student},
    {"eval", "evaluate finished stages of a run folder (on its test split or --test SPEC)",
     distill::cli::cmd_eval},
    {"demo", "the whole method on Fashion-MNIST with MiniLM: result table and report.html",
     distill::cli::cmd_demo},
    {"convert", "convert a Hugging Face or OpenAI/open_clip checkpoint to distill's format",
     distill::cli::cmd_convert},
    {"encode-text", "print (and save) text embeddings from a converted checkpoint",
     distill::cli::cmd_encode_text},
    {"encode-image", "print (and save) image embeddings from a converted checkpoint",
     distill::cli::cmd_encode_image},
    {"bench", "run a benchmark against a reference in the same process (gemm)",
     distill::cli::cmd_bench},
};

void print_usage(FILE* out) {
  std::fprintf(out,
               "distill %s — image-language self-distillation engine\n\n"
               "usage: distill <command> [options]\n       distill <command> --help\n\ncommands:\n",
               DISTILL_VERSION);
  for (const auto& c : kCommands) std::fprintf(out, "  %-10s %s\n", c.name, c.summary);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    print_usage(stderr);
    return 2;
  }
  const std::string name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    print_usage(stdout);
    return 0;
  }
  if (name == "--version") {
    std::printf("distill %s\n", DISTILL_VERSION);
    return 0;
  }
  for (const auto& c : kCommands) {
    if (name != c.name) continue;
    // Under mpirun/srun every rank runs the command (core/distributed.h). A rank that fails
    // ends the whole job: the others may be waiting for it in a collective.
    namespace dist = distill::dist;
    try {
      distill::apply_memory_limit_from_environment();  // a bad value fails here, before any work
      dist::init_from_environment();
      const int code = c.run(argc, argv);
      dist::finalize();
      return code;
    } catch (const distill::cli::UsageError& e) {
      if (dist::distributed())
        dist::abort_all(
            std::string("error: ") + e.what() + " (see 'distill " + c.name + " --help')", 2);
      std::fprintf(stderr, "error: %s\n(see 'distill %s --help')\n", e.what(), c.name);
      return 2;
    } catch (const std::exception& e) {
      if (dist::distributed()) dist::abort_all(std::string("error: ") + e.what());
      std::fprintf(stderr, "error: %s\n", e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "error: unknown command '%s'\n\n", name.c_str());
  print_usage(stderr);
  return 2;
}
