#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "common/fs.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/path.h"
#include "common/result.h"
#include "common/scope_guard.h"
#include "tests/support/test_util.h"

namespace lamina {
namespace {

TEST(Result, ErrorKeepsErrnoAndContext) {
  Error e(ENOENT, "open /x");
  EXPECT_EQ(e.code(), ENOENT);
  EXPECT_EQ(e.message(), "open /x: No such file or directory");
  EXPECT_EQ(e.Wrap("layer abc").message(), "layer abc: open /x: No such file or directory");
  EXPECT_EQ(Error(EIO).message(), "Input/output error");
}

Result<int> Half(int v) {
  if (v % 2 != 0) return Fail(EINVAL, "odd");
  return v / 2;
}
Result<int> Quarter(int v) {
  int h = LAMINA_TRY(Half(v));
  return LAMINA_TRY(Half(h));
}

TEST(Result, TryPropagates) {
  EXPECT_EQ(*Quarter(8), 2);
  auto r = Quarter(6);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), EINVAL);
}

TEST(ScopeGuard, RunsUnlessDismissed) {
  int runs = 0;
  {
    auto g = Defer([&] { ++runs; });
  }
  {
    auto g = Defer([&] { ++runs; });
    g.Dismiss();
  }
  EXPECT_EQ(runs, 1);
}

TEST(Path, CleanRelativePath) {
  EXPECT_EQ(*CleanRelativePath("a/b/c"), "a/b/c");
  EXPECT_EQ(*CleanRelativePath("/a//b/./c/"), "a/b/c");
  EXPECT_EQ(*CleanRelativePath("./a/x/../b"), "a/b");
  EXPECT_EQ(*CleanRelativePath("."), "");
  EXPECT_EQ(CleanRelativePath("../etc/passwd").error().code(), EINVAL);
  EXPECT_EQ(CleanRelativePath("a/../../x").error().code(), EINVAL);
  EXPECT_EQ(CleanRelativePath(std::string("a\0b", 3)).error().code(), EINVAL);
}

TEST(Path, SplitAndJoin) {
  EXPECT_EQ(SplitParent("a/b/c"), (std::pair<std::string, std::string>{"a/b", "c"}));
  EXPECT_EQ(SplitParent("c"), (std::pair<std::string, std::string>{"", "c"}));
  EXPECT_EQ(SplitParent("/x/"), (std::pair<std::string, std::string>{"", "x"}));
  EXPECT_EQ(JoinPath("a/", "/b"), "a/b");
  EXPECT_EQ(JoinPath("", "b"), "b");
  EXPECT_EQ(SplitComponents("//a/b//c/"), (std::vector<std::string>{"a", "b", "c"}));
}

TEST(Path, OpenInRootNeverLeavesTheRoot) {
  test::TempDir tmp;
  ASSERT_EQ(::mkdir(tmp.Sub("root").c_str(), 0755), 0);
  test::WriteFile(tmp.Sub("secret"), "outside");
  test::WriteFile(tmp.Sub("root/secret"), "inside");
  ASSERT_EQ(::symlink("/secret", tmp.Sub("root/abs").c_str()), 0);
  ASSERT_EQ(::symlink("../../secret", tmp.Sub("root/rel").c_str()), 0);
  Fd root = *Open(tmp.Sub("root"), O_PATH | O_DIRECTORY);

  for (const char* path : {"abs", "rel", "../secret", "/secret"}) {
    auto fd = OpenInRoot(root.get(), path, O_RDONLY);
    ASSERT_TRUE(fd) << path << ": " << fd.error().message();
    char buf[16] = {};
    ASSERT_GT(::read(fd->get(), buf, sizeof(buf)), 0);
    EXPECT_STREQ(buf, "inside") << path;
  }
  for (const char* path : {"abs", "rel", "../secret", "/secret"}) {
    auto fd = OpenBeneath(root.get(), path, O_RDONLY);
    EXPECT_FALSE(fd) << path;
    if (!fd) {
      EXPECT_EQ(fd.error().code(), EXDEV) << path;
    }
  }
}

TEST(Fs, WriteFileAtomicReplaces) {
  test::TempDir tmp;
  std::string path = tmp.Sub("f.json");
  ASSERT_TRUE(WriteFileAtomic(path, "one"));
  ASSERT_TRUE(WriteFileAtomic(path, "two", 0600));
  EXPECT_EQ(*ReadFile(path), "two");
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(ListDir(tmp.path())->size(), 1u) << "no temporary file left behind";
}

TEST(Fs, WriteFileAtomicFailsCleanlyInMissingDir) {
  test::TempDir tmp;
  auto r = WriteFileAtomic(tmp.Sub("missing/f"), "x");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ENOENT);
}

TEST(Fs, MakeDirsAndRemoveTree) {
  test::TempDir tmp;
  ASSERT_TRUE(MakeDirs(tmp.Sub("a/b/c")));
  ASSERT_TRUE(MakeDirs(tmp.Sub("a/b/c")));
  test::WriteFile(tmp.Sub("a/b/c/f"), "x");
  ASSERT_EQ(::symlink(tmp.path().c_str(), tmp.Sub("a/b/loop").c_str()), 0);
  ASSERT_EQ(::mkdir(tmp.Sub("a/ro").c_str(), 0500), 0);
  test::WriteFile(tmp.Sub("x"), "x");
  EXPECT_EQ(MakeDirs(tmp.Sub("x/y")).error().code(), ENOTDIR);
  ASSERT_TRUE(RemoveTree(tmp.Sub("a")));
  EXPECT_FALSE(PathExists(tmp.Sub("a")));
  EXPECT_TRUE(PathExists(tmp.Sub("x"))) << "RemoveTree followed a symlink out of its tree";
  EXPECT_TRUE(RemoveTree(tmp.Sub("never-there")));
}

TEST(Fs, Xattrs) {
  test::TempDir tmp;
  std::string path = tmp.Sub("f");
  test::WriteFile(path, "x");
  auto set = SetXattr(path, "user.lamina.test", "value");
  if (!set && set.error().code() == ENOTSUP) GTEST_SKIP() << "no user xattrs on " << tmp.path();
  ASSERT_TRUE(set) << set.error().message();
  EXPECT_EQ(*GetXattr(path, "user.lamina.test"), "value");
  auto names = *ListXattrs(path);
  EXPECT_NE(std::find(names.begin(), names.end(), "user.lamina.test"), names.end());
  EXPECT_EQ(GetXattr(path, "user.missing").error().code(), ENODATA);
  // Larger than the first read buffer, within ext4's one-block xattr limit.
  std::string big(3000, 'v');
  ASSERT_TRUE(SetXattr(path, "user.big", big));
  EXPECT_EQ(*GetXattr(path, "user.big"), big) << "values past the first buffer size";
  ASSERT_TRUE(RemoveXattr(path, "user.big"));
}

TEST(Fs, RunCommandCapturesBothStreams) {
  std::string out, err;
  auto rc = RunCommand({"sh", "-c", "echo out; echo err >&2; exit 3"}, &out, &err);
  ASSERT_TRUE(rc);
  EXPECT_EQ(*rc, 3);
  EXPECT_EQ(out, "out\n");
  EXPECT_EQ(err, "err\n");
  // Lots of stderr before any stdout must not deadlock.
  out.clear();
  err.clear();
  rc = RunCommand({"sh", "-c", "head -c 1000000 /dev/zero >&2; echo done"}, &out, &err);
  ASSERT_TRUE(rc);
  EXPECT_EQ(out, "done\n");
  EXPECT_EQ(err.size(), 1000000u);
  rc = RunCommand({"sh", "-c", "kill -9 $$"});
  ASSERT_TRUE(rc);
  EXPECT_EQ(*rc, 128 + 9);
  EXPECT_FALSE(RunCommand({"/nonexistent/binary"}));
}

TEST(Fs, RandomIdIsHex64) {
  std::string a = RandomId(), b = RandomId();
  EXPECT_EQ(a.size(), 64u);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_NE(a, b);
}

TEST(Hash, KnownValues) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  Xxh3Stream s;
  s.Update("ab", 2);
  s.Update("c", 1);
  EXPECT_EQ(s.Digest(), Xxh3("abc"));
  EXPECT_NE(Xxh3("abc"), Xxh3("abd"));
}

TEST(Log, RejectsUnknownLevel) {
  auto r = InitLogging("loud");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), EINVAL);
  EXPECT_NE(r.error().message().find("loud"), std::string::npos);
}

}  // namespace
}  // namespace lamina
