// Bad arguments and bad files through the `distill` binary, one subcommand per test: the exit
// code (2: usage, 1: the input), a message naming the argument or the file, and nothing written.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/models/model_test_util.h"
#include "tests/tools/cli_run.h"

namespace distill::testing {
namespace {

namespace fs = std::filesystem;

// Runs `args` and checks the exit code and that the output holds `needle`.
void expect_failure(const std::string& args, int exit_code, const std::string& needle) {
  const Result r = run_distill(args);
  EXPECT_EQ(r.exit_code, exit_code) << "distill " << args << "\n" << r.out;
  EXPECT_NE(r.out.find(needle), std::string::npos)
      << "distill " << args << "\nlacks: " << needle << "\n"
      << r.out;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A config that resolves (its data paths need not exist: they are opened later).
std::string write_config(const TempDir& tmp, const std::string& train, const std::string& test) {
  const std::string path = tmp.file("c.json");
  std::ofstream(path) << R"({"name": "x", "data": {"train": ")" << train << R"(", "test": ")"
                      << test << R"("}, "teacher": {"arch": {"type": "vit", "image_size": 32,
      "patch_size": 8, "width": 32, "layers": 1, "heads": 2, "mlp_dim": 64}},
      "text": {"tokenizer": "vocab.txt"}})";
  return path;
}

TEST(CliBadInput, GlobalOptionParsing) {
  expect_failure("info --json=yes", 2, "option '--json' takes no value");
  expect_failure("info --data", 2, "option '--data' needs a value");
  expect_failure("info extra", 2, "unexpected argument 'extra'");
  expect_failure("encode-text --checkpoint", 2, "option '--checkpoint' needs a value");
}

TEST(CliBadInput, RunConfigFile) {
  TempDir tmp;
  expect_failure("run", 2, "--config FILE.json is required");
  expect_failure("run --config " + tmp.file("none.json"), 1,
                 "cannot open " + tmp.file("none.json"));
  expect_failure("run --config " + tmp.path().string(), 1, "is a directory, not a JSON file");
  std::ofstream(tmp.file("broken.json")) << R"({"name": "x",)";
  expect_failure("run --config " + tmp.file("broken.json"), 1,
                 tmp.file("broken.json") + " is not valid JSON");
  const std::string config = write_config(tmp, "/nonexistent/a.tar", "/nonexistent/b.tar");
  expect_failure("run --config " + config + " extra", 2, "unexpected argument 'extra'");
  expect_failure("run --quiet=1 --config " + config, 2, "option '--quiet' takes no value");
  expect_failure("eval --config " + tmp.file("none.json"), 1, "cannot open");
  expect_failure("train-head", 2, "--config FILE.json is required");
}

// A run whose data does not open fails before it makes its folder, so the corrected config can
// run under the same name.
TEST(CliBadInput, RunWithMissingDataLeavesNoRunFolder) {
  TempDir tmp;
  const std::string config = write_config(tmp, "/nonexistent/a.tar", "/nonexistent/b.tar");
  const std::string runs = tmp.file("runs");
  expect_failure("run --quiet --config " + config + " --runs-dir " + runs, 1,
                 "/nonexistent/a.tar: no such shard");
  EXPECT_FALSE(fs::exists(runs + "/x")) << "a failed run left its folder";
}

// Shards with no samples (here empty files): refused before training, not an empty run.
TEST(CliBadInput, RunWithAnEmptyDataset) {
  TempDir tmp;
  std::ofstream(tmp.file("train.tar")) << "";
  std::ofstream(tmp.file("test.tar")) << "";
  const std::string config = write_config(tmp, tmp.file("train.tar"), tmp.file("test.tar"));
  const std::string runs = tmp.file("runs");
  expect_failure("run --quiet --config " + config + " --runs-dir " + runs, 1,
                 "data.train " + tmp.file("train.tar") + " holds no samples");
  EXPECT_FALSE(fs::exists(runs + "/x"));
}

// "device": "cuda" in a config, or --device cuda, on a machine without a GPU.
TEST(CliBadInput, CudaRequestedWithoutAGpu) {
  if (cuda_available()) GTEST_SKIP() << "a CUDA device is present";
  TempDir tmp;
  const std::string path = tmp.file("cuda.json");
  auto config =
      nlohmann::json::parse(slurp(write_config(tmp, "/nonexistent/a.tar", "/nonexistent/b.tar")));
  config["device"] = "cuda";
  std::ofstream(path) << config.dump();
  expect_failure("run --quiet --config " + path + " --runs-dir " + tmp.file("runs"), 1,
                 "device 'cuda' but no CUDA device is available");
  EXPECT_FALSE(fs::exists(tmp.file("runs/x")));
  expect_failure("encode-text --checkpoint x --tokenizer y --device cuda hi", 2,
                 "--device cuda but no CUDA device is available");
}

TEST(CliBadInput, RunFolderConflictsAndResume) {
  TempDir tmp;
  const std::string config = write_config(tmp, "/nonexistent/a.tar", "/nonexistent/b.tar");
  const std::string runs = tmp.file("runs");
  // --resume with nothing to resume (a typo in --name would otherwise start afresh).
  expect_failure("run --quiet --resume --config " + config + " --runs-dir " + runs, 1,
                 "--resume: no run folder at " + runs + "/x");
  // An existing run folder without --resume: refused, its config.json untouched.
  fs::create_directories(runs + "/x");
  std::ofstream(runs + "/x/config.json") << "{}";
  expect_failure("run --quiet --config " + config + " --runs-dir " + runs, 1,
                 "exists; pass --resume to continue it or --name to start another");
  EXPECT_EQ(slurp(runs + "/x/config.json"), "{}");
  // --resume with another config: refused, naming the folder's config.json.
  expect_failure("run --quiet --resume --config " + config + " --runs-dir " + runs, 1,
                 "--resume: the config differs from the one in " + runs + "/x/config.json");
  // A damaged config.json in the run folder is named, not a bare JSON error.
  std::ofstream(runs + "/x/config.json") << "{\"name\": ";
  expect_failure("run --quiet --resume --config " + config + " --runs-dir " + runs, 1,
                 runs + "/x/config.json is not valid JSON");
  EXPECT_EQ(slurp(runs + "/x/config.json"), "{\"name\": ");
}

// --runs-dir naming a file: the run stops, naming the path (the data must open first).
TEST(CliBadInput, RunsDirThatIsAFile) {
  const std::string shard =
      std::string(DISTILL_SOURCE_DIR) + "/../shared/data/cifar10-jpg/test-0000.tar";
  if (!fs::exists(shard)) GTEST_SKIP() << "real CIFAR-10 shards not found at " << shard;
  TempDir tmp;
  const std::string config = write_config(tmp, shard, shard);
  std::ofstream(tmp.file("afile")) << "x";
  expect_failure("run --quiet --config " + config + " --runs-dir " + tmp.file("afile"), 1,
                 "Not a directory [" + tmp.file("afile") + "/x]");
  EXPECT_EQ(slurp(tmp.file("afile")), "x");
}

TEST(CliBadInput, EvalArguments) {
  TempDir tmp;
  const std::string config = write_config(tmp, "/nonexistent/a.tar", "/nonexistent/b.tar");
  const std::string where = " --config " + config + " --runs-dir " + tmp.file("runs");
  expect_failure("eval --stage=" + where, 2, "--stage is empty");
  expect_failure("eval --stage zeroshot" + where, 1, "stage 'zeroshot' cannot be evaluated alone");
  expect_failure("eval --stage head" + where, 1, "eval: no run folder at " + tmp.file("runs/x"));
  expect_failure("train-student --teacher oracle" + where, 2,
                 "--teacher accepts text, notext or labels");
}

TEST(CliBadInput, ConvertArguments) {
  TempDir tmp;
  expect_failure("convert --in " + model_fixture("hf_bert"), 2, "--out FILE is required");
  // Converting a file onto itself (with --force) is refused before anything is written.
  const std::string ckpt = tmp.file("bert.safetensors");
  ASSERT_EQ(run_distill("convert --in " + model_fixture("hf_bert") + " --out " + ckpt).exit_code,
            0);
  const std::string before = slurp(ckpt);
  expect_failure("convert --force --in " + ckpt + " --out " + ckpt, 2, "is the input file");
  EXPECT_EQ(slurp(ckpt), before);
  // An output folder that does not exist.
  expect_failure("convert --in " + model_fixture("hf_bert") + " --out " +
                     tmp.file("no/such/dir/out.safetensors"),
                 1, tmp.file("no/such/dir/out.safetensors"));
  expect_failure("convert --in " + model_fixture("hf_bert") + " --arch gpt2 --out " +
                     tmp.file("gpt2.safetensors"),
                 1, "unknown --arch 'gpt2'");
  EXPECT_FALSE(fs::exists(tmp.file("gpt2.safetensors")));
}

TEST(CliBadInput, EncodeArguments) {
  TempDir tmp;
  const std::string ckpt = tmp.file("bert.safetensors");
  ASSERT_EQ(run_distill("convert --in " + model_fixture("hf_bert") + " --out " + ckpt).exit_code,
            0);
  const std::string vocab =
      std::string(DISTILL_SOURCE_DIR) + "/tests/fixtures/tokenizers/bert-uncased-vocab.txt";
  const std::string text = "encode-text --checkpoint " + ckpt + " --tokenizer " + vocab;
  expect_failure("encode-text --checkpoint " + ckpt + " hi", 2, "--tokenizer PATH is required");
  expect_failure(text + " --device tpu hi", 2, "--device must be cpu or cuda[:N], got 'tpu'");
  // Once a bare std::stoi error ("stoi") on a machine with a GPU.
  expect_failure(text + " --device cuda:x hi", 2, "--device must be cpu or cuda[:N], got 'cuda:x'");
  expect_failure("encode-text --checkpoint " + ckpt + " --tokenizer " + tmp.file("none") + " hi", 1,
                 tmp.file("none") + " does not exist");
  // A tokenizer folder with a damaged tokenizer_config.json.
  fs::create_directories(tmp.file("tok"));
  fs::copy_file(vocab, tmp.file("tok/vocab.txt"));
  std::ofstream(tmp.file("tok/tokenizer_config.json")) << "{\"do_lower_case\": tru";
  expect_failure("encode-text --checkpoint " + ckpt + " --tokenizer " + tmp.file("tok") + " hi", 1,
                 tmp.file("tok/tokenizer_config.json") + ": not valid JSON");
  std::ofstream(tmp.file("tok/tokenizer_config.json")) << "{}";
  std::ofstream(tmp.file("tok/sentence_bert_config.json")) << "[1,";
  expect_failure("encode-text --checkpoint " + ckpt + " --tokenizer " + tmp.file("tok") + " hi", 1,
                 tmp.file("tok/sentence_bert_config.json") + " is not valid JSON");

  expect_failure("encode-image --checkpoint " + ckpt + " --tokens a.png", 2,
                 "--tokens needs --out FILE.npy");
  expect_failure("encode-image --checkpoint " + ckpt + " --device gpu a.png", 2,
                 "--device must be cpu or cuda[:N], got 'gpu'");
  const std::string clip = tmp.file("clip.safetensors");
  ASSERT_EQ(
      run_distill("convert --in " + model_fixture("hf_clip_vision") + " --out " + clip).exit_code,
      0);
  expect_failure("encode-image --checkpoint " + clip + " " + tmp.file("missing.png"), 1,
                 tmp.file("missing.png"));
  expect_failure("encode-image --checkpoint " + clip + " " + tmp.path().string(), 1,
                 tmp.path().string());
  // --out in a folder that does not exist: named, and no file appears.
  const std::string good_image =
      std::string(DISTILL_SOURCE_DIR) + "/tests/fixtures/jpeg/rgb_444.jpg";
  expect_failure(
      "encode-image --checkpoint " + clip + " --out " + tmp.file("no/dir/e.npy") + " " + good_image,
      1, tmp.file("no/dir/e.npy"));
  EXPECT_FALSE(fs::exists(tmp.file("no")));
}

TEST(CliBadInput, InfoDataSpecs) {
  TempDir tmp;
  std::ofstream(tmp.file("notes.txt")) << "hello";
  expect_failure("info --data " + tmp.file("notes.txt"), 1, "not a recognised dataset file");
  expect_failure("info --data '" + tmp.file("train-{0..1}.tar") + "'", 1,
                 tmp.file("train-0.tar") + ": no such shard");
  expect_failure("info --data '" + tmp.file("train-{0..") + "'", 1, "unclosed '{'");
  expect_failure("info --data " + tmp.file("im") + "," + tmp.file("lb"), 1,
                 tmp.file("im") + ": no such file");
  fs::create_directories(tmp.file("empty"));
  expect_failure("info --data " + tmp.file("empty"), 1, "no class folders");
}

}  // namespace
}  // namespace distill::testing
