#pragma once

// The union on-disk format shared by the kernel-overlay and fuse drivers
// (DESIGN.md, "One on-disk layer format"): a layer's diff/ is an overlayfs
// upper directory.
//   whiteout:  char device 0/0; where mknod is refused, an empty `.wh.NAME`
//              file. Readers accept both.
//   opaque:    xattr <ns>.overlay.opaque="y". Readers also accept a
//              `.wh..wh..opq` file and user.fuseoverlayfs.opaque.
//   redirect:  xattr <ns>.overlay.redirect (kernel redirect_dir=on).
//   ownership a rootless writer could not set:
//              user.containers.override_stat = "uid:gid:mode[:type]".

#include <sys/stat.h>

#include <string>
#include <string_view>

#include "common/result.h"
#include "drivers/driver.h"

namespace lamina {

inline constexpr std::string_view kWhiteoutPrefix = ".wh.";
inline constexpr std::string_view kOpaqueWhiteout = ".wh..wh..opq";
inline constexpr std::string_view kWhiteoutMetaPrefix = ".wh..wh.";  // OCI "meta" entries
inline constexpr std::string_view kOverrideStatXattr = "user.containers.override_stat";
inline constexpr std::string_view kFuseOverlayfsOpaqueXattr = "user.fuseoverlayfs.opaque";

// The kOverrideStatXattr value of an owner and permission bits: "uid:gid:0mode".
std::string OverrideStatValue(uid_t uid, gid_t gid, mode_t perm);

// "trusted.overlay.opaque" / "user.overlay.opaque"
std::string OpaqueXattr(XattrNamespace ns);
// "trusted.overlay.redirect" / "user.overlay.redirect"
std::string RedirectXattr(XattrNamespace ns);
// "trusted.overlay." / "user.overlay." — the prefix hidden from users.
std::string OverlayXattrPrefix(XattrNamespace ns);

// A char device 0/0.
inline bool IsWhiteoutStat(const struct stat& st) {
  return S_ISCHR(st.st_mode) && st.st_rdev == 0;
}
// ".wh.NAME" (but not the opaque marker nor other ".wh..wh." meta names).
bool IsWhiteoutName(std::string_view name);
// "NAME" of ".wh.NAME".
std::string_view WhiteoutTarget(std::string_view name);

// Whether the directory `dirfd` (a real fd, not O_PATH) is opaque in any of
// the accepted forms.
Result<bool> IsOpaqueDir(int dirfd);

// Creates a whiteout for `name` inside `dirfd`: a 0/0 char device, or, where
// mknod is refused (EPERM), an empty `.wh.NAME` file. Replaces nothing:
// EEXIST if `name` exists.
Result<void> MakeWhiteout(int dirfd, const std::string& name);

// Marks the directory `dirfd` (a real fd) opaque in namespace `ns`.
Result<void> MarkOpaque(int dirfd, XattrNamespace ns);

// Whether an xattr name belongs to the union format and must never be shown
// through a mount or copied into a tar.
bool IsInternalXattr(std::string_view name);

}  // namespace lamina
