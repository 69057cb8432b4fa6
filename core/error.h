// Errors: every failure throws distill::Error with a message that names the op (or file) and the
// offending shapes, dtypes or devices.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace distill {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
inline void append(std::ostringstream&) {}
template <typename T, typename... Rest>
void append(std::ostringstream& os, const T& v, const Rest&... rest) {
  os << v;
  append(os, rest...);
}
}  // namespace detail

template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  std::ostringstream os;
  detail::append(os, args...);
  throw Error(os.str());
}

}  // namespace distill

// DISTILL_CHECK(cond, "op: ", detail...) throws distill::Error when cond is false.
#define DISTILL_CHECK(cond, ...)               \
  do {                                         \
    if (!(cond)) ::distill::fail(__VA_ARGS__); \
  } while (0)
