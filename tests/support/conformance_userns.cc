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
#include <cstring>

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
  if (!IsRoot()) return "needs root to switch to the lamina-test account";
  if (TestUserUid() == 0) {
    return "no 'lamina-test' account (scripts/setup-test-env.sh creates it)";
  }
  auto max = ReadFile("/proc/sys/user/max_user_namespaces");
  if (max && std::atoi(max->c_str()) == 0) return "user namespaces are disabled";
  return {};
}

}  // namespace lamina::test
