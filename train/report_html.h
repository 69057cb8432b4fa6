// runs/<name>/report.html: one self-contained page (inline SVG and CSS, no scripts, no network)
// made from the run folder's summary.json, metrics.jsonl and config.json: the result table, the
// training curves, the best student's per-class accuracy and confusion matrix, and the config.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace distill::train {

// The five rows of the result table, in the order the method presents them.
struct ResultRow {
  const char* stage;  // summary.json key
  const char* label;  // what the row is called in the table
};
const std::vector<ResultRow>& result_rows();

// The student stage ("student_*") with the highest top-1, or "" when none finished.
std::string best_student(const nlohmann::json& summary);

// True when the config trains with a randomly initialised text encoder (text.random set).
bool uses_random_text_encoder(const nlohmann::json& config);

// The page, from the parsed files. `metrics` are the metrics.jsonl records; `class_names` may be
// empty (classes are then numbered).
std::string html_report(const nlohmann::json& config, const nlohmann::json& summary,
                        const std::vector<nlohmann::json>& metrics,
                        const std::vector<std::string>& class_names);

// Reads <run_dir>/{config,summary}.json and metrics.jsonl and writes <run_dir>/report.html;
// returns its path. Class names come from the config's data.class_names, else the test set.
std::string write_html_report(const std::string& run_dir);

// &, <, >, " and ' as entities.
std::string html_escape(const std::string& text);

}  // namespace distill::train
