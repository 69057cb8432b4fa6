// Reads the fields of a JSON config object into a struct's members, rejecting unknown keys so a
// typo is not silently ignored. Type errors name `where` and the key; range checks belong to the
// struct's own validate().
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "core/error.h"

namespace distill::train {

class JsonFields {
 public:
  JsonFields(const nlohmann::json& j, std::string where, const std::set<std::string>& allowed)
      : j_(j), where_(std::move(where)) {
    DISTILL_CHECK(j.is_object(), where_, ": must be a JSON object, got ", j.dump());
    for (const auto& [key, value] : j.items()) {
      if (allowed.count(key)) continue;
      std::string known;
      for (const auto& k : allowed) known += (known.empty() ? "" : ", ") + k;
      fail(where_, ": unknown key '", key, "' (known: ", known, ")");
    }
  }
  void get(const char* key, int64_t& out) const {
    if (!j_.contains(key)) return;
    const auto& v = j_.at(key);
    DISTILL_CHECK(v.is_number_integer(), where_, ": '", key, "' must be an integer, got ",
                  v.dump());
    out = v.get<int64_t>();
  }
  void get(const char* key, double& out) const {
    if (!j_.contains(key)) return;
    const auto& v = j_.at(key);
    DISTILL_CHECK(v.is_number(), where_, ": '", key, "' must be a number, got ", v.dump());
    out = v.get<double>();
  }
  void get(const char* key, bool& out) const {
    if (!j_.contains(key)) return;
    const auto& v = j_.at(key);
    DISTILL_CHECK(v.is_boolean(), where_, ": '", key, "' must be true or false, got ", v.dump());
    out = v.get<bool>();
  }
  void get(const char* key, std::string& out) const {
    if (!j_.contains(key)) return;
    const auto& v = j_.at(key);
    DISTILL_CHECK(v.is_string(), where_, ": '", key, "' must be a string, got ", v.dump());
    out = v.get<std::string>();
  }
  bool has(const char* key) const { return j_.contains(key); }
  const nlohmann::json& at(const char* key) const { return j_.at(key); }
  const std::string& where() const { return where_; }

 private:
  const nlohmann::json& j_;
  std::string where_;
};

}  // namespace distill::train
