// Evaluation metrics and run logging: the top-1 / top-5 accuracy accumulator with per-class
// accuracy and the confusion matrix, the metrics.jsonl writer, and the progress reporter (one
// updating line on a terminal, plain log lines elsewhere).
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace distill::train {

// Accumulates classification results over batches. Accuracies are fractions in [0, 1].
// Ranking rule (torch.argmax's): a class is ahead of the true class when its logit is larger, or
// equal with a smaller index; an item is correct at top-k when fewer than k classes are ahead.
// With C < 5 classes top-5 is top-C (always 1). A logit row holding NaN is an error.
class ClassificationMetrics {
 public:
  explicit ClassificationMetrics(int64_t num_classes);

  // logits [N, C] (any floating dtype, any device), labels [N] integer ids in [0, C).
  void update(const Tensor& logits, const Tensor& labels);
  void merge(const ClassificationMetrics& other);  // same num_classes
  void reset();
  // Every count in one vector, and back (data-parallel evaluation sums them over ranks).
  std::vector<int64_t> counts() const;
  void set_counts(const std::vector<int64_t>& counts);  // throws on a length mismatch

  int64_t num_classes() const { return num_classes_; }
  int64_t count() const { return count_; }
  double top1() const;  // 0 when nothing was counted
  double top5() const;
  double topk(int64_t k) const;  // 1 <= k <= 5
  // Per true class: correct top-1 / items of that class; -1 for a class with no items.
  std::vector<double> per_class_accuracy() const;
  // Row-major [C][C] counts: row = true class, column = top-1 prediction.
  const std::vector<int64_t>& confusion_matrix() const { return confusion_; }

  // {"count", "top1", "top5", "per_class_accuracy" (null for classes with no items),
  //  "confusion_matrix" (list of rows; only with include_confusion)}.
  nlohmann::json to_json(bool include_confusion = true) const;

 private:
  int64_t num_classes_;
  int64_t count_ = 0;
  std::vector<int64_t> correct_at_;  // correct_at_[k-1]: items correct at top-k, k = 1..5
  std::vector<int64_t> class_count_, class_correct_;
  std::vector<int64_t> confusion_;
};

// Appends one JSON object per line to a metrics.jsonl file, one write() per line, so a killed run
// keeps everything logged up to the kill. Opening appends (a resumed run continues the file). A
// failed write (a full disk) throws naming the file and takes back the partial line.
class MetricsLog {
 public:
  explicit MetricsLog(const std::string& path);  // throws naming the file when it can't be opened
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  void write(const nlohmann::json& record);  // must be an object; NaN / Inf are written as null
  const std::string& path() const { return path_; }

  // For resuming: rewrites `path` (atomically) without the records of `stage` whose "step" is
  // greater than `step` (logged after the checkpoint being resumed) and without a torn last line
  // (a kill mid-write). Records without "stage" / "step" are kept. A missing file is fine.
  static void rewind(const std::string& path, const std::string& stage, int64_t step);

 private:
  std::string path_;
  int fd_ = -1;
};

// "MM:SS" below an hour, "H:MM:SS" above; "--:--" for a negative or non-finite duration.
std::string format_duration(double seconds);

struct ProgressOptions {
  std::string stage;         // "stage1", "eval", ...
  int64_t total_steps = 0;   // 0: unknown (no ETA)
  int64_t log_every = 50;    // non-TTY: a line every log_every steps and at the last step
  std::string unit = "img";  // rate unit: "<unit>/s"
};

// Progress of a training loop. On a terminal: one line redrawn in place (at most 10 times a
// second, always at the last step); otherwise plain lines. Both read
//   stage1 | epoch 2 | step 120/1000 | loss 1.2345 | 812.3 img/s | ETA 01:23
// The rate and ETA are measured from the reporter's construction, counting steps from the one
// before the first update (so a resumed run's rate is not inflated by the steps it skipped):
// construct it right before the loop.
class ProgressReporter {
 public:
  using Clock = std::function<double()>;  // seconds, monotonic
  ProgressReporter(ProgressOptions options, std::ostream& out, bool is_tty, Clock clock = nullptr);
  ~ProgressReporter();  // finish()

  // `step` optimizer steps done so far (1-based after a step), `items` processed since the last
  // update (the batch size), `loss` the step's loss.
  void update(int64_t epoch, int64_t step, double loss, int64_t items);
  // A message on its own line (the TTY line is cleared first and redrawn on the next update).
  void log(const std::string& message);
  void finish();  // TTY: ends the updating line

  static bool stderr_is_tty();

 private:
  std::string line(int64_t epoch, int64_t step, double loss, double now) const;

  ProgressOptions options_;
  std::ostream& out_;
  bool tty_;
  Clock clock_;
  bool started_ = false, line_open_ = false;
  double start_time_ = 0, last_draw_ = -1e300;
  int64_t start_step_ = 0, items_ = 0;
};

}  // namespace distill::train
