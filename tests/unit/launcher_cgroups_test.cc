// launcher::Cgroup on this host's real cgroups (v2, or v1 on hybrid hosts):
// limits written where they belong, a process moved in, everything removed.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

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
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::pause();
    ::_exit(0);
  }
  auto added = group->AddProcess(child);
  EXPECT_TRUE(added.has_value()) << added.error().message();
  EXPECT_NE(ReadFile(dirs[0] + "/cgroup.procs").value_or("").find(std::to_string(child)),
            std::string::npos);
  EXPECT_EQ(group->OomKills(), 0u);
  // Reap the child in the background of Destroy's retries.
  std::thread reaper([child] { ::waitpid(child, nullptr, 0); });
  auto destroyed = group->Destroy();
  reaper.join();
  EXPECT_TRUE(destroyed.has_value()) << destroyed.error().message();
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

}  // namespace
}  // namespace lamina::launcher
