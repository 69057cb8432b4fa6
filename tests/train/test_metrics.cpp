// Accuracy metrics (top-1 / top-5 with ties and C < 5, per-class accuracy, confusion matrix,
// JSON), the metrics.jsonl writer (a full disk is an error, not a silently torn file) and its
// rewind for resumed runs, duration formatting and the
// progress reporter's plain-log and terminal forms (with a fake clock).
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/file_io.h"
#include "tests/models/model_test_util.h"
#include "tests/test_util.h"
#include "train/atomic_file.h"
#include "train/metrics.h"

namespace distill::train {
namespace {

using testing::message_has;
using testing::TempDir;

Tensor logits(const std::vector<float>& v, int64_t n, int64_t c) {
  return Tensor::from_vector(v, {n, c});
}
Tensor labels(const std::vector<int64_t>& v) {
  return Tensor::from_vector(v, {static_cast<int64_t>(v.size())});
}

TEST(TrainClassificationMetrics, TopKPerClassAndConfusionByHand) {
  ClassificationMetrics m(3);          // C = 3 < 5: top-5 is top-3, always right
  m.update(logits({0.9f, 0.1f, 0.0f,   // true 0, predicted 0
                   0.2f, 0.5f, 0.3f,   // true 2, predicted 1 (2 is second)
                   0.3f, 0.3f, 0.1f},  // true 1, tie with class 0: 0 wins (argmax's rule)
                  3, 3),
           labels({0, 2, 1}));
  m.update(logits({0.0f, 0.0f, 1.0f}, 1, 3), labels({2}));  // true 2, predicted 2
  EXPECT_EQ(m.count(), 4);
  EXPECT_DOUBLE_EQ(m.top1(), 0.5);
  EXPECT_DOUBLE_EQ(m.topk(2), 1.0);
  EXPECT_DOUBLE_EQ(m.top5(), 1.0);
  EXPECT_EQ(m.per_class_accuracy(), (std::vector<double>{1.0, 0.0, 0.5}));
  // rows = true class, columns = prediction
  EXPECT_EQ(m.confusion_matrix(), (std::vector<int64_t>{1, 0, 0,  //
                                                        1, 0, 0,  //
                                                        0, 1, 1}));
  const nlohmann::json j = m.to_json();
  EXPECT_EQ(j["count"], 4);
  EXPECT_DOUBLE_EQ(j["top1"].get<double>(), 0.5);
  EXPECT_EQ(j["confusion_matrix"][2], (std::vector<int64_t>{0, 1, 1}));
  EXPECT_FALSE(m.to_json(false).contains("confusion_matrix"));
}

TEST(TrainClassificationMetrics, TopFiveOfSevenClassesMergeAndEmptyClasses) {
  ClassificationMetrics a(7), b(7);
  // True class ranked 5th (four ahead): top-5 right, top-1 wrong.
  a.update(logits({7, 6, 5, 4, 3, 2, 1}, 1, 7), labels({4}));
  // Ranked 6th: wrong at top-5.
  b.update(logits({7, 6, 5, 4, 3, 2, 1}, 1, 7), labels({5}));
  a.merge(b);
  EXPECT_EQ(a.count(), 2);
  EXPECT_DOUBLE_EQ(a.top1(), 0.0);
  EXPECT_DOUBLE_EQ(a.topk(4), 0.0);
  EXPECT_DOUBLE_EQ(a.top5(), 0.5);
  const auto per_class = a.per_class_accuracy();
  EXPECT_EQ(per_class[0], -1.0);  // no items of class 0
  EXPECT_TRUE(a.to_json()["per_class_accuracy"][0].is_null());
  EXPECT_EQ(a.to_json()["per_class_accuracy"][4], 0.0);
  a.reset();
  EXPECT_EQ(a.count(), 0);
  EXPECT_EQ(a.top1(), 0.0);
}

TEST(TrainClassificationMetrics, BadInputIsAClearError) {
  ClassificationMetrics m(3);
  try {
    m.update(logits({1, 2, 3}, 1, 3), labels({3}));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, "label 3")) << e.what();
  }
  try {
    m.update(logits({1, NAN, 3}, 1, 3), labels({0}));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, "NaN")) << e.what();
  }
  EXPECT_THROW(m.update(logits({1, 2, 3, 4}, 1, 4), labels({0})), Error);
  EXPECT_THROW(m.update(logits({1, 2, 3}, 1, 3), labels({0, 1})), Error);
  // A batch with one bad row counts none of its rows.
  EXPECT_THROW(m.update(logits({1, 2, 3, 4, 5, 6}, 2, 3), labels({0, 7})), Error);
  EXPECT_EQ(m.count(), 0);
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

TEST(TrainMetricsLog, AppendsFlushedJsonLinesAndRewindsForResume) {
  TempDir dir;
  const std::string path = dir.file("metrics.jsonl");
  {
    MetricsLog log(path);
    log.write({{"stage", "stage1"}, {"step", 1}, {"loss", 2.5}});
    // Flushed per line: readable before the log is closed.
    EXPECT_EQ(read_lines(path).size(), 1u);
    log.write({{"stage", "stage1"}, {"step", 2}, {"loss", NAN}});
  }
  {
    MetricsLog log(path);  // reopening appends
    log.write({{"stage", "stage2"}, {"step", 1}, {"loss", 1.0}});
    log.write({{"stage", "stage2"}, {"step", 2}, {"loss", 0.9}});
    log.write({{"stage", "stage2"}, {"step", 3}, {"loss", 0.8}});
    EXPECT_THROW(log.write(nlohmann::json::array({1, 2})), Error);
  }
  auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_TRUE(nlohmann::json::parse(lines[1])["loss"].is_null());  // NaN is written as null
  // A kill mid-write leaves a torn last line.
  {
    std::ofstream torn(path, std::ios::app);
    torn << "{\"stage\": \"stage2\", \"st";
  }
  // Resuming stage2 from its step-1 checkpoint: later stage2 records and the torn line go.
  MetricsLog::rewind(path, "stage2", 1);
  lines = read_lines(path);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(nlohmann::json::parse(lines[2])["stage"], "stage2");
  EXPECT_EQ(nlohmann::json::parse(lines[2])["step"], 1);
  MetricsLog::rewind(dir.file("none.jsonl"), "stage1", 0);  // no file: nothing to do
  try {
    MetricsLog bad(dir.file("no/such/dir/metrics.jsonl"));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, "no/such/dir/metrics.jsonl")) << e.what();
  }
}

// A full disk while logging (the injected ENOSPC, as write(2) fails on a full disk) and while
// writing summary.json / report.md (write_file_atomically): an error naming the file and the
// cause, and the file as it was before: no partial line, no half-written summary.
TEST(TrainMetricsLog, FullDiskIsAClearErrorAndTearsNothing) {
  struct ClearInjection {
    ~ClearInjection() { inject_write_failure_for_testing(-1); }
  } clear_injection;
  TempDir dir;
  const std::string path = dir.file("metrics.jsonl");
  MetricsLog log(path);
  log.write({{"stage", "teacher"}, {"step", 1}, {"loss", 2.5}});
  inject_write_failure_for_testing(10);  // the next record fits only partly
  try {
    log.write({{"stage", "teacher"}, {"step", 2}, {"loss", 2.25}});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, path)) << e.what();
    EXPECT_TRUE(message_has(e, "No space left on device (the disk is full)")) << e.what();
    EXPECT_TRUE(message_has(e, "\"step\":2")) << e.what();  // which record was lost
  }
  inject_write_failure_for_testing(-1);
  ASSERT_EQ(read_lines(path).size(), 1u);
  log.write({{"stage", "teacher"}, {"step", 3}, {"loss", 2.0}});  // space again: goes on
  const auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(nlohmann::json::parse(lines[1])["step"], 3);

  const std::string summary = dir.file("summary.json");
  write_file_atomically(summary, "{\"stages\": {}}\n");
  inject_write_failure_for_testing(3);
  try {
    write_file_atomically(summary, "{\"stages\": {\"teacher\": {\"top1\": 0.5}}}\n");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(message_has(e, summary)) << e.what();
    EXPECT_TRUE(message_has(e, "the disk is full")) << e.what();
  }
  inject_write_failure_for_testing(-1);
  EXPECT_EQ(read_lines(summary), std::vector<std::string>{"{\"stages\": {}}"});
  for (const auto& entry : std::filesystem::directory_iterator(dir.path()))
    EXPECT_EQ(entry.path().string().find(".tmp."), std::string::npos) << entry.path();
}

TEST(TrainProgress, DurationFormatting) {
  EXPECT_EQ(format_duration(0), "00:00");
  EXPECT_EQ(format_duration(83.4), "01:23");
  EXPECT_EQ(format_duration(3599.6), "1:00:00");
  EXPECT_EQ(format_duration(3723), "1:02:03");
  EXPECT_EQ(format_duration(100 * 3600.0 + 61), "100:01:01");
  EXPECT_EQ(format_duration(-1), "--:--");
  EXPECT_EQ(format_duration(INFINITY), "--:--");
  EXPECT_EQ(format_duration(NAN), "--:--");
}

TEST(TrainProgress, PlainLinesEveryNStepsWithRateAndEta) {
  double now = 100.0;
  std::ostringstream out;
  ProgressOptions o;
  o.stage = "stage2";
  o.total_steps = 10;
  o.log_every = 4;
  ProgressReporter p(o, out, false, [&] { return now; });
  for (int64_t step = 1; step <= 10; ++step) {
    now += 0.5;  // 0.5 s a step of 32 images: 64 img/s
    p.update(1 + (step - 1) / 5, step, 2.0 / static_cast<double>(step), 32);
  }
  p.finish();
  EXPECT_EQ(out.str(),
            "stage2 | epoch 1 | step 4/10 | loss 0.5000 | 64.0 img/s | ETA 00:03\n"
            "stage2 | epoch 2 | step 8/10 | loss 0.2500 | 64.0 img/s | ETA 00:01\n"
            "stage2 | epoch 2 | step 10/10 | loss 0.2000 | 64.0 img/s | ETA 00:00\n");
}

TEST(TrainProgress, ResumedRunMeasuresOnlyItsOwnSteps) {
  double now = 0.0;
  std::ostringstream out;
  ProgressOptions o;
  o.stage = "stage1";
  o.total_steps = 1000;
  o.log_every = 1;
  o.unit = "items";
  ProgressReporter p(o, out, false, [&] { return now; });
  now = 10.0;
  p.update(3, 501, 1.5, 100);  // resumed at step 500: one step in 10 s, 499 to go
  EXPECT_EQ(out.str(),
            "stage1 | epoch 3 | step 501/1000 | loss 1.5000 | 10.0 items/s | ETA 1:23:10\n");
}

TEST(TrainProgress, TerminalRedrawsOneLine) {
  double now = 0.0;
  std::ostringstream out;
  ProgressOptions o;
  o.stage = "eval";
  o.total_steps = 3;
  ProgressReporter p(o, out, true, [&] { return now; });
  now = 1;
  p.update(0, 1, 0.5, 10);
  now = 1.05;  // within 0.1 s: not redrawn
  p.update(0, 2, 0.5, 10);
  p.log("evaluating");
  now = 2;
  p.update(0, 3, 0.25, 10);  // the last step is always drawn and ends the line
  const std::string s = out.str();
  EXPECT_EQ(s,
            "\reval | epoch 0 | step 1/3 | loss 0.5000 | 10.0 img/s | ETA 00:02\x1b[K"
            "\r\x1b[Kevaluating\n"
            "\reval | epoch 0 | step 3/3 | loss 0.2500 | 15.0 img/s | ETA 00:00\x1b[K\n");
}

}  // namespace
}  // namespace distill::train
