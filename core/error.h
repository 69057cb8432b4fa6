// Errors: every failure throws distill::Error with a message that names the op (or file) and the
// offending shapes, dtypes or devices.
#pragma once

#include <cstddef>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace distill {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// An allocation the device (or its DISTILL_MEMORY_LIMIT cap) cannot satisfy. The allocators throw
// it with the numbers; callers that know more (the training loop: stage, step, batch size)
// rethrow it with a message that says what to change.
class OutOfMemory : public Error {
 public:
  struct Details {
    std::string device;          // "cpu", "cuda:0"
    size_t requested_bytes = 0;  // the allocation that failed
    size_t in_use_bytes = 0;     // held by live tensors at the time
    size_t reserved_bytes = 0;   // held by the allocator (live + cached)
    size_t peak_bytes = 0;       // high-water mark of in_use_bytes
    size_t capacity_bytes = 0;   // the memory limit, else the device's total; 0 when unknown
    bool limited = false;        // capacity_bytes is a DISTILL_MEMORY_LIMIT cap
    std::string cause;           // the driver's error text (CUDA), empty for a limit
  };
  OutOfMemory(const std::string& what, Details details)
      : Error(what), details_(std::move(details)) {}
  const Details& details() const { return details_; }

 private:
  Details details_;
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
