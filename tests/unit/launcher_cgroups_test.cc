// launcher::Cgroup on this host's real cgroups (v2, or v1 on hybrid hosts):
// limits written where they belong, a process moved in, everything removed.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <set>
#include <sstream>
#include <thread>

#include "common/fs.h"
#include "launcher/cgroups.h"
#include "tests/support/test_util.h"

namespace lamina::launcher {
namespace {

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

class CgroupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::IsRoot()) GTEST_SKIP() << "making cgroups needs root here";
    auto layout = DetectCgroups();
    ASSERT_TRUE(layout.has_value()) << layout.error().message();
    layout_ = *layout;
    if (layout_.version == CgroupVersion::kNone) GTEST_SKIP() << "no cgroup controllers mounted";
  }
  // A child that waits to be killed, moved into `group`'s groups.
  static pid_t StartChildIn(const Cgroup& group) {
    pid_t child = ::fork();
    if (child == 0) {
      ::pause();
      ::_exit(0);
    }
    auto added = group.AddProcess(child);
    EXPECT_TRUE(added.has_value()) << added.error().message();
    return child;
  }
  // Destroys `group` while the child is reaped (Destroy retries until the
  // kernel has); the child's wait status.
  static int DestroyAndReap(Cgroup& group, pid_t child) {
    int status = 0;
    std::thread reaper([&] { ::waitpid(child, &status, 0); });
    auto destroyed = group.Destroy();
    reaper.join();
    EXPECT_TRUE(destroyed.has_value()) << destroyed.error().message();
    return status;
  }
  CgroupLayout layout_;
  std::string id_ = "unit-" + RandomId().substr(0, 12);
};

TEST_F(CgroupTest, LimitsAreWrittenAndEverythingIsRemoved) {
  Limits limits;
  limits.memory_bytes = 64ull << 20;
  limits.pids = 16;
  limits.cpus = 0.5;
  auto group = Cgroup::Create(layout_, id_, limits, true);
  ASSERT_TRUE(group.has_value()) << group.error().message();
  std::vector<std::string> dirs = group->dirs();
  ASSERT_FALSE(dirs.empty());
  bool memory = false, pids = false, cpu = false;
  for (const auto& dir : dirs) {
    EXPECT_NE(dir.find("/lamina/" + id_), std::string::npos) << dir;
    if (layout_.version == CgroupVersion::kV2) {
      EXPECT_EQ(Trim(ReadFile(dir + "/memory.max").value_or("")), std::to_string(64ull << 20));
      EXPECT_EQ(Trim(ReadFile(dir + "/pids.max").value_or("")), "16");
      memory = pids = cpu = true;
      continue;
    }
    if (PathExists(dir + "/memory.limit_in_bytes")) {
      memory = true;
      EXPECT_EQ(Trim(ReadFile(dir + "/memory.limit_in_bytes").value()), std::to_string(64ull << 20));
    }
    if (PathExists(dir + "/pids.max")) {
      pids = true;
      EXPECT_EQ(Trim(ReadFile(dir + "/pids.max").value()), "16");
    }
    if (PathExists(dir + "/cpu.cfs_quota_us")) {
      cpu = true;
      EXPECT_EQ(Trim(ReadFile(dir + "/cpu.cfs_quota_us").value()), "50000");
      EXPECT_EQ(Trim(ReadFile(dir + "/cpu.cfs_period_us").value()), "100000");
    }
  }
  EXPECT_TRUE(memory && pids && cpu) << layout_.Describe();

  // A process in the groups is killed by Destroy, which then removes them.
  pid_t child = StartChildIn(*group);
  ASSERT_GT(child, 0);
  EXPECT_NE(ReadFile(dirs[0] + "/cgroup.procs").value_or("").find(std::to_string(child)),
            std::string::npos);
  EXPECT_EQ(group->OomKills(), 0u);
  DestroyAndReap(*group, child);
  for (const auto& dir : dirs) EXPECT_FALSE(PathExists(dir)) << dir;
}

TEST_F(CgroupTest, DestructorRemovesAndStaleCleanupIsQuiet) {
  std::vector<std::string> dirs;
  {
    Limits limits;
    limits.pids = 8;
    auto group = Cgroup::Create(layout_, id_, limits, false);
    ASSERT_TRUE(group.has_value()) << group.error().message();
    dirs = group->dirs();
    ASSERT_FALSE(dirs.empty());
  }
  for (const auto& dir : dirs) EXPECT_FALSE(PathExists(dir)) << dir;
  // A leftover is removed; missing ones and paths lamina never makes are left alone.
  ASSERT_EQ(::mkdir(dirs[0].c_str(), 0755), 0);
  RemoveCgroupDirs({dirs[0], "/sys/fs/cgroup/not-lamina", "/nonexistent/lamina/x"});
  EXPECT_FALSE(PathExists(dirs[0]));
}

TEST_F(CgroupTest, NoLimitsRootlessMakesNothing) {
  auto group = Cgroup::Create(layout_, id_, Limits{}, false);
  ASSERT_TRUE(group.has_value());
  EXPECT_TRUE(group->empty());
}

// The cgroup v2 code path on the real cgroup2 mount, also where the host
// keeps its controllers on v1 (hybrid: an empty cgroup2 beside them).
class CgroupV2Test : public CgroupTest {
 protected:
  void SetUp() override {
    CgroupTest::SetUp();
    if (IsSkipped()) return;
    if (layout_.v2_mount.empty()) GTEST_SKIP() << "no cgroup2 mounted on this host";
    layout_.version = CgroupVersion::kV2;
    std::istringstream in(ReadFile(layout_.v2_mount + "/cgroup.controllers").value_or(""));
    std::string c;
    while (in >> c) offered_.insert(c);
  }
  std::set<std::string> offered_;
};

TEST_F(CgroupV2Test, GroupHoldsTheContainerAndIsRemovedWithIt) {
  auto group = Cgroup::Create(layout_, id_, Limits{}, true);
  ASSERT_TRUE(group.has_value()) << group.error().message();
  ASSERT_EQ(group->dirs().size(), 1u);
  std::string dir = group->dirs()[0];
  EXPECT_EQ(dir, layout_.v2_mount + "/lamina/" + id_);
  pid_t child = StartChildIn(*group);
  ASSERT_GT(child, 0);
  EXPECT_EQ(Trim(ReadFile(dir + "/cgroup.procs").value_or("")), std::to_string(child));
  std::string own = ReadFile("/proc/" + std::to_string(child) + "/cgroup").value_or("");
  EXPECT_NE(own.find("0::/lamina/" + id_ + "\n"), std::string::npos) << own;
  // No memory controller here or there: no OOM count, never an error.
  if (!offered_.contains("memory")) {
    EXPECT_EQ(group->OomKills(), 0u);
  }
  int status = DestroyAndReap(*group, child);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  EXPECT_FALSE(PathExists(dir));
}

TEST_F(CgroupV2Test, ALimitWhoseControllerIsNotOnV2IsRefused) {
  struct Case {
    const char* controller;
    Limits limits;
    const char* option;
  } cases[] = {{"memory", {.memory_bytes = 64ull << 20}, "--memory"},
               {"pids", {.pids = 16}, "--pids"},
               {"cpu", {.cpus = 0.5}, "--cpus"}};
  int checked = 0;
  for (const auto& c : cases) {
    if (offered_.contains(c.controller)) continue;
    ++checked;
    auto group = Cgroup::Create(layout_, id_, c.limits, true);
    ASSERT_FALSE(group.has_value()) << c.controller;
    EXPECT_EQ(group.error().code(), ENOTSUP);
    EXPECT_NE(group.error().message().find(std::string(c.option) + " needs the " + c.controller +
                                           " controller on cgroup v2"),
              std::string::npos)
        << group.error().message();
    EXPECT_FALSE(PathExists(layout_.v2_mount + "/lamina/" + id_));
  }
  if (checked == 0) GTEST_SKIP() << "cgroup v2 here offers memory, pids and cpu";
}

TEST_F(CgroupV2Test, LimitsAreWrittenWhereTheControllersAre) {
  Limits limits;
  if (offered_.contains("memory")) limits.memory_bytes = 64ull << 20;
  if (offered_.contains("pids")) limits.pids = 16;
  if (offered_.contains("cpu")) limits.cpus = 0.5;
  if (!limits.any()) {
    GTEST_SKIP() << "cgroup v2 at " << layout_.v2_mount
                 << " offers none of memory, pids, cpu (they are bound to v1 hierarchies on "
                    "this hybrid host; a controller can move only when its v1 hierarchy is "
                    "unmounted): the v2 limit files are not written here";
  }
  auto group = Cgroup::Create(layout_, id_, limits, true);
  ASSERT_TRUE(group.has_value()) << group.error().message();
  std::string dir = group->dirs().at(0);
  if (limits.memory_bytes) {
    EXPECT_EQ(Trim(ReadFile(dir + "/memory.max").value_or("")), std::to_string(64ull << 20));
  }
  if (limits.pids) {
    EXPECT_EQ(Trim(ReadFile(dir + "/pids.max").value_or("")), "16");
  }
  if (limits.cpus) {
    EXPECT_EQ(Trim(ReadFile(dir + "/cpu.max").value_or("")), "50000 100000");
  }
  EXPECT_TRUE(group->Destroy().has_value());
  EXPECT_FALSE(PathExists(dir));
}

}  // namespace
}  // namespace lamina::launcher
