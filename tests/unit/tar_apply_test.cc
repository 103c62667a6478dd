// ApplyTar on real tar streams built with libarchive (tests/support/tar_builder.h).

#include <fcntl.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "common/fd.h"
#include "common/fs.h"
#include "common/hash.h"
#include "drivers/format.h"
#include "drivers/tar.h"
#include "tests/support/conformance_userns.h"
#include "tests/support/tar_builder.h"
#include "tests/support/test_util.h"

namespace lamina {
namespace {

using test::TarBuilder;
using test::TarCompression;
using test::TarEntry;
using test::TempDir;

class TarApplyTest : public ::testing::Test {
 protected:
  // Writes `tar` to a file and applies it into target/.
  Result<ApplyResult> ApplyBytes(const std::string& tar, const ApplyOptions& options = {}) {
    std::string file = tmp_.Sub("layer.tar");
    test::WriteTarFile(file, tar);
    auto fd = Open(file, O_RDONLY);
    if (!fd) return Fail(fd.error());
    return ApplyTar(fd->get(), target_, options);
  }
  std::string T(const std::string& rel) const { return target_ + "/" + rel; }
  struct stat Lstat(const std::string& rel) const {
    struct stat st = {};
    EXPECT_EQ(::lstat(T(rel).c_str(), &st), 0) << rel << ": " << std::strerror(errno);
    return st;
  }
  bool Exists(const std::string& rel) const { return PathExists(T(rel)); }

  void SetUp() override { ASSERT_TRUE(MakeDirs(target_).has_value()); }

  TempDir tmp_{"tar-apply"};
  std::string target_ = tmp_.Sub("target");
};

TEST_F(TarApplyTest, RegularFilesDirsAndMetadata) {
  TarBuilder b;
  b.Dir("etc/", 0750);
  b.Add({.path = "etc/passwd",
         .data = "root:x:0:0\n",
         .mode = 0640,
         .uid = 12,
         .gid = 34,
         .mtime = 1600000000,
         .mtime_nsec = 123456789});
  b.Add({.path = "bin/su", .data = "ELF", .mode = 04755});
  auto res = ApplyBytes(b.Finish());
  ASSERT_TRUE(res.has_value()) << res.error().message();
  EXPECT_EQ(res->stats.entries, 3u);
  EXPECT_EQ(res->stats.bytes, 14u);
  EXPECT_EQ(test::ReadFileOrDie(T("etc/passwd")), "root:x:0:0\n");
  auto st = Lstat("etc/passwd");
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  if (test::IsRoot()) {
    EXPECT_EQ(st.st_uid, 12u);
    EXPECT_EQ(st.st_gid, 34u);
  }
  EXPECT_EQ(st.st_mtim.tv_sec, 1600000000);
  EXPECT_EQ(st.st_mtim.tv_nsec, 123456789);
  EXPECT_EQ(Lstat("bin/su").st_mode & 07777, 04755u);
  // Directory times are set after the children were written.
  EXPECT_EQ(Lstat("etc").st_mtim.tv_sec, 1700000000);
  EXPECT_EQ(Lstat("etc").st_mode & 07777, 0750u);
  // "bin" had no entry of its own: made on the way.
  EXPECT_TRUE(S_ISDIR(Lstat("bin").st_mode));
}

TEST_F(TarApplyTest, SymlinksHardlinksFifosAndDevices) {
  TarBuilder b;
  b.File("a", "shared");
  b.Hardlink("b", "a");
  b.Hardlink("a", "a");  // a link to itself changes nothing
  b.Symlink("s", "/does/not/matter");
  b.Fifo("p", 0600);
  if (test::IsRoot()) b.CharDev("null", 1, 3);
  auto res = ApplyBytes(b.Finish());
  ASSERT_TRUE(res.has_value()) << res.error().message();
  EXPECT_EQ(Lstat("a").st_ino, Lstat("b").st_ino);
  EXPECT_EQ(Lstat("a").st_nlink, 2u);
  char buf[64] = {};
  ASSERT_GT(::readlink(T("s").c_str(), buf, sizeof(buf) - 1), 0);
  EXPECT_STREQ(buf, "/does/not/matter");
  EXPECT_TRUE(S_ISFIFO(Lstat("p").st_mode));
  EXPECT_EQ(Lstat("p").st_mode & 07777, 0600u);
  if (test::IsRoot()) {
    auto st = Lstat("null");
    EXPECT_TRUE(S_ISCHR(st.st_mode));
    EXPECT_EQ(major(st.st_rdev), 1u);
    EXPECT_EQ(minor(st.st_rdev), 3u);
  }
}

TEST_F(TarApplyTest, LaterEntryReplacesEarlierOne) {
  TarBuilder b;
  b.Dir("d/");
  b.File("d/x", "x");
  b.File("f", "file");
  b.Symlink("d", "elsewhere");  // a non-dir replaces a whole directory
  b.Dir("f/");                  // a dir replaces a file
  b.Dir("f/", 0700);            // a dir over a dir: metadata only
  b.File("f/in", "in");
  auto res = ApplyBytes(b.Finish());
  ASSERT_TRUE(res.has_value()) << res.error().message();
  EXPECT_TRUE(S_ISLNK(Lstat("d").st_mode));
  EXPECT_TRUE(S_ISDIR(Lstat("f").st_mode));
  EXPECT_EQ(Lstat("f").st_mode & 07777, 0700u);
  EXPECT_EQ(test::ReadFileOrDie(T("f/in")), "in");
}

TEST_F(TarApplyTest, XattrsFromPaxHeaders) {
  TarBuilder b;
  b.Add({.path = "f", .data = "x", .xattrs = {{"user.test", "value"}, {"trusted.mine", "t"}}});
  // A tar must not forge the union format's own markers.
  b.Add({.path = "d",
         .type = TarEntry::Type::kDir,
         .mode = 0755,
         .xattrs = {{"trusted.overlay.opaque", "y"}}});
  auto res = ApplyBytes(b.Finish());
  ASSERT_TRUE(res.has_value()) << res.error().message();
  auto v = GetXattr(T("f"), "user.test");
  ASSERT_TRUE(v.has_value()) << v.error().message();
  EXPECT_EQ(*v, "value");
  if (test::IsRoot()) {
    auto t = GetXattr(T("f"), "trusted.mine");
    ASSERT_TRUE(t.has_value()) << t.error().message();
    EXPECT_EQ(*t, "t");
  }
  EXPECT_FALSE(GetXattr(T("d"), "trusted.overlay.opaque").has_value());
}

TEST_F(TarApplyTest, RootlessOwnershipGoesToOverrideStat) {
  TarBuilder b;
  b.Add({.path = "f", .data = "x", .mode = 04750, .uid = 1000, .gid = 2000});
  ApplyOptions options;
  options.same_owner = false;
  auto res = ApplyBytes(b.Finish(), options);
  ASSERT_TRUE(res.has_value()) << res.error().message();
  auto v = GetXattr(T("f"), std::string(kOverrideStatXattr));
  ASSERT_TRUE(v.has_value()) << v.error().message();
  EXPECT_EQ(*v, "1000:2000:04750");
  EXPECT_EQ(Lstat("f").st_uid, ::geteuid());
}

TEST_F(TarApplyTest, DiffIdIsSha256OfUncompressedStream) {
  TarBuilder b;
  b.Dir("d/");
  b.File("d/data", std::string(300000, 'z') + "tail");
  std::string plain = b.Finish();
  std::string expected = Sha256Hex(plain);
  for (auto c : {TarCompression::kNone, TarCompression::kGzip, TarCompression::kZstd,
                 TarCompression::kBzip2, TarCompression::kXz}) {
    SCOPED_TRACE(static_cast<int>(c));
    ASSERT_TRUE(RemoveTree(target_).has_value());
    ASSERT_TRUE(MakeDirs(target_).has_value());
    auto res = ApplyBytes(test::Compress(plain, c));
    ASSERT_TRUE(res.has_value()) << res.error().message();
    EXPECT_EQ(res->diff_id, expected);
    EXPECT_EQ(test::ReadFileOrDie(T("d/data")).size(), 300004u);
  }
}

TEST_F(TarApplyTest, DiffIdMatchesSha256sumOfGnuTar) {
  std::string src = tmp_.Sub("src");
  ASSERT_TRUE(MakeDirs(src + "/sub").has_value());
  test::WriteFile(src + "/sub/file", "hello");
  std::string tar_file = tmp_.Sub("gnu.tar");
  auto r = test::Run({"tar", "-C", src, "-cf", tar_file, "."});
  ASSERT_EQ(r.status, 0) << r.err;
  auto sum = test::Run({"sha256sum", tar_file});
  ASSERT_EQ(sum.status, 0) << sum.err;
  auto fd = Open(tar_file, O_RDONLY);
  ASSERT_TRUE(fd.has_value());
  auto res = ApplyTar(fd->get(), target_, {});
  ASSERT_TRUE(res.has_value()) << res.error().message();
  EXPECT_EQ(res->diff_id, sum.out.substr(0, 64));
  EXPECT_EQ(test::ReadFileOrDie(T("sub/file")), "hello");
}

TEST_F(TarApplyTest, SparseFilesFromGnuTar) {
  std::string src = tmp_.Sub("sparse-src");
  ASSERT_TRUE(MakeDirs(src).has_value());
  {
    Fd fd = Open(src + "/holes", O_WRONLY | O_CREAT, 0644).value();
    ASSERT_EQ(::pwrite(fd.get(), "data", 4, 5 << 20), 4);
    ASSERT_EQ(::ftruncate(fd.get(), 10 << 20), 0);
  }
  for (const char* format : {"--format=pax", "--format=gnu"}) {
    SCOPED_TRACE(format);
    std::string tar_file = tmp_.Sub("sparse.tar");
    auto r = test::Run({"tar", format, "--sparse", "-C", src, "-cf", tar_file, "holes"});
    ASSERT_EQ(r.status, 0) << r.err;
    ASSERT_TRUE(RemoveTree(target_).has_value());
    ASSERT_TRUE(MakeDirs(target_).has_value());
    Fd fd = Open(tar_file, O_RDONLY).value();
    auto res = ApplyTar(fd.get(), target_, {});
    ASSERT_TRUE(res.has_value()) << res.error().message();
    auto st = Lstat("holes");
    EXPECT_EQ(st.st_size, 10 << 20);
    EXPECT_LT(st.st_blocks * 512, 1 << 20) << "holes were filled";
    std::string data = test::ReadFileOrDie(T("holes"));
    ASSERT_EQ(data.size(), size_t{10} << 20);
    EXPECT_EQ(data.substr(5 << 20, 4), "data");
    EXPECT_EQ(data.find_first_not_of('\0'), size_t{5} << 20);
  }
}

TEST_F(TarApplyTest, WhiteoutsInUnionMode) {
  TarBuilder b;
  b.Dir("d/");
  b.File("d/.wh.gone", "");
  b.File("d/.wh..wh..opq", "");
  b.File("d/kept", "k");
  b.File(".wh..wh.plnk", "");  // reserved meta name: skipped
  auto res = ApplyBytes(b.Finish());
  ASSERT_TRUE(res.has_value()) << res.error().message();
  EXPECT_FALSE(Exists("d/.wh..wh..opq"));
  EXPECT_FALSE(Exists(".wh..wh.plnk"));
  Fd dir = Open(T("d"), O_RDONLY | O_DIRECTORY).value();
  auto opaque = IsOpaqueDir(dir.get());
  ASSERT_TRUE(opaque.has_value());
  EXPECT_TRUE(*opaque);
  EXPECT_EQ(*GetXattr(T("d"), "trusted.overlay.opaque"), "y");
  struct stat st;
  if (::lstat(T("d/gone").c_str(), &st) == 0) {
    EXPECT_TRUE(IsWhiteoutStat(st));
  } else {
    EXPECT_TRUE(Exists("d/.wh.gone"));  // mknod refused: file form
  }
}

TEST_F(TarApplyTest, UserNamespaceOpaqueXattr) {
  TarBuilder b;
  b.Dir("d/");
  b.File("d/.wh..wh..opq", "");
  ApplyOptions options;
  options.xattr_ns = XattrNamespace::kUser;
  auto res = ApplyBytes(b.Finish(), options);
  ASSERT_TRUE(res.has_value()) << res.error().message();
  EXPECT_EQ(*GetXattr(T("d"), "user.overlay.opaque"), "y");
}

TEST_F(TarApplyTest, WhiteoutsInFullTreeMode) {
  // The parent's full tree.
  ASSERT_TRUE(MakeDirs(T("keep/sub")).has_value());
  ASSERT_TRUE(MakeDirs(T("gone/deep")).has_value());
  ASSERT_TRUE(MakeDirs(T("opq/old/deeper")).has_value());
  ASSERT_TRUE(MakeDirs(T("opq/both")).has_value());
  test::WriteFile(T("gone/deep/f"), "x");
  test::WriteFile(T("opq/old/deeper/f"), "x");
  test::WriteFile(T("opq/both/old"), "x");
  test::WriteFile(T("opq/stale"), "x");
  test::WriteFile(T("keep/sub/f"), "x");

  TarBuilder b;
  b.File(".wh.gone", "");
  b.Dir("opq/");
  b.File("opq/+early", "made before the marker");
  b.Dir("opq/both/");
  b.File("opq/both/new", "n");
  b.File("opq/.wh..wh..opq", "");
  b.File("opq/late", "l");
  ApplyOptions options;
  options.whiteouts = WhiteoutMode::kFullTree;
  auto res = ApplyBytes(b.Finish(), options);
  ASSERT_TRUE(res.has_value()) << res.error().message();
  EXPECT_FALSE(Exists("gone"));
  EXPECT_FALSE(Exists(".wh.gone"));
  EXPECT_TRUE(Exists("keep/sub/f"));
  EXPECT_FALSE(Exists("opq/old"));
  EXPECT_FALSE(Exists("opq/stale"));
  EXPECT_FALSE(Exists("opq/both/old"));
  EXPECT_FALSE(Exists("opq/.wh..wh..opq"));
  EXPECT_TRUE(Exists("opq/+early"));
  EXPECT_TRUE(Exists("opq/both/new"));
  EXPECT_TRUE(Exists("opq/late"));
  EXPECT_FALSE(GetXattr(T("opq"), "trusted.overlay.opaque").has_value());
}

TEST_F(TarApplyTest, LeadingSlashIsStripped) {
  TarBuilder b;
  b.File("/abs/file", "inside");
  b.File("./dot/file", "dot");
  auto res = ApplyBytes(b.Finish());
  ASSERT_TRUE(res.has_value()) << res.error().message();
  EXPECT_EQ(test::ReadFileOrDie(T("abs/file")), "inside");
  EXPECT_EQ(test::ReadFileOrDie(T("dot/file")), "dot");
}

TEST_F(TarApplyTest, ReadOnlyDirectoriesGetTheirModeLast) {
  TarBuilder b;
  b.Dir("ro/", 0555);
  b.File("ro/inside", "x", 0444);
  b.Dir("ro/sub/", 0500);
  b.File("ro/sub/deeper", "y");
  auto res = ApplyBytes(b.Finish());
  ASSERT_TRUE(res.has_value()) << res.error().message();
  EXPECT_EQ(Lstat("ro").st_mode & 07777, 0555u);
  EXPECT_EQ(Lstat("ro/sub").st_mode & 07777, 0500u);
  EXPECT_EQ(test::ReadFileOrDie(T("ro/sub/deeper")), "y");
}

// Rootless: an unprivileged user applies a layer with ownership it cannot
// set, read-only directories, whiteouts (mknod refused) and opaque dirs.
TEST_F(TarApplyTest, RootlessApplyAsNobody) {
  if (!test::IsRoot()) GTEST_SKIP() << "needs root to switch to an unprivileged user";
  struct passwd* nobody = ::getpwnam("nobody");
  if (nobody == nullptr) GTEST_SKIP() << "no user 'nobody' on this host";
  uid_t uid = nobody->pw_uid;
  gid_t gid = nobody->pw_gid;
  ASSERT_EQ(::chown(target_.c_str(), uid, gid), 0);
  TarBuilder b;
  b.Dir("ro/", 0555);
  b.Add({.path = "ro/owned", .data = "x", .mode = 04755, .uid = 0, .gid = 0});
  b.File("ro/.wh.gone", "");
  b.Dir("opq/");
  b.File("opq/.wh..wh..opq", "");
  std::string file = tmp_.Sub("layer.tar");
  test::WriteTarFile(file, b.Finish());

  auto child = test::RunAsUser(uid, gid, [&]() -> std::string {
    auto fd = Open(file, O_RDONLY);
    if (!fd) return fd.error().message();
    ApplyOptions options;
    options.same_owner = false;
    options.xattr_ns = XattrNamespace::kUser;
    auto res = ApplyTar(fd->get(), target_, options);
    return res ? "ok" : res.error().message();
  });
  ASSERT_EQ(child.status, 0) << "could not switch to nobody";
  ASSERT_EQ(child.output, "ok");
  EXPECT_EQ(Lstat("ro").st_mode & 07777, 0555u);
  EXPECT_EQ(Lstat("ro/owned").st_uid, uid);
  EXPECT_EQ(*GetXattr(T("ro/owned"), std::string(kOverrideStatXattr)), "0:0:04755");
  // Linux >= 5.8 lets anyone mknod a 0/0 whiteout; older ones: the file form.
  struct stat wh;
  if (::lstat(T("ro/gone").c_str(), &wh) == 0) {
    EXPECT_TRUE(IsWhiteoutStat(wh));
  } else {
    EXPECT_TRUE(Exists("ro/.wh.gone"));
  }
  EXPECT_EQ(*GetXattr(T("opq"), "user.overlay.opaque"), "y");
}

// Root of a user namespace that maps only itself (a rootless user without
// sub-ids): chown to an unmapped id is EINVAL, and the owner is recorded
// in override_stat instead, as for a rootless apply; mapped ids are set.
TEST_F(TarApplyTest, UnmappedOwnersInAUserNamespaceGoToOverrideStat) {
  std::string why = test::RootlessUnavailableReason();
  if (!why.empty()) GTEST_SKIP() << why;
  uid_t uid = test::TestUserUid();
  ASSERT_EQ(::chown(target_.c_str(), uid, uid), 0);
  TarBuilder b;
  b.Add({.path = "mapped", .data = "x", .mode = 0640, .uid = 0, .gid = 0});
  b.Add({.path = "unmapped", .data = "y", .mode = 04750, .uid = 1234, .gid = 5678});
  std::string file = tmp_.Sub("layer.tar");
  test::WriteTarFile(file, b.Finish());
  auto child = test::RunInUserNamespace(uid, uid, [&]() -> std::string {
    auto fd = Open(file, O_RDONLY);
    if (!fd) return fd.error().message();
    ApplyOptions options;
    options.xattr_ns = XattrNamespace::kUser;
    options.same_owner = true;
    auto res = ApplyTar(fd->get(), target_, options);
    return res ? "ok" : res.error().message();
  });
  ASSERT_TRUE(child.setup_error.empty()) << child.setup_error;
  ASSERT_EQ(child.output, "ok");
  EXPECT_EQ(Lstat("mapped").st_uid, uid);
  EXPECT_FALSE(GetXattr(T("mapped"), std::string(kOverrideStatXattr)).has_value());
  EXPECT_EQ(Lstat("unmapped").st_uid, uid);
  EXPECT_EQ(*GetXattr(T("unmapped"), std::string(kOverrideStatXattr)), "1234:5678:04750");
}

TEST_F(TarApplyTest, EmptyLayersApply) {
  // Only end-of-archive blocks: what image builders write for ENV-only steps.
  std::string empty = TarBuilder().Finish();
  auto res = ApplyBytes(empty);
  ASSERT_TRUE(res.has_value()) << res.error().message();
  EXPECT_EQ(res->stats.entries, 0u);
  EXPECT_EQ(res->diff_id, Sha256Hex(empty));
  auto gnu = ApplyBytes(std::string(10240, '\0'));
  ASSERT_TRUE(gnu.has_value()) << gnu.error().message();
  EXPECT_EQ(gnu->diff_id, Sha256Hex(std::string(10240, '\0')));
}

TEST_F(TarApplyTest, CorruptInputIsAClearError) {
  auto res = ApplyBytes(std::string(1024, 'x'));
  ASSERT_FALSE(res.has_value());
  EXPECT_NE(res.error().message().find("layer tar"), std::string::npos) << res.error().message();
  auto empty = ApplyBytes("");
  ASSERT_FALSE(empty.has_value());
}

}  // namespace
}  // namespace lamina
