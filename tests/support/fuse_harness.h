#pragma once

// Serving a lamina UnionFs inside the test process, and the kernel overlay
// as the oracle, for tests that compare the two on the same layers.
//
// FuseMount makes the fuse session itself (fuse_session_new with
// UnionFs::Ops(), fuse_session_mount) and runs the multi-threaded loop in a
// thread; the destructor unmounts (lazily, so open files never block it),
// stops the loop and joins. Needs root or fusermount3 and /dev/fuse.

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/result.h"
#include "fuse/config.h"

struct fuse_session;

namespace lamina::fuse {
class UnionFs;
}

namespace lamina::test {

class FuseMount {
 public:
  // Mounts the union described by `config` at config.mountpoint.
  static Result<std::unique_ptr<FuseMount>> Start(const fuse::FsConfig& config);
  ~FuseMount();
  FuseMount(const FuseMount&) = delete;
  FuseMount& operator=(const FuseMount&) = delete;

  const std::string& path() const { return mountpoint_; }
  const fuse::UnionFs& fs() const { return *fs_; }
  // Unmounts now (the destructor then does nothing more).
  void Stop();

 private:
  FuseMount() = default;
  std::string mountpoint_;
  std::unique_ptr<fuse::UnionFs> fs_;
  fuse_session* session_ = nullptr;
  std::thread loop_;
  bool mounted_ = false;
};

// A kernel overlay mount (the oracle); unmounted by the destructor (lazily if busy).
class OverlayMount {
 public:
  // lowers top first; upper/work may be empty for a read-only mount.
  // `extra` is appended to the mount data ("index=on,redirect_dir=on").
  static Result<std::unique_ptr<OverlayMount>> Start(const std::vector<std::string>& lowers,
                                                     const std::string& upper,
                                                     const std::string& work,
                                                     const std::string& mountpoint,
                                                     const std::string& extra = {});
  ~OverlayMount();
  OverlayMount(const OverlayMount&) = delete;
  OverlayMount& operator=(const OverlayMount&) = delete;
  const std::string& path() const { return mountpoint_; }

 private:
  OverlayMount() = default;
  std::string mountpoint_;
};

// The configuration of a union of `lowers` (top first) over `upper`, with
// the daemon's long kernel caching.
fuse::FsConfig UnionConfig(std::vector<std::string> lowers, std::string upper, std::string work,
                           std::string mountpoint);

// Why FUSE mounts cannot run here ("" when they can): /dev/fuse, root.
std::string FuseUnavailableReason();
// Why kernel overlay mounts cannot run here ("" when they can).
std::string OverlayUnavailableReason();

}  // namespace lamina::test
