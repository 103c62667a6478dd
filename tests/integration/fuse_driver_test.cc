// FuseDriver end to end: layers in a real store directory, real lamina-fuse
// daemons, on-disk mount reference counts, a killed daemon remounted.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <grp.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/fd.h"
#include "common/fs.h"
#include "drivers/host.h"
#include "drivers/layer_home.h"
#include "fuse/fuse_driver.h"
#include "tests/support/test_util.h"

namespace lamina::test {
namespace {

using namespace std::chrono_literals;

// The daemons serving `merged`: lamina-fuse processes whose last argument
// is it (as FuseDriver starts them). Zombies have no cmdline and drop out.
std::vector<pid_t> DaemonsServing(const std::string& merged) {
  std::vector<pid_t> pids;
  auto names = ListDir("/proc");
  if (!names) return pids;
  std::string tail = std::string(1, '\0') + merged + '\0';
  for (const auto& name : *names) {
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    auto cmdline = ReadFile("/proc/" + name + "/cmdline");
    if (!cmdline || !cmdline->ends_with(tail)) continue;
    if (cmdline->substr(0, cmdline->find('\0')).ends_with("lamina-fuse")) {
      pids.push_back(static_cast<pid_t>(std::stoi(name)));
    }
  }
  return pids;
}

bool Mounted(const std::string& path) { return IsMountPoint(path).value_or(false); }

class FuseDriverTest : public ::testing::Test {
 protected:
  // Daemons are reparented to us, so the test reaps them (no zombies).
  static void SetUpTestSuite() { ::prctl(PR_SET_CHILD_SUBREAPER, 1); }

  void SetUp() override {
    if (::access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "/dev/fuse is not usable here";
    ASSERT_TRUE(PathExists(LaminaFuseBinary())) << LaminaFuseBinary() << " is not built";
    home_ = tmp_.Sub("layers");
    ASSERT_TRUE(MakeDirs(home_));
    DriverConfig config;
    config.home = home_;
    config.helper_dir = std::string(LAMINA_BINARY_DIR) + "/fuse";
    driver_ = fuse::MakeFuseDriver(config);
    ASSERT_EQ(driver_->Name(), "fuse");
  }

  void TearDown() override {
    UnmountAllBelow(tmp_.path());
    auto deadline = std::chrono::steady_clock::now() + 5s;
    int status;
    while (std::chrono::steady_clock::now() < deadline) {
      pid_t r = ::waitpid(-1, &status, WNOHANG);
      if (r < 0) break;  // no children left
      if (r == 0) std::this_thread::sleep_for(10ms);
    }
  }

  // base (image layer: a, dir/b, gone) <- top (writable).
  void MakeStack() {
    ASSERT_TRUE(driver_->Create("base", "", {.writable = false}));
    std::string diff = driver_->DiffPath("base");
    ASSERT_TRUE(MakeDirs(diff + "/dir"));
    WriteFile(diff + "/a", "a");
    WriteFile(diff + "/dir/b", "b");
    WriteFile(diff + "/gone", "gone");
    ASSERT_TRUE(driver_->Create("top", "base", {.writable = true}));
  }

  // Mounts "top", SIGKILLs its daemon and reaps it: the mount stays, dead.
  void MountTopAndKillItsDaemon(std::string* merged, pid_t* killed) {
    auto mounted = driver_->Mount("top", {});
    ASSERT_TRUE(mounted) << mounted.error().message();
    *merged = *mounted;
    auto daemons = DaemonsServing(*merged);
    ASSERT_EQ(daemons.size(), 1u);
    *killed = daemons[0];
    ASSERT_EQ(::kill(*killed, SIGKILL), 0);
    ASSERT_EQ(::waitpid(*killed, nullptr, 0), *killed);
  }

  int Count(const std::string& id) {
    auto c = driver_->MountCount(id);
    EXPECT_TRUE(c) << c.error().message();
    return c ? *c : -1;
  }

  TempDir tmp_{"fuse-driver"};
  std::string home_;
  std::unique_ptr<Driver> driver_;
};

TEST_F(FuseDriverTest, ProbeMountsATrialStackAndLeavesNothing) {
  auto host = ProbeHost(home_);
  ASSERT_TRUE(host) << host.error().message();
  auto verdict = driver_->Probe(*host);
  EXPECT_TRUE(verdict.usable) << verdict.reason;
  EXPECT_NE(verdict.reason.find("lamina-fuse"), std::string::npos) << verdict.reason;
  EXPECT_EQ(verdict.features["lamina_fuse"], LaminaFuseBinary());
  auto left = ListDir(home_);
  ASSERT_TRUE(left);
  EXPECT_TRUE(left->empty()) << "probe left " << testing::PrintToString(*left);
  // No trial daemon outlives the probe (a live one keeps its cmdline).
  auto procs = ListDir("/proc");
  ASSERT_TRUE(procs);
  for (const auto& name : *procs) {
    auto cmdline = ReadFile("/proc/" + name + "/cmdline");
    if (cmdline && cmdline->find(home_ + "/.fuse-probe-") != std::string::npos) {
      ADD_FAILURE() << "process " << name << " still serves the trial mount";
    }
  }
}

TEST_F(FuseDriverTest, ProbeSaysWhyWithoutTheHelper) {
  DriverConfig config;
  config.home = home_;
  config.helper_dir = tmp_.Sub("nowhere");
  auto driver = fuse::MakeFuseDriver(config);
  HostFacts host;
  host.dev_fuse = true;
  host.fusermount3 = "/usr/bin/fusermount3";
  auto verdict = driver->Probe(host);
  EXPECT_FALSE(verdict.usable);
  EXPECT_NE(verdict.reason.find("lamina-fuse not found"), std::string::npos) << verdict.reason;
  host.dev_fuse = false;
  verdict = driver->Probe(host);
  EXPECT_FALSE(verdict.usable);
  EXPECT_NE(verdict.reason.find("/dev/fuse"), std::string::npos) << verdict.reason;
}

TEST_F(FuseDriverTest, FindsTheHelperInTheBuildTreeByDefault) {
  DriverConfig config;
  config.home = home_;  // no helper_dir: <build>/tests/../fuse/lamina-fuse
  auto driver = fuse::MakeFuseDriver(config);
  auto status = driver->Status();
  auto it = std::find_if(status.begin(), status.end(),
                         [](const auto& kv) { return kv.first == "lamina_fuse"; });
  ASSERT_NE(it, status.end());
  char a[PATH_MAX], b[PATH_MAX];
  ASSERT_NE(::realpath(it->second.c_str(), a), nullptr) << it->second;
  ASSERT_NE(::realpath(LaminaFuseBinary().c_str(), b), nullptr);
  EXPECT_STREQ(a, b);
}

TEST_F(FuseDriverTest, CreateMountRefcountUnmountRemove) {
  MakeStack();
  EXPECT_TRUE(driver_->Exists("base"));
  EXPECT_TRUE(driver_->Exists("top"));
  EXPECT_EQ(Count("top"), 0);

  auto merged = driver_->Mount("top", {});
  ASSERT_TRUE(merged) << merged.error().message();
  EXPECT_EQ(*merged, home_ + "/top/merged");
  EXPECT_TRUE(Mounted(*merged));
  EXPECT_EQ(Count("top"), 1);
  auto daemons = DaemonsServing(*merged);
  ASSERT_EQ(daemons.size(), 1u);

  EXPECT_EQ(ReadFileOrDie(*merged + "/a"), "a");
  EXPECT_EQ(ReadFileOrDie(*merged + "/dir/b"), "b");
  WriteFile(*merged + "/new", "new");
  ASSERT_EQ(::unlink((*merged + "/gone").c_str()), 0);
  EXPECT_EQ(ReadFileOrDie(driver_->DiffPath("top") + "/new"), "new");

  auto again = driver_->Mount("top", {});
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(*again, *merged);
  EXPECT_EQ(Count("top"), 2);
  EXPECT_EQ(DaemonsServing(*merged).size(), 1u) << "the second Mount must not start a daemon";

  auto busy = driver_->Remove("top");
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.error().code(), EBUSY);

  ASSERT_TRUE(driver_->Unmount("top"));
  EXPECT_EQ(Count("top"), 1);
  EXPECT_TRUE(Mounted(*merged));
  ASSERT_TRUE(driver_->Unmount("top"));
  EXPECT_EQ(Count("top"), 0);
  EXPECT_FALSE(Mounted(*merged));
  // Unmount waited for the daemon.
  EXPECT_TRUE(DaemonsServing(*merged).empty());
  int status = 0;
  EXPECT_EQ(::waitpid(daemons[0], &status, WNOHANG), daemons[0]) << "daemon still running";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);

  auto not_mounted = driver_->Unmount("top");
  ASSERT_FALSE(not_mounted);
  EXPECT_EQ(not_mounted.error().code(), EINVAL);

  auto changes = driver_->Changes("top");
  ASSERT_TRUE(changes) << changes.error().message();
  EXPECT_EQ(*changes, (std::vector<Change>{{"gone", ChangeKind::kDeleted},
                                           {"new", ChangeKind::kAdded}}));

  ASSERT_TRUE(driver_->Remove("top"));
  EXPECT_FALSE(driver_->Exists("top"));
  EXPECT_FALSE(PathExists(home_ + "/top"));
  ASSERT_TRUE(driver_->Remove("top")) << "removing a missing layer is fine";
}

TEST_F(FuseDriverTest, ImageLayerMountsReadOnly) {
  MakeStack();
  auto merged = driver_->Mount("base", {});
  ASSERT_TRUE(merged) << merged.error().message();
  EXPECT_EQ(ReadFileOrDie(*merged + "/a"), "a");
  int fd = ::open((*merged + "/x").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  int err = errno;
  if (fd >= 0) ::close(fd);
  EXPECT_EQ(fd, -1);
  EXPECT_EQ(err, EROFS);
  ASSERT_TRUE(driver_->Unmount("base"));

  // A writable layer mounted read_only shows itself and its parents.
  WriteFile(driver_->DiffPath("top") + "/own", "own");
  auto ro = driver_->Mount("top", {.read_only = true});
  ASSERT_TRUE(ro) << ro.error().message();
  EXPECT_EQ(ReadFileOrDie(*ro + "/own"), "own");
  EXPECT_EQ(ReadFileOrDie(*ro + "/a"), "a");
  EXPECT_NE(::mkdir((*ro + "/d").c_str(), 0755), 0);
  EXPECT_EQ(errno, EROFS);
  ASSERT_TRUE(driver_->Unmount("top"));
}

TEST_F(FuseDriverTest, WritableBaseLayer) {
  ASSERT_TRUE(driver_->Create("solo", "", {.writable = true}));
  auto merged = driver_->Mount("solo", {});
  ASSERT_TRUE(merged) << merged.error().message();
  WriteFile(*merged + "/f", "f");
  EXPECT_EQ(ReadFileOrDie(driver_->DiffPath("solo") + "/f"), "f");
  ASSERT_TRUE(driver_->Unmount("solo"));
}

TEST_F(FuseDriverTest, StaleCountIsRepaired) {
  MakeStack();
  {
    auto refs = MountRefs::Lock(LayerHome(home_), "top");
    ASSERT_TRUE(refs);
    ASSERT_TRUE(refs->Set(3));
  }
  EXPECT_EQ(Count("top"), 0);
  {
    auto refs = MountRefs::Lock(LayerHome(home_), "top");
    ASSERT_TRUE(refs);
    ASSERT_TRUE(refs->Set(2));
  }
  auto merged = driver_->Mount("top", {});
  ASSERT_TRUE(merged) << merged.error().message();
  EXPECT_EQ(Count("top"), 1);
  ASSERT_TRUE(driver_->Unmount("top"));
  EXPECT_FALSE(Mounted(*merged));
}

TEST_F(FuseDriverTest, KilledDaemonIsDetectedAndRemounted) {
  MakeStack();
  std::string merged_path;
  pid_t killed = 0;
  ASSERT_NO_FATAL_FAILURE(MountTopAndKillItsDaemon(&merged_path, &killed));
  const std::string* merged = &merged_path;
  struct stat st;
  ASSERT_NE(::stat(merged->c_str(), &st), 0);
  EXPECT_EQ(errno, ENOTCONN);
  EXPECT_TRUE(Mounted(*merged)) << "the dead mount is still there";

  auto again = driver_->Mount("top", {});
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(*again, *merged);
  EXPECT_EQ(ReadFileOrDie(*merged + "/a"), "a");
  auto fresh = DaemonsServing(*merged);
  ASSERT_EQ(fresh.size(), 1u);
  EXPECT_NE(fresh[0], killed);
  // The first holder's reference is kept: it still expects the mount.
  EXPECT_EQ(Count("top"), 2);
  ASSERT_TRUE(driver_->Unmount("top"));
  ASSERT_TRUE(driver_->Unmount("top"));
  EXPECT_FALSE(Mounted(*merged));
  EXPECT_EQ(Count("top"), 0);
}

TEST_F(FuseDriverTest, UnmountOfAKilledDaemonsMount) {
  MakeStack();
  std::string merged;
  pid_t killed = 0;
  ASSERT_NO_FATAL_FAILURE(MountTopAndKillItsDaemon(&merged, &killed));
  ASSERT_TRUE(driver_->Unmount("top"));
  EXPECT_FALSE(Mounted(merged));
  EXPECT_EQ(Count("top"), 0);
}

TEST_F(FuseDriverTest, DiffApplyDiffAndUsage) {
  MakeStack();
  auto merged = driver_->Mount("top", {});
  ASSERT_TRUE(merged) << merged.error().message();
  WriteFile(*merged + "/big", std::string(64 * 1024, 'x'));
  ASSERT_EQ(::unlink((*merged + "/gone").c_str()), 0);
  ASSERT_TRUE(driver_->Unmount("top"));

  auto usage = driver_->Usage("top");
  ASSERT_TRUE(usage) << usage.error().message();
  EXPECT_GE(*usage, 64u * 1024);

  std::string tar = tmp_.Sub("top.tar");
  {
    auto out = Open(tar, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_TRUE(out);
    auto stats = driver_->Diff("top", out->get());
    ASSERT_TRUE(stats) << stats.error().message();
    EXPECT_GE(stats->entries, 2u);
  }
  ASSERT_TRUE(driver_->Create("copy", "base", {.writable = false}));
  {
    auto in = Open(tar, O_RDONLY);
    ASSERT_TRUE(in);
    auto applied = driver_->ApplyDiff("copy", in->get());
    ASSERT_TRUE(applied) << applied.error().message();
  }
  auto a = driver_->Changes("top");
  auto b = driver_->Changes("copy");
  ASSERT_TRUE(a && b);
  EXPECT_EQ(*a, *b);

  auto view = driver_->Mount("copy", {});
  ASSERT_TRUE(view) << view.error().message();
  EXPECT_FALSE(PathExists(*view + "/gone"));
  EXPECT_EQ(ReadFileOrDie(*view + "/big").size(), 64u * 1024);
  ASSERT_TRUE(driver_->Unmount("copy"));
}

// The rootless path: a store owned by an unprivileged user, mounted through
// fusermount3, owners kept in user.containers.override_stat.
TEST_F(FuseDriverTest, UnprivilegedUser) {
  if (!IsRoot()) GTEST_SKIP() << "needs root to switch to the test user";
  uid_t uid = TestUserUid();
  if (uid == 0) GTEST_SKIP() << "no 'lamina-test' account (useradd -m lamina-test)";
  std::string home = tmp_.Sub("user-layers");
  ASSERT_TRUE(MakeDirs(home));
  ASSERT_EQ(::chown(home.c_str(), uid, uid), 0);
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  Fd read_end(pipe_fds[0]), write_end(pipe_fds[1]);

  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Reports "" on success, else what went wrong; never returns.
    auto run = [&]() -> std::string {
      if (::setgroups(0, nullptr) != 0 || ::setgid(uid) != 0 || ::setuid(uid) != 0) {
        return "cannot switch to the test user";
      }
      DriverConfig config;
      config.home = home;
      config.xattr_ns = XattrNamespace::kUser;
      config.helper_dir = std::string(LAMINA_BINARY_DIR) + "/fuse";
      auto driver = fuse::MakeFuseDriver(config);
      if (auto r = driver->Create("base", "", {}); !r) return r.error().message();
      if (auto r = WriteFileAtomic(driver->DiffPath("base") + "/a", "a"); !r) {
        return r.error().message();
      }
      if (auto r = driver->Create("top", "base", {.writable = true}); !r) {
        return r.error().message();
      }
      auto merged = driver->Mount("top", {});
      if (!merged) return "mount: " + merged.error().message();
      auto a = ReadFile(*merged + "/a");
      if (!a || *a != "a") return "cannot read a through the mount";
      if (auto r = WriteFileAtomic(*merged + "/new", "new"); !r) return r.error().message();
      if (auto r = driver->Unmount("top"); !r) return "unmount: " + r.error().message();
      if (IsMountPoint(*merged).value_or(true)) return "still mounted after Unmount";
      if (!PathExists(driver->DiffPath("top") + "/new")) return "new is not in the upper";
      if (auto r = driver->Remove("top"); !r) return r.error().message();
      return "";
    };
    std::string message = run();
    (void)!::write(write_end.get(), message.data(), message.size());
    ::_exit(message.empty() ? 0 : 1);
  }
  write_end.Reset();
  std::string message;
  char buf[512];
  ssize_t n;
  while ((n = ::read(read_end.get(), buf, sizeof(buf))) > 0) message.append(buf, n);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << message;
  EXPECT_EQ(message, "");
}

TEST_F(FuseDriverTest, BadIdsAndMissingLayers) {
  EXPECT_EQ(driver_->Mount("../x", {}).error().code(), EINVAL);
  EXPECT_EQ(driver_->Mount("nope", {}).error().code(), ENOENT);
  EXPECT_EQ(driver_->Unmount("nope").error().code(), ENOENT);
  EXPECT_EQ(driver_->Create("child", "nope", {}).error().code(), ENOENT);
  MakeStack();
  EXPECT_EQ(driver_->Create("top", "base", {}).error().code(), EEXIST);
}

}  // namespace
}  // namespace lamina::test
