#include "core/file_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace distill {

namespace {

std::atomic<int64_t> g_bytes_before_failure{-1};  // the test hook; negative: off
std::atomic<int> g_injected_errno{ENOSPC};

}  // namespace

std::string io_error_text(int err) {
  std::string text = std::strerror(err);
  if (err == ENOSPC || err == EDQUOT) text += " (the disk is full)";
  if (err == EFBIG) text += " (the file-size limit was reached)";
  return text;
}

int write_all(int fd, const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  size_t allowed = size;
  int injected = 0;
  if (const int64_t left = g_bytes_before_failure.load(); left >= 0) {
    if (static_cast<uint64_t>(left) < size) {
      allowed = static_cast<size_t>(left);
      injected = g_injected_errno.load();
    }
    g_bytes_before_failure.store(left - static_cast<int64_t>(allowed));
  }
  while (allowed > 0) {
    const ssize_t n = ::write(fd, p, allowed);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    p += n;
    allowed -= static_cast<size_t>(n);
  }
  return injected;
}

void inject_write_failure_for_testing(int64_t after_bytes, int err) {
  g_injected_errno.store(err);
  g_bytes_before_failure.store(after_bytes < 0 ? -1 : after_bytes);
}

AtomicFileWriter::AtomicFileWriter(std::string path, std::string where)
    : path_(std::move(path)), where_(std::move(where)) {
  static std::atomic<uint64_t> counter{0};
  temp_path_ =
      path_ + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter.fetch_add(1));
  fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0)
    fail(where_, ": cannot create '", temp_path_, "' (to replace '", path_,
         "'): ", io_error_text(errno));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temp_path_.c_str());
}

void AtomicFileWriter::write(const void* data, size_t size) {
  DISTILL_CHECK(fd_ >= 0 && !committed_, where_, ": '", path_, "' is already committed");
  if (const int err = write_all(fd_, data, size); err != 0)
    fail(where_, ": writing '", path_, "' failed (in its temporary file '", temp_path_,
         "', now removed; the old '", path_, "' is unchanged): ", io_error_text(err));
}

void AtomicFileWriter::commit() {
  DISTILL_CHECK(fd_ >= 0 && !committed_, where_, ": '", path_, "' is already committed");
  // A full disk can also surface at fsync or close (delayed allocation), not only at write.
  int err = ::fsync(fd_) == 0 ? 0 : errno;
  if (::close(fd_) != 0 && err == 0) err = errno;
  fd_ = -1;
  if (err != 0)
    fail(where_, ": writing '", path_, "' failed at fsync/close of its temporary file '",
         temp_path_, "' (now removed; the old '", path_, "' is unchanged): ", io_error_text(err));
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0)
    fail(where_, ": cannot replace '", path_, "' with '", temp_path_, "': ", io_error_text(errno));
  committed_ = true;

  // Make the rename itself durable. Some filesystems cannot fsync directories (EINVAL).
  const std::filesystem::path parent = std::filesystem::path(path_).parent_path();
  const std::string directory = parent.empty() ? std::string(".") : parent.string();
  const int dir_fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0)
    fail(where_, ": '", path_,
         "' was written, but its directory cannot be opened to fsync: ", io_error_text(errno));
  const int sync_err = ::fsync(dir_fd) == 0 ? 0 : errno;
  ::close(dir_fd);
  if (sync_err != 0 && sync_err != EINVAL)
    fail(where_, ": '", path_,
         "' was written, but fsync of its directory failed: ", io_error_text(sync_err));
}

}  // namespace distill
