// Tests of the driver-independent pieces: union format helpers, layer dirs
// and mount reference counts, the host probe and driver selection.

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "common/fs.h"
#include "drivers/format.h"
#include "drivers/host.h"
#include "drivers/layer_home.h"
#include "drivers/select/registry.h"
#include "tests/support/test_util.h"

namespace lamina {
namespace {

TEST(Format, WhiteoutNames) {
  EXPECT_TRUE(IsWhiteoutName(".wh.foo"));
  EXPECT_EQ(WhiteoutTarget(".wh.foo"), "foo");
  EXPECT_FALSE(IsWhiteoutName(".wh..wh..opq"));
  EXPECT_FALSE(IsWhiteoutName(".wh..wh.plnk"));
  EXPECT_FALSE(IsWhiteoutName(".wh."));
  EXPECT_FALSE(IsWhiteoutName("foo.wh.bar"));
  EXPECT_EQ(OpaqueXattr(XattrNamespace::kTrusted), "trusted.overlay.opaque");
  EXPECT_EQ(RedirectXattr(XattrNamespace::kUser), "user.overlay.redirect");
  EXPECT_TRUE(IsInternalXattr("trusted.overlay.origin"));
  EXPECT_TRUE(IsInternalXattr("user.overlay.opaque"));
  EXPECT_TRUE(IsInternalXattr("user.containers.override_stat"));
  EXPECT_FALSE(IsInternalXattr("user.mime_type"));
  EXPECT_FALSE(IsInternalXattr("security.capability"));
}

TEST(Format, MakeWhiteoutAndOpaque) {
  test::TempDir tmp;
  Fd dir = *Open(tmp.path(), O_RDONLY | O_DIRECTORY);
  ASSERT_TRUE(MakeWhiteout(dir.get(), "gone"));
  struct stat st;
  if (test::IsRoot()) {
    ASSERT_EQ(::lstat(tmp.Sub("gone").c_str(), &st), 0);
    EXPECT_TRUE(IsWhiteoutStat(st));
  }
  EXPECT_EQ(MakeWhiteout(dir.get(), "gone").error().code(), EEXIST);

  EXPECT_FALSE(*IsOpaqueDir(dir.get()));
  ASSERT_TRUE(MarkOpaque(dir.get(), XattrNamespace::kUser));
  EXPECT_TRUE(*IsOpaqueDir(dir.get()));

  ASSERT_EQ(::mkdir(tmp.Sub("marker").c_str(), 0755), 0);
  test::WriteFile(tmp.Sub("marker/.wh..wh..opq"), "");
  Fd marker = *Open(tmp.Sub("marker"), O_RDONLY | O_DIRECTORY);
  EXPECT_TRUE(*IsOpaqueDir(marker.get())) << ".wh..wh..opq marks a dir opaque";
}

TEST(Format, UnprivilegedWhiteout) {
  // Since Linux 5.8 a 0/0 whiteout needs no CAP_MKNOD; where mknod is still
  // refused MakeWhiteout falls back to a `.wh.NAME` file. Either form is a
  // whiteout to every reader.
  if (!test::IsRoot()) GTEST_SKIP() << "needs root to switch to nobody";
  test::TempDir tmp;
  ::chmod(tmp.path().c_str(), 0777);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) _exit(10);
    int dir = ::open(tmp.path().c_str(), O_RDONLY | O_DIRECTORY);
    _exit(MakeWhiteout(dir, "gone") ? 0 : 11);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
  struct stat st;
  bool device = ::lstat(tmp.Sub("gone").c_str(), &st) == 0 && IsWhiteoutStat(st);
  bool file = ::lstat(tmp.Sub(".wh.gone").c_str(), &st) == 0 && S_ISREG(st.st_mode);
  EXPECT_TRUE(device != file) << "exactly one whiteout form expected";
}

TEST(LayerHome, IdsAreValidated) {
  for (const char* good : {"a", "abc-1.2_x", "0123456789abcdef"}) {
    EXPECT_TRUE(ValidateLayerId(good)) << good;
  }
  for (const char* bad : {"", "..", ".hidden", "-x", "a/b", "a b", "../../etc"}) {
    auto r = ValidateLayerId(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code(), EINVAL);
  }
  EXPECT_FALSE(ValidateLayerId(std::string(129, 'a')));
}

TEST(LayerHome, CreateChainAndErrors) {
  test::TempDir tmp;
  LayerHome home(tmp.path());
  ASSERT_TRUE(home.CreateDirs("base", "", false));
  ASSERT_TRUE(home.CreateDirs("mid", "base", false));
  ASSERT_TRUE(home.CreateDirs("top", "mid", true));
  EXPECT_TRUE(PathExists(home.WorkDir("top")));
  EXPECT_TRUE(PathExists(home.MergedDir("top")));
  EXPECT_FALSE(PathExists(home.WorkDir("base")));
  EXPECT_EQ(*home.Chain("top"), (std::vector<std::string>{"top", "mid", "base"}));
  EXPECT_EQ(*home.Parent("base"), "");
  EXPECT_EQ(home.CreateDirs("top", "", false).error().code(), EEXIST);
  EXPECT_EQ(home.CreateDirs("orphan", "missing", false).error().code(), ENOENT);
  EXPECT_FALSE(PathExists(home.Dir("orphan"))) << "a failed create leaves nothing";
  EXPECT_EQ(home.CreateDirs("../escape", "", false).error().code(), EINVAL);
}

TEST(LayerHome, ChainDetectsLoops) {
  test::TempDir tmp;
  LayerHome home(tmp.path());
  ASSERT_TRUE(home.CreateDirs("a", "", false));
  ASSERT_TRUE(home.CreateDirs("b", "a", false));
  ASSERT_TRUE(WriteFileAtomic(home.Dir("a") + "/parent", "b\n"));
  EXPECT_EQ(home.Chain("b").error().code(), ELOOP);
}

TEST(MountRefs, CountsPersistAcrossHolders) {
  test::TempDir tmp;
  LayerHome home(tmp.path());
  ASSERT_TRUE(home.CreateDirs("l", "", true));
  {
    auto refs = MountRefs::Lock(home, "l");
    ASSERT_TRUE(refs);
    EXPECT_EQ(refs->count(), 0);
    ASSERT_TRUE(refs->Set(2));
  }
  {
    auto refs = MountRefs::Lock(home, "l");
    EXPECT_EQ(refs->count(), 2);
    ASSERT_TRUE(refs->Set(0));
  }
  EXPECT_FALSE(PathExists(home.Dir("l") + "/mounts"));
}

TEST(MountRefs, LockExcludesOtherProcesses) {
  test::TempDir tmp;
  LayerHome home(tmp.path());
  ASSERT_TRUE(home.CreateDirs("l", "", true));
  // Children each add one reference 50 times; no update may be lost.
  constexpr int kChildren = 4, kRounds = 50;
  std::vector<pid_t> pids;
  for (int c = 0; c < kChildren; ++c) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      for (int i = 0; i < kRounds; ++i) {
        auto refs = MountRefs::Lock(home, "l");
        if (!refs || !refs->Set(refs->count() + 1)) _exit(1);
      }
      _exit(0);
    }
    pids.push_back(pid);
  }
  for (pid_t pid : pids) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_EQ(status, 0);
  }
  EXPECT_EQ(MountRefs::Lock(home, "l")->count(), kChildren * kRounds);
}

TEST(IsMountPoint, SeesBindMounts) {
  test::TempDir tmp;
  ASSERT_EQ(::mkdir(tmp.Sub("m").c_str(), 0755), 0);
  EXPECT_FALSE(*IsMountPoint(tmp.Sub("m")));
  EXPECT_FALSE(*IsMountPoint(tmp.Sub("missing")));
  if (!test::IsRoot()) GTEST_SKIP() << "bind mounts need root";
  ASSERT_EQ(::mount(tmp.path().c_str(), tmp.Sub("m").c_str(), nullptr, MS_BIND, nullptr), 0);
  EXPECT_TRUE(*IsMountPoint(tmp.Sub("m")));
  EXPECT_TRUE(*IsMountPoint(tmp.Sub("m/")));
  ASSERT_EQ(::umount2(tmp.Sub("m").c_str(), MNT_DETACH), 0);
  EXPECT_FALSE(*IsMountPoint(tmp.Sub("m")));
}

TEST(Host, ProbeFindsFactsAndCleansUp) {
  test::TempDir tmp;
  auto facts = ProbeHost(tmp.path());
  ASSERT_TRUE(facts) << facts.error().message();
  EXPECT_EQ(facts->euid, ::geteuid());
  EXPECT_FALSE(facts->kernel_release.empty());
  EXPECT_FALSE(facts->backing_fs.empty());
  EXPECT_TRUE(facts->d_type) << "ext4/xfs/tmpfs all report d_type";
  EXPECT_TRUE(ListDir(tmp.path())->empty()) << "the probe left files behind";
  if (test::IsRoot() && !facts->in_user_namespace) {
    EXPECT_TRUE(facts->mknod_whiteout);
    EXPECT_TRUE(facts->trusted_xattrs);
  }
  bool listed_euid = false;
  for (const auto& [key, value] : facts->Describe()) {
    if (key == "euid") listed_euid = value == std::to_string(::geteuid());
  }
  EXPECT_TRUE(listed_euid);
  EXPECT_EQ(ProbeHost(tmp.Sub("missing")).error().code(), ENOENT);
}

TEST(Host, ProbeKeepsTheStoreFactsForAFullStore) {
  test::TempDir tmp;
  std::string kept = tmp.Sub("probe-host.txt");
  auto facts = ProbeHost(tmp.path(), kept);
  ASSERT_TRUE(facts) << facts.error().message();
  EXPECT_FALSE(facts->store_full);
  auto text = ReadFile(kept);
  ASSERT_TRUE(text) << "no facts kept";
  EXPECT_NE(text->find("backing_fs " + facts->backing_fs + "\n"), std::string::npos) << *text;
  EXPECT_EQ(*ListDir(tmp.path()), std::vector<std::string>({"probe-host.txt"}));
  // Facts kept for another kernel are not taken (the full case itself is
  // fault.Drivers/FullDisk.*: it needs a full filesystem).
  std::string other = *text;
  other.replace(other.find("kernel "), 7, "kernel x");
  ASSERT_TRUE(WriteFileAtomic(kept, other));
  auto again = ProbeHost(tmp.path(), kept);
  ASSERT_TRUE(again);
  EXPECT_EQ(*ReadFile(kept), *text) << "the probe rewrites facts that changed";
}

TEST(Select, AFullStoreTakesItsDriverWithoutATrial) {
  test::TempDir tmp;
  DriverConfig config{.home = tmp.path()};
  auto facts = *ProbeHost(tmp.path());
  facts.store_full = true;
  auto s = SelectDriver(facts, config, "", "vfs");
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ(s->driver->Name(), "vfs");
  for (const auto& v : s->verdicts) {
    if (!v.probed) continue;
    EXPECT_EQ(v.result.usable, v.name == "vfs") << v.name;
    EXPECT_NE(v.result.reason.find("full"), std::string::npos) << v.result.reason;
  }
  EXPECT_TRUE(ListDir(tmp.path())->empty()) << "a trial ran";
  auto none = SelectDriver(facts, config, "", "");
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code(), ENOSPC);
}

TEST(Select, UnknownDriverIsAClearError) {
  test::TempDir tmp;
  DriverConfig config{.home = tmp.path()};
  auto d = MakeDriver("zfs", config);
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().code(), EINVAL);
  EXPECT_NE(d.error().message().find("overlay, fuse, vfs"), std::string::npos);
  auto facts = *ProbeHost(tmp.path());
  auto s = SelectDriver(facts, config, "zfs", "");
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code(), EINVAL);
}

TEST(Select, EveryDriverGetsAVerdictWithAReason) {
  test::TempDir tmp;
  DriverConfig config{.home = tmp.path()};
  auto facts = *ProbeHost(tmp.path());
  auto s = SelectDriver(facts, config, "", "");
  if (!s) {
    EXPECT_EQ(s.error().code(), ENODEV);
    return;
  }
  ASSERT_EQ(s->verdicts.size(), DriverNames().size());
  for (const auto& v : s->verdicts) EXPECT_FALSE(v.result.reason.empty()) << v.name;
  // The choice is the first usable one by priority.
  for (const auto& v : s->verdicts) {
    if (v.result.usable) {
      EXPECT_EQ(s->driver->Name(), v.name);
      break;
    }
  }
}

TEST(Select, FormatSwitchNeedsReimport) {
  test::TempDir tmp;
  DriverConfig config{.home = tmp.path()};
  auto facts = *ProbeHost(tmp.path());
  EXPECT_EQ(DriverFormat("overlay"), DriverFormat("fuse"));
  EXPECT_NE(DriverFormat("overlay"), DriverFormat("vfs"));
  auto s = SelectDriver(facts, config, "vfs", "overlay");
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code(), EXDEV);
  EXPECT_NE(s.error().message().find("re-import"), std::string::npos);
}

}  // namespace
}  // namespace lamina
