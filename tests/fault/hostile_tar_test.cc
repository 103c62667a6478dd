// Hostile layer tars: every one must fail with a clear error naming the
// entry, or land inside the target; a sentinel directory beside the target
// must stay byte-identical.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstring>
#include <string>

#include "common/fd.h"
#include "common/fs.h"
#include "drivers/tar.h"
#include "tests/support/tar_builder.h"
#include "tests/support/test_util.h"
#include "tests/support/tree_compare.h"

namespace lamina {
namespace {

using test::TarBuilder;
using test::TarCompression;
using test::TempDir;

class HostileTarTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(MakeDirs(target_).has_value());
    ASSERT_TRUE(MakeDirs(sentinel_ + "/sub").has_value());
    test::WriteFile(sentinel_ + "/file", "precious");
    test::WriteFile(sentinel_ + "/sub/passwd", "root:x:0:0");
    before_ = test::DescribeTree(sentinel_);
    ASSERT_FALSE(before_.empty());
  }
  void TearDown() override {
    EXPECT_EQ(test::DescribeTree(sentinel_), before_) << "the sentinel beside the target changed";
    auto names = ListDir(tmp_.path());
    ASSERT_TRUE(names.has_value());
    for (const auto& n : *names) {
      EXPECT_TRUE(n == "target" || n == "sentinel" || n == "layer.tar") << "stray " << n;
    }
  }

  Result<ApplyResult> ApplyBytes(const std::string& tar, const ApplyOptions& options = {}) {
    std::string file = tmp_.Sub("layer.tar");
    test::WriteTarFile(file, tar);
    Fd fd = LAMINA_TRY(Open(file, O_RDONLY));
    return ApplyTar(fd.get(), target_, options);
  }
  // Expects a failure with `code` whose message names `entry`.
  void ExpectRefused(const Result<ApplyResult>& res, int code, const std::string& entry) {
    ASSERT_FALSE(res.has_value()) << "applied although hostile: " << entry;
    EXPECT_EQ(res.error().code(), code) << res.error().message();
    EXPECT_NE(res.error().message().find(entry), std::string::npos)
        << "error does not name the entry '" << entry << "': " << res.error().message();
  }
  std::string T(const std::string& rel) const { return target_ + "/" + rel; }

  TempDir tmp_{"hostile-tar"};
  std::string target_ = tmp_.Sub("target");
  std::string sentinel_ = tmp_.Sub("sentinel");
  std::string before_;
};

TEST_F(HostileTarTest, DotDotEscapesAreRefused) {
  for (const std::string name : {"../sentinel/file", "a/../../sentinel/file", "./../x"}) {
    SCOPED_TRACE(name);
    TarBuilder b;
    b.File(name, "pwned");
    ExpectRefused(ApplyBytes(b.Finish()), EINVAL, name);
  }
}

TEST_F(HostileTarTest, AbsolutePathsLandInsideTheTarget) {
  TarBuilder b;
  b.File(sentinel_ + "/file", "pwned");
  b.File("/etc/hostile", "x");
  auto res = ApplyBytes(b.Finish());
  ASSERT_TRUE(res.has_value()) << res.error().message();
  EXPECT_EQ(test::ReadFileOrDie(T(sentinel_ + "/file")), "pwned");
  EXPECT_EQ(test::ReadFileOrDie(T("etc/hostile")), "x");
}

TEST_F(HostileTarTest, WriteThroughAbsoluteSymlinkStaysInside) {
  TarBuilder b;
  b.Dir(sentinel_ + "/");  // inside the target: what "/" means for the layer
  b.Symlink("link", sentinel_);
  b.File("link/file", "pwned");
  b.Dir("link/sub/");
  b.File("link/sub/passwd", "pwned");
  auto res = ApplyBytes(b.Finish());
  ASSERT_TRUE(res.has_value()) << res.error().message();
  EXPECT_EQ(test::ReadFileOrDie(T(sentinel_ + "/file")), "pwned");
}

TEST_F(HostileTarTest, WriteThroughRelativeSymlinkStaysInside) {
  TarBuilder b;
  b.Dir("sentinel/");
  b.Symlink("rel", "../sentinel");
  b.Dir("deep/er/");
  b.Symlink("deep/er/up", "../../../../../../../../..");
  b.File("rel/file", "pwned");
  b.File("deep/er/up/" + sentinel_.substr(1) + "/sub/passwd", "pwned");
  auto res = ApplyBytes(b.Finish());
  ASSERT_TRUE(res.has_value()) << res.error().message();
  // ".." stops at the target's root.
  EXPECT_EQ(test::ReadFileOrDie(T("sentinel/file")), "pwned");
  EXPECT_EQ(test::ReadFileOrDie(T(sentinel_.substr(1) + "/sub/passwd")), "pwned");
}

TEST_F(HostileTarTest, WriteThroughDanglingSymlinkIsRefused) {
  // The link's target does not exist inside the layer: refused, never
  // followed to the host's path.
  for (const std::string& target : {sentinel_, std::string("../sentinel")}) {
    SCOPED_TRACE(target);
    ASSERT_TRUE(RemoveTree(target_).has_value());
    ASSERT_TRUE(MakeDirs(target_).has_value());
    TarBuilder b;
    b.Symlink("link", target);
    b.File("link/file", "pwned");
    ExpectRefused(ApplyBytes(b.Finish()), ENOENT, "link/file");
  }
}

TEST_F(HostileTarTest, AnEntryOverASymlinkReplacesTheLinkItself) {
  TarBuilder b;
  b.Symlink("f", sentinel_ + "/file");
  b.File("f", "pwned");
  b.Symlink("d", sentinel_);
  b.Dir("d/");
  auto res = ApplyBytes(b.Finish());
  ASSERT_TRUE(res.has_value()) << res.error().message();
  EXPECT_EQ(test::ReadFileOrDie(T("f")), "pwned");
  struct stat st;
  ASSERT_EQ(::lstat(T("d").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
}

TEST_F(HostileTarTest, HardLinksOutsideOrNotYetInTheLayerAreRefused) {
  {
    TarBuilder b;
    b.Hardlink("h", "/etc/passwd");
    ExpectRefused(ApplyBytes(b.Finish()), EXDEV, "h");
  }
  {
    TarBuilder b;
    b.Hardlink("h2", "../outside");
    ExpectRefused(ApplyBytes(b.Finish()), EINVAL, "h2");
  }
  {
    TarBuilder b;
    b.Hardlink("h3", "later");
    b.File("later", "x");
    ExpectRefused(ApplyBytes(b.Finish()), EXDEV, "h3");
  }
  {
    // Through a symlink planted in the same tar.
    TarBuilder b;
    b.Symlink("d", sentinel_);
    b.Hardlink("h4", "d/file");
    ExpectRefused(ApplyBytes(b.Finish()), EXDEV, "h4");
  }
  {
    TarBuilder b;
    b.Hardlink("h5", sentinel_ + "/file");
    ExpectRefused(ApplyBytes(b.Finish()), EXDEV, "h5");
  }
}

TEST_F(HostileTarTest, HardLinkToAPlantedSymlinkLinksTheSymlink) {
  TarBuilder b;
  b.Symlink("s", sentinel_ + "/file");
  b.Hardlink("h", "s");
  auto res = ApplyBytes(b.Finish());
  ASSERT_TRUE(res.has_value()) << res.error().message();
  struct stat st;
  ASSERT_EQ(::lstat(T("h").c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
}

TEST_F(HostileTarTest, OverlongNamesAreRefused) {
  std::string long_name = "dir/" + std::string(256, 'n');
  {
    TarBuilder b;
    b.File(long_name, "x");
    ExpectRefused(ApplyBytes(b.Finish()), ENAMETOOLONG, long_name);
  }
  std::string long_path;
  while (long_path.size() <= PATH_MAX) long_path += std::string(200, 'p') + "/";
  long_path += "f";
  {
    TarBuilder b;
    b.File(long_path, "x");
    ExpectRefused(ApplyBytes(b.Finish()), ENAMETOOLONG, long_path.substr(0, 64));
  }
}

TEST_F(HostileTarTest, AbsurdSizesAreRefused) {
  {
    TarBuilder b;
    b.File("ok", "fine");
    b.HugeFileHeader("huge", uint64_t{1} << 50);
    ExpectRefused(ApplyBytes(b.Finish()), EFBIG, "huge");
  }
  {
    TarBuilder b;
    b.File("a", std::string(600, 'a'));
    b.File("b", std::string(600, 'b'));
    ApplyOptions options;
    options.max_entry_bytes = 1000;
    options.max_total_bytes = 1000;
    ExpectRefused(ApplyBytes(b.Finish(), options), EFBIG, "b");
  }
}

TEST_F(HostileTarTest, TruncatedOrCorruptArchivesFailCleanly) {
  TarBuilder b;
  b.File("first", "1");
  b.File("big", std::string(100000, 'b'));
  b.File("last", "3");
  std::string good = b.Finish();
  {
    auto res = ApplyBytes(good.substr(0, good.size() / 2));
    ASSERT_FALSE(res.has_value());
    EXPECT_NE(res.error().message().find("'big'"), std::string::npos) << res.error().message();
    EXPECT_NE(res.error().message().find("runcated"), std::string::npos)
        << res.error().message();
  }
  {
    // Cut inside a header block.
    auto res = ApplyBytes(good.substr(0, 512 * 3 + 100));
    ASSERT_FALSE(res.has_value());
    EXPECT_NE(res.error().message().find("runcated"), std::string::npos)
        << res.error().message();
  }
  {
    std::string gz = test::Compress(good, TarCompression::kGzip);
    for (size_t i = gz.size() / 3; i < gz.size() / 3 + 64; ++i) gz[i] ^= 0x5a;
    auto res = ApplyBytes(gz);
    ASSERT_FALSE(res.has_value());
    // Depending on where the damage falls: a bad header, or a bad entry.
    EXPECT_NE(res.error().message().find("tar"), std::string::npos)
        << res.error().message();
  }
  {
    std::string zst = test::Compress(good, TarCompression::kZstd);
    auto res = ApplyBytes(zst.substr(0, zst.size() - 20));
    ASSERT_FALSE(res.has_value());
  }
}

TEST_F(HostileTarTest, WhiteoutsCannotNameDotDot) {
  for (auto mode : {WhiteoutMode::kUnion, WhiteoutMode::kFullTree}) {
    for (const std::string name : {".wh...", "a/.wh..."}) {
      SCOPED_TRACE(name);
      TarBuilder b;
      b.Dir("a/");
      b.File(name, "");
      ApplyOptions options;
      options.whiteouts = mode;
      ExpectRefused(ApplyBytes(b.Finish(), options), EINVAL, name);
    }
  }
}

TEST_F(HostileTarTest, FullTreeWhiteoutsThroughSymlinksStayInside) {
  TarBuilder b;
  b.Dir(sentinel_ + "/sub/");
  b.Dir("sentinel/");
  b.Symlink("link", sentinel_);
  b.File("link/.wh.file", "");
  b.File("link/sub/.wh..wh..opq", "");
  b.Symlink("rel", "../sentinel");
  b.File("rel/.wh.file", "");
  ApplyOptions options;
  options.whiteouts = WhiteoutMode::kFullTree;
  auto res = ApplyBytes(b.Finish(), options);
  ASSERT_TRUE(res.has_value()) << res.error().message();
}

TEST_F(HostileTarTest, DeviceNodesAsNonRootFailClearly) {
  if (!test::IsRoot()) GTEST_SKIP() << "needs root to switch to an unprivileged user";
  struct passwd* nobody = ::getpwnam("nobody");
  if (nobody == nullptr) GTEST_SKIP() << "no user 'nobody' on this host";
  uid_t uid = nobody->pw_uid;
  gid_t gid = nobody->pw_gid;
  ASSERT_EQ(::chown(target_.c_str(), uid, gid), 0);
  TarBuilder b;
  b.File("ok", "x");
  b.CharDev("dev/sda", 8, 0);
  std::string file = tmp_.Sub("layer.tar");
  test::WriteTarFile(file, b.Finish());

  auto child = test::RunAsUser(uid, gid, [&]() -> std::string {
    auto fd = Open(file, O_RDONLY);
    if (!fd) return fd.error().message();
    ApplyOptions options;
    options.same_owner = false;
    options.xattr_ns = XattrNamespace::kUser;
    auto res = ApplyTar(fd->get(), target_, options);
    return res ? "ok" : std::to_string(res.error().code()) + " " + res.error().message();
  });
  ASSERT_EQ(child.status, 0) << "could not switch to nobody";
  const std::string& msg = child.output;
  EXPECT_TRUE(msg.starts_with(std::to_string(EPERM) + " ")) << msg;
  EXPECT_NE(msg.find("dev/sda"), std::string::npos) << msg;
  EXPECT_NE(msg.find("privilege"), std::string::npos) << msg;
}

}  // namespace
}  // namespace lamina
