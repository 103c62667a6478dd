#include "tests/support/tree_compare.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "tests/support/test_util.h"

namespace lamina::test {
namespace {

bool Contains(const std::vector<std::string>& lines, const std::string& what) {
  for (const auto& l : lines) {
    if (l.find(what) != std::string::npos) return true;
  }
  return false;
}

std::string Joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

class TreeCompareTest : public ::testing::Test {
 protected:
  // Builds the same small tree in a and b with fixed times.
  void Build(const std::string& root) {
    ASSERT_EQ(::mkdir((root + "/d").c_str(), 0750), 0);
    WriteFile(root + "/d/f", "hello");
    WriteFile(root + "/g", "data");
    ASSERT_EQ(::symlink("d/f", (root + "/l").c_str()), 0);
    ASSERT_EQ(::link((root + "/g").c_str(), (root + "/d/g2").c_str()), 0);
    ASSERT_EQ(::mkfifo((root + "/p").c_str(), 0600), 0);
    struct timespec ts[2] = {{1000, 5}, {2000, 7}};
    for (const char* p : {"/d/f", "/g", "/l", "/p", "/d"}) {
      ASSERT_EQ(::utimensat(AT_FDCWD, (root + p).c_str(), ts, AT_SYMLINK_NOFOLLOW), 0) << p;
    }
  }
  TempDir a_{"tc-a"};
  TempDir b_{"tc-b"};
};

TEST_F(TreeCompareTest, EqualTreesCompareEqual) {
  Build(a_.path());
  Build(b_.path());
  auto diffs = CompareTrees(a_.path(), b_.path());
  EXPECT_TRUE(diffs.empty()) << Joined(diffs);
  EXPECT_EQ(DescribeTree(a_.path()), DescribeTree(b_.path()));
  std::string desc = DescribeTree(a_.path());
  EXPECT_NE(desc.find("l l 0777"), std::string::npos) << desc;
  EXPECT_NE(desc.find("-> d/f"), std::string::npos) << desc;
  EXPECT_NE(desc.find("links=[d/g2 g]"), std::string::npos) << desc;
}

TEST_F(TreeCompareTest, FindsEachKindOfDifference) {
  Build(a_.path());
  Build(b_.path());
  // content, same size
  WriteFile(b_.Sub("d/f"), "HELLO");
  // mode
  ASSERT_EQ(::chmod(b_.Sub("g").c_str(), 0600), 0);
  // symlink target
  ASSERT_EQ(::unlink(b_.Sub("l").c_str()), 0);
  ASSERT_EQ(::symlink("d/x", b_.Sub("l").c_str()), 0);
  // only in one tree
  WriteFile(a_.Sub("only_a"), "");
  // type
  ASSERT_EQ(::unlink(b_.Sub("p").c_str()), 0);
  WriteFile(b_.Sub("p"), "");
  auto diffs = CompareTrees(a_.path(), b_.path(), {.times = false});
  EXPECT_TRUE(Contains(diffs, "d/f: content xxh3")) << Joined(diffs);
  EXPECT_TRUE(Contains(diffs, "g: mode (0644 vs 0600)")) << Joined(diffs);
  EXPECT_TRUE(Contains(diffs, "l: symlink target (-> d/f vs -> d/x)")) << Joined(diffs);
  EXPECT_TRUE(Contains(diffs, "only_a: only in a")) << Joined(diffs);
  EXPECT_TRUE(Contains(diffs, "p: type (p vs f)")) << Joined(diffs);
}

TEST_F(TreeCompareTest, TimesAreComparedOnlyWhenAsked) {
  Build(a_.path());
  Build(b_.path());
  struct timespec ts[2] = {{1000, 5}, {2000, 8}};
  ASSERT_EQ(::utimensat(AT_FDCWD, b_.Sub("l").c_str(), ts, AT_SYMLINK_NOFOLLOW), 0);
  auto diffs = CompareTrees(a_.path(), b_.path());
  EXPECT_TRUE(Contains(diffs, "l: mtime_ns (2000000000007 vs 2000000000008)")) << Joined(diffs);
  EXPECT_TRUE(CompareTrees(a_.path(), b_.path(), {.times = false}).empty());
}

TEST_F(TreeCompareTest, HardLinkStructure) {
  Build(a_.path());
  Build(b_.path());
  // Same content, but b's two paths are separate inodes.
  ASSERT_EQ(::unlink(b_.Sub("d/g2").c_str()), 0);
  WriteFile(b_.Sub("d/g2"), "data");
  struct timespec ts[2] = {{1000, 5}, {2000, 7}};
  ASSERT_EQ(::utimensat(AT_FDCWD, b_.Sub("d/g2").c_str(), ts, 0), 0);
  ASSERT_EQ(::utimensat(AT_FDCWD, b_.Sub("d").c_str(), ts, 0), 0);
  auto diffs = CompareTrees(a_.path(), b_.path());
  EXPECT_TRUE(Contains(diffs, "g: hard links ([d/g2 g] vs [])")) << Joined(diffs);
  EXPECT_TRUE(CompareTrees(a_.path(), b_.path(), {.link_structure = false}).empty());
}

TEST_F(TreeCompareTest, XattrsAndInternalXattrs) {
  Build(a_.path());
  Build(b_.path());
  ASSERT_EQ(::lsetxattr(a_.Sub("g").c_str(), "user.k", "v1", 2, 0), 0) << "user xattrs needed";
  ASSERT_EQ(::lsetxattr(b_.Sub("g").c_str(), "user.k", "v2", 2, 0), 0);
  auto diffs = CompareTrees(a_.path(), b_.path());
  EXPECT_TRUE(Contains(diffs, "g: xattrs ({user.k=\"v1\"} vs {user.k=\"v2\"})")) << Joined(diffs);
  EXPECT_TRUE(CompareTrees(a_.path(), b_.path(), {.xattrs = false}).empty());

  ASSERT_EQ(::lsetxattr(b_.Sub("g").c_str(), "user.k", "v1", 2, 0), 0);
  ASSERT_EQ(::lsetxattr(b_.Sub("d").c_str(), "user.overlay.opaque", "y", 1, 0), 0);
  EXPECT_TRUE(CompareTrees(a_.path(), b_.path()).empty());
  diffs = CompareTrees(a_.path(), b_.path(), {.internal_xattrs = true});
  EXPECT_TRUE(Contains(diffs, "d: xattrs")) << Joined(diffs);
}

TEST_F(TreeCompareTest, DevicesAndOwners) {
  if (!IsRoot()) GTEST_SKIP() << "mknod and chown need root";
  ASSERT_EQ(::mknod(a_.Sub("c").c_str(), S_IFCHR | 0600, makedev(1, 3)), 0);
  ASSERT_EQ(::mknod(b_.Sub("c").c_str(), S_IFCHR | 0600, makedev(1, 5)), 0);
  WriteFile(a_.Sub("o"), "");
  WriteFile(b_.Sub("o"), "");
  ASSERT_EQ(::lchown(b_.Sub("o").c_str(), 12, 34), 0);
  auto diffs = CompareTrees(a_.path(), b_.path(), {.times = false});
  EXPECT_TRUE(Contains(diffs, "c: rdev (1,3 vs 1,5)")) << Joined(diffs);
  EXPECT_TRUE(Contains(diffs, "o: owner (0:0 vs 12:34)")) << Joined(diffs);
  EXPECT_TRUE(CompareTrees(a_.path(), b_.path(), {.times = false, .owner = false}).size() == 1);
}

TEST_F(TreeCompareTest, RootMetadataOnlyWhenAsked) {
  ASSERT_EQ(::chmod(a_.path().c_str(), 0700), 0);
  EXPECT_TRUE(CompareTrees(a_.path(), b_.path(), {.times = false}).empty());
  auto diffs = CompareTrees(a_.path(), b_.path(), {.times = false, .root_metadata = true});
  EXPECT_TRUE(Contains(diffs, ".: mode (0700 vs 0755)")) << Joined(diffs);
}

}  // namespace
}  // namespace lamina::test
