// WriteLayerTar: layer directory → OCI layer tar (see drivers/tar.h).
//
// Deterministic output: entries sorted component by component (a directory
// right before its content, its opaque marker first among its children),
// empty uname/gname, no atime/ctime, xattrs in name order as SCHILY.xattr
// only, whiteout and opaque markers with mode 0, owner 0:0 and mtime 0.

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/fd.h"
#include "common/fs.h"
#include "common/path.h"
#include "drivers/format.h"
#include "drivers/tar.h"

namespace lamina {
namespace {

struct ArchiveWriteDeleter {
  void operator()(struct archive* a) const { archive_write_free(a); }
};
using ArchiveWriter = std::unique_ptr<struct archive, ArchiveWriteDeleter>;
struct EntryDeleter {
  void operator()(struct archive_entry* e) const { archive_entry_free(e); }
};
using Entry = std::unique_ptr<struct archive_entry, EntryDeleter>;

// user.containers.override_stat = "uid:gid:mode[:type]".
struct OverrideStat {
  uid_t uid = 0;
  gid_t gid = 0;
  mode_t mode = 0;
  std::optional<mode_t> type;  // S_IF*, when the 4th field names one
  unsigned dev_major = 0;
  unsigned dev_minor = 0;
};

template <class T>
bool ParseNumber(std::string_view s, T* out, int base = 10) {
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out, base);
  return ec == std::errc() && ptr == s.data() + s.size() && !s.empty();
}

std::optional<OverrideStat> ParseOverrideStat(std::string_view value) {
  std::vector<std::string_view> parts;
  size_t pos = 0;
  for (int i = 0; i < 3; ++i) {
    size_t colon = value.find(':', pos);
    if (colon == std::string_view::npos) {
      parts.push_back(value.substr(pos));
      pos = value.size() + 1;
      break;
    }
    parts.push_back(value.substr(pos, colon - pos));
    pos = colon + 1;
  }
  if (pos <= value.size()) parts.push_back(value.substr(pos));
  if (parts.size() < 3) return std::nullopt;
  OverrideStat st;
  if (!ParseNumber(parts[0], &st.uid) || !ParseNumber(parts[1], &st.gid) ||
      !ParseNumber(parts[2], &st.mode, 8)) {
    return std::nullopt;
  }
  st.mode &= 07777;
  if (parts.size() == 4) {
    std::string_view type = parts[3];
    auto dev = [&](std::string_view rest) {
      size_t dash = rest.find('-');
      return dash != std::string_view::npos &&
             ParseNumber(rest.substr(0, dash), &st.dev_major) &&
             ParseNumber(rest.substr(dash + 1), &st.dev_minor);
    };
    if (type == "file") st.type = S_IFREG;
    else if (type == "dir") st.type = S_IFDIR;
    else if (type == "symlink") st.type = S_IFLNK;
    else if (type == "pipe") st.type = S_IFIFO;
    else if (type == "socket") st.type = S_IFSOCK;
    else if (type.starts_with("char-") && dev(type.substr(5))) st.type = S_IFCHR;
    else if (type.starts_with("block-") && dev(type.substr(6))) st.type = S_IFBLK;
  }
  return st;
}

// The order of entries in the tar: component by component, so a directory
// comes right before its content; an opaque marker sorts first among its
// directory's children (the empty component).
struct Item {
  std::vector<std::string> key;
  std::string name;  // the tar path
  const DiffEntry* entry;
};

Item MakeItem(const DiffEntry& e) {
  Item item{SplitComponents(e.path), "", &e};
  switch (e.kind) {
    case DiffEntry::Kind::kContent:
      item.name = JoinPath("", e.path);
      break;
    case DiffEntry::Kind::kWhiteout: {
      auto [dir, base] = SplitParent(e.path);
      item.key.back() = std::string(kWhiteoutPrefix) + base;
      item.name = JoinPath(dir, item.key.back());
      break;
    }
    case DiffEntry::Kind::kOpaque:
      item.key.emplace_back();
      item.name = JoinPath(e.path, kOpaqueWhiteout);
      break;
  }
  return item;
}

class Writer {
 public:
  Writer(struct archive* a, int root) : a_(a), root_(root) {}
  Result<void> Marker(const std::string& name);
  Result<void> Content(const Item& item);
  TarStats stats() const { return stats_; }

 private:
  Result<void> WriteHeader(struct archive_entry* entry, const std::string& name);
  Result<void> WriteData(const std::string& path, uint64_t size, const std::string& name);

  struct archive* a_;
  int root_;
  TarStats stats_;
  std::map<std::pair<dev_t, ino_t>, std::string> links_;  // first tar name of an inode
};

std::string ArchiveMessage(struct archive* a) {
  const char* msg = archive_error_string(a);
  return msg ? msg : "unknown libarchive error";
}

Result<void> Writer::WriteHeader(struct archive_entry* entry, const std::string& name) {
  int r = archive_write_header(a_, entry);
  if (r == ARCHIVE_WARN) {
    spdlog::warn("layer tar: {}: {}", name, ArchiveMessage(a_));
  } else if (r != ARCHIVE_OK) {
    int err = archive_errno(a_);
    return Fail(err > 0 ? err : EIO, "write tar header " + name + ": " + ArchiveMessage(a_));
  }
  ++stats_.entries;
  return {};
}

Result<void> Writer::Marker(const std::string& name) {
  Entry entry(archive_entry_new());
  archive_entry_copy_pathname(entry.get(), name.c_str());
  archive_entry_set_filetype(entry.get(), AE_IFREG);
  archive_entry_set_perm(entry.get(), 0);
  archive_entry_set_size(entry.get(), 0);
  archive_entry_set_mtime(entry.get(), 0, 0);
  return WriteHeader(entry.get(), name);
}

Result<void> Writer::WriteData(const std::string& path, uint64_t size, const std::string& name) {
  Fd fd = LAMINA_TRY(Open(path, O_RDONLY | O_NOFOLLOW));
  std::vector<char> buf(256 * 1024);
  uint64_t done = 0;
  while (done < size) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - done));
    ssize_t n = ::read(fd.get(), buf.data(), want);
    if (n < 0) {
      if (errno == EINTR) continue;
      return FailErrno("read " + name);
    }
    if (n == 0) {
      // The file shrank while we wrote it: keep the header's promise.
      std::fill(buf.begin(), buf.begin() + static_cast<ptrdiff_t>(want), '\0');
      n = static_cast<ssize_t>(want);
    }
    la_ssize_t w = archive_write_data(a_, buf.data(), static_cast<size_t>(n));
    if (w < 0) {
      int err = archive_errno(a_);
      return Fail(err > 0 ? err : EIO, "write tar data " + name + ": " + ArchiveMessage(a_));
    }
    done += static_cast<uint64_t>(n);
    stats_.bytes += static_cast<uint64_t>(n);
  }
  return {};
}

Result<void> Writer::Content(const Item& item) {
  const DiffEntry& e = *item.entry;
  if (e.path.empty()) return {};  // the root itself has no entry
  std::string path;
  Fd parent;
  if (!e.source.empty()) {
    path = e.source;
  } else {
    auto [dir, base] = SplitParent(e.path);
    parent = LAMINA_TRY(OpenBeneath(root_, dir, O_PATH | O_DIRECTORY));
    path = ProcFdPath(parent.get()) + "/" + base;
  }
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return FailErrno("stat " + e.path);

  std::string name = item.name;
  Entry entry(archive_entry_new());
  mode_t type = st.st_mode & S_IFMT;
  uid_t uid = st.st_uid;
  gid_t gid = st.st_gid;
  mode_t perm = st.st_mode & 07777;
  dev_t rdev = st.st_rdev;
  if (type != S_IFLNK) {
    char value[128];
    ssize_t n = ::lgetxattr(path.c_str(), kOverrideStatXattr.data(), value, sizeof(value));
    if (n > 0) {
      auto ov = ParseOverrideStat(std::string_view(value, static_cast<size_t>(n)));
      if (!ov) {
        spdlog::warn("{}: ignoring malformed {}", e.path, kOverrideStatXattr);
      } else {
        uid = ov->uid;
        gid = ov->gid;
        perm = ov->mode;
        // A rootless writer stores a device it could not mknod as a file.
        if (ov->type && (*ov->type == S_IFCHR || *ov->type == S_IFBLK) && type == S_IFREG) {
          type = *ov->type;
          rdev = makedev(ov->dev_major, ov->dev_minor);
        }
      }
    }
  }
  if (type == S_IFSOCK) {
    spdlog::warn("layer tar: leaving out socket {}", e.path);
    return {};
  }
  if (type == S_IFDIR) name += "/";
  archive_entry_copy_pathname(entry.get(), name.c_str());
  archive_entry_set_filetype(entry.get(), type);
  archive_entry_set_perm(entry.get(), perm);
  archive_entry_set_uid(entry.get(), uid);
  archive_entry_set_gid(entry.get(), gid);
  archive_entry_set_mtime(entry.get(), st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
  archive_entry_set_size(entry.get(), 0);

  if (type != S_IFDIR && st.st_nlink > 1) {
    auto [it, first] = links_.try_emplace({st.st_dev, st.st_ino}, item.name);
    if (!first) {
      archive_entry_copy_hardlink(entry.get(), it->second.c_str());
      return WriteHeader(entry.get(), name);
    }
  }

  // xattrs, by name, leaving out the union format's own.
  std::vector<char> list(4096);
  ssize_t len;
  while ((len = ::llistxattr(path.c_str(), list.data(), list.size())) < 0 && errno == ERANGE) {
    list.resize(list.size() * 4);
  }
  if (len < 0 && errno != ENOTSUP) return FailErrno("list xattrs of " + e.path);
  std::vector<std::string> names;
  for (ssize_t i = 0; i < len;) {
    std::string xname(list.data() + i);
    i += static_cast<ssize_t>(xname.size()) + 1;
    if (!xname.empty() && !IsInternalXattr(xname)) names.push_back(std::move(xname));
  }
  std::sort(names.begin(), names.end());
  for (const auto& xname : names) {
    auto value = GetXattr(path, xname);
    if (!value) {
      if (value.error().code() == ENODATA) continue;
      return Fail(value.error().Wrap(e.path));
    }
    archive_entry_xattr_add_entry(entry.get(), xname.c_str(), value->data(), value->size());
  }

  switch (type) {
    case S_IFREG:
      archive_entry_set_size(entry.get(), st.st_size);
      LAMINA_CHECK(WriteHeader(entry.get(), name));
      if (st.st_size > 0) {
        LAMINA_CHECK(WriteData(path, static_cast<uint64_t>(st.st_size), e.path));
      }
      return {};
    case S_IFLNK: {
      std::vector<char> target(PATH_MAX + 1);
      ssize_t n = ::readlink(path.c_str(), target.data(), target.size() - 1);
      if (n < 0) return FailErrno("readlink " + e.path);
      target[static_cast<size_t>(n)] = '\0';
      archive_entry_copy_symlink(entry.get(), target.data());
      return WriteHeader(entry.get(), name);
    }
    case S_IFCHR:
    case S_IFBLK:
      archive_entry_set_rdevmajor(entry.get(), major(rdev));
      archive_entry_set_rdevminor(entry.get(), minor(rdev));
      return WriteHeader(entry.get(), name);
    default:
      return WriteHeader(entry.get(), name);
  }
}

}  // namespace

Result<TarStats> WriteLayerTar(int out_fd, const std::string& root,
                               std::vector<DiffEntry> entries) {
  Fd root_fd = LAMINA_TRY(Open(root, O_PATH | O_DIRECTORY));
  std::vector<Item> items;
  items.reserve(entries.size());
  for (const auto& e : entries) {
    if (e.kind != DiffEntry::Kind::kContent && e.path.empty()) {
      if (e.kind == DiffEntry::Kind::kWhiteout) return Fail(EINVAL, "whiteout of the layer root");
    }
    items.push_back(MakeItem(e));
  }
  std::sort(items.begin(), items.end(),
            [](const Item& a, const Item& b) { return a.key < b.key; });
  items.erase(std::unique(items.begin(), items.end(),
                          [](const Item& a, const Item& b) { return a.key == b.key; }),
              items.end());

  ArchiveWriter a(archive_write_new());
  if (!a) return Fail(ENOMEM, "archive_write_new");
  // Full pax (not "restricted"): sub-second mtimes are kept.
  archive_write_set_format_pax(a.get());
  // SCHILY.xattr only (libarchive would add LIBARCHIVE.xattr copies too).
  archive_write_set_format_option(a.get(), "pax", "xattrheader", "SCHILY");
  // Names are bytes: never converted through the process locale, so the
  // same tree gives the same tar whatever LANG says.
  archive_write_set_format_option(a.get(), "pax", "hdrcharset", "BINARY");
  // No padding of the last block to 10 KiB: libarchive pads pipes but not
  // regular files unless told, and the same layer must give the same bytes
  // wherever it is written (Go's archive/tar, as Docker's, does not pad either).
  archive_write_set_bytes_in_last_block(a.get(), 1);
  if (archive_write_open_fd(a.get(), out_fd) != ARCHIVE_OK) {
    return Fail(EIO, "open layer tar for writing: " + ArchiveMessage(a.get()));
  }
  Writer writer(a.get(), root_fd.get());
  for (const auto& item : items) {
    if (item.entry->kind == DiffEntry::Kind::kContent) {
      LAMINA_CHECK(writer.Content(item));
    } else {
      LAMINA_CHECK(writer.Marker(item.name));
    }
  }
  if (archive_write_close(a.get()) != ARCHIVE_OK) {
    int err = archive_errno(a.get());
    return Fail(err > 0 ? err : EIO, "finish layer tar: " + ArchiveMessage(a.get()));
  }
  return writer.stats();
}

}  // namespace lamina
