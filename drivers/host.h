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
  // The store's filesystem had no room for the probe: the facts above are
  // those its last probe kept (see ProbeHost), and drivers are not probed.
  bool store_full = false;

  // Every fact as text, in a stable order, for `lamina info`.
  std::vector<std::pair<std::string, std::string>> Describe() const;
};

// Probes the host, trying things inside `store_root` (which must exist) and
// cleaning up after itself. Fails only when `store_root` cannot be used at all.
// With a `facts_file` (a store's), the store filesystem's facts are kept
// there (written when they change), and when that filesystem is too full to
// probe (ENOSPC, EDQUOT) the kept ones are used, if they were found for
// this kernel, user, user namespace and filesystem type: a full store still
// opens, to be listed and cleaned up.
Result<HostFacts> ProbeHost(const std::string& store_root, const std::string& facts_file = {});

// Name of the filesystem type behind `path` ("ext4", "xfs", "overlay", ...).
Result<std::string> FilesystemType(const std::string& path);

}  // namespace lamina
