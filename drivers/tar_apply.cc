// ApplyTar: OCI layer tar → layer directory (see drivers/tar.h).
//
// Decisions (documented here and in drivers/tar.h):
// - A leading "/" is stripped (as Docker does); a ".." that climbs above the
//   layer root is refused (EINVAL).
// - Every parent directory is resolved with RESOLVE_IN_ROOT: a symlink met on
//   the way (absolute, or relative with "../..") is followed as if the layer
//   root were "/", so the entry lands inside the target, never outside (what
//   Docker's FollowSymlinkInScope does; full-tree layers hold absolute
//   symlinks such as var/run -> /run that later layers write through). The
//   last component is never followed: it is created, or replaced, in place.
// - Missing parent directories are created (0755).
// - A hard link must name an entry that an earlier entry of this same tar
//   made; anything else (outside the layer, the parent's content, a path not
//   yet written) is refused with EXDEV.
// - xattrs: the union format's own ones (trusted.overlay.*, user.overlay.*,
//   user.fuseoverlayfs.*, user.containers.override_stat) are dropped with a
//   warning, since a tar must not forge whiteouts, opaque dirs or redirects.
//   Others that the filesystem or our privilege refuse (EPERM, ENOTSUP: e.g.
//   security.* or trusted.* when rootless, user.* on symlinks) are skipped
//   with a warning, as Docker does; any other error fails the apply.

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <climits>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/fd.h"
#include "common/fs.h"
#include "common/hash.h"
#include "common/path.h"
#include "drivers/format.h"
#include "drivers/tar.h"

namespace lamina {
namespace {

constexpr size_t kReadBlock = 128 * 1024;

// The outer archive: any compression, "raw" format, i.e. the uncompressed
// stream. The inner tar reader pulls from it through ReadCallback, which also
// hashes every byte, so the DiffID is computed in the same pass.
struct Stream {
  struct archive* raw = nullptr;
  Sha256 sha;
  std::vector<char> buf = std::vector<char>(kReadBlock);
  std::string raw_error;  // set when the outer reader failed
  bool at_eof = false;
};

la_ssize_t ReadCallback(struct archive* inner, void* client, const void** out) {
  auto* s = static_cast<Stream*>(client);
  if (s->at_eof) return 0;
  la_ssize_t n = archive_read_data(s->raw, s->buf.data(), s->buf.size());
  if (n < 0) {
    const char* msg = archive_error_string(s->raw);
    s->raw_error = msg ? msg : "read error";
    archive_set_error(inner, EIO, "%s", s->raw_error.c_str());
    return -1;
  }
  if (n == 0) s->at_eof = true;
  s->sha.Update(s->buf.data(), static_cast<size_t>(n));
  *out = s->buf.data();
  return n;
}

struct ArchiveReadDeleter {
  void operator()(struct archive* a) const { archive_read_free(a); }
};
using ArchiveReader = std::unique_ptr<struct archive, ArchiveReadDeleter>;

// A directory's mode and times, set in Finish after its children were
// written (a read-only directory must not stop a rootless apply from
// filling it).
struct DirTimes {
  struct timespec times[2];
  mode_t perm = 0755;
};

class Applier {
 public:
  Applier(int root, const ApplyOptions& options) : root_(root), options_(options) {}

  Result<void> Apply(struct archive* tar, struct archive_entry* entry);
  Result<void> Finish();
  TarStats stats() const { return stats_; }

 private:
  void RememberDir(const std::string& path, struct archive_entry* entry);
  Result<Fd> ParentDir(const std::string& parent, const std::string& entry_name);
  Result<void> ApplyWhiteout(struct archive_entry* entry, const std::string& dir,
                             const std::string& base, const std::string& entry_name);
  Result<void> EmptyOpaqueDir(int dirfd, const std::string& dir);
  Result<void> WriteData(struct archive* tar, int fd, int64_t size, const std::string& name);
  Result<void> SetMetadata(struct archive_entry* entry, int dirfd, const std::string& base, int fd,
                           mode_t type, const std::string& name);

  int root_;
  const ApplyOptions& options_;
  TarStats stats_;
  // Paths (cleaned, relative) this tar has made so far, for hard links and
  // for kFullTree opaque markers.
  std::set<std::string> made_;
  std::map<std::string, DirTimes> dir_times_;
};

std::string EntryName(struct archive_entry* entry) {
  const char* p = archive_entry_pathname(entry);
  if (p == nullptr) p = archive_entry_pathname_utf8(entry);
  return p ? p : "";
}

Error EntryError(int code, const std::string& name, const std::string& what) {
  return Error(code, "tar entry '" + name + "': " + what);
}

// Length checks on a cleaned path: each name <= NAME_MAX, the whole < PATH_MAX.
Result<void> CheckLengths(const std::string& path, const std::string& name) {
  if (path.size() >= PATH_MAX) {
    return Fail(EntryError(ENAMETOOLONG, name.substr(0, 64) + "...",
                           "path of " + std::to_string(path.size()) + " bytes is over PATH_MAX"));
  }
  for (const auto& comp : SplitComponents(path)) {
    if (comp.size() > NAME_MAX) {
      return Fail(EntryError(ENAMETOOLONG, name,
                             "a name of " + std::to_string(comp.size()) + " bytes is over 255"));
    }
  }
  return {};
}

Result<std::string> CleanEntryPath(const std::string& raw, const std::string& name) {
  auto clean = CleanRelativePath(raw);
  if (!clean) return Fail(EntryError(EINVAL, name, "path climbs out of the layer"));
  LAMINA_CHECK(CheckLengths(*clean, name));
  return *clean;
}

Result<void> Applier::WriteData(struct archive* tar, int fd, int64_t size,
                                const std::string& name) {
  const void* buf;
  size_t len;
  la_int64_t offset;
  for (;;) {
    int r = archive_read_data_block(tar, &buf, &len, &offset);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) {
      const char* msg = archive_error_string(tar);
      return Fail(EntryError(EIO, name, std::string("reading data: ") + (msg ? msg : "error")));
    }
    if (offset < 0 || static_cast<uint64_t>(offset) + len > static_cast<uint64_t>(size)) {
      return Fail(EntryError(EINVAL, name, "data beyond the entry's size"));
    }
    const char* p = static_cast<const char*>(buf);
    while (len > 0) {
      ssize_t n = ::pwrite(fd, p, len, offset);
      if (n < 0) {
        if (errno == EINTR) continue;
        return Fail(Error(errno, "tar entry '" + name + "': write"));
      }
      p += n;
      len -= static_cast<size_t>(n);
      offset += n;
      stats_.bytes += static_cast<uint64_t>(n);
    }
  }
  // Sparse files end in a hole: give the file its full size.
  if (::ftruncate(fd, size) != 0) return Fail(Error(errno, "tar entry '" + name + "': truncate"));
  return {};
}

// Opens (creating missing directories) the parent directory of an entry.
Result<Fd> Applier::ParentDir(const std::string& parent, const std::string& name) {
  constexpr int kFlags = O_PATH | O_DIRECTORY;
  auto fd = OpenInRoot(root_, parent, kFlags);
  if (fd) return fd;
  if (fd.error().code() != ENOENT) {
    return Fail(EntryError(fd.error().code(), name, "parent directory " + parent));
  }
  Fd cur = LAMINA_TRY(Dup(root_));
  std::string prefix;
  for (const auto& comp : SplitComponents(parent)) {
    prefix = JoinPath(prefix, comp);
    auto next = OpenInRoot(root_, prefix, kFlags);
    if (!next && next.error().code() == ENOENT) {
      if (::mkdirat(cur.get(), comp.c_str(), 0755) != 0 && errno != EEXIST) {
        return Fail(Error(errno, "tar entry '" + name + "': mkdir " + prefix));
      }
      made_.insert(prefix);
      next = OpenInRoot(root_, prefix, kFlags);
    }
    if (!next) {
      std::string hint =
          next.error().code() == ENOENT ? " (a symlink whose target is not in the layer?)" : "";
      return Fail(EntryError(
          next.error().code(), name,
          "parent directory " + prefix + hint + ": " + std::strerror(next.error().code())));
    }
    cur = std::move(*next);
  }
  return cur;
}

// Removes from `dirfd` (the directory `dir`) everything this tar did not make.
Result<void> Applier::EmptyOpaqueDir(int dirfd, const std::string& dir) {
  auto names = LAMINA_TRY(ListDir(dirfd));
  for (const auto& child : names) {
    std::string path = JoinPath(dir, child);
    if (!made_.contains(path)) {
      LAMINA_CHECK(RemoveTreeAt(dirfd, child));
      continue;
    }
    struct stat st;
    if (::fstatat(dirfd, child.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return FailErrno("stat " + path);
    }
    if (S_ISDIR(st.st_mode)) {
      Fd sub = LAMINA_TRY(OpenAt(dirfd, child, O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
      LAMINA_CHECK(EmptyOpaqueDir(sub.get(), path));
    }
  }
  return {};
}

Result<void> Applier::ApplyWhiteout(struct archive_entry* entry, const std::string& dir,
                                    const std::string& base, const std::string& name) {
  Fd parent = LAMINA_TRY(ParentDir(dir, name));
  if (base == kOpaqueWhiteout) {
    if (options_.whiteouts == WhiteoutMode::kUnion) {
      auto fd = OpenAt(parent.get(), ".", O_RDONLY | O_DIRECTORY);
      if (!fd) return Fail(EntryError(fd.error().code(), name, "open directory"));
      auto r = MarkOpaque(fd->get(), options_.xattr_ns);
      if (!r) return Fail(EntryError(r.error().code(), name, r.error().message()));
    } else {
      Fd fd = LAMINA_TRY(OpenAt(parent.get(), ".", O_RDONLY | O_DIRECTORY));
      auto r = EmptyOpaqueDir(fd.get(), dir);
      if (!r) return Fail(EntryError(r.error().code(), name, r.error().message()));
    }
    return {};
  }
  if (base.starts_with(kWhiteoutMetaPrefix)) {
    spdlog::warn("tar entry '{}': skipping reserved whiteout meta name", name);
    return {};
  }
  std::string target(WhiteoutTarget(base));
  if (target.empty() || target == "." || target == "..") {
    return Fail(EntryError(EINVAL, name, "whiteout of an invalid name"));
  }
  auto removed = RemoveTreeAt(parent.get(), target);
  if (!removed) return Fail(EntryError(removed.error().code(), name, removed.error().message()));
  if (options_.whiteouts == WhiteoutMode::kUnion) {
    auto r = MakeWhiteout(parent.get(), target);
    if (!r) return Fail(EntryError(r.error().code(), name, r.error().message()));
    // The whiteout keeps the entry's mtime, so layers round-trip exactly.
    struct timespec times[2];
    times[0] = times[1] = {archive_entry_mtime(entry), archive_entry_mtime_nsec(entry)};
    if (::utimensat(parent.get(), target.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0 &&
        (errno != ENOENT ||
         ::utimensat(parent.get(), base.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0)) {
      return Fail(Error(errno, "tar entry '" + name + "': set times"));
    }
  }
  return {};
}

// Sets an xattr on `base` in `dirfd` without following it; "" is dirfd
// itself (reached through its /proc magic link, which must be followed).
int SetXattrAt(int dirfd, const std::string& base, const char* name, const void* value,
               size_t size) {
  if (base.empty()) return ::setxattr(ProcFdPath(dirfd).c_str(), name, value, size, 0);
  return ::lsetxattr((ProcFdPath(dirfd) + "/" + base).c_str(), name, value, size, 0);
}

Result<void> Applier::SetMetadata(struct archive_entry* entry, int dirfd, const std::string& base,
                                  int fd, mode_t type, const std::string& name) {
  const bool is_link = type == S_IFLNK;
  const char* at_name = base.empty() ? "" : base.c_str();
  const int at_flags = base.empty() ? AT_EMPTY_PATH : 0;
  uid_t uid = static_cast<uid_t>(archive_entry_uid(entry));
  gid_t gid = static_cast<gid_t>(archive_entry_gid(entry));
  mode_t perm = archive_entry_perm(entry) & 07777;

  bool owner_set = false;
  if (options_.same_owner) {
    int r = fd >= 0 ? ::fchown(fd, uid, gid)
                    : ::fchownat(dirfd, at_name, uid, gid, AT_SYMLINK_NOFOLLOW | at_flags);
    // EINVAL: the id has no mapping in this user namespace (root of a
    // namespace with a single-id map); recorded below like a rootless owner.
    if (r != 0 && errno != EINVAL) return Fail(Error(errno, "tar entry '" + name + "': chown"));
    owner_set = r == 0;
  }
  // chown dropped setuid/setgid bits: chmod after it. Directories: in Finish.
  if (!is_link && type != S_IFDIR) {
    int r = fd >= 0 ? ::fchmod(fd, perm) : ::fchmodat(dirfd, at_name, perm, 0);
    if (r != 0 && base.empty()) r = ::chmod(ProcFdPath(dirfd).c_str(), perm);
    if (r != 0) return Fail(Error(errno, "tar entry '" + name + "': chmod"));
  }
  if (!owner_set && !is_link && (uid != ::geteuid() || gid != ::getegid())) {
    std::string value = OverrideStatValue(uid, gid, perm);
    if (SetXattrAt(dirfd, base, kOverrideStatXattr.data(), value.data(), value.size()) != 0) {
      return Fail(Error(errno, "tar entry '" + name + "': set " + std::string(kOverrideStatXattr)));
    }
  }
  archive_entry_xattr_reset(entry);
  const char* xname;
  const void* xvalue;
  size_t xsize;
  while (archive_entry_xattr_next(entry, &xname, &xvalue, &xsize) == ARCHIVE_OK) {
    if (IsInternalXattr(xname)) {
      spdlog::warn("tar entry '{}': dropping union-format xattr {}", name, xname);
      continue;
    }
    if (SetXattrAt(dirfd, base, xname, xvalue, xsize) != 0) {
      int err = errno;
      if (err == EPERM || err == ENOTSUP || err == EOPNOTSUPP) {
        spdlog::warn("tar entry '{}': xattr {} not set: {}", name, xname, std::strerror(err));
        continue;
      }
      return Fail(Error(err, "tar entry '" + name + "': set xattr " + xname));
    }
  }
  struct timespec times[2];
  times[1].tv_sec = archive_entry_mtime(entry);
  times[1].tv_nsec = archive_entry_mtime_nsec(entry);
  if (archive_entry_atime_is_set(entry)) {
    times[0].tv_sec = archive_entry_atime(entry);
    times[0].tv_nsec = archive_entry_atime_nsec(entry);
  } else {
    times[0] = times[1];
  }
  if (type == S_IFDIR) return {};  // set after the children, in Finish
  int r = fd >= 0 ? ::futimens(fd, times) : ::utimensat(dirfd, at_name, times, AT_SYMLINK_NOFOLLOW);
  if (r != 0) return Fail(Error(errno, "tar entry '" + name + "': set times"));
  return {};
}

Result<void> Applier::Apply(struct archive* tar, struct archive_entry* entry) {
  const std::string name = EntryName(entry);
  if (name.empty()) return Fail(Error(EINVAL, "tar entry with an empty or unreadable name"));
  ++stats_.entries;
  std::string path = LAMINA_TRY(CleanEntryPath(name, name));
  auto [dir, base] = SplitParent(path);

  if (base.starts_with(kWhiteoutPrefix)) return ApplyWhiteout(entry, dir, base, name);

  const char* hardlink = archive_entry_hardlink(entry);
  if (hardlink == nullptr) hardlink = archive_entry_hardlink_utf8(entry);
  mode_t type = archive_entry_filetype(entry);
  int64_t size = archive_entry_size_is_set(entry) ? archive_entry_size(entry) : 0;
  if (hardlink == nullptr && type == AE_IFREG) {
    if (size < 0 || static_cast<uint64_t>(size) > options_.max_entry_bytes) {
      return Fail(EntryError(EFBIG, name, "size " + std::to_string(size) + " is over the limit"));
    }
    if (stats_.bytes + static_cast<uint64_t>(size) > options_.max_total_bytes) {
      return Fail(EntryError(EFBIG, name, "the layer's total size is over the limit"));
    }
  }

  if (path.empty()) {
    // "./": the layer root itself. Only its metadata can change.
    if (type != AE_IFDIR || hardlink != nullptr) {
      return Fail(EntryError(EINVAL, name, "the layer root must be a directory"));
    }
    LAMINA_CHECK(SetMetadata(entry, root_, "", -1, S_IFDIR, name));
    RememberDir(path, entry);
    return {};
  }

  Fd parent = LAMINA_TRY(ParentDir(dir, name));
  const int pfd = parent.get();
  const char* cbase = base.c_str();

  // What is there now: a directory over a directory only updates metadata;
  // anything else is removed first.
  struct stat old;
  bool exists = ::fstatat(pfd, cbase, &old, AT_SYMLINK_NOFOLLOW) == 0;
  if (!exists && errno != ENOENT) return Fail(Error(errno, "tar entry '" + name + "': stat"));
  bool keep_dir = exists && S_ISDIR(old.st_mode) && type == AE_IFDIR && hardlink == nullptr;
  if (exists && hardlink != nullptr && made_.contains(path)) {
    // A hard link to itself (GNU tar appending a file twice): nothing to do.
    auto self = CleanRelativePath(hardlink);
    if (self && *self == path) return {};
  }
  if (exists && !keep_dir) {
    auto r = RemoveTreeAt(pfd, base);
    if (!r) return Fail(EntryError(r.error().code(), name, "replace: " + r.error().message()));
  }

  if (hardlink != nullptr) {
    std::string target = LAMINA_TRY(CleanEntryPath(hardlink, name));
    if (!made_.contains(target)) {
      return Fail(EntryError(EXDEV, name,
                             "hard link to '" + std::string(hardlink) +
                                 "', which is not an earlier entry of this layer"));
    }
    auto [tdir, tbase] = SplitParent(target);
    if (tbase.empty()) return Fail(EntryError(EXDEV, name, "hard link to the layer root"));
    auto tparent = OpenInRoot(root_, tdir, O_PATH | O_DIRECTORY);
    if (!tparent) return Fail(EntryError(tparent.error().code(), name, "hard link target dir"));
    if (::linkat(tparent->get(), tbase.c_str(), pfd, cbase, 0) != 0) {
      return Fail(Error(errno, "tar entry '" + name + "': hard link to " + target));
    }
    made_.insert(path);
    return {};
  }

  switch (type) {
    case AE_IFREG: {
      int raw = ::openat(pfd, cbase, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
      if (raw < 0) return Fail(Error(errno, "tar entry '" + name + "': create"));
      Fd fd(raw);
      LAMINA_CHECK(WriteData(tar, fd.get(), size, name));
      LAMINA_CHECK(SetMetadata(entry, pfd, base, fd.get(), S_IFREG, name));
      break;
    }
    case AE_IFDIR: {
      if (!keep_dir && ::mkdirat(pfd, cbase, 0700) != 0) {
        return Fail(Error(errno, "tar entry '" + name + "': mkdir"));
      }
      Fd fd = LAMINA_TRY(OpenAt(pfd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
      LAMINA_CHECK(SetMetadata(entry, pfd, base, fd.get(), S_IFDIR, name));
      RememberDir(path, entry);
      break;
    }
    case AE_IFLNK: {
      const char* target = archive_entry_symlink(entry);
      if (target == nullptr) target = archive_entry_symlink_utf8(entry);
      if (target == nullptr) return Fail(EntryError(EINVAL, name, "symlink without a target"));
      if (::symlinkat(target, pfd, cbase) != 0) {
        return Fail(Error(errno, "tar entry '" + name + "': symlink"));
      }
      LAMINA_CHECK(SetMetadata(entry, pfd, base, -1, S_IFLNK, name));
      break;
    }
    case AE_IFCHR:
    case AE_IFBLK:
    case AE_IFIFO: {
      dev_t dev = type == AE_IFIFO
                      ? 0
                      : makedev(archive_entry_rdevmajor(entry), archive_entry_rdevminor(entry));
      mode_t kind = type == AE_IFCHR ? S_IFCHR : type == AE_IFBLK ? S_IFBLK : S_IFIFO;
      if (::mknodat(pfd, cbase, kind | 0600, dev) != 0) {
        int err = errno;
        if (err == EPERM && kind != S_IFIFO) {
          return Fail(EntryError(EPERM, name,
                                 "creating a device node needs privilege (CAP_MKNOD); rootless "
                                 "stores cannot hold device files"));
        }
        return Fail(Error(err, "tar entry '" + name + "': mknod"));
      }
      LAMINA_CHECK(SetMetadata(entry, pfd, base, -1, kind, name));
      break;
    }
    case AE_IFSOCK:
      spdlog::warn("tar entry '{}': skipping a socket", name);
      return {};
    default:
      return Fail(EntryError(EINVAL, name, "unknown entry type " + std::to_string(type)));
  }
  made_.insert(path);
  return {};
}

void Applier::RememberDir(const std::string& path, struct archive_entry* entry) {
  DirTimes& d = dir_times_[path];
  d.perm = archive_entry_perm(entry) & 07777;
  d.times[1] = {archive_entry_mtime(entry), archive_entry_mtime_nsec(entry)};
  d.times[0] = archive_entry_atime_is_set(entry)
                   ? timespec{archive_entry_atime(entry), archive_entry_atime_nsec(entry)}
                   : d.times[1];
}

Result<void> Applier::Finish() {
  // Deepest first is not needed (setting a directory's times does not touch
  // its parent), but a directory removed or replaced later is skipped.
  for (const auto& [path, t] : dir_times_) {
    auto fd =
        path.empty() ? Dup(root_) : OpenInRoot(root_, path, O_PATH | O_DIRECTORY | O_NOFOLLOW);
    if (!fd) {
      if (fd.error().code() == ENOENT || fd.error().code() == ENOTDIR ||
          fd.error().code() == ELOOP) {
        continue;
      }
      return Fail(fd.error().Wrap("set times of " + path));
    }
    std::string proc = ProcFdPath(fd->get());
    if (::chmod(proc.c_str(), t.perm) != 0) {
      return FailErrno("chmod directory " + (path.empty() ? "/" : path));
    }
    if (::utimensat(AT_FDCWD, proc.c_str(), t.times, 0) != 0) {
      return FailErrno("set times of directory " + (path.empty() ? "/" : path));
    }
  }
  return {};
}

std::string ArchiveMessage(struct archive* a) {
  const char* msg = archive_error_string(a);
  return msg ? msg : "unknown libarchive error";
}

}  // namespace

Result<ApplyResult> ApplyTar(int tar_fd, const std::string& target_dir,
                             const ApplyOptions& options) {
  Fd root = LAMINA_TRY(Open(target_dir, O_PATH | O_DIRECTORY));

  Stream stream;
  ArchiveReader raw(archive_read_new());
  if (!raw) return Fail(ENOMEM, "archive_read_new");
  archive_read_support_filter_all(raw.get());
  archive_read_support_format_raw(raw.get());
  if (archive_read_open_fd(raw.get(), tar_fd, kReadBlock) != ARCHIVE_OK) {
    return Fail(EINVAL, "open layer tar: " + ArchiveMessage(raw.get()));
  }
  struct archive_entry* raw_entry;
  int r = archive_read_next_header(raw.get(), &raw_entry);
  if (r == ARCHIVE_EOF) return Fail(EINVAL, "layer tar is empty");
  if (r < ARCHIVE_WARN) return Fail(EINVAL, "read layer tar: " + ArchiveMessage(raw.get()));
  stream.raw = raw.get();

  ArchiveReader tar(archive_read_new());
  if (!tar) return Fail(ENOMEM, "archive_read_new");
  archive_read_support_format_tar(tar.get());
  if (archive_read_open(tar.get(), &stream, nullptr, ReadCallback, nullptr) != ARCHIVE_OK) {
    if (!stream.raw_error.empty()) return Fail(EIO, "read layer tar: " + stream.raw_error);
    return Fail(EINVAL, "layer tar: " + ArchiveMessage(tar.get()));
  }

  Applier applier(root.get(), options);
  for (;;) {
    struct archive_entry* entry;
    r = archive_read_next_header(tar.get(), &entry);
    if (r == ARCHIVE_EOF) break;
    if (r == ARCHIVE_WARN) {
      spdlog::warn("layer tar: {}", ArchiveMessage(tar.get()));
    } else if (r != ARCHIVE_OK) {
      std::string last = applier.stats().entries
                             ? " (after " + std::to_string(applier.stats().entries) + " entries)"
                             : "";
      if (!stream.raw_error.empty())
        return Fail(EIO, "read layer tar" + last + ": " + stream.raw_error);
      return Fail(EINVAL,
                  "layer tar is corrupt or truncated" + last + ": " + ArchiveMessage(tar.get()));
    }
    LAMINA_CHECK(applier.Apply(tar.get(), entry));
  }
  LAMINA_CHECK(applier.Finish());

  // Hash what the tar reader left unread (end blocks, padding).
  std::vector<char> buf(kReadBlock);
  for (;;) {
    la_ssize_t n = archive_read_data(raw.get(), buf.data(), buf.size());
    if (n < 0) return Fail(EIO, "read layer tar: " + ArchiveMessage(raw.get()));
    if (n == 0) break;
    stream.sha.Update(buf.data(), static_cast<size_t>(n));
  }
  ApplyResult result;
  result.stats = applier.stats();
  result.diff_id = stream.sha.HexDigest();
  return result;
}

}  // namespace lamina
