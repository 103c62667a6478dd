#include "drivers/tree_diff.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/support/test_util.h"

namespace lamina {
namespace {

using test::TempDir;
using test::WriteFile;

std::string Show(const std::vector<Change>& changes) {
  std::string out;
  for (const auto& c : changes) out += std::string(ChangeKindName(c.kind)) + " " + c.path + "\n";
  return out;
}

// Same tree twice, with identical times, so that only the edits differ.
class TreeDiffTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const auto* t : {&old_, &new_}) {
      const std::string& r = t->path();
      ASSERT_EQ(::mkdir((r + "/d").c_str(), 0755), 0);
      ASSERT_EQ(::mkdir((r + "/d/sub").c_str(), 0755), 0);
      ASSERT_EQ(::mkdir((r + "/keep").c_str(), 0755), 0);
      ASSERT_EQ(::mkdir((r + "/swap").c_str(), 0755), 0);
      WriteFile(r + "/a", "aaa");
      WriteFile(r + "/d/x", "x");
      WriteFile(r + "/d/sub/y", "y");
      WriteFile(r + "/keep/k", "k");
      WriteFile(r + "/keep/m", "m");
      WriteFile(r + "/swap/s", "s");
      ASSERT_EQ(::symlink("a", (r + "/l").c_str()), 0);
      for (const char* p : {"/a", "/d/x", "/d/sub/y", "/keep/k", "/keep/m", "/swap/s", "/l",
                            "/d/sub", "/d", "/keep", "/swap"}) {
        Touch(r + p);
      }
    }
  }
  static void Touch(const std::string& path, long sec = 1000000) {
    struct timespec ts[2] = {{sec, 0}, {sec, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW), 0) << path;
  }
  std::string N(const std::string& rel) const { return new_.Sub(rel); }
  TempDir old_{"diff-old"};
  TempDir new_{"diff-new"};
};

TEST_F(TreeDiffTest, EqualTreesHaveNoChanges) {
  auto changes = DiffTrees(old_.path(), new_.path());
  ASSERT_TRUE(changes) << changes.error().message();
  EXPECT_TRUE(changes->empty()) << Show(*changes);
}

TEST_F(TreeDiffTest, AddedModifiedDeleted) {
  // Modified: content and size, mode only, symlink target, xattr.
  WriteFile(N("a"), "aaaa");
  Touch(N("a"));
  ASSERT_EQ(::chmod(N("keep/k").c_str(), 0600), 0);
  ASSERT_EQ(::unlink(N("l").c_str()), 0);
  ASSERT_EQ(::symlink("b", N("l").c_str()), 0);
  Touch(N("l"));
  ASSERT_EQ(::lsetxattr(N("keep/m").c_str(), "user.t", "1", 1, 0), 0);
  // Deleted directory with content: listed once.
  ASSERT_EQ(::unlink(N("d/sub/y").c_str()), 0);
  ASSERT_EQ(::rmdir(N("d/sub").c_str()), 0);
  ASSERT_EQ(::unlink(N("d/x").c_str()), 0);
  ASSERT_EQ(::rmdir(N("d").c_str()), 0);
  // Added directory: listed with its children.
  ASSERT_EQ(::mkdir(N("n").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(N("n/m").c_str(), 0755), 0);
  WriteFile(N("n/m/f"), "");
  // A directory replaced by a file: Modified, its old children not listed.
  ASSERT_EQ(::unlink(N("swap/s").c_str()), 0);
  ASSERT_EQ(::rmdir(N("swap").c_str()), 0);
  WriteFile(N("swap"), "now a file");
  Touch(N("keep"));

  auto changes = DiffTrees(old_.path(), new_.path());
  ASSERT_TRUE(changes) << changes.error().message();
  std::vector<Change> want = {
      {"a", ChangeKind::kModified},      {"d", ChangeKind::kDeleted},
      {"keep", ChangeKind::kModified},  // holds changes
      {"keep/k", ChangeKind::kModified}, {"keep/m", ChangeKind::kModified},
      {"l", ChangeKind::kModified},      {"n", ChangeKind::kAdded},
      {"n/m", ChangeKind::kAdded},       {"n/m/f", ChangeKind::kAdded},
      {"swap", ChangeKind::kModified},
  };
  EXPECT_EQ(*changes, want) << Show(*changes);
}

TEST_F(TreeDiffTest, MtimeOnlyChangeIsModified) {
  Touch(N("d/sub/y"), 2000000);
  auto changes = DiffTrees(old_.path(), new_.path());
  ASSERT_TRUE(changes);
  std::vector<Change> want = {{"d", ChangeKind::kModified},
                              {"d/sub", ChangeKind::kModified},
                              {"d/sub/y", ChangeKind::kModified}};
  EXPECT_EQ(*changes, want) << Show(*changes);
  changes = DiffTrees(old_.path(), new_.path(), {.parent_dirs = false});
  ASSERT_TRUE(changes);
  EXPECT_EQ(*changes, (std::vector<Change>{{"d/sub/y", ChangeKind::kModified}})) << Show(*changes);
}

TEST_F(TreeDiffTest, FileReplacedByDirectoryListsChildrenAdded) {
  ASSERT_EQ(::unlink(N("a").c_str()), 0);
  ASSERT_EQ(::mkdir(N("a").c_str(), 0755), 0);
  WriteFile(N("a/inner"), "");
  auto changes = DiffTrees(old_.path(), new_.path());
  ASSERT_TRUE(changes);
  std::vector<Change> want = {{"a", ChangeKind::kModified}, {"a/inner", ChangeKind::kAdded}};
  EXPECT_EQ(*changes, want) << Show(*changes);
}

TEST_F(TreeDiffTest, EmptyOldRootMeansAllAdded) {
  auto changes = DiffTrees("", new_.path());
  ASSERT_TRUE(changes);
  EXPECT_EQ(changes->size(), 11u) << Show(*changes);
  for (const auto& c : *changes) EXPECT_EQ(c.kind, ChangeKind::kAdded) << c.path;
  EXPECT_EQ(changes->front().path, "a");
}

TEST_F(TreeDiffTest, SortedByPathBytes) {
  WriteFile(N("d-x"), "");
  WriteFile(N("d/z"), "");
  auto changes = DiffTrees(old_.path(), new_.path());
  ASSERT_TRUE(changes);
  std::vector<Change> want = {{"d", ChangeKind::kModified},
                              {"d-x", ChangeKind::kAdded},
                              {"d/z", ChangeKind::kAdded}};
  EXPECT_EQ(*changes, want) << Show(*changes);
}

TEST_F(TreeDiffTest, MissingRootKeepsErrno) {
  auto changes = DiffTrees(old_.Sub("nope"), new_.path());
  ASSERT_FALSE(changes);
  EXPECT_EQ(changes.error().code(), ENOENT);
  EXPECT_NE(changes.error().message().find("nope"), std::string::npos);
}

}  // namespace
}  // namespace lamina
