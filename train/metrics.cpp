#include "train/metrics.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <sstream>

#include "core/error.h"
#include "core/file_io.h"
#include "train/atomic_file.h"

namespace distill::train {

// ---------------------------------------------------------------- ClassificationMetrics

ClassificationMetrics::ClassificationMetrics(int64_t num_classes) : num_classes_(num_classes) {
  DISTILL_CHECK(num_classes >= 1, "ClassificationMetrics: num_classes must be >= 1, got ",
                num_classes);
  reset();
}

void ClassificationMetrics::reset() {
  count_ = 0;
  correct_at_.assign(5, 0);
  class_count_.assign(num_classes_, 0);
  class_correct_.assign(num_classes_, 0);
  confusion_.assign(num_classes_ * num_classes_, 0);
}

void ClassificationMetrics::update(const Tensor& logits, const Tensor& labels) {
  const char* op = "ClassificationMetrics.update";
  DISTILL_CHECK(logits.defined() && labels.defined(), op, ": logits and labels must be given");
  DISTILL_CHECK(logits.dim() == 2 && logits.size(1) == num_classes_, op, ": logits ",
                logits.describe(), " must be [N, ", num_classes_, "]");
  DISTILL_CHECK(labels.dim() == 1 && labels.size(0) == logits.size(0) &&
                    (labels.dtype() == DType::I64 || labels.dtype() == DType::I32),
                op, ": labels ", labels.describe(), " must be [", logits.size(0),
                "] integer class ids");
  const std::vector<double> z = logits.to_double_vector();
  const std::vector<int64_t> y = labels.to_int_vector();
  const int64_t n = logits.size(0), c = num_classes_;
  // Validate the whole batch first: a rejected batch counts nothing.
  for (int64_t i = 0; i < n; ++i) {
    DISTILL_CHECK(y[i] >= 0 && y[i] < c, op, ": label ", y[i], " of row ", i, " is outside [0, ", c,
                  ")");
    for (int64_t j = 0; j < c; ++j)
      DISTILL_CHECK(!std::isnan(z[i * c + j]), op, ": the logits of row ", i, " hold NaN");
  }
  for (int64_t i = 0; i < n; ++i) {
    const double* row = z.data() + i * c;
    const int64_t label = y[i];
    int64_t ahead = 0, predicted = 0;
    for (int64_t j = 0; j < c; ++j) {
      if (row[j] > row[label] || (row[j] == row[label] && j < label)) ++ahead;
      if (row[j] > row[predicted]) predicted = j;
    }
    for (int64_t k = 1; k <= 5; ++k)
      if (ahead < k) ++correct_at_[k - 1];
    ++class_count_[label];
    if (predicted == label) ++class_correct_[label];
    ++confusion_[label * c + predicted];
    ++count_;
  }
}

void ClassificationMetrics::merge(const ClassificationMetrics& other) {
  DISTILL_CHECK(other.num_classes_ == num_classes_,
                "ClassificationMetrics.merge: ", other.num_classes_, " classes vs ", num_classes_);
  count_ += other.count_;
  for (size_t k = 0; k < correct_at_.size(); ++k) correct_at_[k] += other.correct_at_[k];
  for (int64_t j = 0; j < num_classes_; ++j) {
    class_count_[j] += other.class_count_[j];
    class_correct_[j] += other.class_correct_[j];
  }
  for (size_t j = 0; j < confusion_.size(); ++j) confusion_[j] += other.confusion_[j];
}

std::vector<int64_t> ClassificationMetrics::counts() const {
  std::vector<int64_t> out{count_};
  for (const auto* part : {&correct_at_, &class_count_, &class_correct_, &confusion_})
    out.insert(out.end(), part->begin(), part->end());
  return out;
}

void ClassificationMetrics::set_counts(const std::vector<int64_t>& counts) {
  const size_t expected =
      1 + correct_at_.size() + class_count_.size() + class_correct_.size() + confusion_.size();
  DISTILL_CHECK(counts.size() == expected, "ClassificationMetrics.set_counts: ", counts.size(),
                " counts for ", num_classes_, " classes (expected ", expected, ")");
  auto it = counts.begin();
  count_ = *it++;
  for (auto* part : {&correct_at_, &class_count_, &class_correct_, &confusion_})
    for (auto& v : *part) v = *it++;
}

double ClassificationMetrics::topk(int64_t k) const {
  DISTILL_CHECK(k >= 1 && k <= 5, "ClassificationMetrics.topk: k must be in [1, 5], got ", k);
  return count_ == 0 ? 0.0 : static_cast<double>(correct_at_[k - 1]) / static_cast<double>(count_);
}

double ClassificationMetrics::top1() const {
  return topk(1);
}

double ClassificationMetrics::top5() const {
  return topk(5);
}

std::vector<double> ClassificationMetrics::per_class_accuracy() const {
  std::vector<double> out(num_classes_, -1.0);
  for (int64_t j = 0; j < num_classes_; ++j)
    if (class_count_[j] > 0)
      out[j] = static_cast<double>(class_correct_[j]) / static_cast<double>(class_count_[j]);
  return out;
}

nlohmann::json ClassificationMetrics::to_json(bool include_confusion) const {
  nlohmann::json per_class = nlohmann::json::array();
  for (double a : per_class_accuracy())
    per_class.push_back(a < 0 ? nlohmann::json() : nlohmann::json(a));
  nlohmann::json j = {
      {"count", count_}, {"top1", top1()}, {"top5", top5()}, {"per_class_accuracy", per_class}};
  if (include_confusion) {
    nlohmann::json rows = nlohmann::json::array();
    for (int64_t r = 0; r < num_classes_; ++r)
      rows.push_back(std::vector<int64_t>(confusion_.begin() + r * num_classes_,
                                          confusion_.begin() + (r + 1) * num_classes_));
    j["confusion_matrix"] = rows;
  }
  return j;
}

// ---------------------------------------------------------------- MetricsLog

MetricsLog::MetricsLog(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  DISTILL_CHECK(fd_ >= 0, "metrics log: cannot open '", path,
                "' for appending: ", io_error_text(errno));
}

MetricsLog::~MetricsLog() {
  if (fd_ >= 0) ::close(fd_);
}

void MetricsLog::write(const nlohmann::json& record) {
  DISTILL_CHECK(record.is_object(), "metrics log '", path_,
                "': a record must be a JSON object, got ", record.dump());
  // dump() writes NaN and Inf as null; replace invalid UTF-8 rather than throwing mid-run.
  const std::string line =
      record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  const off_t end = ::lseek(fd_, 0, SEEK_END);
  const int err = write_all(fd_, line.data(), line.size());
  if (err == 0) return;
  // Take back a partial line so the file stays valid JSON lines (rewind() would drop it too).
  const bool taken_back = end >= 0 && ::ftruncate(fd_, end) == 0;
  fail("metrics log: writing '", path_, "' failed: ", io_error_text(err), "; the record ",
       line.substr(0, line.size() - 1), " was not logged",
       taken_back ? "" : " (a partial line may remain)");
}

void MetricsLog::rewind(const std::string& path, const std::string& stage, int64_t step) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return;
  std::ostringstream kept;
  std::string line;
  while (std::getline(in, line)) {
    if (in.eof()) break;  // no newline: a torn last line
    nlohmann::json record;
    try {
      record = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      continue;
    }
    if (record.is_object() && record.value("stage", std::string()) == stage &&
        record.contains("step") && record["step"].is_number_integer() &&
        record["step"].get<int64_t>() > step)
      continue;
    kept << line << '\n';
  }
  write_file_atomically(path, kept.str());
}

// ---------------------------------------------------------------- progress

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  const int64_t total = static_cast<int64_t>(std::llround(seconds));
  const int64_t h = total / 3600, m = (total / 60) % 60, s = total % 60;
  char buf[64];
  if (h > 0)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(h),
                  static_cast<long long>(m), static_cast<long long>(s));
  else
    std::snprintf(buf, sizeof buf, "%02lld:%02lld", static_cast<long long>(m),
                  static_cast<long long>(s));
  return buf;
}

ProgressReporter::ProgressReporter(ProgressOptions options, std::ostream& out, bool is_tty,
                                   Clock clock)
    : options_(std::move(options)), out_(out), tty_(is_tty), clock_(std::move(clock)) {
  if (!clock_)
    clock_ = [] {
      return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
          .count();
    };
  DISTILL_CHECK(options_.log_every >= 1, "ProgressReporter: log_every must be >= 1, got ",
                options_.log_every);
  start_time_ = clock_();
}

ProgressReporter::~ProgressReporter() {
  finish();
}

bool ProgressReporter::stderr_is_tty() {
  return ::isatty(STDERR_FILENO) == 1;
}

std::string ProgressReporter::line(int64_t epoch, int64_t step, double loss, double now) const {
  const double elapsed = now - start_time_;
  const int64_t steps_done = step - start_step_;
  std::ostringstream os;
  os << options_.stage << " | epoch " << epoch << " | step " << step;
  if (options_.total_steps > 0) os << "/" << options_.total_steps;
  os << " | loss " << std::fixed << std::setprecision(4) << loss;
  os << " | ";
  if (elapsed > 0)
    os << std::setprecision(1) << static_cast<double>(items_) / elapsed;
  else
    os << "-";
  os << " " << options_.unit << "/s";
  if (options_.total_steps > 0) {
    const double eta = steps_done > 0 && elapsed > 0
                           ? static_cast<double>(options_.total_steps - step) * elapsed /
                                 static_cast<double>(steps_done)
                           : -1.0;
    os << " | ETA " << format_duration(eta);
  }
  return os.str();
}

void ProgressReporter::update(int64_t epoch, int64_t step, double loss, int64_t items) {
  const double now = clock_();
  if (!started_) {
    started_ = true;
    start_step_ = step - 1;
  }
  items_ += items;
  const bool last = options_.total_steps > 0 && step >= options_.total_steps;
  if (tty_) {
    if (!last && now - last_draw_ < 0.1) return;
    last_draw_ = now;
    const std::string text = line(epoch, step, loss, now);
    out_ << '\r' << text << "\x1b[K" << std::flush;
    line_open_ = true;
    if (last) finish();
  } else if (step % options_.log_every == 0 || last) {
    out_ << line(epoch, step, loss, now) << '\n' << std::flush;
  }
}

void ProgressReporter::log(const std::string& message) {
  if (tty_ && line_open_) {
    out_ << "\r\x1b[K";
    line_open_ = false;
    last_draw_ = -1e300;  // redraw on the next update
  }
  out_ << message << '\n' << std::flush;
}

void ProgressReporter::finish() {
  if (tty_ && line_open_) {
    out_ << '\n' << std::flush;
    line_open_ = false;
  }
}

}  // namespace distill::train
