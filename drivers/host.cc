#include "drivers/host.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <sstream>

#include "common/fd.h"
#include "common/fs.h"
#include "common/path.h"
#include "common/scope_guard.h"

namespace lamina {

namespace {

constexpr long kXfsMagic = 0x58465342;
constexpr long kZfsMagic = 0x2fc12fc1;
constexpr long kFuseMagic = 0x65735546;
constexpr long kF2fsMagic = 0xF2F52010;
constexpr long kOverlayMagic = 0x794c7630;

std::string NameOfMagic(long magic) {
  switch (magic) {
    case EXT4_SUPER_MAGIC:
      return "ext4";
    case kXfsMagic:
      return "xfs";
    case BTRFS_SUPER_MAGIC:
      return "btrfs";
    case TMPFS_MAGIC:
      return "tmpfs";
    case kOverlayMagic:
      return "overlay";
    case kFuseMagic:
      return "fuse";
    case kZfsMagic:
      return "zfs";
    case kF2fsMagic:
      return "f2fs";
    case NFS_SUPER_MAGIC:
      return "nfs";
    default: {
      std::ostringstream out;
      out << "0x" << std::hex << magic;
      return out.str();
    }
  }
}

bool InUserNamespace() {
  auto map = ReadFile("/proc/self/uid_map");
  if (!map) return false;
  std::istringstream in(*map);
  unsigned long inside = 0, outside = 0, count = 0;
  if (!(in >> inside >> outside >> count)) return true;
  return !(inside == 0 && outside == 0 && count == 4294967295UL);
}

std::string FindInPath(const std::string& name) {
  const char* env = std::getenv("PATH");
  std::string dirs = env != nullptr ? env : "";
  dirs += ":/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";
  std::istringstream in(dirs);
  std::string dir;
  while (std::getline(in, dir, ':')) {
    if (dir.empty() || dir.front() != '/') continue;
    std::string candidate = JoinPath(dir, name);
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return {};
}

bool ProcFilesystemsLists(const std::string& text, const std::string& fs) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    auto tab = line.rfind('\t');
    std::string name = tab == std::string::npos ? line : line.substr(tab + 1);
    if (name == fs) return true;
  }
  return false;
}

bool ProbeDType(int dirfd) {
  int fd = ::openat(dirfd, "dtype", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  ::close(fd);
  int copy = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (copy < 0) return false;
  DIR* dir = ::fdopendir(copy);
  if (dir == nullptr) {
    ::close(copy);
    return false;
  }
  bool ok = false;
  while (struct dirent* ent = ::readdir(dir)) {
    if (std::strcmp(ent->d_name, "dtype") == 0) ok = ent->d_type == DT_REG;
  }
  ::closedir(dir);
  return ok;
}

bool ProbeFiclone(int dirfd) {
  int src = ::openat(dirfd, "clone-src", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (src < 0) return false;
  Fd src_fd(src);
  char block[4096] = {1};
  if (::write(src, block, sizeof(block)) != static_cast<ssize_t>(sizeof(block))) return false;
  int dst = ::openat(dirfd, "clone-dst", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (dst < 0) return false;
  Fd dst_fd(dst);
  return ::ioctl(dst, FICLONE, src) == 0;
}

bool ProbeMknodWhiteout(int dirfd) {
  return ::mknodat(dirfd, "whiteout", S_IFCHR | 0000, makedev(0, 0)) == 0;
}

bool ProbeXattr(int dirfd, const char* name) {
  int fd = ::openat(dirfd, "xattr", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  Fd guard(fd);
  return ::fsetxattr(fd, name, "y", 1, 0) == 0;
}

}  // namespace

Result<std::string> FilesystemType(const std::string& path) {
  struct statfs sfs;
  if (::statfs(path.c_str(), &sfs) != 0) return FailErrno("statfs " + path);
  return NameOfMagic(static_cast<long>(sfs.f_type));
}

std::vector<std::pair<std::string, std::string>> HostFacts::Describe() const {
  auto yes_no = [](bool b) { return std::string(b ? "yes" : "no"); };
  return {
      {"euid", std::to_string(euid)},
      {"user_namespace", yes_no(in_user_namespace)},
      {"kernel", kernel_release},
      {"overlay_in_kernel", yes_no(overlay_listed)},
      {"fuse_in_kernel", yes_no(fuse_listed)},
      {"store_root", store_root},
      {"backing_fs", backing_fs},
      {"d_type", yes_no(d_type)},
      {"dev_fuse", yes_no(dev_fuse)},
      {"fusermount3", fusermount3.empty() ? "not found" : fusermount3},
      {"ficlone", yes_no(ficlone)},
      {"mknod_whiteout", yes_no(mknod_whiteout)},
      {"trusted_xattrs", yes_no(trusted_xattrs)},
      {"user_xattrs", yes_no(user_xattrs)},
  };
}

namespace {

// The facts about the store's filesystem, as kept in a facts file by the
// last probe that could write it, with what they depend on.
std::string FormatStoreFacts(const HostFacts& f) {
  std::ostringstream out;
  out << "kernel " << f.kernel_release << "\neuid " << f.euid << "\nuserns " << f.in_user_namespace
      << "\nbacking_fs " << f.backing_fs << "\nd_type " << f.d_type << "\nficlone " << f.ficlone
      << "\nmknod_whiteout " << f.mknod_whiteout << "\ntrusted_xattrs " << f.trusted_xattrs
      << "\nuser_xattrs " << f.user_xattrs << "\n";
  return out.str();
}

// `facts` with the store filesystem's facts of `file`, when it was written
// for this kernel, user, namespace and filesystem; false otherwise.
bool ReadStoreFacts(const std::string& file, HostFacts* facts) {
  auto text = ReadFile(file);
  if (!text) return false;
  HostFacts cached = *facts;
  std::istringstream in(*text);
  std::string key, value;
  while (in >> key && std::getline(in >> std::ws, value)) {
    bool on = value == "1";
    if (key == "d_type")
      cached.d_type = on;
    else if (key == "ficlone")
      cached.ficlone = on;
    else if (key == "mknod_whiteout")
      cached.mknod_whiteout = on;
    else if (key == "trusted_xattrs")
      cached.trusted_xattrs = on;
    else if (key == "user_xattrs")
      cached.user_xattrs = on;
  }
  // `cached` has this kernel, user, namespace and filesystem: the file must
  // name the same.
  if (FormatStoreFacts(cached) != *text) return false;
  *facts = cached;
  return true;
}

}  // namespace

Result<HostFacts> ProbeHost(const std::string& store_root, const std::string& facts_file) {
  HostFacts facts;
  facts.euid = ::geteuid();
  facts.in_user_namespace = InUserNamespace();
  struct utsname uts;
  if (::uname(&uts) == 0) facts.kernel_release = uts.release;
  if (auto text = ReadFile("/proc/filesystems")) {
    facts.overlay_listed = ProcFilesystemsLists(*text, "overlay");
    facts.fuse_listed = ProcFilesystemsLists(*text, "fuse");
  }
  int fuse = ::open("/dev/fuse", O_RDWR | O_CLOEXEC);
  if (fuse >= 0) {
    facts.dev_fuse = true;
    ::close(fuse);
  }
  facts.fusermount3 = FindInPath("fusermount3");

  facts.store_root = store_root;
  facts.backing_fs = LAMINA_TRY(FilesystemType(store_root));

  std::string scratch = JoinPath(store_root, ".probe-" + RandomId().substr(0, 12));
  if (::mkdir(scratch.c_str(), 0700) != 0) {
    int err = errno;
    // A full store must still open, to be listed and cleaned up: its
    // filesystem is the one the last probe saw.
    if ((err == ENOSPC || err == EDQUOT) && !facts_file.empty() &&
        ReadStoreFacts(facts_file, &facts)) {
      spdlog::warn("store {}: no space to probe its filesystem; using the last probe's findings",
                   store_root);
      facts.store_full = true;
      return facts;
    }
    return Fail(err, "probe in " + store_root);
  }
  {
    auto cleanup = Defer([&] { (void)RemoveTree(scratch); });
    Fd dir = LAMINA_TRY(Open(scratch, O_RDONLY | O_DIRECTORY));
    facts.d_type = ProbeDType(dir.get());
    facts.ficlone = ProbeFiclone(dir.get());
    facts.mknod_whiteout = ProbeMknodWhiteout(dir.get());
    facts.trusted_xattrs = ProbeXattr(dir.get(), "trusted.overlay.probe");
    facts.user_xattrs = ProbeXattr(dir.get(), "user.lamina.probe");
  }
  // Kept for the case above; rewritten only when something changed.
  if (facts_file.empty()) return facts;
  std::string kept = FormatStoreFacts(facts);
  if (auto old = ReadFile(facts_file); !old || *old != kept) {
    if (auto written = WriteFileAtomic(facts_file, kept); !written) {
      spdlog::debug("store {}: {}", store_root, written.error().message());
    }
  }
  return facts;
}

}  // namespace lamina
