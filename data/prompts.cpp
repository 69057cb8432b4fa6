#include "data/prompts.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/error.h"

#ifndef DISTILL_DATA_DIR
#define DISTILL_DATA_DIR "data"
#endif

namespace distill::data {

std::string resource_dir() {
  const char* env = std::getenv("DISTILL_DATA_DIR");
  return env && *env ? env : DISTILL_DATA_DIR;
}

std::vector<std::string> read_nonempty_lines(const std::string& path) {
  std::ifstream in(path);
  DISTILL_CHECK(in.good(), path, ": cannot open");
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

namespace {
std::vector<std::string> load(const std::string& folder, const std::string& name) {
  const std::filesystem::path p = std::filesystem::path(resource_dir()) / folder / (name + ".txt");
  DISTILL_CHECK(std::filesystem::exists(p), p.string(), ": no such ", folder,
                " file (set DISTILL_DATA_DIR to the project's data/ folder)");
  auto lines = read_nonempty_lines(p.string());
  DISTILL_CHECK(!lines.empty(), p.string(), ": empty");
  return lines;
}
}  // namespace

std::vector<std::string> load_class_names(const std::string& dataset) {
  return load("classnames", dataset);
}

std::vector<std::string> load_templates(const std::string& name) {
  return load("templates", name);
}

std::string fill_template(const std::string& templ, const std::string& class_name) {
  std::string out;
  size_t pos = 0;
  for (;;) {
    const size_t at = templ.find("{}", pos);
    out += templ.substr(pos, at - pos);
    if (at == std::string::npos) break;
    out += class_name;
    pos = at + 2;
  }
  return out;
}

}  // namespace distill::data
