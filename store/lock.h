#pragma once

// The store lock: flock(2) on <root>/lock. Writers (layer create, remove,
// apply, mount bookkeeping) hold it exclusively for the whole operation,
// readers share it, so two `lamina` processes never see or make a half-done
// change. Every StoreLock opens its own file description, so two locks taken
// in one process conflict exactly as two processes would (and a Store never
// takes its lock twice: public operations lock, private helpers do not).

#include <string>

#include "common/fd.h"
#include "common/result.h"

namespace lamina::store {

enum class LockMode { kShared, kExclusive };

class StoreLock {
 public:
  // Takes the lock on `path` (created 0600 if missing), waiting for it.
  static Result<StoreLock> Acquire(const std::string& path, LockMode mode);
  // Like Acquire, but fails with EWOULDBLOCK at once when it is held in a
  // conflicting mode.
  static Result<StoreLock> TryAcquire(const std::string& path, LockMode mode);

  StoreLock(StoreLock&&) = default;
  StoreLock& operator=(StoreLock&&) = default;
  // Releases the lock (closing the fd drops it).
  ~StoreLock() = default;

  LockMode mode() const { return mode_; }

 private:
  StoreLock(Fd fd, LockMode mode) : fd_(std::move(fd)), mode_(mode) {}
  static Result<StoreLock> Take(const std::string& path, LockMode mode, bool wait);

  Fd fd_;
  LockMode mode_;
};

}  // namespace lamina::store
