#include "tests/support/tree_compare.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <sstream>
#include <utility>

#include "common/fd.h"
#include "common/fs.h"
#include "common/hash.h"

namespace lamina::test {
namespace {

// The compared facts of one entry. Fields that do not apply to a type stay
// empty/zero so that they compare equal.
struct Entry {
  char type = '?';  // f d l c b p s
  mode_t perm = 0;  // st_mode & 07777
  uid_t uid = 0;
  gid_t gid = 0;
  uint64_t size = 0;  // regular files only (directory sizes are filesystem detail)
  std::string content;  // xxh3 hex of a regular file, or the symlink target
  unsigned rdev_major = 0;
  unsigned rdev_minor = 0;
  int64_t mtime_ns = 0;
  std::map<std::string, std::string> xattrs;
  // Paths (in this tree) sharing this entry's inode, this one included; empty
  // for directories and when no other path of the tree shares it.
  std::vector<std::string> link_group;
  std::string error;  // a problem reading the entry (compared as a fact)
};

char TypeChar(mode_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: return 'f';
    case S_IFDIR: return 'd';
    case S_IFLNK: return 'l';
    case S_IFCHR: return 'c';
    case S_IFBLK: return 'b';
    case S_IFIFO: return 'p';
    case S_IFSOCK: return 's';
    default: return '?';
  }
}

bool IsInternalXattr(const std::string& name) {
  return name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") ||
         name.starts_with("user.fuseoverlayfs.") || name == "user.containers.override_stat";
}

std::string Hex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

class Walker {
 public:
  Walker(std::string root, const TreeCompareOptions& options)
      : root_(std::move(root)), options_(options) {}

  std::map<std::string, Entry> Walk() {
    Visit(".");
    for (auto& [key, paths] : inodes_) {
      if (paths.size() < 2) continue;
      for (const auto& p : paths) entries_[p].link_group = paths;
    }
    return std::move(entries_);
  }

 private:
  std::string Full(const std::string& rel) const {
    return rel == "." ? root_ : root_ + "/" + rel;
  }

  void Visit(const std::string& rel) {
    std::string full = Full(rel);
    Entry& e = entries_[rel];
    struct stat st;
    if (::lstat(full.c_str(), &st) != 0) {
      e.error = std::string("lstat: ") + std::strerror(errno);
      return;
    }
    e.type = TypeChar(st.st_mode);
    e.perm = st.st_mode & 07777;
    if (options_.owner) {
      e.uid = st.st_uid;
      e.gid = st.st_gid;
    }
    if (options_.times) {
      e.mtime_ns = int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
    }
    if (e.type == 'c' || e.type == 'b') {
      e.rdev_major = major(st.st_rdev);
      e.rdev_minor = minor(st.st_rdev);
    }
    if (options_.xattrs) ReadXattrs(full, e);
    if (e.type != 'd') {
      auto key = std::make_pair(st.st_dev, st.st_ino);
      if (st.st_nlink > 1) inodes_[key].push_back(rel);  // walk order is sorted
    }
    if (e.type == 'f') {
      e.size = static_cast<uint64_t>(st.st_size);
      e.content = HashFile(full);
    } else if (e.type == 'l') {
      std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
      ssize_t n = ::readlink(full.c_str(), target.data(), target.size());
      if (n < 0) {
        e.error = std::string("readlink: ") + std::strerror(errno);
      } else {
        target.resize(static_cast<size_t>(n));
        e.content = "-> " + target;
      }
    } else if (e.type == 'd') {
      auto names = ListDir(full);
      if (!names) {
        e.error = "list: " + names.error().message();
        return;
      }
      for (const auto& name : *names) Visit(rel == "." ? name : rel + "/" + name);
    }
  }

  void ReadXattrs(const std::string& full, Entry& e) {
    auto names = ListXattrs(full);
    if (!names) {
      int code = names.error().code();
      if (code != ENOTSUP) e.error = "listxattr: " + names.error().message();
      return;
    }
    for (const auto& name : *names) {
      if (!options_.internal_xattrs && IsInternalXattr(name)) continue;
      auto value = GetXattr(full, name);
      if (!value) {
        e.xattrs[name] = "<" + value.error().message() + ">";
      } else {
        e.xattrs[name] = *value;
      }
    }
  }

  static std::string HashFile(const std::string& full) {
    // O_NOATIME so that comparing does not disturb what is compared (only
    // permitted to the owner or with CAP_FOWNER; fall back without it).
    auto fd = Open(full, O_RDONLY | O_NOATIME);
    if (!fd) fd = Open(full, O_RDONLY);
    if (!fd) return "<" + fd.error().message() + ">";
    auto hash = Xxh3File(fd->get());
    if (!hash) return "<" + hash.error().message() + ">";
    return Hex(*hash);
  }

  std::string root_;
  const TreeCompareOptions& options_;
  std::map<std::string, Entry> entries_;
  std::map<std::pair<dev_t, ino_t>, std::vector<std::string>> inodes_;
};

std::string Octal(mode_t m) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(m));
  return buf;
}

// Printable form of an xattr value: text as is when printable, else hex.
std::string Printable(const std::string& value) {
  bool text = true;
  for (size_t i = 0; i < value.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(value[i]);
    if (c == 0 && i + 1 == value.size()) continue;  // a trailing NUL is common
    if (c < 0x20 || c >= 0x7f) text = false;
  }
  if (text) return "\"" + value + "\"";
  std::string out = "0x";
  static const char* kHex = "0123456789abcdef";
  for (unsigned char c : value) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

std::string XattrText(const std::map<std::string, std::string>& xattrs) {
  std::string out = "{";
  bool first = true;
  for (const auto& [name, value] : xattrs) {
    if (!first) out += ", ";
    first = false;
    out += name + "=" + Printable(value);
  }
  return out + "}";
}

std::string GroupText(const std::vector<std::string>& group) {
  std::string out = "[";
  for (size_t i = 0; i < group.size(); ++i) {
    if (i) out += " ";
    out += group[i];
  }
  return out + "]";
}

std::string Line(const std::string& path, const Entry& e, const TreeCompareOptions& options) {
  std::ostringstream out;
  out << path << " " << e.type;
  if (path == "." && !options.root_metadata) return out.str();
  out << " " << Octal(e.perm);
  if (options.owner) out << " " << e.uid << ":" << e.gid;
  if (e.type == 'f') out << " size=" << e.size << " xxh3=" << e.content;
  if (e.type == 'l') out << " " << e.content;
  if (e.type == 'c' || e.type == 'b') out << " rdev=" << e.rdev_major << "," << e.rdev_minor;
  if (options.times) out << " mtime=" << e.mtime_ns;
  if (options.xattrs && !e.xattrs.empty()) out << " xattrs=" << XattrText(e.xattrs);
  if (options.link_structure && !e.link_group.empty()) out << " links=" << GroupText(e.link_group);
  if (!e.error.empty()) out << " error=" << e.error;
  return out.str();
}

template <class T>
void Differ(std::vector<std::string>& out, const std::string& path, const char* what, const T& a,
            const T& b) {
  if (a == b) return;
  std::ostringstream line;
  line << path << ": " << what << " (" << a << " vs " << b << ")";
  out.push_back(line.str());
}

}  // namespace

std::vector<std::string> CompareTrees(const std::string& a, const std::string& b,
                                      const TreeCompareOptions& options) {
  auto ea = Walker(a, options).Walk();
  auto eb = Walker(b, options).Walk();
  std::vector<std::string> out;
  auto ia = ea.begin();
  auto ib = eb.begin();
  while (ia != ea.end() || ib != eb.end()) {
    if (ib == eb.end() || (ia != ea.end() && ia->first < ib->first)) {
      out.push_back(ia->first + ": only in a (" + a + ")");
      ++ia;
      continue;
    }
    if (ia == ea.end() || ib->first < ia->first) {
      out.push_back(ib->first + ": only in b (" + b + ")");
      ++ib;
      continue;
    }
    const std::string& path = ia->first;
    const Entry& x = ia->second;
    const Entry& y = ib->second;
    bool is_root = path == ".";
    Differ(out, path, "error", x.error, y.error);
    Differ(out, path, "type", std::string(1, x.type), std::string(1, y.type));
    if (!is_root || options.root_metadata) {
      Differ(out, path, "mode", Octal(x.perm), Octal(y.perm));
      if (options.owner) {
        Differ(out, path, "owner", std::to_string(x.uid) + ":" + std::to_string(x.gid),
               std::to_string(y.uid) + ":" + std::to_string(y.gid));
      }
      if (options.times) Differ(out, path, "mtime_ns", x.mtime_ns, y.mtime_ns);
      if (options.xattrs) Differ(out, path, "xattrs", XattrText(x.xattrs), XattrText(y.xattrs));
    }
    if (x.type == y.type) {
      if (x.type == 'f') {
        Differ(out, path, "size", x.size, y.size);
        Differ(out, path, "content xxh3", x.content, y.content);
      }
      if (x.type == 'l') Differ(out, path, "symlink target", x.content, y.content);
      if (x.type == 'c' || x.type == 'b') {
        Differ(out, path, "rdev",
               std::to_string(x.rdev_major) + "," + std::to_string(x.rdev_minor),
               std::to_string(y.rdev_major) + "," + std::to_string(y.rdev_minor));
      }
    }
    if (options.link_structure) {
      Differ(out, path, "hard links", GroupText(x.link_group), GroupText(y.link_group));
    }
    ++ia;
    ++ib;
  }
  return out;
}

std::string DescribeTree(const std::string& root, const TreeCompareOptions& options) {
  auto entries = Walker(root, options).Walk();
  std::string out;
  for (const auto& [path, e] : entries) {
    out += Line(path, e, options);
    out += '\n';
  }
  return out;
}

}  // namespace lamina::test
