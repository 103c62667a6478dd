#pragma once

// Low-level kernel overlay mounts, independent of layers and stores.

#include <functional>
#include <string>
#include <vector>

#include "common/result.h"

namespace lamina::overlay {

// What to mount. Paths are absolute for MountNewApi; for MountLegacy the
// lower/upper/work paths may be relative to `legacy_base` (the mount(2)
// data string is then built from these short relative names).
struct OverlaySpec {
  std::vector<std::string> lowers;  // top first; at least one
  std::string upper;                // empty: no upper (read-only stack)
  std::string work;                 // with upper
  std::string target;               // absolute mount point
  bool read_only = false;
  bool userxattr = false;           // user.overlay.* xattrs (rootless)
  bool redirect_dir = false;        // redirect_dir=on (never with userxattr)
  std::string label;                // SELinux context= (empty: none)
};

// The kernel's limit for mount(2) data (one page).
inline constexpr size_t kMountDataLimit = 4096;

// Mounts with fsopen/fsconfig("lowerdir+", one call per layer)/fsmount/
// move_mount. Errors carry the kernel's own messages read from the fs
// context. ENOSYS where fsopen is missing; EOPNOTSUPP (context "lowerdir+")
// where the kernel's overlay does not know "lowerdir+" (before 6.8), so a
// caller can fall back to MountLegacy.
Result<void> MountNewApi(const OverlaySpec& spec);

// The comma-separated mount(2) option string for `spec` (lowerdir=a:b,...);
// E2BIG when it exceeds kMountDataLimit.
Result<std::string> LegacyMountData(const OverlaySpec& spec);

// mount(2) from a forked child that first changes into `legacy_base`, so
// relative lower/upper/work paths stay short without changing the calling
// process's working directory.
Result<void> MountLegacy(const OverlaySpec& spec, const std::string& legacy_base);

// Runs `fn` in a forked child inside a new user namespace, with the caller's
// uid and gid as its root (one id each), and a new mount namespace owned by
// it, where a user without root may mount overlay (with userxattr). Returns
// what `fn` returned; its mounts end with the child.
Result<std::string> RunInUserNamespace(const std::function<Result<std::string>()>& fn);

// Unmounts `target` (not lazily). EBUSY while in use, EINVAL if not a mount.
Result<void> Unmount(const std::string& target);

}  // namespace lamina::overlay
