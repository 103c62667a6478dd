// File ops: create, open, read, write, fsync, release, fallocate,
// copy_file_range, lseek.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fs.h"
#include "fuse/union_fs_impl.h"

namespace lamina::fuse {

namespace {

int BackingFlags(const UnionFsImpl& fs, int flags) {
  flags &= ~(O_CREAT | O_EXCL | O_NOCTTY | O_NOFOLLOW);
  if (fs.config().writeback) {
    // The kernel may read pages of a write-only file to fill a partial page,
    // and does append itself.
    if ((flags & O_ACCMODE) == O_WRONLY) flags = (flags & ~O_ACCMODE) | O_RDWR;
    flags &= ~O_APPEND;
  }
  return flags | O_CLOEXEC;
}

FileHandle* Handle(fuse_file_info* fi) { return reinterpret_cast<FileHandle*>(fi->fh); }

// The fd to read through: a read-only handle on a lower file follows the
// node to its upper copy after a copy-up.
int ReadFd(FileHandle* h) {
  if (!h->read_only) return h->Get();
  uint32_t now = h->node->copy_ups.load(std::memory_order_acquire);
  std::lock_guard lock(h->mu);
  if (now == h->copy_ups) return h->Get();
  NodeState s = h->node->Snapshot();
  int fd = ::open(ProcFdPath(s.fd->get()).c_str(), h->flags);
  if (fd >= 0) {
    h->retired.push_back(std::move(h->fd));
    h->fd = Fd(fd);
    h->fd_num.store(fd, std::memory_order_release);
  }
  h->copy_ups = now;
  return h->Get();
}

void ReplyOpened(fuse_req_t req, UnionFsImpl* fs, Node* node, Fd fd, fuse_file_info* fi,
                 const fuse_entry_param* entry, uint32_t copy_ups) {
  // A file just made (entry != nullptr) has one link.
  struct stat st;
  bool single = entry != nullptr || (::fstat(fd.get(), &st) == 0 && st.st_nlink <= 1);
  if (!single) node->multi_link.store(true);
  single = single && !node->multi_link.load();
  auto handle = std::make_unique<FileHandle>();
  handle->node = node;
  handle->fd_num.store(fd.get());
  handle->fd = std::move(fd);
  handle->read_only = (fi->flags & O_ACCMODE) == O_RDONLY;
  handle->flags = BackingFlags(*fs, fi->flags) & ~O_TRUNC;
  handle->copy_ups = copy_ups;
  fi->fh = reinterpret_cast<uint64_t>(handle.get());
  // The page cache may outlive the open: every change comes through us. Hard
  // links are several nodes of one inode, so they are not cached.
  fi->keep_cache = fs->timeout() > 0 && single ? 1 : 0;
  int r = entry != nullptr ? fuse_reply_create(req, entry, fi) : fuse_reply_open(req, fi);
  if (r != 0) {
    // An interrupted request: the handle's ref goes, and for a create also
    // the lookup the kernel never counted.
    fs->table().Unref(node, entry != nullptr ? 2 : 1);
    return;  // the handle goes away with its fd
  }
  handle.release();
}

void Create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
            fuse_file_info* fi) noexcept {
  Guard(req, "create", [&] {
    UnionFsImpl* fs = UnionFsImpl::From(req);
    Fd fd;
    struct stat made;
    auto node = fs->DoMake(req, fs->table().FromId(parent), name, S_IFREG | (mode & 07777), 0,
                           nullptr, &fd, BackingFlags(*fs, fi->flags), &made);
    if (!node) {
      ReplyError(req, "create", parent, node.error());
      return;
    }
    Result<struct stat> st = made.st_ino != 0 ? made : fs->Stat(*node);
    if (!st) {
      fs->table().Unref(*node);
      ReplyError(req, "create", parent, st.error());
      return;
    }
    fuse_entry_param e;
    fs->FillEntry(*node, *st, e);
    // The handle holds its own ref besides the kernel's lookup.
    fs->table().Ref(*node);
    ReplyOpened(req, fs, *node, std::move(fd), fi, &e, 0);
  });
}

void OpenFile(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  Guard(req, "open", [&] {
    UnionFsImpl* fs = UnionFsImpl::From(req);
    fs->NoteFileUse();
    Node* node = fs->table().FromId(ino);
    bool write = (fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC) != 0;
    if (write) {
      if (!fs->writable()) {
        fuse_reply_err(req, EROFS);
        return;
      }
      auto up = fs->CopyUp(node, (fi->flags & O_TRUNC) == 0);
      if (!up) {
        ReplyError(req, "open", ino, up.error());
        return;
      }
    }
    uint32_t copy_ups = node->copy_ups.load(std::memory_order_acquire);
    NodeState s = node->Snapshot();
    // A lower file without an fd of its own is opened by its name, where
    // the magic link of an fd would have to be followed.
    auto fd = s.fd ? Open(ProcFdPath(s.fd->get()), BackingFlags(*fs, fi->flags))
                   : Open(AtPath(s.src_dir->get(), s.src_name),
                          BackingFlags(*fs, fi->flags) | O_NOFOLLOW);
    if (!fd) {
      ReplyError(req, "open", ino, fd.error());
      return;
    }
    fs->table().Ref(node);
    ReplyOpened(req, fs, node, std::move(*fd), fi, nullptr, copy_ups);
  });
}

void Read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) noexcept {
  (void)ino;
  fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
  buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  int fd = -1;
  try {
    fd = ReadFd(Handle(fi));
  } catch (...) {
    fuse_reply_err(req, ENOMEM);
    return;
  }
  buf.buf[0].fd = fd;
  buf.buf[0].pos = off;
  fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

void WriteBuf(fuse_req_t req, fuse_ino_t ino, fuse_bufvec* in, off_t off,
              fuse_file_info* fi) noexcept {
  (void)ino;
  fuse_bufvec out = FUSE_BUFVEC_INIT(fuse_buf_size(in));
  out.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  out.buf[0].fd = Handle(fi)->Get();
  out.buf[0].pos = off;
  ssize_t n = fuse_buf_copy(&out, in, static_cast<fuse_buf_copy_flags>(0));
  if (n < 0) {
    fuse_reply_err(req, static_cast<int>(-n));
  } else {
    fuse_reply_write(req, static_cast<size_t>(n));
  }
}

void Fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) noexcept {
  (void)ino;
  UnionFsImpl* fs = UnionFsImpl::From(req);
  if (!fs->config().fsync) {
    fuse_reply_err(req, 0);
    return;
  }
  int fd = Handle(fi)->Get();
  int r = datasync != 0 ? ::fdatasync(fd) : ::fsync(fd);
  fuse_reply_err(req, r == 0 ? 0 : errno);
}

void Release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  (void)ino;
  UnionFsImpl* fs = UnionFsImpl::From(req);
  FileHandle* handle = Handle(fi);
  Node* node = handle->node;
  delete handle;
  fs->table().Unref(node);
  fuse_reply_err(req, 0);
}

void Fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
               fuse_file_info* fi) noexcept {
  (void)ino;
  int r = ::fallocate(Handle(fi)->Get(), mode, offset, length);
  fuse_reply_err(req, r == 0 ? 0 : errno);
}

void CopyFileRange(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fuse_file_info* fi_in,
                   fuse_ino_t ino_out, off_t off_out, fuse_file_info* fi_out, size_t len,
                   int flags) noexcept {
  (void)ino_in;
  (void)ino_out;
  loff_t in = off_in, out = off_out;
  ssize_t n = ::copy_file_range(Handle(fi_in)->Get(), &in, Handle(fi_out)->Get(), &out, len,
                                static_cast<unsigned>(flags));
  if (n < 0) {
    fuse_reply_err(req, errno);
  } else {
    fuse_reply_write(req, static_cast<size_t>(n));
  }
}

void Lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info* fi) noexcept {
  (void)ino;
  off_t r = ::lseek(Handle(fi)->Get(), off, whence);
  if (r < 0) {
    fuse_reply_err(req, errno);
  } else {
    fuse_reply_lseek(req, r);
  }
}

}  // namespace

void FillFileOps(fuse_lowlevel_ops& ops) {
  ops.create = Create;
  ops.open = OpenFile;
  ops.read = Read;
  ops.write_buf = WriteBuf;
  // No flush: locks are the kernel's own (no FUSE_CAP_POSIX_LOCKS), so
  // there is nothing to release on close, and the kernel stops sending
  // FLUSH after the first ENOSYS (one request less per close).
  ops.fsync = Fsync;
  ops.release = Release;
  ops.fallocate = Fallocate;
  ops.copy_file_range = CopyFileRange;
  ops.lseek = Lseek;
}

}  // namespace lamina::fuse
