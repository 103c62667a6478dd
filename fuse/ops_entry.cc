// Entry ops: lookup, forget, getattr, setattr, statfs.

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>

#include "common/fs.h"
#include "drivers/format.h"
#include "fuse/union_fs_impl.h"

namespace lamina::fuse {

Result<struct stat> UnionFsImpl::DoSetattr(Node* node, const struct stat& attr, int to_set,
                                           fuse_file_info* fi, fuse_req_t req) {
  (void)req;
  if (!writable()) return Fail(EROFS);
  bool truncating_to_zero = (to_set & FUSE_SET_ATTR_SIZE) != 0 && attr.st_size == 0;
  LAMINA_CHECK(CopyUp(node, !truncating_to_zero));
  NodeState s = node->Snapshot();
  FileHandle* fh = fi != nullptr ? reinterpret_cast<FileHandle*>(fi->fh) : nullptr;
  // Only a writable handle is known to be on the upper copy: a read-only one
  // may still be the lower file, which must never change.
  int handle_fd = fh != nullptr && !fh->read_only ? fh->Get() : -1;
  std::string path = ProcFdPath(s.fd->get());
  bool is_link = S_ISLNK(s.type);

  if ((to_set & FUSE_SET_ATTR_MODE) != 0) {
    if (is_link) return Fail(EOPNOTSUPP);
    if (::fchmodat(AT_FDCWD, path.c_str(), attr.st_mode & 07777, 0) != 0) return FailErrno();
  }
  if ((to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) != 0) {
    uid_t uid =
        (to_set & FUSE_SET_ATTR_UID) != 0 ? ToOuterUid(attr.st_uid) : static_cast<uid_t>(-1);
    gid_t gid =
        (to_set & FUSE_SET_ATTR_GID) != 0 ? ToOuterGid(attr.st_gid) : static_cast<gid_t>(-1);
    if (::fchownat(s.fd->get(), "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
      int saved = errno;
      if (saved != EPERM || OverrideXattr() == nullptr || is_link) return Fail(saved);
      struct stat cur;
      if (::fstatat(s.fd->get(), "", &cur, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
        return FailErrno();
      }
      char value[64];
      std::snprintf(value, sizeof(value), "%u:%u:%o",
                    uid == static_cast<uid_t>(-1) ? cur.st_uid : uid,
                    gid == static_cast<gid_t>(-1) ? cur.st_gid : gid, cur.st_mode & 07777);
      if (::setxattr(path.c_str(), OverrideXattr(), value, std::strlen(value), 0) != 0) {
        return FailErrno();
      }
    }
  }
  if ((to_set & FUSE_SET_ATTR_SIZE) != 0) {
    if (!S_ISREG(s.type)) return Fail(S_ISDIR(s.type) ? EISDIR : EINVAL);
    int r = handle_fd >= 0 ? ::ftruncate(handle_fd, attr.st_size)
                           : ::truncate(path.c_str(), attr.st_size);
    if (r != 0) return FailErrno();
  }
  if ((to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) != 0) {
    struct timespec tv[2];
    tv[0].tv_sec = 0;
    tv[0].tv_nsec = UTIME_OMIT;
    tv[1] = tv[0];
    if ((to_set & FUSE_SET_ATTR_ATIME_NOW) != 0) {
      tv[0].tv_nsec = UTIME_NOW;
    } else if ((to_set & FUSE_SET_ATTR_ATIME) != 0) {
      tv[0] = attr.st_atim;
    }
    if ((to_set & FUSE_SET_ATTR_MTIME_NOW) != 0) {
      tv[1].tv_nsec = UTIME_NOW;
    } else if ((to_set & FUSE_SET_ATTR_MTIME) != 0) {
      tv[1] = attr.st_mtim;
    }
    int r;
    if (handle_fd >= 0) {
      r = ::futimens(handle_fd, tv);
    } else if (is_link) {
      r = ::utimensat(s.src_dir->get(), s.src_name.c_str(), tv, AT_SYMLINK_NOFOLLOW);
    } else {
      r = ::utimensat(AT_FDCWD, path.c_str(), tv, 0);
    }
    if (r != 0) return FailErrno();
  }
  return Stat(node);
}

namespace {

void Lookup(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept {
  Guard(req, "lookup", [&] {
    UnionFsImpl* fs = UnionFsImpl::From(req);
    Node* dir = fs->table().FromId(parent);
    auto found = fs->LookupWithStat(dir, name);
    if (!found) {
      if (found.error().code() == ENOENT && fs->timeout() > 0) {
        fuse_entry_param e{};
        e.ino = 0;  // negative entry, cached for the timeout
        e.entry_timeout = fs->timeout();
        fuse_reply_entry(req, &e);
        return;
      }
      ReplyError(req, "lookup", parent, found.error());
      return;
    }
    if (!S_ISDIR(found->second.st_mode)) fs->NoteFileLookup();
    fuse_entry_param e;
    fs->FillEntry(found->first, found->second, e);
    // An interrupted request: the kernel never counts this lookup.
    if (fuse_reply_entry(req, &e) != 0) fs->table().Unref(found->first);
  });
}

void Forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) noexcept {
  UnionFsImpl* fs = UnionFsImpl::From(req);
  fs->table().Unref(fs->table().FromId(ino), nlookup);
  fuse_reply_none(req);
}

void ForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets) noexcept {
  UnionFsImpl* fs = UnionFsImpl::From(req);
  for (size_t i = 0; i < count; ++i) {
    fs->table().Unref(fs->table().FromId(forgets[i].ino), forgets[i].nlookup);
  }
  fuse_reply_none(req);
}

void Getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  (void)fi;
  Guard(req, "getattr", [&] {
    UnionFsImpl* fs = UnionFsImpl::From(req);
    auto st = fs->Stat(fs->table().FromId(ino));
    if (!st) {
      ReplyError(req, "getattr", ino, st.error());
      return;
    }
    if (!S_ISDIR(st->st_mode)) fs->NoteFileUse();
    fuse_reply_attr(req, &*st, fs->AttrTimeout(*st));
  });
}

void Setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
             fuse_file_info* fi) noexcept {
  Guard(req, "setattr", [&] {
    UnionFsImpl* fs = UnionFsImpl::From(req);
    fs->NoteFileUse();
    auto st = fs->DoSetattr(fs->table().FromId(ino), *attr, to_set, fi, req);
    if (!st) {
      ReplyError(req, "setattr", ino, st.error());
      return;
    }
    fuse_reply_attr(req, &*st, fs->AttrTimeout(*st));
  });
}

void Statfs(fuse_req_t req, fuse_ino_t ino) noexcept {
  (void)ino;
  UnionFsImpl* fs = UnionFsImpl::From(req);
  struct statvfs sv;
  if (::fstatvfs(fs->layer(0).fd.get(), &sv) != 0) {
    fuse_reply_err(req, errno);
    return;
  }
  fuse_reply_statfs(req, &sv);
}

}  // namespace

void FillEntryOps(fuse_lowlevel_ops& ops) {
  ops.lookup = Lookup;
  ops.forget = Forget;
  ops.forget_multi = ForgetMulti;
  ops.getattr = Getattr;
  ops.setattr = Setattr;
  ops.statfs = Statfs;
}

}  // namespace lamina::fuse
