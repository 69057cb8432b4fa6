// Crash-safe file output shared by every writer of run files (checkpoints, latest.json,
// summary.json, reports, metrics.jsonl, .npy): complete writes, errors that say what the system
// error means (a full disk), and atomic, durable replacement of a file.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>

namespace distill {

// strerror(err), plus what it means for a file being written when that is not obvious:
// "No space left on device (the disk is full)".
std::string io_error_text(int err);

// Writes all `size` bytes, retrying on partial writes and interrupts. Returns 0 or the errno.
int write_all(int fd, const void* data, size_t size);

// Replaces `path` atomically and durably. The bytes go to "<path>.tmp.<pid>.<n>" in the same
// directory; commit() fsyncs that file, renames it over `path` and fsyncs the directory. An
// uncommitted writer removes its temporary file when destroyed, so a failed or abandoned write
// leaves `path` exactly as it was. Errors throw distill::Error starting with `where` and naming
// `path`, the temporary file and the system error.
class AtomicFileWriter {
 public:
  AtomicFileWriter(std::string path, std::string where);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t size);
  void write(const std::string& text) { write(text.data(), text.size()); }
  void commit();

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_path_; }

 private:
  std::string path_, where_, temp_path_;
  int fd_ = -1;
  bool committed_ = false;
};

// Test hook, as a full disk behaves: once `after_bytes` more bytes have gone through write_all,
// it writes what fits and then fails with `err` until the hook is cleared (negative after_bytes).
void inject_write_failure_for_testing(int64_t after_bytes, int err = ENOSPC);

}  // namespace distill
