#include "common/fd.h"

#include <unistd.h>

namespace lamina {

void Fd::Reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

Result<Fd> Open(const std::string& path, int flags, mode_t mode) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) return FailErrno("open " + path);
  return Fd(fd);
}

Result<Fd> OpenAt(int dirfd, const std::string& path, int flags, mode_t mode) {
  int fd = ::openat(dirfd, path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) return FailErrno("open " + path);
  return Fd(fd);
}

Result<Fd> OpenDirPath(const std::string& path) {
  return Open(path, O_PATH | O_DIRECTORY);
}

Result<Fd> Dup(int fd) {
  int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) return FailErrno("dup");
  return Fd(copy);
}

}  // namespace lamina
