#pragma once

// Turns a layer tar as the user gives it (plain, gzip, zstd, ...) into the
// uncompressed tar stream a driver's ApplyDiff reads, and its DiffID on the
// way: the sha256 of the uncompressed stream, to its very end (as Docker and
// the OCI image spec define it). The store computes the DiffID itself so
// that it does not depend on each driver reporting one.

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "common/fd.h"
#include "common/result.h"

namespace lamina::store {

class TarFeed {
 public:
  // Starts a thread that reads `in_fd` (which must stay open until Finish)
  // and writes the uncompressed bytes to fd().
  static Result<std::unique_ptr<TarFeed>> Start(int in_fd);
  ~TarFeed();
  TarFeed(const TarFeed&) = delete;
  TarFeed& operator=(const TarFeed&) = delete;

  // The read end: an uncompressed tar stream for Driver::ApplyDiff.
  int fd() const { return read_end_.get(); }

  // Closes the read end, lets the thread read the input to its end, and
  // returns "sha256:<hex>" of the whole uncompressed stream, or the error
  // met reading or decompressing the input. Call once.
  Result<std::string> Finish();

  // Stops at once (the DiffID is not wanted: the apply failed) and waits
  // for the thread. Returns the error met reading the input before the stop,
  // if any: it explains a failed apply better than the driver's "truncated
  // tar". The destructor aborts too.
  Result<void> Abort();

 private:
  TarFeed() = default;
  void Run(int in_fd);

  Fd read_end_;
  Fd write_end_;  // owned by the thread while it runs
  std::thread thread_;
  std::atomic<bool> cancel_{false};
  // Written by the thread, read after join.
  std::string digest_;
  Error error_;
  bool failed_ = false;
};

}  // namespace lamina::store
