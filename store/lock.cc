#include "store/lock.h"

#include <sys/file.h>

namespace lamina::store {

Result<StoreLock> StoreLock::Acquire(const std::string& path, LockMode mode) {
  return Take(path, mode, /*wait=*/true);
}

Result<StoreLock> StoreLock::TryAcquire(const std::string& path, LockMode mode) {
  return Take(path, mode, /*wait=*/false);
}

Result<StoreLock> StoreLock::Take(const std::string& path, LockMode mode, bool wait) {
  Fd fd = LAMINA_TRY(Open(path, O_RDWR | O_CREAT, 0600));
  int op = (mode == LockMode::kExclusive ? LOCK_EX : LOCK_SH) | (wait ? 0 : LOCK_NB);
  while (::flock(fd.get(), op) != 0) {
    if (errno == EINTR) continue;
    return FailErrno("lock " + path);
  }
  return StoreLock(std::move(fd), mode);
}

}  // namespace lamina::store
