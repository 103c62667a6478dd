#include "drivers/format.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdio>

#include "common/fd.h"

namespace lamina {

std::string_view XattrNamespaceName(XattrNamespace ns) {
  return ns == XattrNamespace::kTrusted ? "trusted" : "user";
}

Result<XattrNamespace> ParseXattrNamespace(std::string_view name) {
  if (name == "trusted") return XattrNamespace::kTrusted;
  if (name == "user") return XattrNamespace::kUser;
  return Fail(EINVAL, "unknown xattr namespace '" + std::string(name) + "' (trusted or user)");
}

std::string_view ChangeKindName(ChangeKind kind) {
  switch (kind) {
    case ChangeKind::kAdded:
      return "A";
    case ChangeKind::kModified:
      return "C";
    case ChangeKind::kDeleted:
      return "D";
  }
  return "?";
}

std::string OverlayXattrPrefix(XattrNamespace ns) {
  return std::string(XattrNamespaceName(ns)) + ".overlay.";
}

std::string OverrideStatValue(uid_t uid, gid_t gid, mode_t perm) {
  char value[64];
  std::snprintf(value, sizeof(value), "%u:%u:0%o", uid, gid, perm);
  return value;
}

std::string OpaqueXattr(XattrNamespace ns) { return OverlayXattrPrefix(ns) + "opaque"; }
std::string RedirectXattr(XattrNamespace ns) { return OverlayXattrPrefix(ns) + "redirect"; }

bool IsWhiteoutName(std::string_view name) {
  return name.starts_with(kWhiteoutPrefix) && !name.starts_with(kWhiteoutMetaPrefix) &&
         name.size() > kWhiteoutPrefix.size();
}

std::string_view WhiteoutTarget(std::string_view name) {
  return name.substr(kWhiteoutPrefix.size());
}

static bool XattrIsY(int fd, const char* name) {
  char value[4];
  ssize_t n = ::fgetxattr(fd, name, value, sizeof(value));
  return n == 1 && value[0] == 'y';
}

Result<bool> IsOpaqueDir(int dirfd) {
  if (XattrIsY(dirfd, "trusted.overlay.opaque") || XattrIsY(dirfd, "user.overlay.opaque") ||
      XattrIsY(dirfd, kFuseOverlayfsOpaqueXattr.data())) {
    return true;
  }
  struct stat st;
  if (::fstatat(dirfd, std::string(kOpaqueWhiteout).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    return true;
  }
  if (errno != ENOENT) return FailErrno("stat .wh..wh..opq");
  return false;
}

Result<void> MakeWhiteout(int dirfd, const std::string& name) {
  if (::mknodat(dirfd, name.c_str(), S_IFCHR | 0000, makedev(0, 0)) == 0) return {};
  if (errno != EPERM) return FailErrno("mknod whiteout " + name);
  std::string marker = std::string(kWhiteoutPrefix) + name;
  int fd = ::openat(dirfd, marker.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0000);
  if (fd < 0) return FailErrno("create whiteout " + marker);
  ::close(fd);
  return {};
}

Result<void> MarkOpaque(int dirfd, XattrNamespace ns) {
  std::string name = OpaqueXattr(ns);
  if (::fsetxattr(dirfd, name.c_str(), "y", 1, 0) != 0) return FailErrno("set " + name);
  return {};
}

bool IsInternalXattr(std::string_view name) {
  return name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") ||
         name.starts_with("user.fuseoverlayfs.") || name == kOverrideStatXattr;
}

}  // namespace lamina
