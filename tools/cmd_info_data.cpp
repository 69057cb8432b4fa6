// `distill info --data SPEC`: what a dataset holds — its format, the number of samples, the
// classes and the samples per class.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "data/dataset_spec.h"
#include "tools/cli.h"

namespace distill::cli {

int cmd_info_data(int argc, char** argv) {
  Args args(
      "info --data",
      {{"data", true,
        "dataset: a CIFAR binary folder, an ImageFolder root, a tar shard pattern "
        "(\"train-{0000..0004}.tar\"), an IDX file pair \"images,labels\", an IDX folder or "
        "a caption file",
        ""},
       {"split", true, "train or test (CIFAR and IDX folders)", "train"},
       {"coarse", false, "CIFAR-100: count the 20 superclasses", ""},
       {"skip-bad-samples", false, "skip unreadable samples (counted) instead of failing", ""},
       {"json", false, "print machine-readable JSON", ""},
       {"help", false, "show this help", ""}});
  args.parse(argc, argv, 2);
  if (args.flag("help")) {
    std::fputs(args.help("Prints a dataset's format, sample count, classes and samples per class.")
                   .c_str(),
               stdout);
    return 0;
  }
  if (!args.positional().empty())
    throw UsageError("distill info: unexpected argument '" + args.positional()[0] + "'");
  const std::string spec = args.value_or("data", "");
  if (spec.empty()) throw UsageError("distill info: --data needs a dataset");
  const std::string split = args.value_or("split", "train");
  if (split != "train" && split != "test")
    throw UsageError("distill info: --split must be train or test, got '" + split + "'");

  data::ReaderOptions options;
  options.skip_bad_samples = args.flag("skip-bad-samples");
  const data::OpenedDataset opened = data::open_dataset(spec, split, args.flag("coarse"), options);
  const data::Dataset& ds = *opened.dataset;
  const std::vector<int64_t> counts = ds.class_counts();

  if (args.flag("json")) {
    nlohmann::json j;
    j["spec"] = spec;
    j["format"] = opened.format;
    j["description"] = opened.description;
    j["samples"] = ds.size();
    j["classes"] = ds.class_names();
    j["class_counts"] = counts;
    j["skipped"] = ds.skipped().count;
    j["skipped_messages"] = ds.skipped().messages;
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("%s: %s\n", spec.c_str(), opened.description.c_str());
  std::printf("  samples  %lld\n", static_cast<long long>(ds.size()));
  std::printf("  classes  %lld\n", static_cast<long long>(ds.num_classes()));
  // Caption files have one class per image: the list would just repeat the images.
  if (opened.format != "captions") {
    for (size_t c = 0; c < counts.size(); ++c)
      std::printf("    %4zu  %-32s %lld\n", c, ds.class_names()[c].c_str(),
                  static_cast<long long>(counts[c]));
  }
  if (ds.skipped().count > 0) {
    std::printf("  skipped  %lld bad inputs\n", static_cast<long long>(ds.skipped().count));
    for (const auto& m : ds.skipped().messages) std::printf("    %s\n", m.c_str());
  }
  return 0;
}

}  // namespace distill::cli
