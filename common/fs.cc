#include "common/fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/path.h"
#include "common/scope_guard.h"

extern char** environ;

namespace lamina {

Result<std::string> ReadFile(const std::string& path) {
  Fd fd = LAMINA_TRY(Open(path, O_RDONLY));
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return FailErrno("read " + path);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

static Result<void> WriteAll(int fd, std::string_view data, const std::string& what) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return FailErrno("write " + what);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

Result<void> WriteFileAtomic(const std::string& path, std::string_view data, mode_t mode) {
  auto [dir, base] = SplitParent(path);
  if (dir.empty()) dir = ".";
  std::string tmp = JoinPath(dir, "." + base + ".tmp-" + RandomId().substr(0, 12));
  Fd fd = LAMINA_TRY(Open(tmp, O_WRONLY | O_CREAT | O_EXCL, mode));
  auto unlink_tmp = Defer([&] { ::unlink(tmp.c_str()); });
  LAMINA_CHECK(WriteAll(fd.get(), data, tmp));
  if (::fchmod(fd.get(), mode) != 0) return FailErrno("chmod " + tmp);
  if (::fsync(fd.get()) != 0) return FailErrno("fsync " + tmp);
  fd.Reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) return FailErrno("rename to " + path);
  unlink_tmp.Dismiss();
  return FsyncPath(dir);
}

Result<void> FsyncPath(const std::string& path) {
  Fd fd = LAMINA_TRY(Open(path, O_RDONLY));
  if (::fsync(fd.get()) != 0) return FailErrno("fsync " + path);
  return {};
}

Result<void> MakeDirs(const std::string& path, mode_t mode) {
  if (path.empty()) return {};
  std::string cur;
  if (path.front() == '/') cur = "/";
  for (const auto& part : SplitComponents(path)) {
    cur = JoinPath(cur, part);
    if (::mkdir(cur.c_str(), mode) == 0) continue;
    if (errno != EEXIST) return FailErrno("mkdir " + cur);
    struct stat st;
    if (::stat(cur.c_str(), &st) != 0) return FailErrno("stat " + cur);
    if (!S_ISDIR(st.st_mode)) return Fail(ENOTDIR, "mkdir " + cur);
  }
  return {};
}

// Removes everything inside the directory `dirfd` (not the directory itself).
static Result<void> EmptyDir(int dirfd, const std::string& what) {
  int copy = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (copy < 0) return FailErrno("open " + what);
  DIR* dir = ::fdopendir(copy);
  if (dir == nullptr) {
    ::close(copy);
    return FailErrno("opendir " + what);
  }
  auto close_dir = Defer([&] { ::closedir(dir); });
  std::vector<std::pair<std::string, unsigned char>> names;
  while (struct dirent* ent = ::readdir(dir)) {
    if (std::strcmp(ent->d_name, ".") == 0 || std::strcmp(ent->d_name, "..") == 0) continue;
    names.emplace_back(ent->d_name, ent->d_type);
  }
  for (const auto& [name, type] : names) {
    if (::unlinkat(dirfd, name.c_str(), 0) == 0 || errno == ENOENT) continue;
    if (errno != EISDIR && errno != EPERM) return FailErrno("unlink " + what + "/" + name);
    LAMINA_CHECK(RemoveTreeAt(dirfd, name));
  }
  return {};
}

Result<void> RemoveTreeAt(int dirfd, const std::string& name) {
  if (::unlinkat(dirfd, name.c_str(), 0) == 0 || errno == ENOENT) return {};
  if (errno != EISDIR && errno != EPERM) return FailErrno("unlink " + name);
  constexpr int kFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
  int sub = ::openat(dirfd, name.c_str(), kFlags);
  if (sub < 0 && errno == EACCES) {
    // A directory of ours that we may not read: the kernel overlay's
    // work/work (mode 000) from a mount in a user namespace. An empty one
    // goes as it is; another gets u+rwx first.
    if (::unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) == 0) return {};
    if (::fchmodat(dirfd, name.c_str(), 0700, 0) == 0) {
      sub = ::openat(dirfd, name.c_str(), kFlags);
    } else {
      errno = EACCES;
    }
  }
  if (sub < 0) {
    if (errno == ENOENT) return {};
    return FailErrno("open " + name);
  }
  Fd sub_fd(sub);
  LAMINA_CHECK(EmptyDir(sub_fd.get(), name));
  if (::unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
    return FailErrno("rmdir " + name);
  }
  return {};
}

Result<void> RemoveTree(const std::string& path) {
  auto [dir, base] = SplitParent(path);
  if (dir.empty() && !path.empty() && path.front() == '/') dir = "/";
  if (dir.empty()) dir = ".";
  int dirfd = ::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (dirfd < 0) {
    if (errno == ENOENT) return {};
    return FailErrno("open " + dir);
  }
  Fd guard(dirfd);
  auto res = RemoveTreeAt(dirfd, base);
  if (!res) return Fail(res.error().Wrap("remove " + path));
  return {};
}

Result<std::optional<struct stat>> LstatIfExists(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) return st;
  if (errno == ENOENT || errno == ENOTDIR) return std::nullopt;
  return FailErrno("stat " + path);
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

Result<std::vector<std::string>> ListDir(int dirfd) {
  int copy = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (copy < 0) return FailErrno("open directory");
  DIR* dir = ::fdopendir(copy);
  if (dir == nullptr) {
    ::close(copy);
    return FailErrno("opendir");
  }
  auto close_dir = Defer([&] { ::closedir(dir); });
  std::vector<std::string> names;
  errno = 0;
  while (struct dirent* ent = ::readdir(dir)) {
    if (std::strcmp(ent->d_name, ".") == 0 || std::strcmp(ent->d_name, "..") == 0) continue;
    names.emplace_back(ent->d_name);
  }
  if (errno != 0) return FailErrno("readdir");
  std::sort(names.begin(), names.end());
  return names;
}

Result<std::vector<std::string>> ListDir(const std::string& path) {
  Fd fd = LAMINA_TRY(Open(path, O_RDONLY | O_DIRECTORY));
  auto names = ListDir(fd.get());
  if (!names) return Fail(names.error().Wrap(path));
  return names;
}

static Result<std::string> XattrValue(auto&& get, const std::string& what) {
  std::string value(256, '\0');
  for (;;) {
    ssize_t n = get(value.data(), value.size());
    if (n >= 0) {
      value.resize(static_cast<size_t>(n));
      return value;
    }
    if (errno != ERANGE) return FailErrno(what);
    ssize_t need = get(nullptr, 0);
    if (need < 0) return FailErrno(what);
    value.resize(static_cast<size_t>(need) + 1);
  }
}

Result<std::string> GetXattr(const std::string& path, const std::string& name) {
  return XattrValue(
      [&](char* buf, size_t size) { return ::lgetxattr(path.c_str(), name.c_str(), buf, size); },
      "getxattr " + name + " " + path);
}

Result<std::string> FGetXattr(int fd, const std::string& name) {
  return XattrValue([&](char* buf, size_t size) { return ::fgetxattr(fd, name.c_str(), buf, size); },
                    "getxattr " + name);
}

Result<void> SetXattr(const std::string& path, const std::string& name, std::string_view value,
                      int flags) {
  if (::lsetxattr(path.c_str(), name.c_str(), value.data(), value.size(), flags) != 0) {
    return FailErrno("setxattr " + name + " " + path);
  }
  return {};
}

Result<void> FSetXattr(int fd, const std::string& name, std::string_view value, int flags) {
  if (::fsetxattr(fd, name.c_str(), value.data(), value.size(), flags) != 0) {
    return FailErrno("setxattr " + name);
  }
  return {};
}

static std::vector<std::string> SplitNames(const std::string& list) {
  std::vector<std::string> names;
  size_t pos = 0;
  while (pos < list.size()) {
    size_t end = list.find('\0', pos);
    if (end == std::string::npos) end = list.size();
    if (end > pos) names.emplace_back(list.substr(pos, end - pos));
    pos = end + 1;
  }
  return names;
}

Result<std::vector<std::string>> ListXattrs(const std::string& path) {
  auto list = XattrValue(
      [&](char* buf, size_t size) { return ::llistxattr(path.c_str(), buf, size); },
      "listxattr " + path);
  if (!list) return Fail(list.error());
  return SplitNames(*list);
}

Result<std::vector<std::string>> FListXattrs(int fd) {
  auto list = XattrValue([&](char* buf, size_t size) { return ::flistxattr(fd, buf, size); },
                         "listxattr");
  if (!list) return Fail(list.error());
  return SplitNames(*list);
}

Result<void> RemoveXattr(const std::string& path, const std::string& name) {
  if (::lremovexattr(path.c_str(), name.c_str()) != 0) {
    return FailErrno("removexattr " + name + " " + path);
  }
  return {};
}

std::string ProcFdPath(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

std::string AtPath(int dirfd, const std::string& name) { return ProcFdPath(dirfd) + "/" + name; }

static Result<void> MakePipe(int fds[2]) {
  if (::pipe2(fds, O_CLOEXEC) != 0) return FailErrno("pipe");
  return {};
}

// Reads both pipes (either may be -1) until both close, so that a chatty
// stderr can never block the child while we wait on stdout.
static void DrainPipes(int out_fd, std::string* out, int err_fd, std::string* err) {
  struct pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
  std::string* sinks[2] = {out, err};
  char buf[8192];
  while (fds[0].fd >= 0 || fds[1].fd >= 0) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      ssize_t n = ::read(fds[i].fd, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        fds[i].fd = -1;
        continue;
      }
      sinks[i]->append(buf, static_cast<size_t>(n));
    }
  }
}

Result<int> RunCommand(const std::vector<std::string>& argv, std::string* out, std::string* err) {
  if (argv.empty()) return Fail(EINVAL, "empty command");
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);

  int out_pipe[2] = {-1, -1};
  int err_pipe[2] = {-1, -1};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  auto destroy = Defer([&] { posix_spawn_file_actions_destroy(&actions); });
  if (out != nullptr) {
    LAMINA_CHECK(MakePipe(out_pipe));
    posix_spawn_file_actions_adddup2(&actions, out_pipe[1], STDOUT_FILENO);
  }
  if (err != nullptr) {
    LAMINA_CHECK(MakePipe(err_pipe));
    posix_spawn_file_actions_adddup2(&actions, err_pipe[1], STDERR_FILENO);
  }
  Fd out_r(out_pipe[0]), out_w(out_pipe[1]), err_r(err_pipe[0]), err_w(err_pipe[1]);
  pid_t pid;
  int rc = ::posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  if (rc != 0) return Fail(rc, "run " + argv[0]);
  out_w.Reset();
  err_w.Reset();
  DrainPipes(out_r.get(), out, err_r.get(), err);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return FailErrno("wait " + argv[0]);
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

Result<Fd> OpenUnnamedFile(const std::string& dir) {
  auto fd = Open(dir, O_TMPFILE | O_RDWR, 0600);
  if (fd) return fd;
  if (fd.error().code() != EOPNOTSUPP && fd.error().code() != EISDIR) return fd;
  std::string path = dir + "/.tmp-" + RandomId();
  Fd named = LAMINA_TRY(Open(path, O_RDWR | O_CREAT | O_EXCL, 0600));
  ::unlink(path.c_str());
  return named;
}

std::string RandomId() {
  unsigned char bytes[32];
  size_t got = 0;
  while (got < sizeof(bytes)) {
    ssize_t n = ::getrandom(bytes + got, sizeof(bytes) - got, 0);
    if (n > 0) got += static_cast<size_t>(n);
  }
  static const char* kHex = "0123456789abcdef";
  std::string id;
  for (unsigned char b : bytes) {
    id += kHex[b >> 4];
    id += kHex[b & 15];
  }
  return id;
}

std::string SelfDir() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  buf[n] = '\0';
  return SplitParent(std::string(buf)).first;
}

}  // namespace lamina
