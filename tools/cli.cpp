#include "tools/cli.h"

#include <sstream>

namespace distill::cli {

const OptionSpec* Args::find(const std::string& name) const {
  for (const auto& s : specs_)
    if (s.name == name) return &s;
  return nullptr;
}

void Args::parse(int argc, char** argv, int first) {
  for (int i = first; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0 || a == "--") {
      positional_.push_back(a);
      continue;
    }
    std::string name = a.substr(2), val;
    bool has_inline = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      val = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_inline = true;
    }
    const OptionSpec* spec = find(name);
    if (!spec) throw UsageError("distill " + command_ + ": unknown option '--" + name + "'");
    if (!spec->takes_value) {
      if (has_inline)
        throw UsageError("distill " + command_ + ": option '--" + name + "' takes no value");
      flags_.insert(name);
      continue;
    }
    if (!has_inline) {
      if (i + 1 >= argc)
        throw UsageError("distill " + command_ + ": option '--" + name + "' needs a value");
      val = argv[++i];
    }
    values_[name] = val;
  }
}

std::optional<std::string> Args::value(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::string Args::value_or(const std::string& name, const std::string& fallback) const {
  return value(name).value_or(fallback);
}

int64_t Args::int_or(const std::string& name, int64_t fallback) const {
  auto v = value(name);
  if (!v) return fallback;
  try {
    size_t pos = 0;
    const long long x = std::stoll(*v, &pos);
    if (pos != v->size()) throw std::invalid_argument("trailing characters");
    return x;
  } catch (const std::exception&) {
    throw UsageError("distill " + command_ + ": option '--" + name + "' expects an integer, got '" +
                     *v + "'");
  }
}

std::string Args::help(const std::string& summary) const {
  std::ostringstream os;
  os << "usage: distill " << command_ << " [options]\n\n" << summary << "\n\noptions:\n";
  for (const auto& s : specs_) {
    std::string left = "  --" + s.name + (s.takes_value ? " VALUE" : "");
    os << left << std::string(left.size() < 28 ? 28 - left.size() : 1, ' ') << s.help;
    if (!s.default_value.empty()) os << " (default: " << s.default_value << ")";
    os << "\n";
  }
  return os.str();
}

}  // namespace distill::cli
