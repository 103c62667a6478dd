// Copy-up: making a lower object's name exist in the upper layer, atomically
// through work/work (create there, copy data and metadata, rename into
// place), parents first. Hard-linked lower files are copied once and kept in
// work/index (kernel index=on) so that every name shares the upper inode.

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <string>

#include "common/fs.h"
#include "common/scope_guard.h"
#include "drivers/copy.h"
#include "drivers/format.h"
#include "fuse/union_fs_impl.h"

namespace lamina::fuse {

namespace {

// Makes the copied data durable before the rename that shows it, so that
// after a crash the name shows the old content or the whole new one. The
// kernel overlay calls fsync, which also commits the filesystem's journal
// (several milliseconds per file, the whole cost of a `chmod -R`). Writing
// the data out and waiting for it is enough: the rename is journaled after
// it, and the journal commit that makes the rename durable flushes the
// device cache first (ext4, xfs, btrfs alike). A reflink (FICLONE) copies no
// data and needs neither, as in the kernel.
Result<void> WriteOut(int fd) {
  if (::sync_file_range(
          fd, 0, 0,
          SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER) == 0) {
    return {};
  }
  if (errno != ENOSYS && errno != EINVAL && errno != ESPIPE) return FailErrno("copy-up write-out");
  if (::fdatasync(fd) != 0) return FailErrno("copy-up fdatasync");
  return {};
}

// The node's name now lives in the upper layer as `fd`.
void SetUpper(Node* node, const SharedFd& fd, const SharedFd& dir, const std::string& name) {
  std::lock_guard lock(node->mu);
  node->state.upper = true;
  node->state.layer = 0;
  node->state.fd = fd;
  node->state.src_dir = dir;
  node->state.src_name = name;
  node->xattrs.store(Node::kXattrsUnknown, std::memory_order_relaxed);
  node->copy_ups.fetch_add(1, std::memory_order_release);
}

}  // namespace

Result<bool> UnionFsImpl::RemoveWhiteout(int dirfd, const std::string& name) {
  bool removed = false;
  struct stat st;
  if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && IsWhiteoutStat(st)) {
    if (::unlinkat(dirfd, name.c_str(), 0) != 0) return FailErrno("remove whiteout " + name);
    removed = true;
  }
  std::string marker = std::string(kWhiteoutPrefix) + name;
  if (::unlinkat(dirfd, marker.c_str(), 0) == 0) {
    removed = true;
  } else if (errno != ENOENT && errno != ENAMETOOLONG) {
    return FailErrno("remove whiteout " + marker);
  }
  return removed;
}

int UnionFsImpl::DeviceWhiteoutAt(int dirfd, const std::string& name) {
  // A new name for the shared whiteout inode: a directory entry, where a
  // whiteout of its own would also allocate and write an inode (the kernel
  // overlay shares its whiteouts the same way). Made again when it went
  // (another mount cleaned work/) or has as many links as it can take.
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::string shared;
    {
      std::lock_guard lock(whiteout_mu_);
      if (shared_whiteout_.empty() || attempt > 0) {
        if (!shared_whiteout_.empty()) ::unlinkat(work_fd(), shared_whiteout_.c_str(), 0);
        shared_whiteout_.clear();
        std::string fresh = TempName();
        if (::mknodat(work_fd(), fresh.c_str(), S_IFCHR | 0, makedev(0, 0)) != 0) break;
        shared_whiteout_ = std::move(fresh);
      }
      shared = shared_whiteout_;
    }
    if (::linkat(work_fd(), shared.c_str(), dirfd, name.c_str(), 0) == 0) return 0;
    if (errno != ENOENT && errno != EMLINK) break;
  }
  return ::mknodat(dirfd, name.c_str(), S_IFCHR | 0, makedev(0, 0)) == 0 ? 0 : errno;
}

Result<void> UnionFsImpl::MakeWhiteoutAt(int dirfd, const std::string& name) {
  if (chr_whiteouts_) {
    int err = DeviceWhiteoutAt(dirfd, name);
    if (err == 0) return {};
    if (err != EPERM) return Fail(err, "whiteout " + name);
  }
  std::string marker = std::string(kWhiteoutPrefix) + name;
  int fd = ::openat(dirfd, marker.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0);
  if (fd < 0) return FailErrno("whiteout " + marker);
  ::close(fd);
  return {};
}

Result<struct stat> UnionFsImpl::ChownNew(int dirfd, const std::string& name, fuse_req_t req,
                                          int fd) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  uid_t uid = ToOuterUid(ctx->uid);
  gid_t gid = ToOuterGid(ctx->gid);
  auto stat_new = [&](struct stat* st) {
    return fd >= 0 ? ::fstat(fd, st) : ::fstatat(dirfd, name.c_str(), st, AT_SYMLINK_NOFOLLOW);
  };
  struct stat st;
  if (stat_new(&st) != 0) return FailErrno();
  if (st.st_gid != gid) {
    // The group the backing filesystem chose stays when it is not simply
    // ours: a setgid directory (or a grpid mount) gave its own.
    struct stat dst;
    if (st.st_gid != ::getegid() || (::fstat(dirfd, &dst) == 0 && (dst.st_mode & S_ISGID) != 0)) {
      gid = st.st_gid;
    }
  }
  if (st.st_uid == uid && st.st_gid == gid) return st;
  if (::fchownat(dirfd, name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno != EPERM) return FailErrno("chown " + name);
    if (OverrideXattr() != nullptr && !S_ISLNK(st.st_mode)) {
      char value[64];
      std::snprintf(value, sizeof(value), "%u:%u:%o", uid, gid, st.st_mode & 07777);
      ::lsetxattr(AtPath(dirfd, name).c_str(), OverrideXattr(), value, std::strlen(value), 0);
    }
    return st;
  }
  // A chown may also have cleared set-id bits.
  if (stat_new(&st) != 0) return FailErrno();
  return st;
}

Result<SharedFd> UnionFsImpl::UpperDir(Node* dir) {
  LAMINA_CHECK(CopyUp(dir));
  NodeState s = dir->Snapshot();
  if (!S_ISDIR(s.type)) return Fail(ENOTDIR);
  return s.fd;
}

Result<void> UnionFsImpl::CopyUp(Node* node, bool data) {
  if (node->Snapshot().upper) return {};
  if (!writable()) return Fail(EROFS);
  auto [parent_ptr, name] = table_->ParentAndName(node);
  NodeRef parent(table_.get(), parent_ptr);
  if (!parent) return Fail(ENOENT, "copy-up of an unlinked object");
  SharedFd pdir = LAMINA_TRY(UpperDir(parent.get()));

  std::lock_guard copy_lock(node->copy_mu);
  NodeState s = node->Snapshot();
  if (s.upper) return {};
  // Removed while this waited (DoRemove holds copy_mu).
  if (table_->IsUnlinked(node)) return Fail(ENOENT, "copy-up of an unlinked object");
  std::string src_path = AtPath(s.src_dir->get(), s.src_name);
  SharedFd object = LAMINA_TRY(ObjectFd(s));
  struct stat st;
  if (::fstatat(object->get(), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
    return FailErrno("stat " + src_path);
  }
  std::string index_xattr = OverlayXattrPrefix(ns_) + "lamina.lower";
  std::string index_name = IndexName(s.origin_dev, s.origin_ino);

  if (s.indexed && !S_ISDIR(s.type)) {
    // The inode is already up (under another name): one more link to it.
    if (::linkat(index_fd(), index_name.c_str(), pdir->get(), name.c_str(), 0) != 0) {
      return FailErrno("link " + name + " from index");
    }
    char value[32];
    std::string ipath = AtPath(index_fd(), index_name);
    ssize_t n = ::lgetxattr(ipath.c_str(), index_xattr.c_str(), value, sizeof(value) - 1);
    if (n > 0) {
      value[n] = '\0';
      long pending = std::strtol(value, nullptr, 10);
      std::string next = std::to_string(pending > 0 ? pending - 1 : 0);
      ::lsetxattr(ipath.c_str(), index_xattr.c_str(), next.data(), next.size(), 0);
    }
    SharedFd fd = LAMINA_TRY(OpenPathAt(pdir->get(), name));
    SetUpper(node, fd, pdir, name);
    return {};
  }

  std::string tmp = TempName();
  int work = work_fd();
  auto cleanup = Defer([&] {
    if (S_ISDIR(st.st_mode)) {
      ::unlinkat(work, tmp.c_str(), AT_REMOVEDIR);
    } else {
      ::unlinkat(work, tmp.c_str(), 0);
    }
  });
  MetadataOptions metadata;
  metadata.xattrs = true;
  metadata.skip_internal_xattrs = true;
  std::string origin =
      std::to_string(static_cast<uint64_t>(s.origin_dev)) + ":" + std::to_string(s.origin_ino);
  bool metadata_done = false;
  switch (st.st_mode & S_IFMT) {
    case S_IFDIR:
      if (::mkdirat(work, tmp.c_str(), 0700) != 0) return FailErrno("copy-up mkdir");
      break;
    case S_IFREG: {
      // Data and metadata through the two open files: no path is resolved,
      // and what the new file already has (owner, mode) is not set again.
      Fd src = LAMINA_TRY(Open(ProcFdPath(object->get()), O_RDONLY));
      Fd dst = LAMINA_TRY(OpenAt(work, tmp, O_WRONLY | O_CREAT | O_EXCL, st.st_mode & 0777));
      bool sync = false;
      if (data && st.st_size > 0) {
        std::atomic<bool>& no_clone = no_clone_[static_cast<size_t>(s.layer)];
        CopyOptions co;
        co.write_behind = config_.fsync;
        co.try_clone = !no_clone.load(std::memory_order_relaxed);
        auto copied = CopyFileData(src.get(), dst.get(), static_cast<uint64_t>(st.st_size), co);
        if (!copied) return Fail(copied.error().Wrap("copy-up " + name));
        // Once FICLONE failed between this layer and the upper it is not
        // tried again (it fails the same way for every file).
        if (*copied != CopyMethod::kClone) no_clone.store(true, std::memory_order_relaxed);
        sync = config_.fsync && *copied != CopyMethod::kClone;
      }
      auto meta = CopyMetadataFd(src.get(), st, dst.get(), metadata);
      if (!meta) return Fail(meta.error().Wrap("copy-up " + name));
      ::fsetxattr(dst.get(), OriginXattr().c_str(), origin.data(), origin.size(), 0);
      if (sync) LAMINA_CHECK(WriteOut(dst.get()));
      metadata_done = true;
      break;
    }
    case S_IFLNK: {
      char target[PATH_MAX + 1];
      ssize_t n = ::readlinkat(object->get(), "", target, PATH_MAX);
      if (n < 0) return FailErrno("copy-up readlink");
      target[n] = '\0';
      if (::symlinkat(target, work, tmp.c_str()) != 0) return FailErrno("copy-up symlink");
      break;
    }
    default:
      if (::mknodat(work, tmp.c_str(), st.st_mode, st.st_rdev) != 0) {
        return FailErrno("copy-up mknod");
      }
  }
  if (!metadata_done) {
    auto meta = CopyMetadata(src_path, st, work, tmp, metadata);
    if (!meta) return Fail(meta.error().Wrap("copy-up " + name));
    ::lsetxattr(AtPath(work, tmp).c_str(), OriginXattr().c_str(), origin.data(), origin.size(), 0);
  }

  bool index = !S_ISDIR(st.st_mode) && s.lower_nlink > 1;
  if (index) {
    if (::linkat(work, tmp.c_str(), index_fd(), index_name.c_str(), 0) == 0) {
      std::string pending = std::to_string(s.lower_nlink - 1);
      ::lsetxattr(AtPath(index_fd(), index_name).c_str(), index_xattr.c_str(), pending.data(),
                  pending.size(), 0);
    } else {
      index = false;
      spdlog::warn("copy-up {}: index entry: {}", name, std::strerror(errno));
    }
  }
  if (::renameat2(work, tmp.c_str(), pdir->get(), name.c_str(), RENAME_NOREPLACE) != 0) {
    int saved = errno;
    if (index) ::unlinkat(index_fd(), index_name.c_str(), 0);
    return Fail(saved, "copy-up rename " + name);
  }
  cleanup.Dismiss();
  SharedFd fd = LAMINA_TRY(OpenPathAt(pdir->get(), name));
  SetUpper(node, fd, pdir, name);
  {
    std::lock_guard lock(node->mu);
    node->state.indexed = index;
    if (S_ISDIR(st.st_mode)) {
      DirInfo& dir = node->state.EditDir();
      dir.stack.insert(dir.stack.begin(), DirLayer{0, fd});
      node->state.has_lower = dir.stack.size() > 1;
    }
  }
  if (index) {
    // Other names of the same lower inode now read the upper copy.
    SharedFd ifd = LAMINA_TRY(OpenPathAt(index_fd(), index_name));
    for (Node* other : table_->WithOrigin(s.origin_dev, s.origin_ino)) {
      bool changed = false;
      if (other != node) {
        std::lock_guard lock(other->mu);
        if (!other->state.upper) {
          other->state.fd = ifd;
          other->state.indexed = true;
          other->xattrs.store(Node::kXattrsUnknown, std::memory_order_relaxed);
          changed = true;
        }
      }
      if (changed) NotifyInvalInode(other);
      table_->Unref(other);
    }
  }
  return {};
}

}  // namespace lamina::fuse
