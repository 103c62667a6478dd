#include "kernel-overlay/overlay_mount.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "common/fd.h"

namespace lamina::overlay {

namespace {

// The messages the kernel left in an fs context ("e overlay: ..."), joined.
std::string ContextMessages(int fsfd) {
  std::string all;
  char buf[1024];
  for (int i = 0; i < 16; ++i) {
    ssize_t n = ::read(fsfd, buf, sizeof(buf) - 1);
    if (n <= 0) break;
    if (!all.empty()) all += "; ";
    all.append(buf, static_cast<size_t>(n));
  }
  return all;
}

Result<void> SetString(int fsfd, const char* key, const std::string& value) {
  if (::fsconfig(fsfd, FSCONFIG_SET_STRING, key, value.c_str(), 0) == 0) return {};
  int saved = errno;
  std::string context = std::string("fsconfig ") + key + "=" + value;
  std::string kernel = ContextMessages(fsfd);
  if (!kernel.empty()) context += " (" + kernel + ")";
  return Fail(saved, context);
}

Result<void> SetFlag(int fsfd, const char* key) {
  if (::fsconfig(fsfd, FSCONFIG_SET_FLAG, key, nullptr, 0) == 0) return {};
  int saved = errno;
  std::string context = std::string("fsconfig ") + key;
  std::string kernel = ContextMessages(fsfd);
  if (!kernel.empty()) context += " (" + kernel + ")";
  return Fail(saved, context);
}

}  // namespace

Result<void> MountNewApi(const OverlaySpec& spec) {
  if (spec.lowers.empty()) return Fail(EINVAL, "overlay mount of " + spec.target + ": no lower");
  int raw = ::fsopen("overlay", FSOPEN_CLOEXEC);
  if (raw < 0) return FailErrno("fsopen overlay");
  Fd fsfd(raw);
  LAMINA_CHECK(SetString(fsfd.get(), "source", "lamina"));
  bool first = true;
  for (const auto& lower : spec.lowers) {
    auto set = SetString(fsfd.get(), "lowerdir+", lower);
    if (!set) {
      // Before 6.8 the parameter is unknown: EINVAL with "Unknown parameter".
      if (first && set.error().code() == EINVAL &&
          set.error().context().find("nknown parameter") != std::string::npos) {
        return Fail(EOPNOTSUPP, "lowerdir+: this kernel's overlay does not know it");
      }
      return Fail(set.error());
    }
    first = false;
  }
  if (!spec.upper.empty()) {
    LAMINA_CHECK(SetString(fsfd.get(), "upperdir", spec.upper));
    LAMINA_CHECK(SetString(fsfd.get(), "workdir", spec.work));
  }
  if (spec.userxattr) LAMINA_CHECK(SetFlag(fsfd.get(), "userxattr"));
  if (spec.redirect_dir) LAMINA_CHECK(SetString(fsfd.get(), "redirect_dir", "on"));
  if (!spec.userxattr) {
    // index=on ties an upper to its lowers' file handles, so a layer could
    // no longer be mounted read-only or by lamina-fuse; metacopy=on would
    // leave files without data in diff/ that other readers cannot use.
    LAMINA_CHECK(SetString(fsfd.get(), "index", "off"));
    LAMINA_CHECK(SetString(fsfd.get(), "metacopy", "off"));
  }
  if (!spec.label.empty()) LAMINA_CHECK(SetString(fsfd.get(), "context", spec.label));
  if (::fsconfig(fsfd.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) != 0) {
    int saved = errno;
    std::string context = "create overlay for " + spec.target;
    std::string kernel = ContextMessages(fsfd.get());
    if (!kernel.empty()) context += " (" + kernel + ")";
    return Fail(saved, context);
  }
  int mnt = ::fsmount(fsfd.get(), FSMOUNT_CLOEXEC, spec.read_only ? MOUNT_ATTR_RDONLY : 0);
  if (mnt < 0) return FailErrno("fsmount overlay for " + spec.target);
  Fd mnt_fd(mnt);
  if (::move_mount(mnt_fd.get(), "", AT_FDCWD, spec.target.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0) {
    return FailErrno("move_mount overlay to " + spec.target);
  }
  return {};
}

Result<std::string> LegacyMountData(const OverlaySpec& spec) {
  if (spec.lowers.empty()) return Fail(EINVAL, "overlay mount of " + spec.target + ": no lower");
  std::string data = "lowerdir=";
  for (size_t i = 0; i < spec.lowers.size(); ++i) {
    if (i > 0) data += ':';
    data += spec.lowers[i];
  }
  if (!spec.upper.empty()) data += ",upperdir=" + spec.upper + ",workdir=" + spec.work;
  if (spec.userxattr) data += ",userxattr";
  if (spec.redirect_dir) data += ",redirect_dir=on";
  if (!spec.userxattr) data += ",index=off,metacopy=off";
  if (!spec.label.empty()) data += ",context=\"" + spec.label + "\"";
  if (data.size() + 1 > kMountDataLimit) {
    return Fail(E2BIG, "overlay mount data for " + std::to_string(spec.lowers.size()) +
                           " layers needs " + std::to_string(data.size() + 1) +
                           " bytes; mount(2) takes at most " + std::to_string(kMountDataLimit) +
                           " (use the new mount API, kernel 6.8+)");
  }
  return data;
}

Result<void> MountLegacy(const OverlaySpec& spec, const std::string& legacy_base) {
  std::string data = LAMINA_TRY(LegacyMountData(spec));
  unsigned long flags = spec.read_only ? MS_RDONLY : 0;
  // The child shares our mount namespace; chdir there does not touch ours.
  // Only async-signal-safe calls after fork.
  pid_t pid = ::fork();
  if (pid < 0) return FailErrno("fork for overlay mount");
  if (pid == 0) {
    if (::chdir(legacy_base.c_str()) != 0) ::_exit(errno);
    if (::mount("overlay", spec.target.c_str(), "overlay", flags, data.c_str()) != 0) {
      ::_exit(errno);
    }
    ::_exit(0);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return FailErrno("wait for overlay mount child");
  }
  if (!WIFEXITED(status)) return Fail(EIO, "overlay mount child died");
  int code = WEXITSTATUS(status);
  if (code != 0) return Fail(code, "mount overlay on " + spec.target + " (" + data + ")");
  return {};
}

namespace {

Result<void> WriteProcSelf(const char* file, const std::string& text) {
  std::string path = std::string("/proc/self/") + file;
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return FailErrno("open " + path);
  Fd guard(fd);
  if (::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    return FailErrno("write " + path);
  }
  return {};
}

}  // namespace

Result<std::string> RunInUserNamespace(const std::function<Result<std::string>()>& fn) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return FailErrno("pipe");
  Fd read_end(fds[0]), write_end(fds[1]);
  std::string uid_map = "0 " + std::to_string(::geteuid()) + " 1\n";
  std::string gid_map = "0 " + std::to_string(::getegid()) + " 1\n";
  pid_t pid = ::fork();
  if (pid < 0) return FailErrno("fork for a user namespace");
  if (pid == 0) {
    read_end.Reset();
    auto run = [&]() -> Result<std::string> {
      if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) return FailErrno("unshare a user namespace");
      LAMINA_CHECK(WriteProcSelf("setgroups", "deny"));
      LAMINA_CHECK(WriteProcSelf("uid_map", uid_map));
      LAMINA_CHECK(WriteProcSelf("gid_map", gid_map));
      return fn();
    };
    auto result = run();
    // "0\nvalue" or "errno\ncontext".
    std::string text =
        result ? "0\n" + *result
               : std::to_string(result.error().code()) + "\n" + result.error().context();
    ssize_t ignored = ::write(write_end.get(), text.data(), text.size());
    (void)ignored;
    ::_exit(result ? 0 : 1);
  }
  write_end.Reset();
  std::string text;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(read_end.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return FailErrno("wait for the user namespace child");
  }
  size_t nl = text.find('\n');
  if (nl == std::string::npos) return Fail(EIO, "the user namespace child died");
  int code = std::atoi(text.substr(0, nl).c_str());
  if (code == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0) return text.substr(nl + 1);
  return Fail(code == 0 ? EIO : code, text.substr(nl + 1));
}

Result<void> Unmount(const std::string& target) {
  if (::umount2(target.c_str(), UMOUNT_NOFOLLOW) != 0) return FailErrno("umount " + target);
  return {};
}

}  // namespace lamina::overlay
