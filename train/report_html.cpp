#include "train/report_html.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "core/error.h"
#include "data/dataset_spec.h"
#include "data/prompts.h"
#include "train/atomic_file.h"

namespace distill::train {

namespace fs = std::filesystem;
using nlohmann::json;

const std::vector<ResultRow>& result_rows() {
  static const std::vector<ResultRow> rows = {
      {"probe", "Teacher, linear probe"},
      {"head", "Image-text head (teacher with text)"},
      {"student_notext", "Student, self-distillation without text"},
      {"student_text", "Student, self-distillation with text"},
      {"student_labels", "Student, labels only"},
  };
  return rows;
}

std::string best_student(const json& summary) {
  std::string best;
  double best_top1 = -1;
  if (!summary.contains("stages")) return best;
  for (const auto& [stage, r] : summary["stages"].items())
    if (stage.rfind("student", 0) == 0 && r.contains("top1") && r["top1"].is_number() &&
        r["top1"].get<double>() > best_top1) {
      best_top1 = r["top1"].get<double>();
      best = stage;
    }
  return best;
}

bool uses_random_text_encoder(const json& config) {
  return config.contains("text") && config["text"].contains("random") &&
         !config["text"]["random"].is_null();
}

std::string html_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

namespace {

std::string fmt(double v, const char* spec = "%.4g") {
  char buf[64];
  std::snprintf(buf, sizeof buf, spec, v);
  return buf;
}

std::string pct_cell(const json& r, const char* key) {
  if (!r.contains(key) || !r[key].is_number()) return "-";
  return fmt(100.0 * r[key].get<double>(), "%.2f");
}

// Fixed colours per stage so a stage looks the same in every chart.
std::string stage_color(const std::string& stage) {
  static const std::map<std::string, std::string> fixed = {
      {"teacher", "#1f77b4"},      {"probe", "#ff7f0e"},          {"head", "#2ca02c"},
      {"student_text", "#d62728"}, {"student_notext", "#9467bd"}, {"student_labels", "#8c564b"}};
  static const char* palette[] = {"#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  if (auto it = fixed.find(stage); it != fixed.end()) return it->second;
  size_t h = 0;
  for (char c : stage) h = h * 31 + static_cast<unsigned char>(c);
  return palette[h % 4];
}

// Tick positions covering [lo, hi] at a 1/2/5 x 10^k spacing, about `count` of them.
std::vector<double> nice_ticks(double lo, double hi, int count) {
  const double span = hi - lo;
  if (!(span > 0) || !std::isfinite(span)) return {lo};
  const double raw = span / count;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> ticks;
  for (double t = std::ceil(lo / step) * step; t <= hi + step * 1e-9; t += step)
    ticks.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
  return ticks;
}

struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (x, y)
};

// An SVG line chart, one polyline per series, with axes, grid and a legend.
std::string line_chart(const std::string& title, const std::string& x_label,
                       const std::string& y_label, const std::vector<Series>& series) {
  const double W = 480, H = 270, L = 58, R = 14, T = 30, B = 42;
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const auto& s : series)
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(y)) continue;
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
  std::ostringstream o;
  o << "<svg class=\"chart\" width=\"" << W << "\" height=\"" << H << "\" viewBox=\"0 0 " << W
    << ' ' << H << "\" role=\"img\"><title>" << html_escape(title) << "</title>";
  o << "<text x=\"" << W / 2 << "\" y=\"18\" class=\"ct\">" << html_escape(title) << "</text>";
  if (!std::isfinite(x0)) {
    o << "<text x=\"" << W / 2 << "\" y=\"" << H / 2 << "\" class=\"note\">no logged steps</text>"
      << "</svg>";
    return o.str();
  }
  // The data's own range: a loss falling from 2.3 to 1.9 would look flat on a zero-based axis.
  if (y1 <= y0) y1 = y0 + 1;
  const double pad = (y1 - y0) * 0.05;
  y0 = y0 >= 0 ? std::max(0.0, y0 - pad) : y0 - pad;
  y1 += pad;
  if (x1 <= x0) x1 = x0 + 1;
  auto px = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto py = [&](double y) { return H - B - (y - y0) / (y1 - y0) * (H - T - B); };
  for (double t : nice_ticks(y0, y1, 5)) {
    o << "<line x1=\"" << L << "\" x2=\"" << W - R << "\" y1=\"" << fmt(py(t)) << "\" y2=\""
      << fmt(py(t)) << "\" class=\"grid\"/>";
    o << "<text x=\"" << L - 5 << "\" y=\"" << fmt(py(t) + 4) << "\" class=\"yt\">" << fmt(t)
      << "</text>";
  }
  for (double t : nice_ticks(x0, x1, 5))
    o << "<text x=\"" << fmt(px(t)) << "\" y=\"" << H - B + 15 << "\" class=\"xt\">" << fmt(t)
      << "</text>";
  o << "<line x1=\"" << L << "\" x2=\"" << L << "\" y1=\"" << T << "\" y2=\"" << H - B
    << "\" class=\"axis\"/><line x1=\"" << L << "\" x2=\"" << W - R << "\" y1=\"" << H - B
    << "\" y2=\"" << H - B << "\" class=\"axis\"/>";
  o << "<text x=\"" << (L + W - R) / 2 << "\" y=\"" << H - 6 << "\" class=\"al\">"
    << html_escape(x_label) << "</text>";
  o << "<text x=\"14\" y=\"" << (T + H - B) / 2 << "\" class=\"al\" transform=\"rotate(-90 14 "
    << (T + H - B) / 2 << ")\">" << html_escape(y_label) << "</text>";
  int legend = 0;
  for (const auto& s : series) {
    const std::string color = stage_color(s.name);
    std::ostringstream pts;
    for (const auto& [x, y] : s.points)
      if (std::isfinite(y)) pts << fmt(px(x)) << ',' << fmt(py(y)) << ' ';
    if (s.points.size() == 1)
      o << "<circle cx=\"" << fmt(px(s.points[0].first)) << "\" cy=\""
        << fmt(py(s.points[0].second)) << "\" r=\"3\" fill=\"" << color << "\"/>";
    else
      o << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"1.6\" points=\""
        << pts.str() << "\"/>";
    if (series.size() > 1) {
      const double ly = T + 6 + 15 * legend++;
      o << "<rect x=\"" << W - R - 130 << "\" y=\"" << ly - 8 << "\" width=\"10\" height=\"10\" "
        << "fill=\"" << color << "\"/><text x=\"" << W - R - 116 << "\" y=\"" << ly + 1
        << "\" class=\"lg\">" << html_escape(s.name) << "</text>";
    }
  }
  o << "</svg>";
  return o.str();
}

// An SVG horizontal bar chart of fractions in [0, 1] (null: not measured), shown as percent.
std::string bar_chart(const std::string& title,
                      const std::vector<std::pair<std::string, json>>& items,
                      const std::string& color) {
  const double W = 480, L = 150, R = 56, T = 30, row = 20;
  const double H = T + row * static_cast<double>(items.size()) + 26;
  std::ostringstream o;
  o << "<svg class=\"chart\" width=\"" << W << "\" height=\"" << H << "\" viewBox=\"0 0 " << W
    << ' ' << H << "\" role=\"img\"><title>" << html_escape(title) << "</title>";
  o << "<text x=\"" << W / 2 << "\" y=\"18\" class=\"ct\">" << html_escape(title) << "</text>";
  const double plot_bottom = T + row * static_cast<double>(items.size());
  for (double t : {0.0, 0.25, 0.5, 0.75, 1.0}) {
    const double x = L + t * (W - L - R);
    o << "<line x1=\"" << fmt(x) << "\" x2=\"" << fmt(x) << "\" y1=\"" << T << "\" y2=\""
      << plot_bottom << "\" class=\"grid\"/><text x=\"" << fmt(x) << "\" y=\"" << plot_bottom + 15
      << "\" class=\"xt\">" << fmt(100 * t) << "%</text>";
  }
  for (size_t i = 0; i < items.size(); ++i) {
    const double y = T + row * static_cast<double>(i);
    std::string name = items[i].first;
    if (name.size() > 22) name = name.substr(0, 21) + "...";
    o << "<text x=\"" << L - 6 << "\" y=\"" << y + 14 << "\" class=\"yt\">" << html_escape(name)
      << "</text>";
    const json& v = items[i].second;
    if (!v.is_number()) {
      o << "<text x=\"" << L + 4 << "\" y=\"" << y + 14 << "\" class=\"lg\">n/a</text>";
      continue;
    }
    const double f = std::clamp(v.get<double>(), 0.0, 1.0);
    o << "<rect x=\"" << L << "\" y=\"" << y + 3 << "\" width=\"" << fmt(f * (W - L - R))
      << "\" height=\"" << row - 6 << "\" fill=\"" << color << "\"/><text x=\""
      << fmt(L + f * (W - L - R) + 4) << "\" y=\"" << y + 14 << "\" class=\"lg\">"
      << fmt(100 * f, "%.1f") << "%</text>";
  }
  o << "</svg>";
  return o.str();
}

// The confusion matrix as an SVG heatmap: rows are true classes, columns predictions, the shade
// the row-normalised fraction (so rare classes are as readable as common ones).
std::string confusion_chart(const std::string& title, const json& matrix,
                            const std::vector<std::string>& names) {
  const size_t C = matrix.size();
  const double cell = std::clamp(360.0 / std::max<size_t>(C, 1), 4.0, 36.0);
  const bool labels = C <= 30, counts = C <= 15;
  const double L = labels ? 130 : 20, T = labels ? 120 : 40;
  const double W = L + cell * static_cast<double>(C) + 20,
               H = T + cell * static_cast<double>(C) + 40;
  std::ostringstream o;
  o << "<svg class=\"chart\" width=\"" << fmt(W) << "\" height=\"" << fmt(H) << "\" viewBox=\"0 0 "
    << fmt(W) << ' ' << fmt(H) << "\" role=\"img\"><title>" << html_escape(title) << "</title>";
  o << "<text x=\"" << fmt(W / 2) << "\" y=\"18\" class=\"ct\">" << html_escape(title) << "</text>";
  auto name_of = [&](size_t i) {
    std::string n = i < names.size() ? names[i] : std::to_string(i);
    return n.size() > 18 ? n.substr(0, 17) + "..." : n;
  };
  for (size_t r = 0; r < C; ++r) {
    int64_t total = 0;
    for (const auto& v : matrix[r]) total += v.get<int64_t>();
    const double y = T + cell * static_cast<double>(r);
    if (labels)
      o << "<text x=\"" << L - 5 << "\" y=\"" << fmt(y + cell / 2 + 4) << "\" class=\"yt\">"
        << html_escape(name_of(r)) << "</text>";
    for (size_t c = 0; c < matrix[r].size(); ++c) {
      const int64_t n = matrix[r][c].get<int64_t>();
      const double f = total > 0 ? static_cast<double>(n) / static_cast<double>(total) : 0.0;
      // White to dark blue.
      const int red = static_cast<int>(std::lround(255 - f * (255 - 8)));
      const int green = static_cast<int>(std::lround(255 - f * (255 - 48)));
      const int blue = static_cast<int>(std::lround(255 - f * (255 - 107)));
      char fill[16];
      std::snprintf(fill, sizeof fill, "#%02x%02x%02x", red, green, blue);
      const double x = L + cell * static_cast<double>(c);
      o << "<rect x=\"" << fmt(x) << "\" y=\"" << fmt(y) << "\" width=\"" << fmt(cell)
        << "\" height=\"" << fmt(cell) << "\" fill=\"" << fill << "\"><title>"
        << html_escape(name_of(r) + " -> " + name_of(c)) << ": " << n << "</title></rect>";
      if (counts && n > 0)
        o << "<text x=\"" << fmt(x + cell / 2) << "\" y=\"" << fmt(y + cell / 2 + 4)
          << "\" class=\"cc\" style=\"fill:" << (f > 0.5 ? "#fff" : "#222") << "\">" << n
          << "</text>";
    }
  }
  if (labels)
    for (size_t c = 0; c < C; ++c) {
      const double x = L + cell * static_cast<double>(c) + cell / 2 + 4, y = T - 6;
      o << "<text x=\"" << fmt(x) << "\" y=\"" << fmt(y)
        << "\" class=\"rl\" transform=\"rotate(-60 " << fmt(x) << ' ' << fmt(y) << ")\">"
        << html_escape(name_of(c)) << "</text>";
    }
  o << "<rect x=\"" << L << "\" y=\"" << T << "\" width=\"" << fmt(cell * static_cast<double>(C))
    << "\" height=\"" << fmt(cell * static_cast<double>(C)) << "\" class=\"frame\"/>";
  o << "<text x=\"" << fmt(L + cell * static_cast<double>(C) / 2) << "\" y=\"" << fmt(H - 12)
    << "\" class=\"al\">rows: true class, columns: predicted</text>";
  o << "</svg>";
  return o.str();
}

std::string figure(const std::string& svg) {
  return "<figure>" + svg + "</figure>\n";
}

const char* kStyle = R"(
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1040px;padding:0 16px;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:4px}h2{font-size:1.2em;margin-top:28px;border-bottom:1px solid #ddd}
.warning{background:#fff3cd;border:1px solid #e0b000;padding:8px 12px;font-weight:bold;margin:0 0 12px}
.meta{color:#555;margin-top:0}
table.results{border-collapse:collapse}
table.results th,table.results td{border:1px solid #ccc;padding:4px 10px}
table.results td.n{text-align:right;font-variant-numeric:tabular-nums}
table.results tr.best{background:#e8f4e8;font-weight:bold}
figure{display:inline-block;margin:6px;vertical-align:top}
pre.config{background:#f6f6f6;border:1px solid #ddd;padding:10px;overflow:auto;font-size:12px}
svg.chart text{font-size:11px;fill:#333}
svg.chart .ct{font-size:13px;font-weight:bold;text-anchor:middle}
svg.chart .yt{text-anchor:end}svg.chart .xt{text-anchor:middle}
svg.chart .al{text-anchor:middle;fill:#555}svg.chart .rl{text-anchor:start}
svg.chart .cc{text-anchor:middle;font-size:10px}svg.chart .note{text-anchor:middle;fill:#888}
svg.chart .grid{stroke:#e6e6e6}svg.chart .axis{stroke:#888}
svg.chart .frame{fill:none;stroke:#888}
)";

}  // namespace

std::string html_report(const json& config, const json& summary, const std::vector<json>& metrics,
                        const std::vector<std::string>& class_names) {
  const json stages = summary.value("stages", json::object());
  const std::string name = config.value("name", std::string("run"));
  const json data = config.value("data", json::object());
  const json text = config.value("text", json::object());
  const std::string best = best_student(summary);
  std::ostringstream o;
  o << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>distill "
       "report: "
    << html_escape(name) << "</title>\n<style>" << kStyle << "</style>\n</head>\n<body>\n";
  if (uses_random_text_encoder(config))
    o << "<p class=\"warning\">Warning: this run used a RANDOMLY INITIALISED text encoder, not a "
         "pretrained one; the with-text results do not show the method.</p>\n";
  o << "<h1>" << html_escape(name) << "</h1>\n";
  std::string teacher = config.value("teacher", json::object()).value("checkpoint", std::string());
  if (teacher.empty()) teacher = "stage 0 (trained on the labels)";
  std::string text_encoder = uses_random_text_encoder(config)
                                 ? std::string("random (untrained)")
                                 : text.value("checkpoint", std::string("?"));
  o << "<p class=\"meta\">Train data: <code>" << html_escape(data.value("train", std::string()))
    << "</code><br>Test data: <code>" << html_escape(data.value("test", std::string()))
    << "</code><br>Teacher image encoder: " << html_escape(teacher)
    << "<br>Text encoder: " << html_escape(text_encoder)
    << "<br>Device: " << html_escape(config.value("device", std::string("cpu"))) << "</p>\n";

  // ---- the result table
  o << "<h2>Results</h2>\n<table class=\"results\">\n<thead><tr><th>Model</th><th>Stage</th>"
       "<th>Top-1 (%)</th><th>Top-5 (%)</th><th>Wall time (s)</th></tr></thead>\n<tbody>\n";
  for (const auto& row : result_rows()) {
    const json r = stages.value(row.stage, json::object());
    o << "<tr" << (row.stage == best ? " class=\"best\"" : "") << "><td>" << html_escape(row.label)
      << "</td><td><code>" << row.stage << "</code></td><td class=\"n\">" << pct_cell(r, "top1")
      << "</td><td class=\"n\">" << pct_cell(r, "top5") << "</td><td class=\"n\">"
      << (r.contains("seconds") ? fmt(r["seconds"].get<double>(), "%.1f") : std::string("-"))
      << "</td></tr>\n";
  }
  o << "</tbody>\n</table>\n<p>";
  if (stages.contains("teacher") && stages["teacher"].contains("top1"))
    o << "The stage-0 teacher's own classifier: top-1 " << pct_cell(stages["teacher"], "top1")
      << "%, trained in " << fmt(stages["teacher"].value("seconds", 0.0), "%.1f") << " s. ";
  if (stages.contains("zeroshot") && stages["zeroshot"].contains("top1"))
    o << "Zero-shot: top-1 " << pct_cell(stages["zeroshot"], "top1") << "%. ";
  if (!best.empty()) o << "Best student (highlighted): <code>" << html_escape(best) << "</code>. ";
  o << "'-': not run.</p>\n";

  // ---- training curves: one chart per stage, the students together (same budget and steps)
  std::vector<std::string> order;
  std::map<std::string, Series> loss;
  std::vector<std::pair<std::string, json>> evals;
  for (const auto& r : metrics) {
    if (!r.is_object() || !r.contains("stage") || !r["stage"].is_string()) continue;
    const std::string stage = r["stage"];
    if (r.contains("eval") && r.contains("top1") && r["top1"].is_number())
      evals.emplace_back(stage, r["top1"]);
    if (!r.contains("loss") || !r.contains("step") || !r["step"].is_number()) continue;
    if (!loss.count(stage)) {
      order.push_back(stage);
      loss[stage].name = stage;
    }
    loss[stage].points.emplace_back(r["step"].get<double>(),
                                    r["loss"].is_number() ? r["loss"].get<double>() : NAN);
  }
  o << "<h2>Training curves</h2>\n<div class=\"charts\">\n";
  std::vector<Series> students;
  for (const auto& stage : order) {
    if (stage.rfind("student", 0) == 0) {
      students.push_back(loss[stage]);
      continue;
    }
    o << figure(line_chart("Training loss: " + stage, "optimizer step", "loss", {loss[stage]}));
  }
  if (!students.empty())
    o << figure(
        line_chart("Training loss: students (same budget)", "optimizer step", "loss", students));
  if (!evals.empty()) o << figure(bar_chart("Test top-1 per evaluation", evals, "#4c72b0"));
  o << "</div>\n";

  // ---- the best student in detail
  if (!best.empty() && stages[best].contains("metrics")) {
    const json& m = stages[best]["metrics"];
    o << "<h2>Best student: " << html_escape(best) << "</h2>\n<div class=\"charts\">\n";
    if (m.contains("per_class_accuracy")) {
      std::vector<std::pair<std::string, json>> items;
      for (size_t i = 0; i < m["per_class_accuracy"].size(); ++i)
        items.emplace_back(i < class_names.size() ? class_names[i] : "class " + std::to_string(i),
                           m["per_class_accuracy"][i]);
      o << figure(bar_chart("Per-class top-1: " + best, items, stage_color(best)));
    }
    if (m.contains("confusion_matrix"))
      o << figure(confusion_chart("Confusion matrix: " + best, m["confusion_matrix"], class_names));
    o << "</div>\n";
  }

  o << "<h2>Config</h2>\n<pre class=\"config\">" << html_escape(config.dump(2)) << "</pre>\n";
  o << "</body>\n</html>\n";
  return o.str();
}

std::string write_html_report(const std::string& run_dir) {
  const fs::path dir(run_dir);
  auto read_json = [&](const char* file) {
    std::ifstream in(dir / file);
    DISTILL_CHECK(in, "html report: cannot open ", (dir / file).string());
    try {
      return json::parse(in);
    } catch (const json::exception& e) {
      throw Error("html report: " + (dir / file).string() + " is not valid JSON: " + e.what());
    }
  };
  const json config = read_json("config.json");
  const json summary = read_json("summary.json");
  std::vector<json> metrics;
  {
    std::ifstream in(dir / "metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      if (line.empty()) continue;
      try {
        metrics.push_back(json::parse(line));
      } catch (const json::exception&) {
        // A torn last line (a killed run) is not worth failing the report for.
      }
    }
  }
  std::vector<std::string> names;
  try {
    const json& d = config.at("data");
    const std::string named = d.value("class_names", std::string());
    names =
        !named.empty()
            ? data::load_class_names(named)
            : data::open_dataset(d.at("test").get<std::string>(), "test").dataset->class_names();
  } catch (const std::exception&) {
    names.clear();  // numbered classes: the report still has every number
  }
  const std::string path = (dir / "report.html").string();
  write_file_atomically(path, html_report(config, summary, metrics, names));
  return path;
}

}  // namespace distill::train
