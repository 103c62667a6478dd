#pragma once

#include <fcntl.h>
#include <sys/stat.h>

#include <string>
#include <utility>

#include "common/result.h"

namespace lamina {

// A move-only owned file descriptor. Valid when >= 0; closes on destruction.
// Every fd lamina opens is O_CLOEXEC.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) Reset(std::exchange(other.fd_, -1));
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  explicit operator bool() const { return valid(); }
  // Gives up ownership.
  int Release() { return std::exchange(fd_, -1); }
  void Reset(int fd = -1);

 private:
  int fd_ = -1;
};

// open/openat wrappers that add O_CLOEXEC and return the exact errno with the
// path as context.
Result<Fd> Open(const std::string& path, int flags, mode_t mode = 0);
Result<Fd> OpenAt(int dirfd, const std::string& path, int flags, mode_t mode = 0);
// O_PATH | O_DIRECTORY open of a directory.
Result<Fd> OpenDirPath(const std::string& path);
// Duplicates with O_CLOEXEC.
Result<Fd> Dup(int fd);

}  // namespace lamina
