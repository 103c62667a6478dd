#include "drivers/copy.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <vector>

#include "common/fs.h"

namespace lamina {

std::string_view CopyMethodName(CopyMethod method) {
  switch (method) {
    case CopyMethod::kClone:
      return "ficlone";
    case CopyMethod::kCopyFileRange:
      return "copy_file_range";
    case CopyMethod::kReadWrite:
      return "read_write";
  }
  return "unknown";
}

namespace {

// Errors after which another method may still work (the filesystem or the
// pair of filesystems cannot do this one). Anything else (ENOSPC, EIO,
// EDQUOT, ...) is the answer.
bool CloneUnsupported(int err) {
  return err == EOPNOTSUPP || err == ENOTTY || err == EXDEV || err == EINVAL || err == ENOSYS ||
         err == EPERM || err == ETXTBSY || err == EBADF;
}
bool CopyRangeUnsupported(int err) {
  return err == EOPNOTSUPP || err == ENOSYS || err == EXDEV || err == EINVAL || err == EBADF ||
         err == ETXTBSY;
}

// How much is copied between two write-behind kicks.
constexpr off_t kWriteBehindChunk = off_t{8} << 20;

// Starts the writeback of [off, off + len) of dst without waiting for it.
void StartWriteBack(int dst, off_t off, off_t len) {
  (void)::sync_file_range(dst, off, len, SYNC_FILE_RANGE_WRITE);
}

// Returns the offset reached (short of `end` when the source shrank).
Result<off_t> ReadWriteRange(int src, int dst, off_t off, off_t end, bool write_behind) {
  constexpr size_t kChunk = size_t{1} << 20;
  off_t kicked = off;
  std::vector<char> buf(static_cast<size_t>(std::min<off_t>(end - off, kChunk)));
  while (off < end) {
    size_t want = static_cast<size_t>(std::min<off_t>(end - off, static_cast<off_t>(buf.size())));
    ssize_t n = ::pread(src, buf.data(), want, off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return FailErrno("read");
    }
    if (n == 0) break;  // the source shrank meanwhile; the final ftruncate fixes the size
    size_t done = 0;
    while (done < static_cast<size_t>(n)) {
      ssize_t w = ::pwrite(dst, buf.data() + done, static_cast<size_t>(n) - done,
                           off + static_cast<off_t>(done));
      if (w < 0) {
        if (errno == EINTR) continue;
        return FailErrno("write");
      }
      done += static_cast<size_t>(w);
    }
    off += n;
    if (write_behind && off - kicked >= kWriteBehindChunk) {
      StartWriteBack(dst, kicked, off - kicked);
      kicked = off;
    }
  }
  return off;
}

// Copies [off, end) of src to the same offsets in dst; switches *method to
// kReadWrite for good when copy_file_range cannot serve this pair of files.
// Returns the offset reached.
Result<off_t> CopyRange(int src, int dst, off_t off, off_t end, CopyMethod* method,
                        bool write_behind) {
  while (off < end && *method == CopyMethod::kCopyFileRange) {
    loff_t in = off;
    loff_t out = off;
    off_t want = write_behind ? std::min(end - off, kWriteBehindChunk) : end - off;
    ssize_t n = ::copy_file_range(src, &in, dst, &out, static_cast<size_t>(want), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (CopyRangeUnsupported(errno)) {
        *method = CopyMethod::kReadWrite;
        break;
      }
      return FailErrno("copy_file_range");
    }
    if (n == 0) return off;  // the source shrank
    if (write_behind && off + n < end) StartWriteBack(dst, off, n);
    off += n;
  }
  if (off < end) return ReadWriteRange(src, dst, off, end, write_behind);
  return off;
}

}  // namespace

Result<CopyMethod> CopyFileData(int src_fd, int dst_fd, uint64_t size, const CopyOptions& options) {
  const off_t end = static_cast<off_t>(size);
  auto set_size = [&]() -> Result<void> {
    if (::ftruncate(dst_fd, end) != 0) return FailErrno("truncate copy to " + std::to_string(size));
    return {};
  };

  if (options.try_clone) {
    if (::ioctl(dst_fd, FICLONE, src_fd) == 0) {
      struct stat st;
      if (::fstat(dst_fd, &st) != 0) return FailErrno("stat clone");
      if (st.st_size != end) LAMINA_CHECK(set_size());
      return CopyMethod::kClone;
    }
    if (!CloneUnsupported(errno)) return FailErrno("FICLONE");
  }

  CopyMethod method = CopyMethod::kCopyFileRange;
  struct stat st;
  if (::fstat(src_fd, &st) != 0) return FailErrno("stat source");
  // A file with as many blocks as bytes has no holes: skip the SEEK_DATA walk.
  bool dense = static_cast<uint64_t>(st.st_blocks) * 512 >= size;
  off_t reached = 0;  // the end of the last byte written
  if (dense) {
    reached = LAMINA_TRY(CopyRange(src_fd, dst_fd, 0, end, &method, options.write_behind));
  } else {
    off_t off = 0;
    while (off < end) {
      off_t data = ::lseek(src_fd, off, SEEK_DATA);
      if (data < 0) {
        if (errno == ENXIO) break;  // only a hole is left
        if (errno != EINVAL && errno != EOPNOTSUPP) return FailErrno("lseek SEEK_DATA");
        data = off;  // no hole support: all data
      }
      if (data >= end) break;
      off_t hole = ::lseek(src_fd, data, SEEK_HOLE);
      if (hole < 0) {
        if (errno == ENXIO) break;
        if (errno != EINVAL && errno != EOPNOTSUPP) return FailErrno("lseek SEEK_HOLE");
        hole = end;
      }
      hole = std::min(hole, end);
      reached = LAMINA_TRY(CopyRange(src_fd, dst_fd, data, hole, &method, options.write_behind));
      if (reached < hole) break;  // the source shrank
      off = hole;
    }
  }
  // The destination started empty: its size is where writing stopped, so a
  // trailing hole or a shrunken source needs the truncate, nothing else does.
  if (reached != end) LAMINA_CHECK(set_size());
  return method;
}

namespace {

bool IsInternalXattr(const std::string& name) {
  return name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") ||
         name.starts_with("user.fuseoverlayfs.");
}

bool IsPrivilegedNamespace(const std::string& name) {
  return name.starts_with("trusted.") || name.starts_with("security.");
}

// Copies xattrs through the callbacks (path or fd flavoured).
template <class List, class Get, class Set>
Result<void> CopyXattrsWith(const MetadataOptions& options, List list, Get get, Set set,
                            bool* acl_set = nullptr) {
  auto names = list();
  if (!names) {
    if (names.error().code() == ENOTSUP) return {};  // the source fs has none
    return Fail(names.error());
  }
  for (const auto& name : *names) {
    if (options.skip_internal_xattrs && IsInternalXattr(name)) continue;
    auto value = get(name);
    if (!value) {
      // Vanished meanwhile, or not readable to us (a trusted.* of another).
      if (value.error().code() == ENODATA) continue;
      if (IsPrivilegedNamespace(name) &&
          (value.error().code() == EPERM || value.error().code() == EACCES)) {
        continue;
      }
      return Fail(value.error());
    }
    auto done = set(name, *value);
    if (!done) {
      int err = done.error().code();
      if (IsPrivilegedNamespace(name) && (err == EPERM || err == ENOTSUP || err == EACCES)) {
        continue;
      }
      return Fail(done.error());
    }
    if (acl_set != nullptr && name == "system.posix_acl_access") *acl_set = true;
  }
  return {};
}

Result<void> CopyXattrs(const std::string& src_path, const std::string& dst_path,
                        const MetadataOptions& options) {
  return CopyXattrsWith(
      options, [&] { return ListXattrs(src_path); },
      [&](const std::string& name) { return GetXattr(src_path, name); },
      [&](const std::string& name, const std::string& value) {
        return SetXattr(dst_path, name, value);
      });
}

}  // namespace

Result<void> CopyMetadata(const std::string& src_path, const struct stat& st, int dst_dirfd,
                          const std::string& name, const MetadataOptions& options) {
  const bool is_link = S_ISLNK(st.st_mode);
  const std::string what = name.empty() ? std::string(".") : name;
  // Order matters: chown clears set-id bits and security.capability, so it
  // comes first; the mode after the xattrs (a POSIX ACL xattr rewrites the
  // group bits); the times last, since everything before may touch ctime/mtime.
  if (options.owner) {
    if (::fchownat(dst_dirfd, what.c_str(), st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) != 0) {
      int err = errno;
      // EINVAL: the id is not mapped in this user namespace.
      if (options.owner_strict || (err != EPERM && err != EINVAL)) {
        errno = err;
        return FailErrno("chown " + what + " to " + std::to_string(st.st_uid) + ":" +
                         std::to_string(st.st_gid));
      }
    }
  }
  if (options.xattrs) {
    std::string dst_path = (dst_dirfd == AT_FDCWD || what.starts_with('/'))
                               ? what
                               : ProcFdPath(dst_dirfd) + "/" + what;
    auto copied = CopyXattrs(src_path, dst_path, options);
    if (!copied) return Fail(copied.error().Wrap("copy xattrs of " + what));
  }
  if (!is_link) {
    if (::fchmodat(dst_dirfd, what.c_str(), st.st_mode & 07777, 0) != 0) {
      return FailErrno("chmod " + what);
    }
  }
  if (options.times) {
    struct timespec times[2] = {st.st_atim, st.st_mtim};
    if (::utimensat(dst_dirfd, what.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
      return FailErrno("set times of " + what);
    }
  }
  return {};
}

Result<void> CopyMetadataFd(int src_fd, const struct stat& st, int dst_fd,
                            const MetadataOptions& options) {
  // The order of CopyMetadata: owner, xattrs, mode, times.
  struct stat now;
  if (::fstat(dst_fd, &now) != 0) return FailErrno("stat copy");
  bool chowned = false;
  if (options.owner && (now.st_uid != st.st_uid || now.st_gid != st.st_gid)) {
    if (::fchown(dst_fd, st.st_uid, st.st_gid) != 0) {
      int err = errno;
      if (options.owner_strict || (err != EPERM && err != EINVAL)) {
        errno = err;
        return FailErrno("chown to " + std::to_string(st.st_uid) + ":" + std::to_string(st.st_gid));
      }
    } else {
      chowned = true;
    }
  }
  bool acl_set = false;
  if (options.xattrs) {
    auto copied = CopyXattrsWith(
        options, [&] { return FListXattrs(src_fd); },
        [&](const std::string& name) { return FGetXattr(src_fd, name); },
        [&](const std::string& name, const std::string& value) {
          return FSetXattr(dst_fd, name, value);
        },
        &acl_set);
    if (!copied) return Fail(copied.error().Wrap("copy xattrs"));
  }
  // chown may have cleared set-id bits and an ACL rewrites the group bits.
  if (chowned || acl_set || (now.st_mode & 07777) != (st.st_mode & 07777)) {
    if (::fchmod(dst_fd, st.st_mode & 07777) != 0) return FailErrno("chmod");
  }
  if (options.times) {
    struct timespec times[2] = {st.st_atim, st.st_mtim};
    if (::futimens(dst_fd, times) != 0) return FailErrno("set times");
  }
  return {};
}

}  // namespace lamina
