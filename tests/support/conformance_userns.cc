#include "tests/support/conformance_userns.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>

#include "common/fd.h"
#include "common/fs.h"
#include "tests/support/test_util.h"

namespace lamina::test {

namespace {

bool WriteAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// In the child: becomes root of a fresh user and mount namespace. Returns an
// error text, empty on success.
std::string EnterUserNamespace(uid_t uid, gid_t gid) {
  auto fail = [](const char* what) { return std::string(what) + ": " + std::strerror(errno); };
  if (::setgroups(0, nullptr) != 0) return fail("setgroups");
  if (::setresgid(gid, gid, gid) != 0) return fail("setresgid");
  if (::setresuid(uid, uid, uid) != 0) return fail("setresuid");
  // Changing ids clears "dumpable", which makes /proc/self/* root's.
  if (::prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0) return fail("prctl(PR_SET_DUMPABLE)");
  if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0)
    return fail("unshare(CLONE_NEWUSER|CLONE_NEWNS)");
  auto write_proc = [](const char* path, const std::string& text) {
    int fd = ::open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return false;
    bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
    ::close(fd);
    return ok;
  };
  if (!write_proc("/proc/self/setgroups", "deny")) return fail("write setgroups");
  if (!write_proc("/proc/self/uid_map", "0 " + std::to_string(uid) + " 1")) {
    return fail("write uid_map");
  }
  if (!write_proc("/proc/self/gid_map", "0 " + std::to_string(gid) + " 1")) {
    return fail("write gid_map");
  }
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    return fail("make mounts private");
  }
  return {};
}

}  // namespace

UsernsResult RunInUserNamespace(uid_t uid, gid_t gid, const std::function<std::string()>& body,
                                int timeout_seconds) {
  UsernsResult result;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    result.setup_error = std::string("pipe: ") + std::strerror(errno);
    return result;
  }
  Fd read_end(fds[0]);
  Fd write_end(fds[1]);
  pid_t pid = ::fork();
  if (pid < 0) {
    result.setup_error = std::string("fork: ") + std::strerror(errno);
    return result;
  }
  if (pid == 0) {
    read_end.Reset();
    std::string error = EnterUserNamespace(uid, gid);
    if (!error.empty()) {
      WriteAll(write_end.get(), "SETUP-ERROR " + error);
      ::_exit(3);
    }
    std::string out;
    try {
      out = body();
    } catch (const std::exception& e) {
      out = std::string("EXCEPTION ") + e.what();
      WriteAll(write_end.get(), out);
      ::_exit(4);
    }
    WriteAll(write_end.get(), out);
    ::_exit(0);
  }
  write_end.Reset();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_seconds);
  std::string text;
  char buf[4096];
  bool timed_out = false;
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    struct pollfd pfd = {read_end.get(), POLLIN, 0};
    int ready = ::poll(&pfd, 1, static_cast<int>(left));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) {
      timed_out = ready == 0;
      break;
    }
    ssize_t n = ::read(read_end.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  if (timed_out) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (timed_out) {
    result.setup_error =
        "the rootless child timed out after " + std::to_string(timeout_seconds) + " s";
  } else if (text.starts_with("SETUP-ERROR ")) {
    result.setup_error = text.substr(12);
  }
  result.output = std::move(text);
  return result;
}

std::string RootlessUnavailableReason() {
  if (InRootlessNamespace()) {
    return "this process is rootless already (the rootless ctest entries run every case as "
           "lamina-test); switching to lamina-test needs root";
  }
  if (!IsRoot()) {
    return "needs root to switch to the lamina-test account (the rootless ctest entries run "
           "every case as lamina-test)";
  }
  if (TestUserUid() == 0) {
    return "no 'lamina-test' account (scripts/setup-test-env.sh creates it)";
  }
  auto max = ReadFile("/proc/sys/user/max_user_namespaces");
  if (max && std::atoi(max->c_str()) == 0) return "user namespaces are disabled";
  return {};
}

namespace {

struct SubIdRange {
  unsigned long start = 0;
  unsigned long count = 0;
};

// The first range of `name` (or of its numeric id) in /etc/subuid or
// /etc/subgid.
std::optional<SubIdRange> FindSubIds(const char* file, const std::string& name, unsigned long id) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    auto first = line.find(':');
    auto second = line.find(':', first == std::string::npos ? first : first + 1);
    if (first == std::string::npos || second == std::string::npos) continue;
    std::string who = line.substr(0, first);
    if (who != name && who != std::to_string(id)) continue;
    SubIdRange range;
    range.start = std::strtoul(line.c_str() + first + 1, nullptr, 10);
    range.count = std::strtoul(line.c_str() + second + 1, nullptr, 10);
    if (range.count > 0) return range;
  }
  return std::nullopt;
}

std::string FindTool(const char* name) {
  for (const char* dir : {"/usr/bin", "/bin", "/usr/sbin", "/sbin"}) {
    std::string path = std::string(dir) + "/" + name;
    if (::access(path.c_str(), X_OK) == 0) return path;
  }
  return {};
}

std::string DoEnterRootlessNamespace() {
  if (InRootlessNamespace()) return {};
  auto fail = [](const std::string& what) { return what + ": " + std::strerror(errno); };
  uid_t uid = ::getuid();
  gid_t gid = ::getgid();
  if (uid == 0) return "runs as root; a rootless namespace is for unprivileged users";
  struct passwd* pw = ::getpwuid(uid);
  std::string name = pw != nullptr ? pw->pw_name : std::to_string(uid);
  auto subuid = FindSubIds("/etc/subuid", name, uid);
  auto subgid = FindSubIds("/etc/subgid", name, gid);
  if (!subuid || !subgid) {
    return "no /etc/subuid and /etc/subgid range for " + name +
           " (scripts/setup-test-env.sh adds them for lamina-test)";
  }
  std::string newuidmap = FindTool("newuidmap");
  std::string newgidmap = FindTool("newgidmap");
  if (newuidmap.empty() || newgidmap.empty()) {
    return "newuidmap/newgidmap are not installed (Debian package uidmap)";
  }
  // A helper outside the new namespace writes our maps: only a process in
  // the parent namespace may map more than its own id (through the setuid
  // newuidmap).
  int go[2];
  if (::pipe2(go, O_CLOEXEC) != 0) return fail("pipe");
  Fd go_read(go[0]);
  Fd go_write(go[1]);
  pid_t self = ::getpid();
  pid_t helper = ::fork();
  if (helper < 0) return fail("fork");
  if (helper == 0) {
    go_write.Reset();
    char byte;
    if (::read(go_read.get(), &byte, 1) != 1) ::_exit(2);  // the parent gave up
    auto map = [&](const std::string& tool, unsigned long own, const SubIdRange& range) {
      auto status = RunCommand({tool, std::to_string(self), "0", std::to_string(own), "1", "1",
                                std::to_string(range.start), std::to_string(range.count)});
      return status && *status == 0;
    };
    ::_exit(map(newuidmap, uid, *subuid) && map(newgidmap, gid, *subgid) ? 0 : 1);
  }
  go_read.Reset();
  auto reap = [&] {
    int status = 0;
    while (::waitpid(helper, &status, 0) < 0 && errno == EINTR) {
    }
    return status;
  };
  if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) {
    std::string why = fail("unshare(CLONE_NEWUSER|CLONE_NEWNS)");
    go_write.Reset();
    reap();
    return why;
  }
  if (::write(go_write.get(), "x", 1) != 1) {
    std::string why = fail("start the id-map helper");
    reap();
    return why;
  }
  go_write.Reset();
  int status = reap();
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return newuidmap + "/" + newgidmap + " failed for " + name + " (see stderr)";
  }
  if (::geteuid() != 0) return "the id maps did not make this process root of its namespace";
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    return fail("make mounts private");
  }
  return {};
}

}  // namespace

std::string EnterRootlessNamespace() {
  static const std::string result = DoEnterRootlessNamespace();
  return result;
}

bool InRootlessNamespace() {
  std::ifstream in("/proc/self/uid_map");
  unsigned long inside = 0, outside = 0, count = 0;
  if (!(in >> inside >> outside >> count)) return false;
  return !(inside == 0 && outside == 0 && count == 4294967295UL);
}

}  // namespace lamina::test
