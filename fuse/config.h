#pragma once

// What the lamina-fuse command line turns into: the plain configuration the
// union filesystem runs with. The option parser (fuse/options.h) fills it;
// the filesystem (fuse/union_fs.h) only reads it.

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace lamina::fuse {

// One range of an id mapping, as fuse-overlayfs's uidmapping=
// "container:host:count" ("0:1000:1:1:100000:65536").
struct IdMapRange {
  uint32_t inner = 0;  // id seen through the mount
  uint32_t outer = 0;  // id stored on disk
  uint32_t count = 0;
  bool operator==(const IdMapRange&) const = default;
};

struct FsConfig {
  std::vector<std::string> lowers;  // top first; at least one, or an upper
  std::string upper;                // empty: read-only mount of the lowers
  std::string work;                 // required with upper; same fs as upper
  std::string mountpoint;

  std::vector<IdMapRange> uid_map;  // empty: identity
  std::vector<IdMapRange> gid_map;
  bool squash_to_root = false;
  int64_t squash_to_uid = -1;  // -1: off
  int64_t squash_to_gid = -1;
  // 0: off; 1: ownership in "trusted.overlay.override_stat"... as
  // fuse-overlayfs: 1 = privileged xattr, 2 = user.containers.override_stat.
  int xattr_permissions = 0;
  bool static_nlink = false;  // report st_nlink 1 for directories
  bool noacl = false;
  bool noxattrs = false;
  double timeout = 1000000.0;  // kernel entry/attr cache timeout, seconds
  bool threaded = true;
  bool fsync = true;           // false: fsync is a no-op
  bool volatile_mode = false;  // implies fsync=false
  bool writeback = false;      // kernel writeback cache
  bool ino32 = false;          // inode numbers fit in 32 bits
  bool redirect_dir = true;    // directory rename via redirect xattr (else EXDEV)
  bool xino = true;
  bool read_only = false;   // "ro" or no upper
  std::string context;      // SELinux context= (accepted, passed on)
  bool foreground = false;  // -f
  bool debug = false;       // -d
  bool allow_other = false;
  bool default_permissions = false;
  std::string fsname;   // fsname= (default "lamina-fuse")
  std::string subtype;  // subtype= (default "lamina-fuse")
  // Plain mount flags to pass to the kernel (noatime, nosuid, nodev, noexec...).
  std::vector<std::string> kernel_mount_options;
};

}  // namespace lamina::fuse
