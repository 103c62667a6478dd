// Xattr ops. The union format's own xattrs (drivers/format.h
// IsInternalXattr, lamina's origin/index marks under the same prefixes) are
// never listed, readable or settable through the mount; names under the
// union's own prefix are escaped as the kernel overlay does (see ToDisk).

#include <sys/xattr.h>

#include <optional>
#include <vector>

#include "common/fs.h"
#include "drivers/format.h"
#include "fuse/union_fs_impl.h"

namespace lamina::fuse {

namespace {

bool IsAcl(std::string_view name) { return name.starts_with("system.posix_acl_"); }

bool Hidden(const UnionFsImpl& fs, std::string_view name) {
  if (IsInternalXattr(name)) return true;
  if (name == "security.fuseoverlayfs.override_stat") return true;
  return fs.config().noacl && IsAcl(name);
}

// Names under the union's own prefix are escaped as the kernel overlay does
// ("trusted.overlay.X" is stored as "trusted.overlay.overlay.X"), so users
// may set them without touching the format. nullopt: a hidden name.
std::optional<std::string> ToDisk(const UnionFsImpl& fs, std::string_view name) {
  std::string prefix = OverlayXattrPrefix(fs.xattr_ns());
  if (name.starts_with(prefix))
    return prefix + "overlay." + std::string(name.substr(prefix.size()));
  if (Hidden(fs, name)) return std::nullopt;
  return std::string(name);
}
std::optional<std::string> FromDisk(const UnionFsImpl& fs, std::string_view name) {
  std::string escaped = OverlayXattrPrefix(fs.xattr_ns()) + "overlay.";
  if (name.starts_with(escaped)) {
    return OverlayXattrPrefix(fs.xattr_ns()) + std::string(name.substr(escaped.size()));
  }
  if (Hidden(fs, name)) return std::nullopt;
  return std::string(name);
}

// Where the xattr syscalls reach the object itself: symlinks by their
// directory and name without following, others through /proc/self/fd
// (following the magic link).
struct Target {
  std::string path;
  bool follow;
  ssize_t Get(const char* name, void* buf, size_t size) const {
    return follow ? ::getxattr(path.c_str(), name, buf, size)
                  : ::lgetxattr(path.c_str(), name, buf, size);
  }
  ssize_t List(char* buf, size_t size) const {
    return follow ? ::listxattr(path.c_str(), buf, size) : ::llistxattr(path.c_str(), buf, size);
  }
  int Set(const char* name, const void* value, size_t size, int flags) const {
    return follow ? ::setxattr(path.c_str(), name, value, size, flags)
                  : ::lsetxattr(path.c_str(), name, value, size, flags);
  }
  int Remove(const char* name) const {
    return follow ? ::removexattr(path.c_str(), name) : ::lremovexattr(path.c_str(), name);
  }
};

Target TargetOf(const NodeState& s) {
  // A symlink by its name (not followed); so a lower file without an fd of
  // its own (NodeState::fd), which is no symlink either.
  if (S_ISLNK(s.type) || !s.fd) return {AtPath(s.src_dir->get(), s.src_name), false};
  return {ProcFdPath(s.fd->get()), true};
}

void Getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) noexcept {
  Guard(req, "getxattr", [&] {
    UnionFsImpl* fs = UnionFsImpl::From(req);
    fs->NoteFileUse();
    if (fs->config().noxattrs) {
      fuse_reply_err(req, ENOTSUP);
      return;
    }
    Node* node = fs->table().FromId(ino);
    // `ls -l` asks for security.selinux of every file on every listing, and
    // writes ask for security.capability: a lower object known to have no
    // xattrs at all answers without a syscall.
    if (node->xattrs.load(std::memory_order_relaxed) == Node::kXattrsNone) {
      fuse_reply_err(req, ENODATA);
      return;
    }
    auto disk = ToDisk(*fs, name);
    if (!disk) {
      fuse_reply_err(req, ENODATA);
      return;
    }
    uint32_t copy_ups = node->copy_ups.load(std::memory_order_acquire);
    NodeState s = node->Snapshot();
    Target target = TargetOf(s);
    std::vector<char> buf(size);
    ssize_t n = target.Get(disk->c_str(), size != 0 ? buf.data() : nullptr, size);
    if (n < 0) {
      int err = errno;
      // Whether the object has xattrs at all, for the next asks. A lower
      // object never changes; an upper one only through us, and then
      // ChangeXattr marks it kXattrsSome for good (writes and chown only
      // ever remove xattrs). Not for hard links: another name's node
      // could set one behind this node's mark.
      if (err == ENODATA && !s.indexed && !node->multi_link.load() &&
          node->xattrs.load(std::memory_order_relaxed) == Node::kXattrsUnknown) {
        ssize_t listed = target.List(nullptr, 0);
        // Under the node's lock, and only from kXattrsUnknown: a copy-up
        // meanwhile (which resets the mark under the same lock) or a
        // change (kXattrsSome) leaves no stale mark behind.
        std::lock_guard lock(node->mu);
        uint8_t unknown = Node::kXattrsUnknown;
        if (listed >= 0 && node->copy_ups.load(std::memory_order_acquire) == copy_ups &&
            !node->state.indexed) {
          node->xattrs.compare_exchange_strong(unknown,
                                               listed == 0 ? Node::kXattrsNone : Node::kXattrsSome,
                                               std::memory_order_relaxed);
        }
      }
      fuse_reply_err(req, err);
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
    fs->NoteFileUse();
    if (fs->config().noxattrs) {
      fuse_reply_err(req, ENOTSUP);
      return;
    }
    Target target = TargetOf(fs->table().FromId(ino)->Snapshot());
    std::vector<char> raw;
    ssize_t n;
    for (;;) {
      n = target.List(nullptr, 0);
      if (n <= 0) break;
      raw.resize(static_cast<size_t>(n));
      n = target.List(raw.data(), raw.size());
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
      auto shown = FromDisk(*fs, x);
      if (!shown) continue;
      out.append(*shown);
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

// Setting (value != nullptr) or removing an xattr: copy-up first, as the
// kernel overlay, except when removing one that is not there.
void ChangeXattr(fuse_req_t req, const char* op, fuse_ino_t ino, const char* name,
                 const char* value, size_t size, int flags) {
  UnionFsImpl* fs = UnionFsImpl::From(req);
  auto disk = ToDisk(*fs, name);
  if (fs->config().noxattrs || !disk) {
    fuse_reply_err(req, ENOTSUP);
    return;
  }
  if (!fs->writable()) {
    fuse_reply_err(req, EROFS);
    return;
  }
  Node* node = fs->table().FromId(ino);
  NodeState before = node->Snapshot();
  if (value == nullptr && !before.upper && TargetOf(before).Get(disk->c_str(), nullptr, 0) < 0) {
    fuse_reply_err(req, errno);
    return;
  }
  auto up = fs->CopyUp(node);
  if (!up) {
    ReplyError(req, op, ino, up.error());
    return;
  }
  // For good: a getxattr that listed none before this change must not
  // mark the node kXattrsNone after it.
  node->xattrs.store(Node::kXattrsSome, std::memory_order_relaxed);
  Target target = TargetOf(node->Snapshot());
  int r = value != nullptr ? target.Set(disk->c_str(), value, size, flags)
                           : target.Remove(disk->c_str());
  fuse_reply_err(req, r == 0 ? 0 : errno);
}

void Setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
              int flags) noexcept {
  Guard(req, "setxattr", [&] {
    ChangeXattr(req, "setxattr", ino, name, value != nullptr ? value : "", size, flags);
  });
}

void Removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) noexcept {
  Guard(req, "removexattr", [&] { ChangeXattr(req, "removexattr", ino, name, nullptr, 0, 0); });
}

}  // namespace

void FillXattrOps(fuse_lowlevel_ops& ops) {
  ops.getxattr = Getxattr;
  ops.listxattr = Listxattr;
  ops.setxattr = Setxattr;
  ops.removexattr = Removexattr;
}

}  // namespace lamina::fuse
