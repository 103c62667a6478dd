// The kernel-overlay driver against the real kernel: layer layout, mounts
// through the new mount API and the forced mount(2) fallback, reference
// counts shared between driver objects, stale counts, read-only stacks,
// 500-layer stacks, the probe, and rootless use inside a user namespace.

#include "kernel-overlay/overlay_driver.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <sstream>

#include "common/fs.h"
#include "drivers/format.h"
#include "drivers/host.h"
#include "drivers/layer_home.h"
#include "tests/support/conformance_stack.h"
#include "tests/support/tar_builder.h"
#include "tests/support/conformance_userns.h"
#include "tests/support/test_util.h"

namespace lamina::overlay {
namespace {

std::string Errno(int code) { return std::string(strerrorname_np(code) ?: "?"); }

class OverlayDriverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::IsRoot()) GTEST_SKIP() << "needs root (trusted.overlay xattrs, mounts)";
    home_ = tmp_.Sub("layers");
    ASSERT_TRUE(MakeDirs(home_));
    driver_ = Make({});
  }

  std::unique_ptr<Driver> Make(std::vector<std::string> options,
                               XattrNamespace ns = XattrNamespace::kTrusted) {
    DriverConfig config;
    config.home = home_;
    config.xattr_ns = ns;
    config.options = std::move(options);
    return MakeOverlayDriver(config);
  }

  void Put(const std::string& id, const std::string& rel, const std::string& data) {
    std::string path = driver_->DiffPath(id) + "/" + rel;
    ASSERT_TRUE(MakeDirs(SplitDir(path)));
    test::WriteFile(path, data);
  }
  static std::string SplitDir(const std::string& path) { return path.substr(0, path.rfind('/')); }

  // base (a, d/x, d/y) <- mid (a, whiteout of d/y, opaque o/) <- top (writable).
  void MakeThreeLayers() {
    ASSERT_TRUE(driver_->Create("base", "", {}));
    Put("base", "a", "base-a");
    Put("base", "b", "base-b");
    Put("base", "d/x", "base-x");
    Put("base", "d/y", "base-y");
    Put("base", "o/hidden", "base-hidden");
    ASSERT_TRUE(driver_->Create("mid", "base", {}));
    Put("mid", "a", "mid-a");
    ASSERT_TRUE(MakeDirs(driver_->DiffPath("mid") + "/d"));
    ASSERT_EQ(::mknod((driver_->DiffPath("mid") + "/d/y").c_str(), S_IFCHR, makedev(0, 0)), 0);
    Put("mid", "o/shown", "mid-shown");
    ASSERT_EQ(::setxattr((driver_->DiffPath("mid") + "/o").c_str(), "trusted.overlay.opaque", "y",
                         1, 0),
              0);
    ASSERT_TRUE(driver_->Create("top", "mid", {.writable = true}));
  }

  void ExpectStackView(const std::string& merged) {
    EXPECT_EQ(test::ReadFileOrDie(merged + "/a"), "mid-a");
    EXPECT_EQ(test::ReadFileOrDie(merged + "/b"), "base-b");
    EXPECT_EQ(test::ReadFileOrDie(merged + "/d/x"), "base-x");
    EXPECT_FALSE(PathExists(merged + "/d/y"));
    EXPECT_FALSE(PathExists(merged + "/o/hidden"));
    EXPECT_EQ(test::ReadFileOrDie(merged + "/o/shown"), "mid-shown");
  }

  test::TempDir tmp_{"lamina-ovl"};
  std::string home_;
  std::unique_ptr<Driver> driver_;
};

TEST_F(OverlayDriverTest, CreateMakesTheDesignLayout) {
  ASSERT_TRUE(driver_->Create("img", "", {}));
  EXPECT_TRUE(PathExists(home_ + "/img/diff"));
  EXPECT_FALSE(PathExists(home_ + "/img/work"));
  EXPECT_FALSE(PathExists(home_ + "/img/merged"));
  ASSERT_TRUE(driver_->Create("ctr", "img", {.writable = true}));
  EXPECT_TRUE(PathExists(home_ + "/ctr/diff"));
  EXPECT_TRUE(PathExists(home_ + "/ctr/work"));
  EXPECT_TRUE(PathExists(home_ + "/ctr/merged"));
  EXPECT_EQ(test::ReadFileOrDie(home_ + "/ctr/parent"), "img\n");
  EXPECT_TRUE(driver_->Exists("ctr"));
  EXPECT_EQ(driver_->DiffPath("ctr"), home_ + "/ctr/diff");

  EXPECT_EQ(driver_->Create("ctr", "img", {}).error().code(), EEXIST);
  EXPECT_EQ(driver_->Create("x", "missing", {}).error().code(), ENOENT);
  EXPECT_EQ(driver_->Create("../evil", "", {}).error().code(), EINVAL);
  EXPECT_EQ(driver_->Create("l", "", {}).error().code(), EINVAL);  // reserved for short links
  EXPECT_FALSE(PathExists(home_ + "/x"));
}

TEST_F(OverlayDriverTest, ThreeLayerStackShowsPrecedenceWhiteoutsAndOpaqueDirs) {
  MakeThreeLayers();
  auto merged = driver_->Mount("top", {});
  ASSERT_TRUE(merged) << merged.error().message();
  EXPECT_EQ(*merged, home_ + "/top/merged");
  EXPECT_TRUE(*IsMountPoint(*merged));
  ExpectStackView(*merged);
  test::WriteFile(*merged + "/new", "n");
  EXPECT_EQ(test::ReadFileOrDie(driver_->DiffPath("top") + "/new"), "n");
  EXPECT_EQ(driver_->Status().empty(), false);
  ASSERT_TRUE(driver_->Unmount("top"));
  EXPECT_FALSE(*IsMountPoint(*merged));
}

TEST_F(OverlayDriverTest, RedirectDirLetsDirectoriesWithLowerContentRename) {
  MakeThreeLayers();
  auto merged = driver_->Mount("top", {});
  ASSERT_TRUE(merged) << merged.error().message();
  ASSERT_EQ(::rename((*merged + "/d").c_str(), (*merged + "/d2").c_str()), 0) << Errno(errno);
  EXPECT_EQ(test::ReadFileOrDie(*merged + "/d2/x"), "base-x");
  auto redirect = GetXattr(driver_->DiffPath("top") + "/d2", "trusted.overlay.redirect");
  ASSERT_TRUE(redirect) << redirect.error().message();
  ASSERT_TRUE(driver_->Unmount("top"));
  // Still renamed after a remount.
  merged = driver_->Mount("top", {});
  ASSERT_TRUE(merged);
  EXPECT_EQ(test::ReadFileOrDie(*merged + "/d2/x"), "base-x");
  EXPECT_FALSE(PathExists(*merged + "/d"));
  ASSERT_TRUE(driver_->Unmount("top"));
}

TEST_F(OverlayDriverTest, MountsAreReferenceCountedAcrossDriverObjects) {
  MakeThreeLayers();
  auto other = Make({});
  auto first = driver_->Mount("top", {});
  ASSERT_TRUE(first) << first.error().message();
  auto second = other->Mount("top", {});
  ASSERT_TRUE(second) << second.error().message();
  EXPECT_EQ(*first, *second);
  EXPECT_EQ(*driver_->MountCount("top"), 2);

  auto busy = driver_->Remove("top");
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.error().code(), EBUSY);
  EXPECT_NE(busy.error().message().find("mounted"), std::string::npos) << busy.error().message();
  EXPECT_TRUE(driver_->Exists("top"));

  ASSERT_TRUE(other->Unmount("top"));
  EXPECT_EQ(*driver_->MountCount("top"), 1);
  EXPECT_TRUE(*IsMountPoint(*first));
  ASSERT_TRUE(driver_->Unmount("top"));
  EXPECT_EQ(*driver_->MountCount("top"), 0);
  EXPECT_FALSE(*IsMountPoint(*first));
  EXPECT_EQ(driver_->Unmount("top").error().code(), EINVAL);

  ASSERT_TRUE(driver_->Remove("top"));
  EXPECT_FALSE(driver_->Exists("top"));
  EXPECT_FALSE(PathExists(home_ + "/top"));
  EXPECT_TRUE(driver_->Remove("top"));  // missing is fine
}

TEST_F(OverlayDriverTest, BusyUnmountKeepsTheReference) {
  MakeThreeLayers();
  auto merged = driver_->Mount("top", {});
  ASSERT_TRUE(merged);
  {
    auto open = Open(*merged + "/a", O_RDONLY);
    ASSERT_TRUE(open);
    auto busy = driver_->Unmount("top");
    ASSERT_FALSE(busy);
    EXPECT_EQ(busy.error().code(), EBUSY);
    EXPECT_EQ(*driver_->MountCount("top"), 1);
  }
  ASSERT_TRUE(driver_->Unmount("top"));
}

TEST_F(OverlayDriverTest, StaleCountIsRepaired) {
  MakeThreeLayers();
  auto merged = driver_->Mount("top", {});
  ASSERT_TRUE(merged);
  ASSERT_TRUE(driver_->Mount("top", {}));
  // As after a reboot: the count says 2, nothing is mounted.
  ASSERT_EQ(::umount2(merged->c_str(), 0), 0);
  EXPECT_EQ(*driver_->MountCount("top"), 0);
  EXPECT_EQ(driver_->Unmount("top").error().code(), EINVAL);

  test::WriteFile(home_ + "/top/mounts", "7\n");
  auto again = driver_->Mount("top", {});
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(*driver_->MountCount("top"), 1);
  ExpectStackView(*again);
  ASSERT_TRUE(driver_->Unmount("top"));
  EXPECT_FALSE(*IsMountPoint(*again));
}

TEST_F(OverlayDriverTest, ImageLayersMountReadOnlyWithoutUpper) {
  MakeThreeLayers();
  // One layer: the kernel wants two lowers without an upper.
  auto base = driver_->Mount("base", {});
  ASSERT_TRUE(base) << base.error().message();
  EXPECT_EQ(*base, home_ + "/base/merged");
  EXPECT_EQ(test::ReadFileOrDie(*base + "/a"), "base-a");
  EXPECT_NE(::mkdir((*base + "/new").c_str(), 0755), 0);
  EXPECT_EQ(errno, EROFS);
  // Two layers.
  auto mid = driver_->Mount("mid", {});
  ASSERT_TRUE(mid) << mid.error().message();
  EXPECT_EQ(test::ReadFileOrDie(*mid + "/a"), "mid-a");
  EXPECT_FALSE(PathExists(*mid + "/d/y"));
  EXPECT_NE(::open((*mid + "/f").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644), 0);
  EXPECT_EQ(errno, EROFS);
  ASSERT_TRUE(driver_->Unmount("mid"));
  ASSERT_TRUE(driver_->Unmount("base"));

  // A writable layer viewed read-only (to diff it while nothing writes).
  auto view = driver_->Mount("top", {.read_only = true});
  ASSERT_TRUE(view) << view.error().message();
  ExpectStackView(*view);
  EXPECT_NE(::mkdir((*view + "/new").c_str(), 0755), 0);
  EXPECT_EQ(errno, EROFS);
  ASSERT_TRUE(driver_->Unmount("top"));
}

TEST_F(OverlayDriverTest, WritableBaseLayerMounts) {
  ASSERT_TRUE(driver_->Create("solo", "", {.writable = true}));
  auto merged = driver_->Mount("solo", {});
  ASSERT_TRUE(merged) << merged.error().message();
  test::WriteFile(*merged + "/f", "x");
  EXPECT_EQ(test::ReadFileOrDie(driver_->DiffPath("solo") + "/f"), "x");
  ASSERT_TRUE(driver_->Unmount("solo"));
}

// Builds `count` image layers, each with its own file, and a container layer.
void BuildTallStack(Driver& driver, int count) {
  std::string parent;
  for (int i = 0; i < count; ++i) {
    std::string id = "layer" + std::to_string(i);
    ASSERT_TRUE(driver.Create(id, parent, {}));
    test::WriteFile(driver.DiffPath(id) + "/f" + std::to_string(i), std::to_string(i));
    test::WriteFile(driver.DiffPath(id) + "/top", std::to_string(i));
    parent = id;
  }
  ASSERT_TRUE(driver.Create("ctr", parent, {.writable = true}));
}

TEST_F(OverlayDriverTest, FiveHundredLayersMountWithTheNewApi) {
  BuildTallStack(*driver_, 500);
  auto merged = driver_->Mount("ctr", {});
  ASSERT_TRUE(merged) << merged.error().message();
  EXPECT_EQ(test::ReadFileOrDie(*merged + "/f0"), "0");
  EXPECT_EQ(test::ReadFileOrDie(*merged + "/f499"), "499");
  EXPECT_EQ(test::ReadFileOrDie(*merged + "/top"), "499");
  bool used_new = false;
  for (const auto& [k, v] : driver_->Status()) used_new |= k == "mount_api_used" && v == "new";
  EXPECT_TRUE(used_new);
  ASSERT_TRUE(driver_->Unmount("ctr"));
  // The whole 500-layer stack read-only, too.
  auto view = driver_->Mount("layer499", {});
  ASSERT_TRUE(view) << view.error().message();
  EXPECT_EQ(test::ReadFileOrDie(*view + "/f0"), "0");
  ASSERT_TRUE(driver_->Unmount("layer499"));
}

TEST_F(OverlayDriverTest, ForcedLegacyMountUsesShortLinks) {
  auto legacy = Make({"overlay.mount_api=legacy"});
  BuildTallStack(*legacy, 100);
  auto merged = legacy->Mount("ctr", {});
  ASSERT_TRUE(merged) << merged.error().message();
  EXPECT_EQ(test::ReadFileOrDie(*merged + "/f0"), "0");
  EXPECT_EQ(test::ReadFileOrDie(*merged + "/top"), "99");
  test::WriteFile(*merged + "/w", "w");
  EXPECT_EQ(test::ReadFileOrDie(legacy->DiffPath("ctr") + "/w"), "w");
  bool used_legacy = false;
  for (const auto& [k, v] : legacy->Status()) used_legacy |= k == "mount_api_used" && v == "legacy";
  EXPECT_TRUE(used_legacy);
  // l/<26 chars> -> ../<id>/diff
  std::string short_id = test::ReadFileOrDie(home_ + "/layer7/link");
  ASSERT_EQ(short_id.size(), 27u);
  short_id.pop_back();
  char target[256] = {};
  ASSERT_GT(::readlink((home_ + "/l/" + short_id).c_str(), target, sizeof(target) - 1), 0);
  EXPECT_STREQ(target, "../layer7/diff");
  // The mount data names the short links, not the long paths.
  std::string mountinfo = test::ReadFileOrDie("/proc/self/mountinfo");
  EXPECT_NE(mountinfo.find("lowerdir=l/"), std::string::npos);
  ASSERT_TRUE(legacy->Unmount("ctr"));
  // Removing a layer removes its short link.
  ASSERT_TRUE(legacy->Remove("ctr"));
  ASSERT_TRUE(legacy->Remove("layer99"));
  auto links = ListDir(home_ + "/l");
  ASSERT_TRUE(links);
  EXPECT_EQ(links->size(), 99u);
}

TEST_F(OverlayDriverTest, LegacyMountRefusesStacksOverThePageLimitClearly) {
  ::setenv("LAMINA_OVERLAY_MOUNT_API", "legacy", 1);
  auto legacy = Make({});
  ::unsetenv("LAMINA_OVERLAY_MOUNT_API");
  BuildTallStack(*legacy, 150);  // 150 * 29 bytes of "l/<26>:" > 4096
  auto merged = legacy->Mount("ctr", {});
  ASSERT_FALSE(merged);
  EXPECT_EQ(merged.error().code(), E2BIG);
  EXPECT_NE(merged.error().message().find("4096"), std::string::npos) << merged.error().message();
  EXPECT_EQ(*legacy->MountCount("ctr"), 0);
  // The same stack with the new API.
  auto fresh = driver_->Mount("ctr", {});
  ASSERT_TRUE(fresh) << fresh.error().message();
  ASSERT_TRUE(driver_->Unmount("ctr"));
}

TEST_F(OverlayDriverTest, BadOptionsFailEveryCallClearly) {
  auto bad = Make({"overlay.mount_api=warp"});
  auto created = bad->Create("x", "", {});
  ASSERT_FALSE(created);
  EXPECT_EQ(created.error().code(), EINVAL);
  auto facts = ProbeHost(tmp_.path());
  ASSERT_TRUE(facts);
  auto verdict = bad->Probe(*facts);
  EXPECT_FALSE(verdict.usable);
  EXPECT_NE(verdict.reason.find("warp"), std::string::npos) << verdict.reason;
}

TEST_F(OverlayDriverTest, ProbeMountsForRealAndLeavesNothing) {
  std::string store = tmp_.Sub("store");
  ASSERT_TRUE(MakeDirs(store));
  auto facts = ProbeHost(store);
  ASSERT_TRUE(facts) << facts.error().message();
  auto verdict = driver_->Probe(*facts);
  EXPECT_TRUE(verdict.usable) << verdict.reason;
  EXPECT_NE(verdict.reason.find("overlay mounted in " + store), std::string::npos)
      << verdict.reason;
  EXPECT_EQ(verdict.features["mount_api"], "new (fsopen, lowerdir+)");
  EXPECT_EQ(ListDir(store)->size(), 0u);

  auto legacy = Make({"overlay.mount_api=legacy"});
  auto legacy_verdict = legacy->Probe(*facts);
  EXPECT_TRUE(legacy_verdict.usable) << legacy_verdict.reason;
  EXPECT_NE(legacy_verdict.features["mount_api"].find("legacy"), std::string::npos);
  EXPECT_EQ(ListDir(store)->size(), 0u);
}

TEST_F(OverlayDriverTest, ProbeRefusesAStoreOnOverlay) {
  // A real overlay mount as the store's filesystem.
  for (const char* sub : {"lo", "up", "wk", "mnt"}) ASSERT_TRUE(MakeDirs(tmp_.Sub(sub)));
  std::string data = "lowerdir=" + tmp_.Sub("lo") + ",upperdir=" + tmp_.Sub("up") +
                     ",workdir=" + tmp_.Sub("wk");
  ASSERT_EQ(::mount("overlay", tmp_.Sub("mnt").c_str(), "overlay", 0, data.c_str()), 0)
      << Errno(errno);
  auto facts = ProbeHost(tmp_.Sub("mnt"));
  ASSERT_TRUE(facts) << facts.error().message();
  EXPECT_EQ(facts->backing_fs, "overlay");
  auto verdict = driver_->Probe(*facts);
  EXPECT_FALSE(verdict.usable);
  EXPECT_NE(verdict.reason.find("overlay filesystem"), std::string::npos) << verdict.reason;
  ASSERT_EQ(::umount2(tmp_.Sub("mnt").c_str(), 0), 0);
}

TEST_F(OverlayDriverTest, ProbeExplainsMissingDTypeAndXattrNamespace) {
  // Facts as a filesystem without d_type (xfs ftype=0) would give; this host
  // has none to mount, so the facts are set by hand.
  auto facts = ProbeHost(tmp_.path());
  ASSERT_TRUE(facts);
  HostFacts no_dtype = *facts;
  no_dtype.d_type = false;
  auto verdict = driver_->Probe(no_dtype);
  EXPECT_FALSE(verdict.usable);
  EXPECT_NE(verdict.reason.find("d_type"), std::string::npos) << verdict.reason;

  HostFacts userns = *facts;
  userns.in_user_namespace = true;
  verdict = driver_->Probe(userns);
  EXPECT_FALSE(verdict.usable);
  EXPECT_NE(verdict.reason.find("trusted"), std::string::npos) << verdict.reason;
}

TEST_F(OverlayDriverTest, UsageCountsOwnContentOnce) {
  ASSERT_TRUE(driver_->Create("u", "", {}));
  test::WriteFile(driver_->DiffPath("u") + "/big", std::string(64 * 1024, 'x'));
  ASSERT_EQ(::link((driver_->DiffPath("u") + "/big").c_str(),
                   (driver_->DiffPath("u") + "/same").c_str()),
            0);
  auto usage = driver_->Usage("u");
  ASSERT_TRUE(usage) << usage.error().message();
  EXPECT_GE(*usage, 64u * 1024);
  EXPECT_LT(*usage, 2u * 64 * 1024);
}

// Needs drivers/tar.h (ApplyTar, UnionDiffEntries, UnionChanges).
TEST_F(OverlayDriverTest, ApplyDiffWritesNativeWhiteoutsAndDiffReadsThem) {
  ASSERT_TRUE(driver_->Create("base", "", {}));
  test::TarBuilder lower;
  lower.Dir("d").File("d/x", "x").File("d/y", "y").Dir("o").File("o/old", "old");
  auto tar = test::TarFd(lower.Finish());
  ASSERT_TRUE(tar);
  auto applied = driver_->ApplyDiff("base", tar->get());
  if (!applied && applied.error().code() == ENOSYS) {
    GTEST_SKIP() << "drivers/tar.h is not implemented yet: " << applied.error().message();
  }
  ASSERT_TRUE(applied) << applied.error().message();
  ASSERT_TRUE(driver_->Create("upper", "base", {}));
  test::TarBuilder upper;
  upper.Dir("d").File("d/.wh.y", "").Dir("o").File("o/.wh..wh..opq", "").File("o/new", "new");
  tar = test::TarFd(upper.Finish());
  ASSERT_TRUE(tar);
  applied = driver_->ApplyDiff("upper", tar->get());
  ASSERT_TRUE(applied) << applied.error().message();
  struct stat st;
  ASSERT_EQ(::lstat((driver_->DiffPath("upper") + "/d/y").c_str(), &st), 0);
  EXPECT_TRUE(IsWhiteoutStat(st));
  EXPECT_EQ(*GetXattr(driver_->DiffPath("upper") + "/o", "trusted.overlay.opaque"), "y");

  auto changes = driver_->Changes("upper");
  ASSERT_TRUE(changes) << changes.error().message();
  std::ostringstream listed;
  for (const auto& c : *changes) listed << ChangeKindName(c.kind) << " " << c.path << "\n";
  EXPECT_NE(listed.str().find("D d/y"), std::string::npos) << listed.str();
  EXPECT_NE(listed.str().find("D o/old"), std::string::npos) << listed.str();
  EXPECT_NE(listed.str().find("A o/new"), std::string::npos) << listed.str();

  int raw = ::memfd_create("diff", MFD_CLOEXEC);
  ASSERT_GE(raw, 0);
  Fd out(raw);
  auto stats = driver_->Diff("upper", out.get());
  ASSERT_TRUE(stats) << stats.error().message();
  std::string tar_text = *ReadFile(ProcFdPath(out.get()));
  EXPECT_NE(tar_text.find("d/.wh.y"), std::string::npos);
  EXPECT_NE(tar_text.find("o/.wh..wh..opq"), std::string::npos);
}

// Rootless: the driver run by the unprivileged lamina-test account, as root
// of its own user namespace, with user.overlay.* xattrs and `userxattr`.
TEST_F(OverlayDriverTest, RootlessInAUserNamespace) {
  std::string why = test::RootlessUnavailableReason();
  if (!why.empty()) GTEST_SKIP() << why;
  uid_t uid = test::TestUserUid();
  std::string store = tmp_.Sub("rootless");
  ASSERT_TRUE(MakeDirs(store + "/layers"));
  ASSERT_EQ(::chown(store.c_str(), uid, uid), 0);
  ASSERT_EQ(::chown((store + "/layers").c_str(), uid, uid), 0);

  auto outcome = test::RunInUserNamespace(uid, uid, [&]() -> std::string {
    std::ostringstream out;
    auto report = [&](const std::string& key, const auto& result) {
      out << key << "=" << (result ? std::string("ok") : result.error().message()) << "\n";
    };
    auto facts = ProbeHost(store);
    if (!facts) return "probehost=" + facts.error().message();
    out << "userns=" << facts->in_user_namespace << "\n";
    for (const char* api : {"new", "legacy"}) {
      DriverConfig config;
      config.home = store + "/layers";
      config.xattr_ns = XattrNamespace::kUser;
      config.options = {std::string("overlay.mount_api=") + api};
      auto driver = MakeOverlayDriver(config);
      auto verdict = driver->Probe(*facts);
      out << api << ".probe=" << verdict.usable << " " << verdict.reason << "\n";
      std::string p = std::string(api) + "-";
      report(api + std::string(".create"), driver->Create(p + "base", "", {}));
      std::string base = driver->DiffPath(p + "base");
      (void)WriteFileAtomic(base + "/a", "base-a");
      (void)MakeDirs(base + "/d");
      (void)WriteFileAtomic(base + "/d/x", "base-x");
      (void)WriteFileAtomic(base + "/d/y", "base-y");
      (void)MakeDirs(base + "/o");
      (void)WriteFileAtomic(base + "/o/hidden", "h");
      (void)driver->Create(p + "mid", p + "base", {});
      std::string mid = driver->DiffPath(p + "mid");
      (void)MakeDirs(mid + "/d");
      out << api << ".mknod=" << ::mknod((mid + "/d/y").c_str(), S_IFCHR, makedev(0, 0)) << "\n";
      (void)MakeDirs(mid + "/o");
      report(api + std::string(".opaque"), SetXattr(mid + "/o", "user.overlay.opaque", "y"));
      (void)driver->Create(p + "top", p + "mid", {.writable = true});
      auto merged = driver->Mount(p + "top", {});
      report(api + std::string(".mount"), merged);
      if (!merged) continue;
      out << api << ".a=" << ReadFile(*merged + "/a").value_or("?") << "\n";
      out << api << ".y=" << PathExists(*merged + "/d/y") << "\n";
      out << api << ".hidden=" << PathExists(*merged + "/o/hidden") << "\n";
      report(api + std::string(".write"), WriteFileAtomic(*merged + "/d/new", "n"));
      out << api << ".upper=" << ReadFile(driver->DiffPath(p + "top") + "/d/new").value_or("?")
          << "\n";
      int rc = ::rename((*merged + "/d").c_str(), (*merged + "/d2").c_str());
      out << api << ".rename_dir=" << (rc == 0 ? "ok" : Errno(errno)) << "\n";
      report(api + std::string(".busy_remove"), driver->Remove(p + "top"));
      report(api + std::string(".unmount"), driver->Unmount(p + "top"));
      report(api + std::string(".remove"), driver->Remove(p + "top"));
    }
    return out.str();
  });
  ASSERT_TRUE(outcome.setup_error.empty()) << outcome.setup_error;
  ASSERT_EQ(outcome.status, 0) << outcome.output;
  const std::string& o = outcome.output;
  auto has = [&](const std::string& line) {
    EXPECT_NE(o.find(line + "\n"), std::string::npos) << "missing '" << line << "' in:\n" << o;
  };
  has("userns=1");
  for (std::string api : {"new", "legacy"}) {
    EXPECT_NE(o.find(api + ".probe=1 overlay mounted"), std::string::npos) << o;
    has(api + ".create=ok");
    has(api + ".mknod=0");  // whiteouts (0/0) need no CAP_MKNOD
    has(api + ".opaque=ok");
    has(api + ".mount=ok");
    has(api + ".a=base-a");
    has(api + ".y=0");
    has(api + ".hidden=0");
    has(api + ".write=ok");
    has(api + ".upper=n");
    // The kernel refuses redirect_dir=on with userxattr: a directory with
    // lower content cannot be renamed rootless (EXDEV; `mv` copies instead).
    has(api + ".rename_dir=EXDEV");
    EXPECT_NE(o.find(api + ".busy_remove=layer " + api + "-top is mounted"), std::string::npos)
        << o;
    has(api + ".unmount=ok");
    has(api + ".remove=ok");
  }
}

}  // namespace
}  // namespace lamina::overlay
