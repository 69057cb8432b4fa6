// The experiment runner's ablations end to end on the CPU, on the smoke config's tiny models and
// 16 real CIFAR-10 images per class: few-shot (the labelled stages really see k per class),
// Born-Again generations, cached teacher targets (and a resume that reads them back), image-text
// retrieval on the captions sample, caption queries; and bad ablation configs.
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/safetensors.h"
#include "data/sampling.h"
#include "data/webdataset.h"
#include "tests/models/model_test_util.h"
#include "train/experiment.h"

namespace distill::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string shared_data() {
  return std::string(DISTILL_SOURCE_DIR) + "/../shared/data";
}

json smoke_config(const std::string& name) {
  json c = json::parse(std::ifstream(std::string(DISTILL_SOURCE_DIR) + "/configs/smoke-cpu.json"));
  c["name"] = name;
  c["data"]["train"] = shared_data() + "/cifar10-jpg/train-{0000..0004}.tar";
  c["data"]["test"] = shared_data() + "/cifar10-jpg/test-0000.tar";
  c["data"]["captions"] = shared_data() + "/captions-sample/captions.tsv";
  c["data"]["train_captions"] = "";
  c["text"]["tokenizer"] =
      std::string(DISTILL_SOURCE_DIR) + "/tests/fixtures/tokenizers/bert-uncased-vocab.txt";
  c.erase("ablations");
  c["stage0"]["epochs"] = 1;
  c["head"]["epochs"] = 1;
  c["student"]["epochs"] = 1;
  c["probe"]["epochs"] = 2;
  return c;
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

bool same_model_tensors(const std::string& a_path, const std::string& b_path) {
  SafetensorsFile a(a_path), b(b_path);
  for (const auto& name : a.names()) {
    if (name.rfind("model.", 0) != 0) continue;
    const Tensor ta = a.tensor(name), tb = b.tensor(name);
    if (ta.nbytes() != tb.nbytes() || std::memcmp(ta.data_ptr(), tb.data_ptr(), ta.nbytes()) != 0)
      return false;
  }
  return true;
}

void expect_recall(const json& r, const std::string& who) {
  for (const char* dir : {"image_to_text", "text_to_image"}) {
    ASSERT_TRUE(r.contains(dir)) << who;
    double previous = 0;
    for (const char* k : {"r1", "r5", "r10"}) {
      const double v = r[dir][k];
      EXPECT_GE(v, previous) << who << " " << dir << " " << k;
      EXPECT_LE(v, 1.0) << who << " " << dir << " " << k;
      previous = v;
    }
  }
}

#define SKIP_WITHOUT_DATA()                                         \
  if (!fs::exists(shared_data() + "/cifar10-jpg/test-0000.tar") ||  \
      !fs::exists(shared_data() + "/captions-sample/captions.tsv")) \
  GTEST_SKIP() << "real CIFAR-10 shards or the captions sample not found in " << shared_data()

TEST(Ablations, FewShotGenerationsCachedTargetsAndRetrieval) {
  SKIP_WITHOUT_DATA();
  TempDir tmp;
  train::RunOptions opts;
  opts.runs_dir = tmp.path().string();
  opts.quiet = true;
  json c = smoke_config("abl");
  c["stages"] = {"teacher",        "probe",          "head",     "student_text",
                 "student_notext", "student_labels", "retrieval"};
  c["data"]["labelled_per_class"] = 2;
  c["ablations"] = {{"few_shot", {1}}, {"generations", 2}};
  c["student"]["targets"] = "cached";
  const json summary = train::run_experiment(c, "test config", opts);
  const json& s = summary["stages"];

  // The labelled stages saw k images of every class; the distilled students all 160.
  for (const char* stage : {"teacher", "probe", "head", "student_labels"}) {
    ASSERT_TRUE(s[stage].contains("train_images")) << stage;
    EXPECT_EQ(s[stage]["train_images"], 20) << stage;
    EXPECT_EQ(s[stage]["class_counts"], json(std::vector<int>(10, 2))) << stage;
  }
  for (const char* stage : {"student_text", "student_notext", "student_text@g2"}) {
    EXPECT_EQ(s[stage]["train_images"], 160) << stage;
    EXPECT_EQ(s[stage]["targets_source"], "computed") << stage;
  }
  for (const char* stage : {"teacher@k1", "probe@k1", "head@k1", "student_labels@k1"})
    EXPECT_EQ(s[stage]["train_images"], 10) << stage;
  EXPECT_EQ(s["student_text@k1"]["train_images"], 160);

  const json& a = summary["ablations"];
  ASSERT_EQ(a["few_shot"].size(), 2u);  // the main run's k = 2, then the sweep's k = 1
  EXPECT_EQ(a["few_shot"][0]["k"], 2);
  EXPECT_EQ(a["few_shot"][1]["labelled_images"], 10);
  EXPECT_TRUE(a["few_shot"][1]["student_notext"].is_number());
  ASSERT_EQ(a["generations"].size(), 2u);
  EXPECT_TRUE(a["generations"][1]["top1"].is_number());

  const json& r = s["retrieval"];
  EXPECT_EQ(r["images"], 8);
  EXPECT_EQ(r["texts"], 8);
  EXPECT_EQ(r["fit_images"], 160);
  for (const char* who : {"teacher", "student_text", "student_notext", "student_labels"}) {
    ASSERT_TRUE(r["recall"].contains(who)) << who;
    expect_recall(r["recall"][who], who);
  }

  const fs::path dir = tmp.path() / "abl";
  const std::string report = read_text(dir / "report.md");
  for (const char* heading : {"### Few-shot", "### Repeated generations", "### Caption queries",
                              "### Image-text retrieval", "student_text@g2"})
    EXPECT_NE(report.find(heading), std::string::npos) << heading;
  EXPECT_TRUE(fs::exists(dir / "student_text.targets.npy"));

  // Retraining the first student after a resume reads the cached targets instead of recomputing
  // them, and gives the same weights.
  fs::copy_file(dir / "student_text.safetensors", tmp.path() / "first.safetensors");
  fs::remove(dir / "student_text.safetensors");
  fs::remove_all(dir / "checkpoints" / "student_text");
  opts.resume = true;
  const json resumed = train::run_experiment(c, "test config", opts);
  EXPECT_EQ(resumed["stages"]["student_text"]["targets_source"], "loaded");
  EXPECT_TRUE(same_model_tensors((tmp.path() / "first.safetensors").string(),
                                 (dir / "student_text.safetensors").string()));
}

TEST(Ablations, CaptionQueriesTrainTheHeadOnCaptionedImages) {
  SKIP_WITHOUT_DATA();
  TempDir tmp;
  json c = smoke_config("captions");
  c["stages"] = {"teacher", "head", "head_captions"};
  // Captions for half of the run's training images (the runner's subset: 16 per class, seed 0).
  data::WebDataset train(c["data"]["train"].get<std::string>());
  const auto subset = data::few_shot_indices(train, 16, 0);
  std::ofstream out(tmp.file("train-captions.tsv"));
  out << "image\tcaption\n";
  for (size_t i = 0; i < subset.size(); i += 2)
    out << train.key(subset[i]) << ".jpg\ta small blurry picture number " << i << "\n";
  out.close();
  c["data"]["train_captions"] = tmp.file("train-captions.tsv");
  train::RunOptions opts;
  opts.runs_dir = tmp.path().string();
  opts.quiet = true;
  const json summary = train::run_experiment(c, "test config", opts);
  const json& h = summary["stages"]["head_captions"];
  EXPECT_EQ(h["captioned_images"], 80);
  EXPECT_EQ(h["train_images"], 80);
  EXPECT_GE(h["top1"].get<double>(), 0.0);
  EXPECT_LE(h["top1"].get<double>(), 1.0);
  EXPECT_TRUE(summary["ablations"]["captions"]["head_captions"].is_number());
}

TEST(Ablations, BadAblationConfigsNameTheFileAndTheField) {
  const json base = smoke_config("bad");
  auto expect_error = [&](const json& c, const std::string& needle) {
    try {
      train::resolve_experiment_config(c, "abl.json");
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_TRUE(message_has(e, "abl.json")) << e.what();
      EXPECT_TRUE(message_has(e, needle)) << e.what() << " lacks " << needle;
    }
  };
  json c = base;
  c["data"]["labelled_per_class"] = -1;
  expect_error(c, "data.labelled_per_class");
  c = base;
  c["data"]["labelled_per_class"] = 32;  // more than train_per_class (16)
  expect_error(c, "data.labelled_per_class");
  c = base;
  c["ablations"]["few_shot"] = {1, 0};
  expect_error(c, "ablations.few_shot");
  c = base;
  c["ablations"]["few_shot"] = "1,2";
  expect_error(c, "ablations.few_shot");
  c = base;
  c["ablations"]["few_shot"] = {2, 2};
  expect_error(c, "ablations.few_shot");
  c = base;
  c["ablations"]["few_shot"] = {4};
  c["student"]["alpha"] = 0.5;
  expect_error(c, "student.alpha must be 1 with few-shot");
  c = base;
  c["ablations"]["generations"] = -1;
  expect_error(c, "ablations.generations");
  c = base;
  c["ablations"]["generations"] = 3;
  c["stages"] = {"teacher", "head"};
  expect_error(c, "ablations.generations");
  c = base;
  c["ablations"]["generatoins"] = 2;
  expect_error(c, "ablations.generatoins");
  c = base;
  c["student"]["targets"] = "offline";
  expect_error(c, "student.targets");
  c = base;
  c["data"]["captions"] = "";
  c["stages"] = {"teacher", "retrieval"};
  expect_error(c, "data.captions");
  c = base;
  c["stages"] = {"teacher", "head_captions"};
  expect_error(c, "data.train_captions");
}

}  // namespace
}  // namespace distill::testing
