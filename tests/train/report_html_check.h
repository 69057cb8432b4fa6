// The structure every report.html must have, shared by the report and demo tests.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "train/report_html.h"

namespace distill::testing {

inline size_t count_of(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// Doctype, the result table with its five rows, one <svg> per chart (each in its <figure>), the
// config block, and nothing fetched from elsewhere or run as a script.
inline void expect_report_html_structure(const std::string& html) {
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u) << html.substr(0, 80);
  EXPECT_NE(html.find("</html>"), std::string::npos);
  EXPECT_EQ(count_of(html, "<table class=\"results\">"), 1u);
  const size_t body = html.find("<tbody>"), end = html.find("</tbody>");
  ASSERT_NE(body, std::string::npos);
  ASSERT_NE(end, std::string::npos);
  EXPECT_EQ(count_of(html.substr(body, end - body), "<tr"), 5u);
  for (const auto& row : train::result_rows())
    EXPECT_NE(html.find(train::html_escape(row.label)), std::string::npos) << row.label;
  // Loss curves (teacher, probe or head, the students), test accuracy, per-class, confusion.
  EXPECT_GE(count_of(html, "<svg"), 5u);
  EXPECT_EQ(count_of(html, "<svg"), count_of(html, "</svg>"));
  EXPECT_EQ(count_of(html, "<svg"), count_of(html, "<figure>"));
  EXPECT_NE(html.find("Per-class top-1"), std::string::npos);
  EXPECT_NE(html.find("Confusion matrix"), std::string::npos);
  EXPECT_NE(html.find("Training loss: students"), std::string::npos);
  EXPECT_NE(html.find("<pre class=\"config\">"), std::string::npos);
  EXPECT_NE(html.find("&quot;stage0&quot;"), std::string::npos);  // the config, escaped
  for (const char* external :
       {"http://", "https://", "<script", "src=", "<link", "url(", "@import"})
    EXPECT_EQ(html.find(external), std::string::npos) << external;
}

}  // namespace distill::testing
