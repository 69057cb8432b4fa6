#include "train/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace distill::train {

namespace {

namespace fs = std::filesystem;

std::string errno_text(int err) {
  return std::strerror(err);
}

// Durability of a rename: fsync the directory (some filesystems cannot: EINVAL is fine).
void fsync_directory(const std::string& path, const char* where) {
  const fs::path parent = fs::path(path).parent_path();
  const std::string directory = parent.empty() ? std::string(".") : parent.string();
  const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DISTILL_CHECK(fd >= 0, where, " '", path,
                "': written, but cannot open its directory to fsync: ", errno_text(errno));
  const int err = ::fsync(fd) == 0 ? 0 : errno;
  ::close(fd);
  DISTILL_CHECK(err == 0 || err == EINVAL, where, " '", path,
                "': written, but fsync of its directory failed: ", errno_text(err));
}

}  // namespace

void write_file_atomically(const std::string& path, const std::string& contents) {
  const char* where = "write_file_atomically";
  static std::atomic<uint64_t> counter{0};
  const std::string temp =
      path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter.fetch_add(1));
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  DISTILL_CHECK(fd >= 0, where, ": cannot create '", temp, "' (to replace '", path,
                "'): ", errno_text(errno));
  int err = 0;
  for (size_t done = 0; done < contents.size() && err == 0;) {
    const ssize_t n = ::write(fd, contents.data() + done, contents.size() - done);
    if (n < 0 && errno != EINTR) err = errno;
    if (n > 0) done += static_cast<size_t>(n);
  }
  if (err == 0 && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err == 0 && ::rename(temp.c_str(), path.c_str()) != 0) err = errno;
  if (err != 0) {
    ::unlink(temp.c_str());
    fail(where, ": writing '", path, "' failed: ", errno_text(err));
  }
  fsync_directory(path, where);
}

}  // namespace distill::train
