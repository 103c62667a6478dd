#include "bench/process.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "common/fs.h"
#include "common/scope_guard.h"

extern char** environ;

namespace lamina::bench {

Result<pid_t> Spawn(const std::vector<std::string>& argv, const SpawnOptions& options) {
  if (argv.empty()) return Fail(EINVAL, "empty command");
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
  for (const auto& add : options.env) {
    std::string name = add.substr(0, add.find('=') + 1);
    std::erase_if(env_strings, [&](const std::string& e) { return e.starts_with(name); });
    env_strings.push_back(add);
  }
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  auto destroy = Defer([&] { posix_spawn_file_actions_destroy(&actions); });
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, options.stdout_path.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (!options.stderr_path.empty()) {
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, options.stderr_path.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
  }
  pid_t pid;
  int rc = ::posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), envp.data());
  if (rc != 0) return Fail(rc, "run " + argv[0]);
  return pid;
}

Result<int> WaitExit(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return FailErrno("wait for " + std::to_string(pid));
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

Result<void> RunChecked(const std::vector<std::string>& argv, const SpawnOptions& options) {
  pid_t pid = LAMINA_TRY(Spawn(argv, options));
  int status = LAMINA_TRY(WaitExit(pid));
  if (status == 0) return {};
  std::string message = argv[0] + " exited with status " + std::to_string(status);
  if (!options.stderr_path.empty()) {
    if (auto log = ReadFile(options.stderr_path)) {
      while (!log->empty() && log->back() == '\n') log->pop_back();
      size_t nl = log->rfind('\n');
      std::string last = nl == std::string::npos ? *log : log->substr(nl + 1);
      if (!last.empty()) message += ": " + last;
    }
  }
  return Fail(EIO, message);
}

bool OnPath(const std::string& name) {
  if (name.find('/') != std::string::npos) return ::access(name.c_str(), X_OK) == 0;
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (!dir.empty() && ::access((dir + "/" + name).c_str(), X_OK) == 0) return true;
  }
  return false;
}

Result<void> DropCaches() {
  ::sync();
  int fd = ::open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return FailErrno("open /proc/sys/vm/drop_caches");
  auto close_fd = Defer([&] { ::close(fd); });
  if (::write(fd, "3\n", 2) != 2) return FailErrno("write /proc/sys/vm/drop_caches");
  return {};
}

std::optional<uint64_t> ResidentKiB(pid_t pid) {
  auto status = ReadFile("/proc/" + std::to_string(pid) + "/status");
  if (!status) return std::nullopt;
  size_t at = status->find("\nVmRSS:");
  if (at == std::string::npos) return std::nullopt;
  return std::strtoull(status->c_str() + at + 7, nullptr, 10);
}

bool IsMountPoint(const std::string& path) {
  struct statx here, parent;
  if (::statx(AT_FDCWD, path.c_str(), AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS | STATX_MNT_ID,
              &here) != 0 ||
      ::statx(AT_FDCWD, (path + "/..").c_str(), 0, STATX_BASIC_STATS | STATX_MNT_ID, &parent) !=
          0) {
    return false;
  }
  if (here.stx_dev_major != parent.stx_dev_major || here.stx_dev_minor != parent.stx_dev_minor) {
    return true;
  }
  return (here.stx_mask & STATX_MNT_ID) != 0 && here.stx_mnt_id != parent.stx_mnt_id;
}

void UnmountBelow(const std::string& dir) {
  auto info = ReadFile("/proc/self/mountinfo");
  if (!info) return;
  std::vector<std::string> mounts;
  std::istringstream lines(*info);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    std::string f, point;
    for (int i = 0; i < 5 && fields >> f; ++i) point = f;
    if (point == dir || point.starts_with(dir + "/")) mounts.push_back(point);
  }
  std::sort(mounts.begin(), mounts.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  for (const auto& m : mounts) {
    if (::umount2(m.c_str(), 0) != 0) ::umount2(m.c_str(), MNT_DETACH);
  }
}

double Now() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

}  // namespace lamina::bench
