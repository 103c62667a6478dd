// lamina-fuse as containers-storage, mount(8) and people run it: real
// mounts of small stacks, real daemons, real fusermount3/umount.
//
// The test process makes itself a child subreaper, so every daemon that
// lamina-fuse leaves behind (it forks and the parent exits) becomes its
// child: tests reap it and check it exited 0 after each way of unmounting.
//
// `mount -t fuse.lamina-fuse` runs mount.fuse3, which runs `lamina-fuse` by
// name through /bin/sh with the PATH that mount(8) leaves (it drops the
// caller's PATH): the test links /usr/local/bin/lamina-fuse to the build's
// binary for the duration of that test and restores what was there.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <string>
#include <thread>
#include <vector>

#include "common/fd.h"
#include "common/fs.h"
#include "drivers/layer_home.h"
#include "tests/support/test_util.h"

namespace lamina::test {
namespace {

using namespace std::chrono_literals;

std::string Fuse() { return LaminaFuseBinary(); }

std::string RealPath(const std::string& p) {
  char buf[PATH_MAX];
  return ::realpath(p.c_str(), buf) != nullptr ? std::string(buf) : p;
}

// lamina-fuse processes that are our children (reparented to us) and name
// `mnt` in their arguments.
std::vector<pid_t> DaemonsFor(const std::string& mnt) {
  std::vector<pid_t> pids;
  auto names = ListDir("/proc");
  if (!names) return pids;
  for (const auto& name : *names) {
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    auto stat = ReadFile("/proc/" + name + "/stat");
    auto cmdline = ReadFile("/proc/" + name + "/cmdline");
    if (!stat || !cmdline) continue;
    size_t paren = stat->rfind(')');
    if (paren == std::string::npos) continue;
    int ppid = 0;
    char state = 0;
    if (std::sscanf(stat->c_str() + paren + 2, "%c %d", &state, &ppid) != 2) continue;
    if (ppid != ::getpid()) continue;
    std::vector<std::string> argv;
    size_t start = 0;
    while (start < cmdline->size()) {
      size_t nul = cmdline->find('\0', start);
      if (nul == std::string::npos) nul = cmdline->size();
      argv.push_back(cmdline->substr(start, nul - start));
      start = nul + 1;
    }
    if (argv.empty() || !argv[0].ends_with("lamina-fuse")) continue;
    for (const auto& a : argv) {
      // The mount point as given: absolute, or relative to where it ran.
      if (!a.empty() && (a == mnt || mnt.ends_with("/" + a))) {
        pids.push_back(static_cast<pid_t>(std::stoi(name)));
        break;
      }
    }
  }
  return pids;
}

// Reaps `pid`; returns its exit status, or -1 if it is still running after
// `wait`.
int ReapWithin(pid_t pid, std::chrono::milliseconds wait = 10s) {
  auto deadline = std::chrono::steady_clock::now() + wait;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (r < 0) return -2;  // not our child (any more)
    std::this_thread::sleep_for(10ms);
  }
  return -1;
}

bool Mounted(const std::string& path) { return IsMountPoint(path).value_or(false); }

bool WaitUnmounted(const std::string& path, std::chrono::milliseconds wait = 10s) {
  auto deadline = std::chrono::steady_clock::now() + wait;
  while (Mounted(path)) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

// A small stack: lower1/{a, dir/b}, lower2/{a (hidden), c}, upper/, work/, mnt/.
class FuseCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ::prctl(PR_SET_CHILD_SUBREAPER, 1); }

  void SetUp() override {
    if (::access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "/dev/fuse is not usable here";
    if (!IsRoot() && !PathExists("/usr/bin/fusermount3") && !PathExists("/bin/fusermount3")) {
      GTEST_SKIP() << "not root and no fusermount3";
    }
    ASSERT_TRUE(PathExists(Fuse())) << Fuse() << " is not built";
    root_ = RealPath(tmp_.path());
    for (const char* d : {"lower1", "lower1/dir", "lower2", "upper", "work", "mnt"}) {
      ASSERT_TRUE(MakeDirs(root_ + "/" + d));
    }
    WriteFile(root_ + "/lower1/a", "a from lower1");
    WriteFile(root_ + "/lower1/dir/b", "b");
    WriteFile(root_ + "/lower2/a", "a from lower2");
    WriteFile(root_ + "/lower2/c", "c");
    mnt_ = root_ + "/mnt";
  }

  void TearDown() override {
    // Whatever a failed test left: detach its mounts, end and reap its daemons.
    if (mnt_.empty()) return;
    UnmountAllBelow(root_);
    for (pid_t pid : DaemonsFor(mnt_)) {
      ::kill(pid, SIGKILL);
      ReapWithin(pid, 2s);
    }
    int status;
    while (::waitpid(-1, &status, WNOHANG) > 0) {
    }
  }

  // Hands the whole stack to an unprivileged user.
  void GiveStackTo(uid_t uid) {
    for (const char* d : {"", "/lower1", "/lower1/dir", "/lower1/a", "/lower1/dir/b", "/lower2",
                          "/lower2/a", "/lower2/c", "/upper", "/work", "/mnt"}) {
      ASSERT_EQ(::chown((root_ + d).c_str(), uid, uid), 0) << d;
    }
  }

  std::string Std() const {
    return "lowerdir=" + root_ + "/lower1:" + root_ + "/lower2,upperdir=" + root_ +
           "/upper,workdir=" + root_ + "/work";
  }

  // Runs lamina-fuse with `args`; expects it to mount mnt_ and returns the
  // daemon's pid.
  pid_t MountOk(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {Fuse()};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = test::Run(argv);
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.err, "") << "lamina-fuse wrote to stderr";
    EXPECT_TRUE(Mounted(mnt_)) << mnt_ << " is not mounted after lamina-fuse exited";
    auto pids = DaemonsFor(mnt_);
    EXPECT_EQ(pids.size(), 1u) << "expected one daemon for " << mnt_;
    return pids.empty() ? -1 : pids[0];
  }

  // Expects the mount and the daemon to be gone, the daemon with status 0.
  void ExpectEnded(pid_t pid) {
    EXPECT_TRUE(WaitUnmounted(mnt_)) << mnt_ << " is still mounted";
    ASSERT_GT(pid, 0);
    EXPECT_EQ(ReapWithin(pid), 0) << "daemon " << pid << " did not exit cleanly";
    EXPECT_EQ(::kill(pid, 0), -1) << "daemon " << pid << " still exists";
  }

  TempDir tmp_{"fuse-cli"};
  std::string root_;
  std::string mnt_;
};

TEST_F(FuseCliTest, VersionAndHelp) {
  for (const char* flag : {"--version", "-V"}) {
    auto r = test::Run({Fuse(), flag});
    EXPECT_EQ(r.status, 0) << flag;
    EXPECT_NE(r.out.find("lamina-fuse version "), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("FUSE library version"), std::string::npos) << r.out;
  }
  for (const char* flag : {"--help", "-h"}) {
    auto r = test::Run({Fuse(), flag});
    EXPECT_EQ(r.status, 0) << flag;
    EXPECT_NE(r.out.find("lowerdir="), std::string::npos) << r.out;
  }
}

TEST_F(FuseCliTest, ErrorsExitNonZeroWithAMessageAndMountNothing) {
  struct Case {
    std::vector<std::string> args;
    std::string needle;
  };
  std::vector<Case> cases = {
      {{"-o", Std() + ",bogus_option", mnt_}, "bogus_option"},
      {{"-o", Std() + ",timeout=abc", mnt_}, "timeout"},
      {{"-o", Std() + ",uidmapping=0:1", mnt_}, "uidmapping"},
      {{"-o", "lowerdir=" + root_ + "/lower1,upperdir=" + root_ + "/upper", mnt_}, "workdir"},
      {{"-o", "lowerdir=" + root_ + "/missing", mnt_}, "missing"},
      {{"-o", "lowerdir=" + root_ + "/lower1"}, "mount point"},
      {{"-o", "lowerdir=" + root_ + "/lower1", root_ + "/no/such/mnt"}, "mnt"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> argv = {Fuse()};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    auto r = test::Run(argv);
    EXPECT_NE(r.status, 0) << testing::PrintToString(c.args);
    EXPECT_NE(r.err.find(c.needle), std::string::npos)
        << "stderr '" << r.err << "' does not name " << c.needle;
    EXPECT_FALSE(Mounted(mnt_));
  }
}

TEST_F(FuseCliTest, MountReadWriteThenSigterm) {
  pid_t pid = MountOk({"-o", Std(), mnt_});
  // The parent exited only once the mount was live: it answers at once.
  EXPECT_EQ(ReadFileOrDie(mnt_ + "/a"), "a from lower1");
  EXPECT_EQ(ReadFileOrDie(mnt_ + "/c"), "c");
  EXPECT_EQ(ReadFileOrDie(mnt_ + "/dir/b"), "b");
  WriteFile(mnt_ + "/new", "new");
  EXPECT_EQ(ReadFileOrDie(root_ + "/upper/new"), "new");
  auto mounts = ReadFileOrDie("/proc/self/mounts");
  EXPECT_NE(mounts.find(" " + mnt_ + " fuse.lamina-fuse "), std::string::npos) << mounts;

  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  ExpectEnded(pid);
}

TEST_F(FuseCliTest, SigintAndSighupUnmountToo) {
  for (int sig : {SIGINT, SIGHUP}) {
    pid_t pid = MountOk({"-o", Std(), mnt_});
    ASSERT_GT(pid, 0);
    ASSERT_EQ(::kill(pid, sig), 0);
    ExpectEnded(pid);
  }
}

// Started with the signals ignored (as `lamina-fuse ... &` in a script
// ignores SIGINT), the daemon still ends on each of them.
TEST_F(FuseCliTest, InheritedIgnoredSignalsStillUnmount) {
  for (int sig : {SIGINT, SIGHUP, SIGTERM}) {
    auto r = test::Run({"/bin/sh", "-c", "trap '' INT HUP TERM; exec \"$@\"", "sh", Fuse(), "-o",
                        Std(), mnt_});
    ASSERT_EQ(r.status, 0) << r.err;
    ASSERT_TRUE(Mounted(mnt_));
    auto pids = DaemonsFor(mnt_);
    ASSERT_EQ(pids.size(), 1u);
    ASSERT_EQ(::kill(pids[0], sig), 0);
    ExpectEnded(pids[0]);
  }
}

TEST_F(FuseCliTest, FusermountUnmountEndsTheDaemon) {
  pid_t pid = MountOk({"-o", Std(), mnt_});
  auto r = test::Run({"fusermount3", "-u", mnt_});
  EXPECT_EQ(r.status, 0) << r.err;
  ExpectEnded(pid);
}

TEST_F(FuseCliTest, UmountEndsTheDaemon) {
  if (!IsRoot()) GTEST_SKIP() << "umount(8) of a FUSE mount needs root";
  pid_t pid = MountOk({"-o", Std(), mnt_});
  auto r = test::Run({"umount", mnt_});
  EXPECT_EQ(r.status, 0) << r.err;
  ExpectEnded(pid);
}

TEST_F(FuseCliTest, LowerOnlyMountIsReadOnly) {
  pid_t pid = MountOk({"-o", "lowerdir=" + root_ + "/lower1:" + root_ + "/lower2", mnt_});
  EXPECT_EQ(ReadFileOrDie(mnt_ + "/a"), "a from lower1");
  int fd = ::open((mnt_ + "/x").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  int err = errno;
  if (fd >= 0) ::close(fd);
  EXPECT_EQ(fd, -1);
  EXPECT_EQ(err, EROFS);
  EXPECT_NE(::mkdir((mnt_ + "/d").c_str(), 0755), 0);
  EXPECT_EQ(errno, EROFS);
  EXPECT_NE(::unlink((mnt_ + "/a").c_str()), 0);
  EXPECT_EQ(errno, EROFS);
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  ExpectEnded(pid);
}

TEST_F(FuseCliTest, EscapedColonInPaths) {
  ASSERT_TRUE(MakeDirs(root_ + "/low:er"));
  ASSERT_TRUE(MakeDirs(root_ + "/up:per"));
  ASSERT_TRUE(MakeDirs(root_ + "/wo,rk"));
  WriteFile(root_ + "/low:er/colon", "colon");
  pid_t pid = MountOk({"-o",
                       "lowerdir=" + root_ + "/low\\:er:" + root_ + "/lower1,upperdir=" + root_ +
                           "/up\\:per,workdir=" + root_ + "/wo\\,rk",
                       mnt_});
  EXPECT_EQ(ReadFileOrDie(mnt_ + "/colon"), "colon");
  EXPECT_EQ(ReadFileOrDie(mnt_ + "/a"), "a from lower1");
  WriteFile(mnt_ + "/w", "w");
  EXPECT_TRUE(PathExists(root_ + "/up:per/w"));
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  ExpectEnded(pid);
}

TEST_F(FuseCliTest, EmptyItemsAndTrailingComma) {
  pid_t pid = MountOk({"-o", ",," + Std() + ",,noacl,", mnt_});
  EXPECT_EQ(ReadFileOrDie(mnt_ + "/c"), "c");
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  ExpectEnded(pid);
}

TEST_F(FuseCliTest, NoOpOptionsMakeNoNoise) {
  // MountOk checks that stderr stays empty.
  pid_t pid = MountOk({"-o",
                       Std() +
                           ",rw,noatime,nodiratime,relatime,strictatime,lazytime,nosuid,nodev,"
                           "noexec,async,auto,noauto,user,users,nofail,_netdev,x-systemd.automount,"
                           "defaults,comment=x,kernel_cache,splice_read,max_write,clone_fd,"
                           "index=off,userxattr",
                       "-o", "threaded=1,fsync=1,fast_ino=0,xino=auto,redirect_dir=on", mnt_});
  EXPECT_EQ(ReadFileOrDie(mnt_ + "/a"), "a from lower1");
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  ExpectEnded(pid);
}

TEST_F(FuseCliTest, SourceArgumentAsMountFuse3PassesIt) {
  pid_t pid = MountOk({"mysource", mnt_, "-o", Std()});
  auto mounts = ReadFileOrDie("/proc/self/mounts");
  EXPECT_NE(mounts.find("mysource " + mnt_ + " fuse.lamina-fuse "), std::string::npos) << mounts;
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  ExpectEnded(pid);
}

// containers-storage's mount_program call: run from the graph root, lowers
// are the l/ symlinks, an empty item, then volatile.
TEST_F(FuseCliTest, ContainersStorageForm) {
  const std::string g = root_ + "/graph";
  for (const char* d : {"graph/A/diff", "graph/B/diff", "graph/l", "graph/ID/diff",
                        "graph/ID/work", "graph/ID/merged"}) {
    ASSERT_TRUE(MakeDirs(root_ + "/" + d));
  }
  WriteFile(g + "/A/diff/top", "A");
  WriteFile(g + "/B/diff/top", "B");
  WriteFile(g + "/B/diff/base", "base");
  ASSERT_EQ(::symlink("../A/diff", (g + "/l/A").c_str()), 0);
  ASSERT_EQ(::symlink("../B/diff", (g + "/l/B").c_str()), 0);
  mnt_ = g + "/ID/merged";

  for (bool relative : {false, true}) {
    SCOPED_TRACE(relative ? "relative paths" : "absolute paths");
    std::string p = relative ? "" : g + "/";
    std::string opts = "lowerdir=" + p + "l/A:" + p + "l/B,upperdir=" + p + "ID/diff,workdir=" +
                       p + "ID/work,,volatile";
    auto r = test::Run({"/bin/sh", "-c", "cd \"$1\" || exit 99; shift; exec \"$@\"", "sh", g, Fuse(),
                  "-o", opts, p + "ID/merged"});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.err, "");
    ASSERT_TRUE(Mounted(mnt_));
    auto pids = DaemonsFor(mnt_);
    ASSERT_EQ(pids.size(), 1u);
    EXPECT_EQ(ReadFileOrDie(mnt_ + "/top"), "A");
    EXPECT_EQ(ReadFileOrDie(mnt_ + "/base"), "base");
    WriteFile(mnt_ + (relative ? "/rel" : "/abs"), "x");
    EXPECT_TRUE(PathExists(g + "/ID/diff/" + (relative ? "rel" : "abs")));
    auto u = test::Run({"fusermount3", "-u", mnt_});
    EXPECT_EQ(u.status, 0) << u.err;
    ExpectEnded(pids[0]);
  }
}

// Points /usr/local/bin/lamina-fuse at the build's binary while alive.
// Holds an flock meanwhile, so tests run in parallel (ctest -j, other build
// trees) take turns.
class HelperInPath {
 public:
  HelperInPath() {
    auto lock = Open("/tmp/lamina-test-helper-in-path.lock", O_RDWR | O_CREAT, 0644);
    if (!lock) {
      error_ = lock.error().message();
      return;
    }
    lock_ = std::move(*lock);
    while (::flock(lock_.get(), LOCK_EX) != 0 && errno == EINTR) {
    }
    auto old = LstatIfExists(kPath);
    if (old && *old) {
      char buf[PATH_MAX];
      ssize_t n = ::readlink(kPath, buf, sizeof(buf) - 1);
      if (n < 0) {
        error_ = std::string(kPath) + " exists and is not a symlink; not touching it";
        return;
      }
      previous_.assign(buf, static_cast<size_t>(n));
      ::unlink(kPath);
    }
    if (::symlink(Fuse().c_str(), kPath) != 0) error_ = std::string("symlink ") + kPath;
  }
  ~HelperInPath() {
    if (!error_.empty() && previous_.empty()) return;
    ::unlink(kPath);
    if (!previous_.empty()) (void)::symlink(previous_.c_str(), kPath);
  }
  const std::string& error() const { return error_; }

 private:
  static constexpr const char* kPath = "/usr/local/bin/lamina-fuse";
  Fd lock_;
  std::string previous_;
  std::string error_;
};

TEST_F(FuseCliTest, MountTypeFuseLaminaFuse) {
  if (!IsRoot()) GTEST_SKIP() << "mount -t needs root (installs /usr/local/bin/lamina-fuse)";
  if (!PathExists("/sbin/mount.fuse3") && !PathExists("/usr/sbin/mount.fuse3")) {
    GTEST_SKIP() << "mount.fuse3 is not installed";
  }
  HelperInPath helper;
  ASSERT_EQ(helper.error(), "");
  auto r = test::Run({"mount", "-t", "fuse.lamina-fuse", "lamina-fuse", mnt_, "-o", Std() + ",noatime"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "");
  ASSERT_TRUE(Mounted(mnt_));
  auto pids = DaemonsFor(mnt_);
  ASSERT_EQ(pids.size(), 1u);
  EXPECT_EQ(ReadFileOrDie(mnt_ + "/a"), "a from lower1");
  auto mounts = ReadFileOrDie("/proc/self/mounts");
  EXPECT_NE(mounts.find("lamina-fuse " + mnt_ + " fuse.lamina-fuse "), std::string::npos);
  auto u = test::Run({"umount", mnt_});
  EXPECT_EQ(u.status, 0) << u.err;
  ExpectEnded(pids[0]);
}

TEST_F(FuseCliTest, FstabLine) {
  if (!IsRoot()) GTEST_SKIP() << "mount --fstab needs root (installs /usr/local/bin/lamina-fuse)";
  if (!PathExists("/sbin/mount.fuse3") && !PathExists("/usr/sbin/mount.fuse3")) {
    GTEST_SKIP() << "mount.fuse3 is not installed";
  }
  HelperInPath helper;
  ASSERT_EQ(helper.error(), "");
  std::string fstab = root_ + "/fstab";
  WriteFile(fstab, "# a test fstab, never the real one\n"
                   "lamina-fuse " + mnt_ + " fuse.lamina-fuse " + Std() +
                       ",noauto,nofail,_netdev,x-systemd.automount,noatime 0 0\n");
  auto r = test::Run({"mount", "-T", fstab, mnt_});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "");
  ASSERT_TRUE(Mounted(mnt_));
  auto pids = DaemonsFor(mnt_);
  ASSERT_EQ(pids.size(), 1u);
  EXPECT_EQ(ReadFileOrDie(mnt_ + "/c"), "c");
  auto u = test::Run({"umount", mnt_});
  EXPECT_EQ(u.status, 0) << u.err;
  ExpectEnded(pids[0]);
}

// As an unprivileged user: libfuse mounts through fusermount3.
TEST_F(FuseCliTest, UnprivilegedUserThroughFusermount3) {
  if (!IsRoot()) GTEST_SKIP() << "needs root to switch to the test user";
  uid_t uid = TestUserUid();
  if (uid == 0) GTEST_SKIP() << "no 'lamina-test' account (useradd -m lamina-test)";
  ASSERT_NO_FATAL_FAILURE(GiveStackTo(uid));
  std::string id = std::to_string(uid);
  std::vector<std::string> as_user = {"setpriv", "--reuid=" + id, "--regid=" + id,
                                      "--clear-groups", "--"};
  auto argv = as_user;
  argv.insert(argv.end(), {Fuse(), "-o", Std(), mnt_});
  auto r = test::Run(argv);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "");
  ASSERT_TRUE(Mounted(mnt_));
  auto pids = DaemonsFor(mnt_);
  ASSERT_EQ(pids.size(), 1u);
  auto cat = as_user;
  cat.insert(cat.end(), {"cat", mnt_ + "/a"});
  EXPECT_EQ(test::Run(cat).out, "a from lower1");
  auto touch = as_user;
  touch.insert(touch.end(), {"touch", mnt_ + "/by-user"});
  EXPECT_EQ(test::Run(touch).status, 0);
  struct stat st;
  ASSERT_EQ(::lstat((root_ + "/upper/by-user").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, uid);
  // The user's mount: user_id= in the options.
  auto mounts = ReadFileOrDie("/proc/self/mounts");
  EXPECT_NE(mounts.find("user_id=" + id), std::string::npos) << mounts;

  auto unmount = as_user;
  unmount.insert(unmount.end(), {"fusermount3", "-u", mnt_});
  auto u = test::Run(unmount);
  EXPECT_EQ(u.status, 0) << u.err;
  ExpectEnded(pids[0]);
}

// Inside a user namespace (as rootless podman runs it): root there, a FUSE
// mount in the namespace's own mount namespace, unmounted on SIGTERM.
TEST_F(FuseCliTest, InsideAUserNamespace) {
  if (!IsRoot()) GTEST_SKIP() << "needs root to switch to the test user";
  uid_t uid = TestUserUid();
  if (uid == 0) GTEST_SKIP() << "no 'lamina-test' account (useradd -m lamina-test)";
  ASSERT_NO_FATAL_FAILURE(GiveStackTo(uid));
  std::string id = std::to_string(uid);
  // The daemon becomes our child (subreaper): the script reports its pid,
  // ends it and waits for the mount to go; the test reaps it.
  std::string script =
      "set -e; \"$1\" -o \"$2\" \"$3\"; cat \"$3/a\"; echo x > \"$3/in-userns\"; "
      "pid=$(pgrep -f \"^$1 -o .* $3\\$\"); echo \"pid=$pid\" >&2; kill -TERM $pid; "
      "for i in $(seq 100); do grep -q \" $3 \" /proc/self/mounts || exit 0; sleep 0.1; done; "
      "exit 7";
  auto r = test::Run({"setpriv", "--reuid=" + id, "--regid=" + id, "--clear-groups", "--", "unshare",
                "-U", "-r", "-m", "/bin/sh", "-c", script, "sh", Fuse(), Std(), mnt_});
  if (r.status != 0 && r.err.find("unshare failed") != std::string::npos) {
    GTEST_SKIP() << "user namespaces are not available: " << r.err;
  }
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "a from lower1");
  EXPECT_TRUE(PathExists(root_ + "/upper/in-userns"));
  size_t at = r.err.find("pid=");
  ASSERT_NE(at, std::string::npos) << r.err;
  pid_t pid = std::stoi(r.err.substr(at + 4));
  EXPECT_EQ(ReapWithin(pid), 0) << "daemon " << pid << " did not exit cleanly";
  EXPECT_FALSE(Mounted(mnt_)) << "the namespace's mount is not visible outside";
}

}  // namespace
}  // namespace lamina::test
