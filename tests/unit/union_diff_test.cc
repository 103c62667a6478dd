// UnionDiffEntries / UnionChanges on union-format upper directories, written
// by hand and by the real kernel overlayfs (redirect_dir=on renames).

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "common/fd.h"
#include "common/fs.h"
#include "drivers/format.h"
#include "drivers/tar.h"
#include "tests/support/test_util.h"
#include "tests/support/tree_compare.h"

namespace lamina {
namespace {

using test::TempDir;
using K = DiffEntry::Kind;

std::string Describe(const std::vector<DiffEntry>& entries) {
  std::string out;
  for (const auto& e : entries) {
    out += e.path + (e.kind == K::kContent ? "" : e.kind == K::kWhiteout ? " (wh)" : " (opq)");
    if (!e.source.empty()) out += " <- " + e.source;
    out += "\n";
  }
  return out;
}

std::string Describe(const std::vector<Change>& changes) {
  std::string out;
  for (const auto& c : changes) out += std::string(ChangeKindName(c.kind)) + " " + c.path + "\n";
  return out;
}

class UnionDiffTest : public ::testing::Test {
 protected:
  void Mkdir(const std::string& path) { ASSERT_TRUE(MakeDirs(path).has_value()); }
  void CharWhiteout(const std::string& path) {
    ASSERT_EQ(::mknod(path.c_str(), S_IFCHR | 0000, makedev(0, 0)), 0) << std::strerror(errno);
  }
  void Xattr(const std::string& path, const std::string& name, const std::string& value) {
    auto r = SetXattr(path, name, value);
    ASSERT_TRUE(r.has_value()) << r.error().message();
  }
  Result<std::string> WriteTar(const std::string& root, std::vector<DiffEntry> entries) {
    std::string file = tmp_.Sub("out.tar");
    Fd fd = LAMINA_TRY(Open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644));
    LAMINA_TRY(WriteLayerTar(fd.get(), root, std::move(entries)));
    return file;
  }
  Result<ApplyResult> ApplyFile(const std::string& file, const std::string& target,
                                const ApplyOptions& options = {}) {
    LAMINA_CHECK(MakeDirs(target));
    Fd fd = LAMINA_TRY(Open(file, O_RDONLY));
    return ApplyTar(fd.get(), target, options);
  }

  TempDir tmp_{"union-diff"};
  std::string upper_ = tmp_.Sub("upper");
  std::string lower_ = tmp_.Sub("lower");
};

TEST_F(UnionDiffTest, EveryWhiteoutAndOpaqueForm) {
  if (!test::IsRoot()) GTEST_SKIP() << "needs root for mknod and trusted.* xattrs";
  Mkdir(upper_ + "/a/deep");
  test::WriteFile(upper_ + "/a/deep/f", "f");
  CharWhiteout(upper_ + "/a/gone");
  test::WriteFile(upper_ + "/a/.wh.old", "");
  Mkdir(upper_ + "/o1");
  Xattr(upper_ + "/o1", "trusted.overlay.opaque", "y");
  Mkdir(upper_ + "/o2");
  Xattr(upper_ + "/o2", "user.overlay.opaque", "y");
  Mkdir(upper_ + "/o3");
  test::WriteFile(upper_ + "/o3/.wh..wh..opq", "");
  Mkdir(upper_ + "/o4");
  Xattr(upper_ + "/o4", "user.fuseoverlayfs.opaque", "y");
  test::WriteFile(upper_ + "/top", "t");
  auto entries = UnionDiffEntries(upper_);
  ASSERT_TRUE(entries.has_value()) << entries.error().message();
  EXPECT_EQ(Describe(*entries),
            "a\n"
            "a/deep\n"
            "a/deep/f\n"
            "a/gone (wh)\n"
            "a/old (wh)\n"
            "o1\n"
            "o1 (opq)\n"
            "o2\n"
            "o2 (opq)\n"
            "o3\n"
            "o3 (opq)\n"
            "o4\n"
            "o4 (opq)\n"
            "top\n");
}

TEST_F(UnionDiffTest, ChangesAgainstLowers) {
  if (!test::IsRoot()) GTEST_SKIP() << "needs root for mknod and trusted.* xattrs";
  std::string lower2 = tmp_.Sub("lower2");
  Mkdir(lower2 + "/d");
  test::WriteFile(lower2 + "/d/x", "x");
  test::WriteFile(lower2 + "/deleted-below", "x");
  Mkdir(lower_ + "/d");
  test::WriteFile(lower_ + "/a", "a");
  test::WriteFile(lower_ + "/d/y", "y");
  CharWhiteout(lower_ + "/deleted-below");
  Mkdir(lower_ + "/o");
  test::WriteFile(lower_ + "/o/p", "p");
  test::WriteFile(lower_ + "/o/q", "q");

  Mkdir(upper_ + "/d");
  test::WriteFile(upper_ + "/a", "changed");
  test::WriteFile(upper_ + "/new", "n");
  CharWhiteout(upper_ + "/d/x");
  test::WriteFile(upper_ + "/deleted-below", "again");
  Mkdir(upper_ + "/o");
  Xattr(upper_ + "/o", "trusted.overlay.opaque", "y");
  test::WriteFile(upper_ + "/o/q", "new q");
  auto changes = UnionChanges(upper_, {lower_, lower2});
  ASSERT_TRUE(changes.has_value()) << changes.error().message();
  EXPECT_EQ(Describe(*changes),
            "C a\n"
            "C d\n"
            "D d/x\n"
            "A deleted-below\n"
            "A new\n"
            "C o\n"
            "D o/p\n"
            "C o/q\n");
}

TEST_F(UnionDiffTest, MetacopyUpperFilesAreRefused) {
  if (!test::IsRoot()) GTEST_SKIP() << "needs root for trusted.* xattrs";
  Mkdir(upper_ + "/d");
  test::WriteFile(upper_ + "/d/meta", "");
  Xattr(upper_ + "/d/meta", "trusted.overlay.metacopy", "");
  auto entries = UnionDiffEntries(upper_);
  ASSERT_FALSE(entries.has_value());
  EXPECT_EQ(entries.error().code(), ENOTSUP);
  EXPECT_NE(entries.error().message().find("d/meta"), std::string::npos);
}

TEST_F(UnionDiffTest, RedirectWithoutLowersIsAnError) {
  if (!test::IsRoot()) GTEST_SKIP() << "needs root for trusted.* xattrs";
  Mkdir(upper_ + "/new");
  Xattr(upper_ + "/new", "trusted.overlay.redirect", "/old");
  auto entries = UnionDiffEntries(upper_);
  ASSERT_FALSE(entries.has_value());
  EXPECT_EQ(entries.error().code(), EINVAL);
  EXPECT_NE(entries.error().message().find("new"), std::string::npos);
}

TEST_F(UnionDiffTest, RedirectedDirectoryIsWrittenWholeAndOpaque) {
  if (!test::IsRoot()) GTEST_SKIP() << "needs root for mknod and trusted.* xattrs";
  Mkdir(lower_ + "/old/sub");
  test::WriteFile(lower_ + "/old/a", "a");
  test::WriteFile(lower_ + "/old/sub/b", "b");
  test::WriteFile(lower_ + "/old/hidden", "h");
  Mkdir(lower_ + "/rel-old");
  test::WriteFile(lower_ + "/rel-old/r", "r");

  Mkdir(upper_ + "/new");
  Xattr(upper_ + "/new", "trusted.overlay.redirect", "/old");
  test::WriteFile(upper_ + "/new/c", "c");
  CharWhiteout(upper_ + "/new/hidden");
  CharWhiteout(upper_ + "/old");
  Mkdir(upper_ + "/rel-new");
  Xattr(upper_ + "/rel-new", "user.overlay.redirect", "rel-old");
  CharWhiteout(upper_ + "/rel-old");

  auto entries = UnionDiffEntries(upper_, {lower_});
  ASSERT_TRUE(entries.has_value()) << entries.error().message();
  EXPECT_EQ(Describe(*entries),
            "new\n"
            "new (opq)\n"
            "new/a <- " + lower_ + "/old/a\n"
            "new/c\n"
            "new/sub <- " + lower_ + "/old/sub\n"
            "new/sub/b <- " + lower_ + "/old/sub/b\n"
            "old (wh)\n"
            "rel-new\n"
            "rel-new (opq)\n"
            "rel-new/r <- " + lower_ + "/rel-old/r\n"
            "rel-old (wh)\n");

  auto changes = UnionChanges(upper_, {lower_});
  ASSERT_TRUE(changes.has_value()) << changes.error().message();
  EXPECT_EQ(Describe(*changes),
            "A new\n"
            "A new/a\n"
            "A new/c\n"
            "A new/sub\n"
            "A new/sub/b\n"
            "D old\n"
            "A rel-new\n"
            "A rel-new/r\n"
            "D rel-old\n");

  auto tar = WriteTar(upper_, *entries);
  ASSERT_TRUE(tar.has_value()) << tar.error().message();
  std::string out = tmp_.Sub("applied");
  auto applied = ApplyFile(*tar, out);
  ASSERT_TRUE(applied.has_value()) << applied.error().message();
  EXPECT_EQ(test::ReadFileOrDie(out + "/new/sub/b"), "b");
  EXPECT_EQ(test::ReadFileOrDie(out + "/rel-new/r"), "r");
  EXPECT_FALSE(PathExists(out + "/new/hidden"));
}

// The real thing: kernel overlayfs renames a directory with redirect_dir=on;
// diff → tar → apply over a copy of the lower must give the merged view.
TEST_F(UnionDiffTest, KernelOverlayRenameRoundTrip) {
  if (!test::IsRoot()) GTEST_SKIP() << "needs root to mount overlayfs";
  std::string work = tmp_.Sub("work"), merged = tmp_.Sub("merged");
  Mkdir(lower_ + "/old/sub");
  Mkdir(upper_);
  Mkdir(work);
  Mkdir(merged);
  test::WriteFile(lower_ + "/old/a", "a");
  test::WriteFile(lower_ + "/old/sub/b", "b");
  test::WriteFile(lower_ + "/keep", "k");
  test::WriteFile(lower_ + "/rm", "r");
  std::string opts = "lowerdir=" + lower_ + ",upperdir=" + upper_ + ",workdir=" + work +
                     ",redirect_dir=on,index=off,metacopy=off";
  if (::mount("overlay", merged.c_str(), "overlay", 0, opts.c_str()) != 0) {
    GTEST_SKIP() << "overlay mount with redirect_dir=on failed: " << std::strerror(errno);
  }
  bool mounted = true;
  auto unmount = [&] {
    if (mounted) ::umount2(merged.c_str(), MNT_DETACH);
    mounted = false;
  };
  ASSERT_EQ(::rename((merged + "/old").c_str(), (merged + "/new").c_str()), 0)
      << std::strerror(errno);
  test::WriteFile(merged + "/new/c", "c");
  ASSERT_EQ(::unlink((merged + "/rm").c_str()), 0);
  ASSERT_EQ(::unlink((merged + "/new/sub/b").c_str()), 0);
  std::string snapshot = tmp_.Sub("snapshot");
  auto cp = test::Run({"cp", "-a", merged, snapshot});
  unmount();
  ASSERT_EQ(cp.status, 0) << cp.err;
  if (!GetXattr(upper_ + "/new", "trusted.overlay.redirect").has_value()) {
    GTEST_SKIP() << "the kernel did not use a redirect for the rename";
  }

  auto entries = UnionDiffEntries(upper_, {lower_});
  ASSERT_TRUE(entries.has_value()) << entries.error().message();
  auto tar = WriteTar(upper_, *entries);
  ASSERT_TRUE(tar.has_value()) << tar.error().message();
  std::string full = tmp_.Sub("full");
  auto copy = test::Run({"cp", "-a", lower_, full});
  ASSERT_EQ(copy.status, 0) << copy.err;
  ApplyOptions options;
  options.whiteouts = WhiteoutMode::kFullTree;
  auto applied = ApplyFile(*tar, full, options);
  ASSERT_TRUE(applied.has_value()) << applied.error().message();
  test::TreeCompareOptions compare;
  compare.times = false;  // directory mtimes of the merged view are the kernel's
  auto diffs = test::CompareTrees(snapshot, full, compare);
  EXPECT_TRUE(diffs.empty()) << ::testing::PrintToString(diffs) << "\n" << Describe(*entries);
}

}  // namespace
}  // namespace lamina
