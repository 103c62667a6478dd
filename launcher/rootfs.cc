// The container's file tree, built inside its own mount namespace: every
// path that comes from the image (mount points, volume targets) is resolved
// below the root with openat2(RESOLVE_IN_ROOT), and mounts go onto the
// opened fd (/proc/self/fd/N), so symlinks in an image can never point a
// mount at a host path.

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "common/fd.h"
#include "common/fs.h"
#include "common/path.h"
#include "launcher/container.h"

namespace lamina::launcher {

namespace {

Result<void> MountOn(const std::string& source, const std::string& target, const char* fstype,
                     unsigned long flags, const std::string& data, const std::string& what) {
  if (::mount(source.empty() ? nullptr : source.c_str(), target.c_str(), fstype, flags,
              data.empty() ? nullptr : data.c_str()) != 0) {
    return FailErrno("mount " + what);
  }
  return {};
}

// The flags a bind remount must keep (in a user namespace the kernel refuses
// to clear locked ones).
unsigned long LockedFlags(const std::string& path) {
  struct statvfs st;
  if (::statvfs(path.c_str(), &st) != 0) return 0;
  unsigned long flags = 0;
  if (st.f_flag & ST_NOSUID) flags |= MS_NOSUID;
  if (st.f_flag & ST_NODEV) flags |= MS_NODEV;
  if (st.f_flag & ST_NOEXEC) flags |= MS_NOEXEC;
  if (st.f_flag & ST_NOATIME) flags |= MS_NOATIME;
  if (st.f_flag & ST_NODIRATIME) flags |= MS_NODIRATIME;
  if (st.f_flag & ST_RELATIME) flags |= MS_RELATIME;
  return flags;
}

Result<void> RemountReadOnly(const std::string& target, const std::string& what) {
  return MountOn("", target, nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | LockedFlags(target), "",
                 "read-only " + what);
}

// Opens (making it when missing) the directory or file `path` below the
// root; never leaves the root.
Result<Fd> MakeTarget(int root, const std::string& path, bool directory) {
  auto clean = LAMINA_TRY(CleanRelativePath(path));
  auto parts = SplitComponents(clean);
  std::string prefix;
  for (size_t i = 0; i < parts.size(); ++i) {
    std::string next = JoinPath(prefix, parts[i]);
    bool last = i + 1 == parts.size();
    auto existing = OpenInRoot(root, next, O_PATH);
    if (!existing && existing.error().code() == ENOENT) {
      Fd parent = LAMINA_TRY(OpenInRoot(root, prefix.empty() ? "." : prefix, O_PATH | O_DIRECTORY));
      if (!last || directory) {
        if (::mkdirat(parent.get(), parts[i].c_str(), 0755) != 0 && errno != EEXIST) {
          return FailErrno("mkdir " + next + " in the container");
        }
      } else {
        int fd = ::openat(parent.get(), parts[i].c_str(),
                          O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0 && errno != EEXIST) return FailErrno("create " + next + " in the container");
        if (fd >= 0) ::close(fd);
      }
    } else if (!existing) {
      return Fail(existing.error().Wrap("open " + next + " in the container"));
    }
    prefix = next;
  }
  int flags = O_PATH | (directory ? O_DIRECTORY : 0);
  return OpenInRoot(root, clean.empty() ? "." : clean, flags);
}

Result<void> SetupVolumes(int root, const ContainerSpec& spec) {
  for (const auto& v : spec.volumes) {
    struct stat st;
    if (::stat(v.host.c_str(), &st) != 0) return FailErrno("volume " + v.host);
    Fd target = LAMINA_TRY(MakeTarget(root, v.container, S_ISDIR(st.st_mode)));
    std::string at = ProcFdPath(target.get());
    LAMINA_CHECK(MountOn(v.host, at, nullptr, MS_BIND | MS_REC, "", "volume " + v.host));
    if (v.read_only) {
      // The fd still names the covered directory; reopen to reach the new mount.
      Fd mounted = LAMINA_TRY(OpenInRoot(root, v.container, O_PATH));
      LAMINA_CHECK(RemountReadOnly(ProcFdPath(mounted.get()), "volume " + v.container));
    }
  }
  return {};
}

struct DeviceNode {
  const char* name;
  unsigned major, minor;
};
constexpr DeviceNode kDevices[] = {{"null", 1, 3},   {"zero", 1, 5},    {"full", 1, 7},
                                   {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}};

Result<void> SetupDev(int root, const ChildSetup& setup) {
  {
    Fd dev = LAMINA_TRY(MakeTarget(root, "dev", true));
    LAMINA_CHECK(MountOn("tmpfs", ProcFdPath(dev.get()), "tmpfs", MS_NOSUID | MS_STRICTATIME,
                         "mode=755,size=65536k", "/dev"));
  }
  // The fresh tmpfs: our own, so plain *at calls below it are safe.
  Fd dev = LAMINA_TRY(OpenInRoot(root, "dev", O_PATH | O_DIRECTORY));
  for (const auto& d : kDevices) {
    if (!setup.user_namespace) {
      if (::mknodat(dev.get(), d.name, S_IFCHR | 0666, makedev(d.major, d.minor)) != 0) {
        return FailErrno(std::string("mknod /dev/") + d.name);
      }
      // The umask may have taken bits off.
      if (::fchmodat(dev.get(), d.name, 0666, 0) != 0) return FailErrno("chmod /dev/" + std::string(d.name));
      continue;
    }
    // No mknod in a user namespace: bind the host's node onto an empty file.
    int fd = ::openat(dev.get(), d.name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) return FailErrno(std::string("create /dev/") + d.name);
    ::close(fd);
    Fd target = LAMINA_TRY(OpenAt(dev.get(), d.name, O_PATH | O_NOFOLLOW));
    auto bound = MountOn(std::string("/dev/") + d.name, ProcFdPath(target.get()), nullptr,
                         MS_BIND, "", std::string("/dev/") + d.name);
    // /dev/tty needs a controlling terminal on the host side only to open,
    // not to bind; any other failure is real.
    if (!bound) return bound;
  }
  if (::mkdirat(dev.get(), "pts", 0755) != 0) return FailErrno("mkdir /dev/pts");
  {
    Fd pts = LAMINA_TRY(OpenAt(dev.get(), "pts", O_PATH | O_DIRECTORY));
    std::string options = "newinstance,ptmxmode=0666,mode=0620";
    if (setup.gid5_mapped) options += ",gid=5";
    LAMINA_CHECK(MountOn("devpts", ProcFdPath(pts.get()), "devpts", MS_NOSUID | MS_NOEXEC,
                         options, "/dev/pts"));
  }
  if (::mkdirat(dev.get(), "shm", 01777) != 0) return FailErrno("mkdir /dev/shm");
  {
    Fd shm = LAMINA_TRY(OpenAt(dev.get(), "shm", O_PATH | O_DIRECTORY));
    LAMINA_CHECK(MountOn("shm", ProcFdPath(shm.get()), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                         "mode=1777,size=65536k", "/dev/shm"));
  }
  const std::pair<const char*, const char*> links[] = {{"/proc/self/fd", "fd"},
                                                       {"/proc/self/fd/0", "stdin"},
                                                       {"/proc/self/fd/1", "stdout"},
                                                       {"/proc/self/fd/2", "stderr"},
                                                       {"pts/ptmx", "ptmx"}};
  for (const auto& [target, name] : links) {
    if (::symlinkat(target, dev.get(), name) != 0) return FailErrno(std::string("symlink /dev/") + name);
  }
  return {};
}

Result<void> SetupSys(int root, const ChildSetup& setup) {
  Fd sys = LAMINA_TRY(MakeTarget(root, "sys", true));
  std::string at = ProcFdPath(sys.get());
  unsigned long flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
  if (setup.spec->net == NetMode::kNone || !setup.user_namespace) {
    if (MountOn("sysfs", at, "sysfs", flags, "", "/sys")) return {};
  }
  // A sysfs mount needs a network namespace of our own user namespace:
  // bind the host's read-only instead, where allowed.
  if (MountOn("/sys", at, nullptr, MS_BIND | MS_REC, "", "/sys")) {
    Fd mounted = LAMINA_TRY(OpenInRoot(root, "sys", O_PATH | O_DIRECTORY));
    (void)RemountReadOnly(ProcFdPath(mounted.get()), "/sys");
  }
  return {};
}

// OCI's default masked and read-only /proc paths, after the pivot (our own
// /proc, so plain paths).
void MaskProc() {
  for (const char* path : {"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug",
                           "/proc/latency_stats", "/proc/sysrq-trigger"}) {
    if (::access(path, F_OK) == 0) ::mount("/dev/null", path, nullptr, MS_BIND, nullptr);
  }
  for (const char* path : {"/proc/acpi", "/proc/scsi", "/sys/firmware"}) {
    if (::access(path, F_OK) == 0) ::mount("tmpfs", path, "tmpfs", MS_RDONLY, nullptr);
  }
  for (const char* path : {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"}) {
    if (::access(path, F_OK) != 0) continue;
    if (::mount(path, path, nullptr, MS_BIND | MS_REC, nullptr) == 0) {
      (void)RemountReadOnly(path, path);
    }
  }
}

}  // namespace

Result<void> SetupRootfs(const ChildSetup& setup) {
  const ContainerSpec& spec = *setup.spec;
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    return FailErrno("make mounts private");
  }
  if (spec.mount_root) LAMINA_CHECK(spec.mount_root());
  LAMINA_CHECK(MountOn(spec.rootfs, spec.rootfs, nullptr, MS_BIND | MS_REC, "", "the root"));
  Fd root = LAMINA_TRY(OpenDirPath(spec.rootfs));

  LAMINA_CHECK(SetupVolumes(root.get(), spec));
  {
    Fd proc = LAMINA_TRY(MakeTarget(root.get(), "proc", true));
    LAMINA_CHECK(MountOn("proc", ProcFdPath(proc.get()), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                         "", "/proc"));
  }
  LAMINA_CHECK(SetupDev(root.get(), setup));
  LAMINA_CHECK(SetupSys(root.get(), setup));
  if (spec.read_only) LAMINA_CHECK(RemountReadOnly(spec.rootfs, "root"));

  if (::fchdir(root.get()) != 0) return FailErrno("chdir to the root");
  if (::syscall(SYS_pivot_root, ".", ".") != 0) return FailErrno("pivot_root");
  // The old root is stacked under the new one at "."; detach it whole.
  if (::umount2(".", MNT_DETACH) != 0) return FailErrno("detach the old root");
  if (::chdir("/") != 0) return FailErrno("chdir /");
  MaskProc();
  return {};
}

}  // namespace lamina::launcher
