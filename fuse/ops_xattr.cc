// Xattr ops. The union format's own xattrs (drivers/format.h
// IsInternalXattr, lamina's origin/index marks under the same prefixes) are
// never listed, readable or settable through the mount: as the kernel
// overlay, asking for one gives EOPNOTSUPP.

#include <sys/xattr.h>

#include <vector>

#include "common/fs.h"
#include "drivers/format.h"
#include "fuse/union_fs_impl.h"

namespace lamina::fuse {

namespace {

bool Hidden(const UnionFsImpl& fs, std::string_view name) {
  if (IsInternalXattr(name)) return true;
  if (fs.config().xattr_permissions == 1 && name == "security.containers.override_stat") {
    return true;
  }
  return false;
}

bool IsAcl(std::string_view name) { return name.starts_with("system.posix_acl_"); }

// Why a change of xattr `name` is refused before touching anything (0: it is not).
int RefuseChange(const UnionFsImpl& fs, std::string_view name) {
  if (fs.config().noxattrs || Hidden(fs, name) || (fs.config().noacl && IsAcl(name))) return ENOTSUP;
  if (!fs.writable()) return EROFS;
  return 0;
}

// A path for the xattr syscalls that reaches the object itself: symlinks by
// their directory and name (l*xattr), others through /proc/self/fd.
std::string XattrPath(const NodeState& s) {
  if (S_ISLNK(s.type)) return ProcFdPath(s.src_dir->get()) + "/" + s.src_name;
  return ProcFdPath(s.fd->get());
}

void Getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) noexcept {
  Guard(req, "getxattr", [&] {
    UnionFsImpl* fs = UnionFsImpl::From(req);
    if (fs->config().noxattrs || Hidden(*fs, name) || (fs->config().noacl && IsAcl(name))) {
      fuse_reply_err(req, fs->config().noxattrs || IsAcl(name) ? ENOTSUP : ENODATA);
      return;
    }
    NodeState s = fs->table().FromId(ino)->Snapshot();
    std::string path = XattrPath(s);
    std::vector<char> buf(size);
    ssize_t n = ::lgetxattr(path.c_str(), name, size != 0 ? buf.data() : nullptr, size);
    if (n < 0) {
      fuse_reply_err(req, errno);
    } else if (size == 0) {
      fuse_reply_xattr(req, static_cast<size_t>(n));
    } else {
      fuse_reply_buf(req, buf.data(), static_cast<size_t>(n));
    }
  });
}

void Listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) noexcept {
  Guard(req, "listxattr", [&] {
    UnionFsImpl* fs = UnionFsImpl::From(req);
    if (fs->config().noxattrs) {
      fuse_reply_err(req, ENOTSUP);
      return;
    }
    NodeState s = fs->table().FromId(ino)->Snapshot();
    std::string path = XattrPath(s);
    std::vector<char> raw;
    ssize_t n;
    for (;;) {
      n = ::llistxattr(path.c_str(), nullptr, 0);
      if (n < 0) break;
      raw.resize(static_cast<size_t>(n));
      n = ::llistxattr(path.c_str(), raw.data(), raw.size());
      if (n >= 0 || errno != ERANGE) break;
    }
    if (n < 0) {
      fuse_reply_err(req, errno);
      return;
    }
    std::string out;
    for (size_t i = 0; i < static_cast<size_t>(n);) {
      std::string_view x(raw.data() + i);
      i += x.size() + 1;
      if (Hidden(*fs, x) || (fs->config().noacl && IsAcl(x))) continue;
      out.append(x);
      out.push_back('\0');
    }
    if (size == 0) {
      fuse_reply_xattr(req, out.size());
    } else if (out.size() > size) {
      fuse_reply_err(req, ERANGE);
    } else {
      fuse_reply_buf(req, out.data(), out.size());
    }
  });
}

void Setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
              int flags) noexcept {
  Guard(req, "setxattr", [&] {
    UnionFsImpl* fs = UnionFsImpl::From(req);
    int refused = RefuseChange(*fs, name);
    if (refused != 0) {
      fuse_reply_err(req, refused);
      return;
    }
    Node* node = fs->table().FromId(ino);
    auto up = fs->CopyUp(node);
    if (!up) {
      ReplyError(req, "setxattr", ino, up.error());
      return;
    }
    std::string path = XattrPath(node->Snapshot());
    int r = ::lsetxattr(path.c_str(), name, value, size, flags);
    fuse_reply_err(req, r == 0 ? 0 : errno);
  });
}

void Removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) noexcept {
  Guard(req, "removexattr", [&] {
    UnionFsImpl* fs = UnionFsImpl::From(req);
    int refused = RefuseChange(*fs, name);
    if (refused != 0) {
      fuse_reply_err(req, refused);
      return;
    }
    Node* node = fs->table().FromId(ino);
    // Nothing to copy up for an xattr that is not there.
    NodeState before = node->Snapshot();
    if (!before.upper &&
        ::lgetxattr(XattrPath(before).c_str(), name, nullptr, 0) < 0) {
      fuse_reply_err(req, errno);
      return;
    }
    auto up = fs->CopyUp(node);
    if (!up) {
      ReplyError(req, "removexattr", ino, up.error());
      return;
    }
    std::string path = XattrPath(node->Snapshot());
    int r = ::lremovexattr(path.c_str(), name);
    fuse_reply_err(req, r == 0 ? 0 : errno);
  });
}

}  // namespace

void FillXattrOps(fuse_lowlevel_ops& ops) {
  ops.getxattr = Getxattr;
  ops.listxattr = Listxattr;
  ops.setxattr = Setxattr;
  ops.removexattr = Removexattr;
}

}  // namespace lamina::fuse
