// Name ops: unlink, rename, link, symlink, readlink, mknod.

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "common/fs.h"
#include "common/path.h"
#include "common/scope_guard.h"
#include "drivers/format.h"
#include "fuse/union_fs_impl.h"

namespace lamina::fuse {

namespace {

// Empties a merged-empty upper directory (it holds whiteouts only).
Result<void> ClearWhiteouts(int parent_fd, const std::string& name) {
  Fd dir = LAMINA_TRY(OpenAt(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
  auto names = LAMINA_TRY(ListDir(dir.get()));
  for (const auto& n : names) {
    if (::unlinkat(dir.get(), n.c_str(), 0) != 0) {
      if (errno == EISDIR) {
        LAMINA_CHECK(RemoveTreeAt(dir.get(), n));
        continue;
      }
      return FailErrno("clear " + n);
    }
  }
  return {};
}

Result<void> SetDirXattr(const SharedFd& dir, const std::string& name, const std::string& value) {
  std::string path = ProcFdPath(dir->get());
  if (::setxattr(path.c_str(), name.c_str(), value.data(), value.size(), 0) != 0) {
    return FailErrno("set " + name);
  }
  return {};
}

}  // namespace

Result<void> UnionFsImpl::DoRename(Node* parent, const std::string& name, Node* new_parent,
                                   const std::string& new_name, unsigned int flags) {
  if (!writable()) return Fail(EROFS);
  if ((flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) != 0) return Fail(EINVAL);
  if (new_name.size() > NAME_MAX) return Fail(ENAMETOOLONG);
  if (new_name.starts_with(kWhiteoutPrefix)) return Fail(EINVAL, "reserved name " + new_name);
  bool exchange = (flags & RENAME_EXCHANGE) != 0;
  auto changed = Defer([&] {
    DirChanged(parent);
    DirChanged(new_parent);
  });
  NodeRef src(table_.get(), LAMINA_TRY(LookupNode(parent, name, 1)));
  NodeRef dst;
  {
    auto found = LookupNode(new_parent, new_name, 1);
    if (found) {
      dst = NodeRef(table_.get(), *found);
    } else if (found.error().code() != ENOENT) {
      return Fail(found.error());
    }
  }
  if (dst && dst.get() == src.get()) return {};
  if (!dst && exchange) return Fail(ENOENT);
  NodeState s = src->Snapshot();
  std::optional<NodeState> d;
  if (dst) {
    if ((flags & RENAME_NOREPLACE) != 0) return Fail(EEXIST);
    d = dst->Snapshot();
    // Two names of one file (each looked up as its own node): as POSIX
    // says, nothing happens. The backing rename would do nothing either
    // where both names are up, but would move a copied-up name over a
    // lower one that is not up yet.
    if (!S_ISDIR(s.type) && !S_ISDIR(d->type) && s.ino == d->ino) return {};
    if (!exchange) {
      if (S_ISDIR(s.type) && !S_ISDIR(d->type)) return Fail(ENOTDIR);
      if (!S_ISDIR(s.type) && S_ISDIR(d->type)) return Fail(EISDIR);
      if (S_ISDIR(d->type)) {
        auto names = LAMINA_TRY(MergedNames(*d));
        if (!names.empty()) return Fail(ENOTEMPTY);
      }
    }
  }

  // Copy up what moves; a directory with lower content moves by redirect.
  auto prepare = [&](NodeRef& node, const NodeState& st) -> Result<void> {
    if (S_ISDIR(st.type) && st.has_lower && !config_.redirect_dir) return Fail(EXDEV);
    LAMINA_CHECK(CopyUp(node.get()));
    if (S_ISDIR(st.type) && st.has_lower) {
      NodeState now = node->Snapshot();
      LAMINA_CHECK(SetDirXattr(now.fd, RedirectXattr(ns_), "/" + now.lower_path()));
    }
    return {};
  };
  LAMINA_CHECK(prepare(src, s));
  if (exchange) LAMINA_CHECK(prepare(dst, *d));
  SharedFd old_dir = LAMINA_TRY(UpperDir(parent));
  SharedFd new_dir = LAMINA_TRY(UpperDir(new_parent));
  NodeState pstate = parent->Snapshot();
  NodeState npstate = new_parent->Snapshot();
  s = src->Snapshot();

  // A plain upper directory landing where a lower one shows must hide it.
  auto needs_opaque = [&](const NodeState& st, const NodeState& at_parent,
                          const std::string& at_name, bool over_whiteout) -> Result<bool> {
    if (!S_ISDIR(st.type) || st.has_lower) return false;
    if (over_whiteout) return true;
    return LowerHas(at_parent, at_name);
  };

  if (exchange) {
    NodeState ds = dst->Snapshot();
    bool src_opaque = LAMINA_TRY(needs_opaque(s, npstate, new_name, false));
    bool dst_opaque = LAMINA_TRY(needs_opaque(ds, pstate, name, false));
    if (::renameat2(old_dir->get(), name.c_str(), new_dir->get(), new_name.c_str(),
                    RENAME_EXCHANGE) != 0) {
      return FailErrno();
    }
    if (src_opaque) (void)SetDirXattr(s.fd, OpaqueXattr(ns_), "y");
    if (dst_opaque) (void)SetDirXattr(ds.fd, OpaqueXattr(ns_), "y");
    table_->Exchange(parent, name, new_parent, new_name);
    {
      std::lock_guard lock(src->mu);
      src->state.src_dir = new_dir;
      src->state.src_name = new_name;
    }
    {
      std::lock_guard lock(dst->mu);
      dst->state.src_dir = old_dir;
      dst->state.src_name = name;
    }
    return {};
  }

  bool lower_old = LAMINA_TRY(LowerHas(pstate, name));
  bool over_whiteout = false;
  if (d && d->upper && S_ISDIR(d->type)) {
    LAMINA_CHECK(ClearWhiteouts(new_dir->get(), new_name));
  } else if (!d || !d->upper) {
    over_whiteout = LAMINA_TRY(RemoveWhiteout(new_dir->get(), new_name));
  }
  bool opaque = LAMINA_TRY(needs_opaque(s, npstate, new_name, over_whiteout));
  if (!opaque && S_ISDIR(s.type) && !s.has_lower && d && d->has_lower) opaque = true;

  bool whiteout_done = false;
  if (lower_old && chr_whiteouts_) {
    if (::renameat2(old_dir->get(), name.c_str(), new_dir->get(), new_name.c_str(),
                    RENAME_WHITEOUT) == 0) {
      whiteout_done = true;
    } else if (errno != EINVAL && errno != EPERM) {
      return FailErrno();
    }
  }
  if (!whiteout_done) {
    if (::renameat(old_dir->get(), name.c_str(), new_dir->get(), new_name.c_str()) != 0) {
      int saved = errno;
      if (over_whiteout) (void)MakeWhiteoutAt(new_dir->get(), new_name);
      return Fail(saved);
    }
    if (lower_old) LAMINA_CHECK(MakeWhiteoutAt(old_dir->get(), name));
  }
  if (opaque) LAMINA_CHECK(SetDirXattr(s.fd, OpaqueXattr(ns_), "y"));
  table_->Move(parent, name, new_parent, new_name);
  {
    std::lock_guard lock(src->mu);
    src->state.src_dir = new_dir;
    src->state.src_name = new_name;
    if (S_ISDIR(s.type) && !s.has_lower)
      src->state.EditDir().lower_path = JoinPath(npstate.lower_path(), new_name);
  }
  return {};
}

Result<Node*> UnionFsImpl::DoLink(Node* node, Node* new_parent, const std::string& new_name) {
  if (!writable()) return Fail(EROFS);
  if (new_name.size() > NAME_MAX) return Fail(ENAMETOOLONG);
  if (new_name.starts_with(kWhiteoutPrefix)) return Fail(EINVAL);
  if (S_ISDIR(node->Snapshot().type)) return Fail(EPERM);
  auto changed = Defer([&] { DirChanged(new_parent); });
  LAMINA_CHECK(CopyUp(node));
  // The new name's node may change xattrs behind this one's mark.
  node->xattrs.store(Node::kXattrsSome, std::memory_order_relaxed);
  SharedFd pdir = LAMINA_TRY(UpperDir(new_parent));
  bool over_whiteout = LAMINA_TRY(RemoveWhiteout(pdir->get(), new_name));
  NodeState s = node->Snapshot();
  // Through the object itself, not its name: a node made by an earlier link
  // answers for several names, and the one it was made under may since have
  // been unlinked or replaced by another file.
  if (::linkat(AT_FDCWD, ProcFdPath(s.fd->get()).c_str(), pdir->get(), new_name.c_str(),
               AT_SYMLINK_FOLLOW) != 0) {
    int saved = errno;
    if (over_whiteout) (void)MakeWhiteoutAt(pdir->get(), new_name);
    return Fail(saved);
  }
  // The new name gets a node of its own, as any name the kernel looks up
  // later would (a node shared by two names would be known to the table by
  // one of them only: a lookup or readdirplus of the other would make a
  // second node anyway, and the kernel would drop the first one's dentry).
  // The kernel's cached attributes (nlink) and pages of the old node go.
  node->multi_link.store(true);
  Node* made = LAMINA_TRY(LookupNode(new_parent, new_name, 1));
  made->multi_link.store(true);
  NotifyInvalInode(node);
  return made;
}

namespace {

void Unlink(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept {
  Guard(req, "unlink", [&] {
    UnionFsImpl* fs = UnionFsImpl::From(req);
    fs->NoteFileUse();
    auto r = fs->DoRemove(fs->table().FromId(parent), name, false);
    if (!r) {
      ReplyError(req, "unlink", parent, r.error());
      return;
    }
    fuse_reply_err(req, 0);
  });
}

void Rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t new_parent,
            const char* new_name, unsigned int flags) noexcept {
  Guard(req, "rename", [&] {
    UnionFsImpl* fs = UnionFsImpl::From(req);
    fs->NoteFileUse();
    auto r = fs->DoRename(fs->table().FromId(parent), name, fs->table().FromId(new_parent),
                          new_name, flags);
    if (!r) {
      ReplyError(req, "rename", parent, r.error());
      return;
    }
    fuse_reply_err(req, 0);
  });
}

void Link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t new_parent, const char* new_name) noexcept {
  Guard(req, "link", [&] {
    UnionFsImpl* fs = UnionFsImpl::From(req);
    fs->NoteFileUse();
    ReplyNewEntry(req, "link", ino, fs,
                  fs->DoLink(fs->table().FromId(ino), fs->table().FromId(new_parent), new_name));
  });
}

void Symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) noexcept {
  Guard(req, "symlink", [&] {
    UnionFsImpl* fs = UnionFsImpl::From(req);
    struct stat st;
    auto node = fs->DoMake(req, fs->table().FromId(parent), name, S_IFLNK | 0777, 0, target,
                           nullptr, 0, &st);
    ReplyNewEntry(req, "symlink", parent, fs, std::move(node), &st);
  });
}

void Mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) noexcept {
  Guard(req, "mknod", [&] {
    UnionFsImpl* fs = UnionFsImpl::From(req);
    struct stat st;
    auto node =
        fs->DoMake(req, fs->table().FromId(parent), name, mode, rdev, nullptr, nullptr, 0, &st);
    ReplyNewEntry(req, "mknod", parent, fs, std::move(node), &st);
  });
}

void Readlink(fuse_req_t req, fuse_ino_t ino) noexcept {
  Guard(req, "readlink", [&] {
    UnionFsImpl* fs = UnionFsImpl::From(req);
    fs->NoteFileUse();
    NodeState s = fs->table().FromId(ino)->Snapshot();
    char buf[PATH_MAX + 1];
    ssize_t n = s.fd ? ::readlinkat(s.fd->get(), "", buf, PATH_MAX)
                     : ::readlinkat(s.src_dir->get(), s.src_name.c_str(), buf, PATH_MAX);
    if (n < 0) {
      fuse_reply_err(req, errno);
      return;
    }
    buf[n] = '\0';
    fuse_reply_readlink(req, buf);
  });
}

}  // namespace

void FillLinkOps(fuse_lowlevel_ops& ops) {
  ops.unlink = Unlink;
  ops.rename = Rename;
  ops.link = Link;
  ops.symlink = Symlink;
  ops.mknod = Mknod;
  ops.readlink = Readlink;
}

}  // namespace lamina::fuse
