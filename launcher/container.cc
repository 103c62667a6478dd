#include "launcher/container.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <grp.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "common/fd.h"
#include "common/fs.h"
#include "common/scope_guard.h"
#include "launcher/capabilities.h"

namespace lamina::launcher {

namespace {

// The signals `lamina run` passes on to the container's PID 1.
constexpr int kForwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

// clone3's argument block (CLONE_ARGS_SIZE_VER0), spelled out here so that
// <linux/sched.h> and glibc's <sched.h> need not meet.
struct CloneArgs {
  uint64_t flags = 0;
  uint64_t pidfd = 0;
  uint64_t child_tid = 0;
  uint64_t parent_tid = 0;
  uint64_t exit_signal = 0;
  uint64_t stack = 0;
  uint64_t stack_size = 0;
  uint64_t tls = 0;
};

// A fork-like clone into new namespaces: returns 0 in the child.
pid_t CloneInto(uint64_t flags) {
  CloneArgs args;
  args.flags = flags;
  args.exit_signal = SIGCHLD;
  long pid = ::syscall(SYS_clone3, &args, sizeof args);
  if (pid < 0 && errno == ENOSYS) {
    pid = ::syscall(SYS_clone, flags | SIGCHLD, nullptr, nullptr, nullptr, nullptr);
  }
  return static_cast<pid_t>(pid);
}

Result<std::pair<Fd, Fd>> MakePipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return FailErrno("pipe");
  return std::make_pair(Fd(fds[0]), Fd(fds[1]));
}

bool WriteAll(int fd, const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

std::string ReadAll(int fd) {
  std::string data;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    data.append(buf, static_cast<size_t>(n));
  }
  return data;
}

// --- the child -----------------------------------------------------------

struct ChildContext {
  const ContainerSpec* spec = nullptr;
  const IdMapPlan* plan = nullptr;
  int go_read = -1;       // one byte from the launcher: maps and cgroups are set
  int error_write = -1;   // setup errors back to the launcher ("errno\nmessage")
  int tty_socket = -1;    // -t: the pty master goes back over it
  sigset_t original_mask;
};

// Reports an error to the launcher and ends the child.
[[noreturn]] void ChildFail(const ChildContext& ctx, const Error& error) {
  std::string text = std::to_string(error.code()) + "\n" + error.context();
  (void)WriteAll(ctx.error_write, text.data(), text.size());
  ::_exit(125);
}

// One byte with room for one SCM_RIGHTS fd.
struct FdMessage {
  char byte = 't';
  struct iovec iov = {};
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  struct msghdr msg = {};
  FdMessage() {
    iov = {&byte, 1};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
  }
  FdMessage(const FdMessage&) = delete;
  FdMessage& operator=(const FdMessage&) = delete;
};

Result<void> SendFd(int socket, int fd) {
  FdMessage m;
  struct cmsghdr* cmsg = CMSG_FIRSTHDR(&m.msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
  if (::sendmsg(socket, &m.msg, MSG_NOSIGNAL) != 1) return FailErrno("send the terminal");
  return {};
}

Result<Fd> ReceiveFd(int socket) {
  FdMessage m;
  ssize_t n;
  do {
    n = ::recvmsg(socket, &m.msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return FailErrno("receive the terminal");
  if (n == 0) return Fail(EPIPE, "the container ended before its terminal was set up");
  struct cmsghdr* cmsg = CMSG_FIRSTHDR(&m.msg);
  if (cmsg == nullptr || cmsg->cmsg_type != SCM_RIGHTS) return Fail(EPROTO, "no terminal fd");
  int fd = -1;
  std::memcpy(&fd, CMSG_DATA(cmsg), sizeof(int));
  return Fd(fd);
}

// A terminal from the container's own devpts: its master goes to the
// launcher, the slave becomes stdin/stdout/stderr and the controlling tty.
Result<void> ChildTerminal(const ChildContext& ctx) {
  int master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0) return FailErrno("open /dev/ptmx");
  if (::unlockpt(master) != 0) return FailErrno("unlockpt");
  char name[64];
  if (::ptsname_r(master, name, sizeof name) != 0) return FailErrno("ptsname");
  int slave = ::open(name, O_RDWR | O_NOCTTY);
  if (slave < 0) return FailErrno(std::string("open ") + name);
  LAMINA_CHECK(SendFd(ctx.tty_socket, master));
  ::close(master);
  if (::ioctl(slave, TIOCSCTTY, 0) != 0) return FailErrno("TIOCSCTTY");
  for (int target = 0; target < 3; ++target) {
    if (::dup2(slave, target) < 0) return FailErrno("dup2 the terminal");
  }
  if (slave > 2) ::close(slave);
  return {};
}

// execvp with the container's PATH (glibc's execvpe searches the caller's).
Error Exec(const ContainerSpec& spec, const std::vector<std::string>& env) {
  std::vector<char*> argv;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  std::string path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (const auto& e : env) {
    envp.push_back(const_cast<char*>(e.c_str()));
    if (e.starts_with("PATH=")) path = e.substr(5);
  }
  envp.push_back(nullptr);
  const std::string& file = spec.argv[0];
  if (file.find('/') != std::string::npos) {
    ::execve(file.c_str(), argv.data(), envp.data());
    return Error(errno, "exec " + file);
  }
  int saved = ENOENT;
  size_t start = 0;
  for (;;) {
    size_t colon = path.find(':', start);
    std::string dir = path.substr(start, colon - start);
    std::string candidate = (dir.empty() ? "." : dir) + "/" + file;
    ::execve(candidate.c_str(), argv.data(), envp.data());
    if (errno == EACCES) saved = EACCES;
    else if (errno != ENOENT && errno != ENOTDIR) saved = errno;
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  return Error(saved, "exec " + file);
}

// Everything before the exec; returns the command's environment.
Result<std::vector<std::string>> ChildSetupAll(const ChildContext& ctx) {
  const ContainerSpec& spec = *ctx.spec;
  // Wait until the launcher has written the maps and set the cgroups.
  char go = 0;
  ssize_t n;
  do {
    n = ::read(ctx.go_read, &go, 1);
  } while (n < 0 && errno == EINTR);
  if (n != 1) return Fail(EPIPE, "the launcher went away");

  if (spec.user_namespace) {
    // Become the namespace's root (the maps are in place now).
    if (::setresgid(0, 0, 0) != 0) return FailErrno("setresgid 0 in the user namespace");
    if (::setresuid(0, 0, 0) != 0) return FailErrno("setresuid 0 in the user namespace");
  }
  // Joined the cgroups already: the new cgroup namespace is rooted there.
  if (::unshare(CLONE_NEWCGROUP) != 0) return FailErrno("unshare the cgroup namespace");

  ChildSetup setup;
  setup.spec = &spec;
  setup.user_namespace = spec.user_namespace;
  setup.gid5_mapped = !spec.user_namespace || IsMapped(ctx.plan->gids, 5);
  LAMINA_CHECK(SetupRootfs(setup));

  // The user and environment, from the container's own /etc/passwd and
  // /etc/group (its root may be visible to nobody but itself).
  ResolvedUser user;
  {
    Fd root = LAMINA_TRY(OpenDirPath("/"));
    user = LAMINA_TRY(ResolveUser(root.get(), spec.user));
  }
  std::vector<std::string> env = MergeEnv(spec.env, spec.env_overrides, user.home);
  if (spec.tty) env = MergeEnv(env, {"TERM=xterm"}, user.home);

  std::string hostname = spec.hostname.empty() ? spec.id.substr(0, 12) : spec.hostname;
  if (::sethostname(hostname.data(), hostname.size()) != 0) return FailErrno("sethostname");

  if (::chdir(spec.cwd.c_str()) != 0) {
    if (errno != ENOENT || spec.read_only) return FailErrno("chdir " + spec.cwd);
    LAMINA_CHECK(MakeDirs(spec.cwd));
    if (::chdir(spec.cwd.c_str()) != 0) return FailErrno("chdir " + spec.cwd);
  }

  // Its own session: the launcher's terminal signals reach the container
  // only through the launcher (once, forwarded).
  if (::setsid() < 0) return FailErrno("setsid");
  if (spec.tty) LAMINA_CHECK(ChildTerminal(ctx));

  LAMINA_CHECK(DropBoundingSet());
  bool setgroups_ok = !spec.user_namespace || ctx.plan->setgroups_allowed;
  if (setgroups_ok) {
    if (::setgroups(user.groups.size(), user.groups.data()) != 0) return FailErrno("setgroups");
  } else if (!user.groups.empty()) {
    return Fail(EPERM, "supplementary groups need sub-id ranges (/etc/subgid) for this user");
  }
  if (::setresgid(user.gid, user.gid, user.gid) != 0) {
    return FailErrno("setgid " + std::to_string(user.gid));
  }
  if (::setresuid(user.uid, user.uid, user.uid) != 0) {
    return FailErrno("setuid " + std::to_string(user.uid));
  }
  LAMINA_CHECK(SetCapabilities());

  // Die with the launcher (set after the uid change, which clears it), and
  // catch a launcher that died before that.
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) return FailErrno("PR_SET_PDEATHSIG");
  struct pollfd alive = {ctx.go_read, POLLIN, 0};
  if (::poll(&alive, 1, 0) > 0 && (alive.revents & (POLLHUP | POLLIN))) {
    return Fail(EPIPE, "the launcher went away");
  }
  return env;
}

[[noreturn]] void ChildMain(const ChildContext& ctx) {
  auto setup = ChildSetupAll(ctx);
  if (!setup) ChildFail(ctx, setup.error());
  // The command starts with default signal dispositions (an ignored SIGINT
  // of a background `lamina` must not carry over) and with no fd beyond
  // stdin/stdout/stderr, whatever lamina's own caller left open.
  // The raw syscall also reaches the real-time signals glibc keeps for itself.
  struct KernelSigaction {
    void (*handler)(int);
    unsigned long flags;
    void (*restorer)();
    uint64_t mask;
  } default_action = {SIG_DFL, 0, nullptr, 0};
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    ::syscall(SYS_rt_sigaction, sig, &default_action, nullptr, sizeof(uint64_t));
  }
  if (::syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC) != 0) {
    ChildFail(ctx, Error(errno, "mark inherited fds close-on-exec"));
  }
  ::sigprocmask(SIG_SETMASK, &ctx.original_mask, nullptr);
  Error error = Exec(*ctx.spec, *setup);
  ChildFail(ctx, error);
}

// --- the launcher side ---------------------------------------------------

// Raw mode on the launcher's terminal for -t, restored by the destructor.
class RawTerminal {
 public:
  explicit RawTerminal(int fd) : fd_(fd) {
    if (::tcgetattr(fd_, &saved_) != 0) return;
    struct termios raw = saved_;
    ::cfmakeraw(&raw);
    if (::tcsetattr(fd_, TCSANOW, &raw) == 0) active_ = true;
  }
  ~RawTerminal() {
    if (active_) ::tcsetattr(fd_, TCSANOW, &saved_);
  }
  RawTerminal(const RawTerminal&) = delete;
  RawTerminal& operator=(const RawTerminal&) = delete;

 private:
  int fd_;
  struct termios saved_ = {};
  bool active_ = false;
};

void CopyWindowSize(int from, int to) {
  struct winsize size;
  if (::ioctl(from, TIOCGWINSZ, &size) == 0) ::ioctl(to, TIOCSWINSZ, &size);
}

// Reads what is there on `from` and writes it to `to`; false on EOF/error.
bool Pump(int from, int to) {
  char buf[16384];
  ssize_t n = ::read(from, buf, sizeof buf);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return true;
  if (n <= 0) return false;
  return WriteAll(to, buf, static_cast<size_t>(n));
}

}  // namespace

Result<ExitInfo> Run(const ContainerSpec& spec, const RunCallbacks& callbacks) {
  if (spec.argv.empty()) return Fail(EINVAL, "no command to run (the image has none)");

  const IdMapPlan& plan = spec.id_maps;

  CgroupLayout layout = LAMINA_TRY(DetectCgroups());
  Cgroup cgroup = LAMINA_TRY(Cgroup::Create(layout, spec.id, spec.limits, ::geteuid() == 0));

  auto [go_read, go_write] = LAMINA_TRY(MakePipe());
  auto [error_read, error_write] = LAMINA_TRY(MakePipe());
  Fd tty_parent, tty_child;
  if (spec.tty) {
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return FailErrno("socketpair");
    tty_parent = Fd(pair[0]);
    tty_child = Fd(pair[1]);
  }

  // Signals wait in a signalfd from now on; the child gets the old mask back.
  sigset_t mask, original;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  for (int sig : kForwarded) sigaddset(&mask, sig);
  if (spec.tty) sigaddset(&mask, SIGWINCH);
  if (::sigprocmask(SIG_BLOCK, &mask, &original) != 0) return FailErrno("sigprocmask");
  auto restore_mask = Defer([&] { ::sigprocmask(SIG_SETMASK, &original, nullptr); });
  Fd signals(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signals) return FailErrno("signalfd");

  uint64_t flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC;
  if (spec.net == NetMode::kNone) flags |= CLONE_NEWNET;
  if (spec.user_namespace) flags |= CLONE_NEWUSER;

  ChildContext ctx;
  ctx.spec = &spec;
  ctx.plan = &plan;
  ctx.go_read = go_read.get();
  ctx.error_write = error_write.get();
  ctx.tty_socket = tty_child.get();
  ctx.original_mask = original;

  pid_t pid = CloneInto(flags);
  if (pid < 0) {
    int saved = errno;
    std::string hint;
    if (saved == EPERM || saved == ENOSPC) {
      hint = spec.user_namespace ? " (are unprivileged user namespaces allowed here?)"
                                 : " (new namespaces need root or --userns)";
    }
    return Fail(saved, "clone the container's process" + hint);
  }
  if (pid == 0) ChildMain(ctx);

  // The child exists: it is killed and reaped on every early return.
  bool reaped = false;
  int wait_status = 0;
  auto kill_child = Defer([&] {
    if (reaped) return;
    ::kill(pid, SIGKILL);
    while (::waitpid(pid, &wait_status, 0) < 0 && errno == EINTR) {
    }
  });
  go_read.Reset();
  error_write.Reset();
  tty_child.Reset();

  LAMINA_CHECK(cgroup.AddProcess(pid));
  if (spec.user_namespace) {
    auto mapped = ApplyIdMaps(pid, plan);
    if (!mapped) return Fail(mapped.error().Wrap("user namespace maps " + plan.Describe()));
  }
  if (callbacks.started) callbacks.started(pid, cgroup.dirs());
  char go = 'g';
  if (!WriteAll(go_write.get(), &go, 1)) return FailErrno("start the container");

  Fd master;
  if (spec.tty) {
    auto received = ReceiveFd(tty_parent.get());
    if (received) master = std::move(*received);
  }
  // EOF without a word: the exec happened.
  std::string report = ReadAll(error_read.get());
  if (!report.empty()) {
    size_t nl = report.find('\n');
    int code = std::atoi(report.substr(0, nl).c_str());
    Error error(code == 0 ? EIO : code, nl == std::string::npos ? report : report.substr(nl + 1));
    while (::waitpid(pid, &wait_status, 0) < 0 && errno == EINTR) {
    }
    reaped = true;
    if (error.context().starts_with("exec ")) {
      ExitInfo info;
      info.status = code == ENOENT ? 127 : 126;
      info.message = error.message();
      return info;
    }
    return Fail(error);
  }

  std::optional<RawTerminal> raw;
  bool stdin_open = spec.tty;
  if (spec.tty && master) {
    if (::isatty(STDIN_FILENO)) {
      CopyWindowSize(STDIN_FILENO, master.get());
      raw.emplace(STDIN_FILENO);
    }
  }

  // Forward signals, pump the terminal, wait for the end.
  for (;;) {
    struct pollfd fds[3];
    nfds_t count = 0;
    fds[count++] = {signals.get(), POLLIN, 0};
    int master_index = -1, stdin_index = -1;
    if (master) {
      master_index = static_cast<int>(count);
      fds[count++] = {master.get(), POLLIN, 0};
    }
    if (master && stdin_open) {
      stdin_index = static_cast<int>(count);
      fds[count++] = {STDIN_FILENO, POLLIN, 0};
    }
    if (::poll(fds, count, -1) < 0) {
      if (errno == EINTR) continue;
      return FailErrno("poll");
    }
    if (master_index >= 0 && (fds[master_index].revents & (POLLIN | POLLHUP | POLLERR))) {
      // EIO once every slave fd is closed; the exit comes through SIGCHLD.
      if (!Pump(master.get(), STDOUT_FILENO)) master.Reset();
    }
    if (stdin_index >= 0 && (fds[stdin_index].revents & (POLLIN | POLLHUP | POLLERR))) {
      if (!Pump(STDIN_FILENO, master.get())) {
        stdin_open = false;
        // End of input: an end-of-file character for the terminal's reader.
        char eot = 4;
        (void)WriteAll(master.get(), &eot, 1);
      }
    }
    if (!(fds[0].revents & POLLIN)) continue;
    struct signalfd_siginfo info;
    bool child_done = false;
    while (::read(signals.get(), &info, sizeof info) == sizeof info) {
      int sig = static_cast<int>(info.ssi_signo);
      if (sig == SIGCHLD) {
        pid_t done = ::waitpid(pid, &wait_status, WNOHANG);
        if (done == pid) child_done = true;
      } else if (sig == SIGWINCH) {
        if (master) CopyWindowSize(STDIN_FILENO, master.get());
      } else {
        ::kill(pid, sig);
      }
    }
    if (child_done) break;
  }
  reaped = true;
  if (master) {
    // What the container wrote last.
    int fl = ::fcntl(master.get(), F_GETFL);
    ::fcntl(master.get(), F_SETFL, fl | O_NONBLOCK);
    while (Pump(master.get(), STDOUT_FILENO)) {
      struct pollfd p = {master.get(), POLLIN, 0};
      if (::poll(&p, 1, 0) <= 0) break;
    }
  }
  raw.reset();

  ExitInfo result;
  if (WIFEXITED(wait_status)) {
    result.status = WEXITSTATUS(wait_status);
  } else if (WIFSIGNALED(wait_status)) {
    result.signaled = true;
    result.signal = WTERMSIG(wait_status);
    result.status = 128 + result.signal;
  }
  // PID 1 itself killed, or a shell that reports its child's SIGKILL as 137.
  if (result.status == 128 + SIGKILL && cgroup.OomKills() > 0) {
    {
      result.oom_killed = true;
      result.message = "container killed: out of memory";
      if (spec.limits.memory_bytes) {
        result.message += " (limit " + FormatBytes(*spec.limits.memory_bytes) + ")";
      }
    }
  }
  auto destroyed = cgroup.Destroy();
  if (!destroyed) return Fail(destroyed.error());
  return result;
}

}  // namespace lamina::launcher
