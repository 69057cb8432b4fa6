// report.html from made-up run files: structure, escaping, the best student, the text table; and
// the demo's configs resolve for every preset.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/models/model_test_util.h"
#include "tests/train/report_html_check.h"
#include "train/demo.h"
#include "train/experiment.h"
#include "train/report_html.h"

namespace distill::testing {
namespace {

using nlohmann::json;

json stage_result(double top1, int classes) {
  json per_class = json::array(), confusion = json::array();
  for (int c = 0; c < classes; ++c) {
    per_class.push_back(c == 1 ? json() : json(top1));  // class 1 absent from the test set
    json row = json::array();
    for (int p = 0; p < classes; ++p) row.push_back(p == c ? 8 : (p + c) % 3);
    confusion.push_back(row);
  }
  return {{"top1", top1},
          {"top5", 0.99},
          {"seconds", 12.5},
          {"metrics",
           {{"count", 100},
            {"top1", top1},
            {"top5", 0.99},
            {"per_class_accuracy", per_class},
            {"confusion_matrix", confusion}}}};
}

struct FakeRun {
  json config, summary;
  std::vector<json> metrics;
};

FakeRun fake_run() {
  FakeRun r;
  train::DemoOptions o;
  o.text_checkpoint = ".cache/weights/all-minilm-l6-v2";
  r.config = train::demo_config(o);
  r.config["name"] = "<script>alert('x')</script> & co";
  r.summary = {{"stages",
                {{"teacher", stage_result(0.8, 4)},
                 {"probe", stage_result(0.7, 4)},
                 {"head", stage_result(0.75, 4)},
                 {"student_text", stage_result(0.83, 4)},
                 {"student_notext", stage_result(0.81, 4)},
                 {"student_labels", stage_result(0.79, 4)}}}};
  for (const char* stage :
       {"teacher", "probe", "head", "student_text", "student_notext", "student_labels"}) {
    for (int s = 10; s <= 50; s += 10)
      r.metrics.push_back({{"stage", stage}, {"step", s}, {"loss", 2.0 / s}, {"lr", 1e-3}});
    r.metrics.push_back({{"stage", stage}, {"eval", "test"}, {"top1", 0.8}, {"top5", 0.99}});
  }
  r.metrics.push_back({{"stage", "head"}, {"step", 60}, {"loss", nullptr}});  // a NaN loss
  return r;
}

TEST(ReportHtml, HasTheStructureAndEscapesEveryText) {
  const FakeRun r = fake_run();
  const std::string html = train::html_report(r.config, r.summary, r.metrics,
                                              {"T-shirt/top", "<b>bold</b>", "Bag", "x"});
  expect_report_html_structure(html);
  EXPECT_EQ(html.find("<script>"), std::string::npos);
  EXPECT_EQ(html.find("<b>bold"), std::string::npos);
  EXPECT_NE(html.find("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co"),
            std::string::npos);
  EXPECT_NE(html.find("&lt;b&gt;bold&lt;/b&gt;"), std::string::npos);
  EXPECT_NE(html.find("n/a"), std::string::npos);  // the class without test images
  // The best student is highlighted and named.
  EXPECT_EQ(train::best_student(r.summary), "student_text");
  EXPECT_EQ(count_of(html, "<tr class=\"best\">"), 1u);
  EXPECT_NE(html.find("Best student: student_text"), std::string::npos);
  EXPECT_EQ(html.find("RANDOMLY INITIALISED"), std::string::npos);
}

TEST(ReportHtml, ARandomTextEncoderIsTheFirstThingSaid) {
  FakeRun r = fake_run();
  r.config["text"] = {{"tokenizer", "vocab.txt"}, {"random", {{"hidden", 8}}}};
  const std::string html = train::html_report(r.config, r.summary, r.metrics, {});
  const size_t body = html.find("<body>");
  ASSERT_NE(body, std::string::npos);
  EXPECT_EQ(html.find("<p class=\"warning\">"), body + 7) << html.substr(body, 200);
}

TEST(ReportHtml, MissingStagesAndAnEmptyLogStillMakeAPage) {
  FakeRun r = fake_run();
  r.summary["stages"].erase("student_text");
  r.summary["stages"].erase("head");
  const std::string html = train::html_report(r.config, r.summary, {}, {});
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(html.find("Best student: student_notext"), std::string::npos);
  EXPECT_NE(html.find("class 3"), std::string::npos);  // numbered when names are unknown
}

TEST(ReportHtml, WritesTheFileFromARunFolder) {
  FakeRun r = fake_run();
  r.config["data"]["class_names"] = "fashion_mnist";
  TempDir tmp;
  std::ofstream(tmp.file("config.json")) << r.config.dump(2);
  std::ofstream(tmp.file("summary.json")) << r.summary.dump(2);
  {
    std::ofstream m(tmp.file("metrics.jsonl"));
    for (const auto& j : r.metrics) m << j.dump() << "\n";
    m << "{\"stage\": \"torn";  // a killed run's last line
  }
  const std::string path = train::write_html_report(tmp.path().string());
  EXPECT_EQ(path, tmp.file("report.html"));
  std::stringstream html;
  html << std::ifstream(path).rdbuf();
  expect_report_html_structure(html.str());
  EXPECT_NE(html.str().find("Trouser"), std::string::npos);  // the config's class names
  EXPECT_THROW(train::write_html_report(tmp.file("nowhere")), std::exception);
}

TEST(ReportHtml, TheResultTableHasFiveRowsAndMarksTheBestStudent) {
  const std::string table = train::format_result_table(fake_run().summary);
  for (const auto& row : train::result_rows())
    EXPECT_NE(table.find(row.label), std::string::npos) << row.label;
  EXPECT_NE(table.find("* Student, self-distillation with text"), std::string::npos) << table;
  EXPECT_NE(table.find("83.00%"), std::string::npos) << table;
  EXPECT_NE(table.find("12.5"), std::string::npos) << table;
}

TEST(Demo, EveryPresetResolves) {
  for (const char* preset : {"cpu", "gpu"})
    for (bool quick : {false, true}) {
      train::DemoOptions o;
      o.preset = preset;
      o.quick = quick;
      o.random_tokenizer = "vocab.txt";  // distill demo always finds one (the text stages need it)
      const json c = train::resolve_experiment_config(train::demo_config(o), "demo");
      EXPECT_EQ(c["device"], std::string(preset) == "gpu" ? "cuda" : "cpu");
      EXPECT_EQ(c["teacher"]["arch"]["image_size"], 28);
      EXPECT_FALSE(c["text"]["random"].is_null());  // no checkpoint given: a random encoder
      o.text_checkpoint = "minilm";
      EXPECT_TRUE(train::resolve_experiment_config(train::demo_config(o), "demo")["text"]["random"]
                      .is_null());
    }
  train::DemoOptions bad;
  bad.preset = "tpu";
  EXPECT_THROW(train::demo_config(bad), std::exception);
}

}  // namespace
}  // namespace distill::testing
