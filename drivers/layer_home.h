#pragma once

// Where a driver keeps each layer, and the on-disk mount reference count that
// lets separate `lamina` processes share one mount.
//
//   <home>/<id>/diff/       the layer's own content
//   <home>/<id>/work/       overlay/fuse work dir (writable layers)
//   <home>/<id>/merged/     mount point
//   <home>/<id>/parent      the parent id, one line ("" for a base layer)
//   <home>/<id>/mounts      the mount reference count, guarded by flock on
//                           <home>/<id>/mounts.lock

#include <string>
#include <vector>

#include "common/fd.h"
#include "common/result.h"

namespace lamina {

// Ids are 1-128 characters of [A-Za-z0-9_.-], not starting with "." or "-";
// anything else (a "/", "..") is refused with EINVAL so an id can never name
// a path outside the home.
Result<void> ValidateLayerId(const std::string& id);

class LayerHome {
 public:
  explicit LayerHome(std::string home) : home_(std::move(home)) {}

  const std::string& home() const { return home_; }
  std::string Dir(const std::string& id) const { return home_ + "/" + id; }
  std::string DiffDir(const std::string& id) const { return Dir(id) + "/diff"; }
  std::string WorkDir(const std::string& id) const { return Dir(id) + "/work"; }
  std::string MergedDir(const std::string& id) const { return Dir(id) + "/merged"; }

  bool Exists(const std::string& id) const;

  // Makes <home>/<id>/ and diff/ (and work/, merged/ when `writable`), and
  // records the parent. EEXIST if present, ENOENT if the parent is missing.
  // On failure removes what it made.
  Result<void> CreateDirs(const std::string& id, const std::string& parent, bool writable);

  // The parent id ("" for a base layer).
  Result<std::string> Parent(const std::string& id) const;
  // {id, parent, grandparent, ...} top first. ELOOP on a cycle.
  Result<std::vector<std::string>> Chain(const std::string& id) const;

 private:
  std::string home_;
};

// The mount reference count of one layer, shared between processes. Hold a
// MountRefs for the whole check-mount-update sequence: its constructor takes
// an exclusive flock, its destructor releases it.
class MountRefs {
 public:
  static Result<MountRefs> Lock(const LayerHome& home, const std::string& id);

  int count() const { return count_; }
  // Writes the new count (crash-safe).
  Result<void> Set(int count);

 private:
  MountRefs(Fd lock, std::string path, int count)
      : lock_(std::move(lock)), path_(std::move(path)), count_(count) {}
  Fd lock_;
  std::string path_;
  int count_ = 0;
};

// Whether `path` is a mount point (per /proc/self/mountinfo).
Result<bool> IsMountPoint(const std::string& path);

}  // namespace lamina
