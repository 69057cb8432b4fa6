// Minimal command-line parsing for the `distill` subcommands: `--name value`, `--name=value` and
// boolean `--flag`. Unknown options and missing values are errors that name the option.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/device.h"

namespace distill::cli {

class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct OptionSpec {
  std::string name;  // without leading dashes
  bool takes_value;
  std::string help;
  std::string default_value;  // shown in --help
};

class Args {
 public:
  Args(std::string command, std::vector<OptionSpec> specs)
      : command_(std::move(command)), specs_(std::move(specs)) {}

  // Parses argv[first..]; throws UsageError on unknown options or missing values.
  void parse(int argc, char** argv, int first);
  bool flag(const std::string& name) const { return flags_.count(name) > 0; }
  std::optional<std::string> value(const std::string& name) const;
  std::string value_or(const std::string& name, const std::string& fallback) const;
  int64_t int_or(const std::string& name, int64_t fallback) const;
  const std::vector<std::string>& positional() const { return positional_; }
  std::string help(const std::string& summary) const;

 private:
  const OptionSpec* find(const std::string& name) const;
  std::string command_;
  std::vector<OptionSpec> specs_;
  std::set<std::string> flags_;
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

// Subcommand entry points (return the process exit code).
int cmd_info(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_eval(int argc, char** argv);           // tools/cmd_run.cpp
int cmd_train_head(int argc, char** argv);     // tools/cmd_run.cpp
int cmd_train_student(int argc, char** argv);  // tools/cmd_run.cpp
int cmd_convert(int argc, char** argv);
int cmd_encode_text(int argc, char** argv);
int cmd_encode_image(int argc, char** argv);
int cmd_run(int argc, char** argv);
int cmd_demo(int argc, char** argv);
int bench_models(const Args& args, const Device& device);  // tools/bench_models.cpp
int bench_step(const Args& args, const Device& device);    // tools/bench_step.cpp
// `distill info --model NAME [--tensors]` (tools/cmd_info_model.cpp).
int info_model(const std::string& name, bool as_json, bool with_tensors);
// `distill info --data SPEC` (tools/cmd_info_data.cpp) and `distill bench data`
// (tools/bench_data.cpp).
int cmd_info_data(int argc, char** argv);
int bench_data(int argc, char** argv);
int bench_allreduce(int argc, char** argv);  // tools/bench_allreduce.cpp

}  // namespace distill::cli
