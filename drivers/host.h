#pragma once

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

#include "common/result.h"

namespace lamina {

// Facts about the host and the store's filesystem, found once by ProbeHost
// and handed to every driver's Probe.
struct HostFacts {
  uid_t euid = 0;
  // True when running in a user namespace other than the initial one (or
  // with an id map that is not the identity), where trusted.* xattrs and
  // mknod are not available.
  bool in_user_namespace = false;
  std::string kernel_release;           // uname -r
  bool overlay_listed = false;          // "overlay" in /proc/filesystems
  bool fuse_listed = false;             // "fuse" in /proc/filesystems
  std::string store_root;               // the store directory probed
  std::string backing_fs;               // "ext4", "xfs", "tmpfs", "overlay", ...
  bool d_type = false;                  // readdir reports d_type on the store fs
  bool dev_fuse = false;                // /dev/fuse can be opened read-write
  std::string fusermount3;              // path of fusermount3, or empty
  bool ficlone = false;                 // FICLONE (reflink) works on the store fs
  bool mknod_whiteout = false;          // mknod of a 0/0 char device works in the store
  bool trusted_xattrs = false;          // trusted.* xattrs can be set in the store
  bool user_xattrs = false;             // user.* xattrs can be set in the store

  // Every fact as text, in a stable order, for `lamina info`.
  std::vector<std::pair<std::string, std::string>> Describe() const;
};

// Probes the host, trying things inside `store_root` (which must exist) and
// cleaning up after itself. Fails only when `store_root` cannot be used at all.
Result<HostFacts> ProbeHost(const std::string& store_root);

// Name of the filesystem type behind `path` ("ext4", "xfs", "overlay", ...).
Result<std::string> FilesystemType(const std::string& path);

}  // namespace lamina
