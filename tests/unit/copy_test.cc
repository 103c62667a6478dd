#include "drivers/copy.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <string>

#include "common/fd.h"
#include "common/fs.h"
#include "common/hash.h"
#include "common/scope_guard.h"
#include "drivers/host.h"
#include "drivers/layer_home.h"
#include "tests/support/loop_fs.h"
#include "tests/support/test_util.h"

namespace lamina {
namespace {

using test::LoopFs;
using test::TempDir;

constexpr off_t kMiB = 1 << 20;

// A 16 MiB file: 64 KiB of data at 0 and at 8 MiB, holes elsewhere
// (including the tail).
void MakeSparse(const std::string& path) {
  auto fd = Open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_TRUE(fd) << fd.error().message();
  std::string block(64 << 10, 'x');
  ASSERT_EQ(::pwrite(fd->get(), block.data(), block.size(), 0), ssize_t(block.size()));
  std::string other(64 << 10, 'y');
  ASSERT_EQ(::pwrite(fd->get(), other.data(), other.size(), 8 * kMiB), ssize_t(other.size()));
  ASSERT_EQ(::ftruncate(fd->get(), 16 * kMiB), 0);
}

void MakeDense(const std::string& path, size_t bytes, char c = 'd') {
  auto fd = Open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_TRUE(fd) << fd.error().message();
  std::string chunk(1 << 20, c);
  for (size_t i = 0; i < chunk.size(); i += 4096) chunk[i] = static_cast<char>(i / 4096);
  for (size_t done = 0; done < bytes;) {
    size_t n = std::min(chunk.size(), bytes - done);
    ASSERT_EQ(::write(fd->get(), chunk.data(), n), ssize_t(n));
    done += n;
  }
}

struct CopyOutcome {
  CopyMethod method;
  struct stat st;
};

// Copies src to dst with CopyFileData; fails the test on error.
std::optional<CopyOutcome> CopyAndCheck(const std::string& src, const std::string& dst,
                                        const CopyOptions& options = {}) {
  auto in = Open(src, O_RDONLY);
  EXPECT_TRUE(in) << in.error().message();
  if (!in) return std::nullopt;
  auto out = Open(dst, O_WRONLY | O_CREAT | O_EXCL, 0644);
  EXPECT_TRUE(out) << out.error().message();
  if (!out) return std::nullopt;
  struct stat st;
  EXPECT_EQ(::fstat(in->get(), &st), 0);
  auto method = CopyFileData(in->get(), out->get(), static_cast<uint64_t>(st.st_size), options);
  EXPECT_TRUE(method) << method.error().message();
  if (!method) return std::nullopt;
  EXPECT_EQ(::fsync(out->get()), 0);
  struct stat dst_st;
  EXPECT_EQ(::fstat(out->get(), &dst_st), 0);
  EXPECT_EQ(dst_st.st_size, st.st_size);
  auto dst_read = Open(dst, O_RDONLY);
  EXPECT_TRUE(dst_read);
  EXPECT_EQ(*Xxh3File(in->get()), *Xxh3File(dst_read->get()));
  return CopyOutcome{*method, dst_st};
}

void ExpectHolesKept(const std::string& dst) {
  auto fd = Open(dst, O_RDONLY);
  ASSERT_TRUE(fd);
  struct stat st;
  ASSERT_EQ(::fstat(fd->get(), &st), 0);
  // 128 KiB of data in a 16 MiB file: far fewer blocks than a dense copy.
  EXPECT_LT(st.st_blocks * 512, 2 * kMiB) << "holes were filled";
  EXPECT_EQ(::lseek(fd->get(), 0, SEEK_HOLE), 64 << 10);
  EXPECT_EQ(::lseek(fd->get(), 64 << 10, SEEK_DATA), 8 * kMiB);
  EXPECT_EQ(::lseek(fd->get(), 8 * kMiB, SEEK_HOLE), 8 * kMiB + (64 << 10));
  EXPECT_EQ(::lseek(fd->get(), 8 * kMiB + (64 << 10), SEEK_DATA), -1);
  EXPECT_EQ(errno, ENXIO);
}

TEST(CopyFileDataTest, DenseFileOnDiskUsesCopyFileRange) {
  TempDir dir("copy");
  auto fs_type = FilesystemType(dir.path());
  ASSERT_TRUE(fs_type);
  if (*fs_type != "ext4") GTEST_SKIP() << "needs ext4 under $LAMINA_TEST_TMP, found " << *fs_type;
  MakeDense(dir.Sub("a"), 3 * kMiB + 123);
  auto outcome = CopyAndCheck(dir.Sub("a"), dir.Sub("b"));
  ASSERT_TRUE(outcome);
  EXPECT_EQ(outcome->method, CopyMethod::kCopyFileRange);
}

TEST(CopyFileDataTest, HolesStayHolesWithCopyFileRange) {
  TempDir dir("copy");
  MakeSparse(dir.Sub("a"));
  auto outcome = CopyAndCheck(dir.Sub("a"), dir.Sub("b"));
  ASSERT_TRUE(outcome);
  ExpectHolesKept(dir.Sub("b"));
}

// Write-behind (fuse copy-up) copies in chunks and starts their writeback:
// the same bytes and holes come out, with both copy methods.
TEST(CopyFileDataTest, WriteBehindCopiesTheSame) {
  TempDir dir("copy");
  CopyOptions options;
  options.write_behind = true;
  // More than two chunks, every MiB different, so a misplaced chunk shows.
  auto make = [](const std::string& path, size_t bytes) {
    auto fd = Open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_TRUE(fd) << fd.error().message();
    for (size_t done = 0, mib = 0; done < bytes; ++mib) {
      std::string chunk(std::min<size_t>(kMiB, bytes - done), static_cast<char>('a' + mib % 26));
      ASSERT_EQ(::write(fd->get(), chunk.data(), chunk.size()), ssize_t(chunk.size()));
      done += chunk.size();
    }
  };
  make(dir.Sub("dense"), 20 * kMiB + 4321);
  auto dense = CopyAndCheck(dir.Sub("dense"), dir.Sub("dense2"), options);
  ASSERT_TRUE(dense);
  EXPECT_NE(dense->method, CopyMethod::kReadWrite);
  MakeSparse(dir.Sub("sparse"));
  ASSERT_TRUE(CopyAndCheck(dir.Sub("sparse"), dir.Sub("sparse2"), options));
  ExpectHolesKept(dir.Sub("sparse2"));
  // From another filesystem, where copy_file_range may give way to read/write.
  if (::access("/dev/shm", W_OK) != 0) return;
  std::string shm = "/dev/shm/lamina-copy-" + std::to_string(::getpid());
  make(shm, 9 * kMiB + 17);
  auto across = CopyAndCheck(shm, dir.Sub("across"), options);
  ::unlink(shm.c_str());
  ASSERT_TRUE(across);
}

TEST(CopyFileDataTest, EmptyAndAllHoleFiles) {
  TempDir dir("copy");
  test::WriteFile(dir.Sub("empty"), "");
  {
    auto fd = Open(dir.Sub("hole"), O_WRONLY | O_CREAT, 0644);
    ASSERT_TRUE(fd);
    ASSERT_EQ(::ftruncate(fd->get(), 5 * kMiB), 0);
  }
  ASSERT_TRUE(CopyAndCheck(dir.Sub("empty"), dir.Sub("empty2")));
  auto outcome = CopyAndCheck(dir.Sub("hole"), dir.Sub("hole2"));
  ASSERT_TRUE(outcome);
  EXPECT_EQ(outcome->st.st_blocks, 0);
}

TEST(CopyFileDataTest, ResultHasExactlySizeBytes) {
  TempDir dir("copy");
  MakeDense(dir.Sub("a"), 100000);
  auto in = Open(dir.Sub("a"), O_RDONLY);
  ASSERT_TRUE(in);
  // Shorter than the file (it grew after the caller's stat) and longer (it shrank).
  for (uint64_t size : {uint64_t{4096}, uint64_t{200000}}) {
    std::string dst = dir.Sub("b" + std::to_string(size));
    auto out = Open(dst, O_WRONLY | O_CREAT | O_EXCL, 0644);
    ASSERT_TRUE(out);
    ASSERT_TRUE(CopyFileData(in->get(), out->get(), size));
    struct stat st;
    ASSERT_EQ(::fstat(out->get(), &st), 0);
    EXPECT_EQ(static_cast<uint64_t>(st.st_size), size);
  }
}

TEST(CopyFileDataTest, AcrossFilesystemsFallsBackToReadWrite) {
  TempDir dir("copy");
  if (::access("/dev/shm", W_OK) != 0) GTEST_SKIP() << "no writable /dev/shm";
  auto shm_type = FilesystemType("/dev/shm");
  ASSERT_TRUE(shm_type);
  if (*shm_type != "tmpfs") GTEST_SKIP() << "/dev/shm is " << *shm_type;
  std::string src = "/dev/shm/lamina-copy-test-" + std::to_string(::getpid());
  auto cleanup = Defer([&] { ::unlink(src.c_str()); });
  MakeSparse(src);
  auto outcome = CopyAndCheck(src, dir.Sub("b"));
  ASSERT_TRUE(outcome);
  // Since Linux 5.19 copy_file_range refuses (EXDEV) between filesystems of
  // different types, so this is the read/write path.
  EXPECT_EQ(outcome->method, CopyMethod::kReadWrite);
  ExpectHolesKept(dir.Sub("b"));
}

TEST(CopyFileDataTest, CloneOnXfsReflink) {
  auto fs = LoopFs::Make({.type = "xfs", .size_mib = 320});
  if (!fs) GTEST_SKIP() << fs.error();
  MakeDense((*fs)->Sub("a"), 8 * kMiB);
  MakeSparse((*fs)->Sub("s"));
  auto outcome = CopyAndCheck((*fs)->Sub("a"), (*fs)->Sub("b"));
  ASSERT_TRUE(outcome);
  EXPECT_EQ(outcome->method, CopyMethod::kClone);
  auto sparse = CopyAndCheck((*fs)->Sub("s"), (*fs)->Sub("s2"));
  ASSERT_TRUE(sparse);
  EXPECT_EQ(sparse->method, CopyMethod::kClone);
  ExpectHolesKept((*fs)->Sub("s2"));
  // Told not to try FICLONE, it copies.
  CopyOptions no_clone;
  no_clone.try_clone = false;
  auto copied = CopyAndCheck((*fs)->Sub("a"), (*fs)->Sub("c"), no_clone);
  ASSERT_TRUE(copied);
  EXPECT_EQ(copied->method, CopyMethod::kCopyFileRange);
}

TEST(CopyFileDataTest, CopyFileRangeOnExt4LoopFs) {
  auto fs = LoopFs::Make({.type = "ext4", .size_mib = 64});
  if (!fs) GTEST_SKIP() << fs.error();
  MakeDense((*fs)->Sub("a"), 4 * kMiB);
  MakeSparse((*fs)->Sub("s"));
  auto outcome = CopyAndCheck((*fs)->Sub("a"), (*fs)->Sub("b"));
  ASSERT_TRUE(outcome);
  EXPECT_EQ(outcome->method, CopyMethod::kCopyFileRange);
  ASSERT_TRUE(CopyAndCheck((*fs)->Sub("s"), (*fs)->Sub("s2")));
  ExpectHolesKept((*fs)->Sub("s2"));
}

TEST(CopyFileDataTest, EnospcKeepsErrno) {
  auto fs = LoopFs::Make({.type = "ext4", .size_mib = 32});
  if (!fs) GTEST_SKIP() << fs.error();
  TempDir dir("copy");
  MakeDense(dir.Sub("big"), 48 * kMiB);
  auto in = Open(dir.Sub("big"), O_RDONLY);
  ASSERT_TRUE(in);
  auto out = Open((*fs)->Sub("big"), O_WRONLY | O_CREAT | O_EXCL, 0644);
  ASSERT_TRUE(out);
  auto copied = CopyFileData(in->get(), out->get(), 48 * kMiB);
  ASSERT_FALSE(copied);
  EXPECT_EQ(copied.error().code(), ENOSPC) << copied.error().message();
}

TEST(CopyMethodTest, Names) {
  EXPECT_EQ(CopyMethodName(CopyMethod::kClone), "ficlone");
  EXPECT_EQ(CopyMethodName(CopyMethod::kCopyFileRange), "copy_file_range");
  EXPECT_EQ(CopyMethodName(CopyMethod::kReadWrite), "read_write");
}

// ---- CopyMetadata ----

struct stat Lstat(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st;
}

class CopyMetadataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto fd = OpenDirPath(dst_.path());
    ASSERT_TRUE(fd);
    dst_fd_ = std::move(*fd);
  }
  void SetTimes(const std::string& path, long sec, long nsec) {
    struct timespec ts[2] = {{sec - 100, nsec + 1}, {sec, nsec}};
    ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW), 0);
  }
  TempDir src_{"meta-src"};
  TempDir dst_{"meta-dst"};
  Fd dst_fd_;
};

TEST_F(CopyMetadataTest, RegularFileOwnerModeXattrsTimes) {
  if (!test::IsRoot()) GTEST_SKIP() << "chown and trusted.* need root";
  std::string s = src_.Sub("f");
  test::WriteFile(s, "x");
  ASSERT_EQ(::chown(s.c_str(), 1234, 5678), 0);
  ASSERT_EQ(::chmod(s.c_str(), 04751), 0);
  ASSERT_EQ(::lsetxattr(s.c_str(), "user.a", "1", 1, 0), 0);
  ASSERT_EQ(::lsetxattr(s.c_str(), "trusted.t", "two", 3, 0), 0);
  ASSERT_EQ(::lsetxattr(s.c_str(), "trusted.overlay.opaque", "y", 1, 0), 0);
  SetTimes(s, 1600000000, 123456789);
  test::WriteFile(dst_.Sub("f"), "x");
  struct stat st = Lstat(s);
  ASSERT_TRUE(CopyMetadata(s, st, dst_fd_.get(), "f", {}));
  struct stat d = Lstat(dst_.Sub("f"));
  EXPECT_EQ(d.st_uid, 1234u);
  EXPECT_EQ(d.st_gid, 5678u);
  EXPECT_EQ(d.st_mode & 07777, 04751u) << "set-id bits must survive the chown";
  EXPECT_EQ(d.st_mtim.tv_sec, 1600000000);
  EXPECT_EQ(d.st_mtim.tv_nsec, 123456789);
  EXPECT_EQ(d.st_atim.tv_sec, 1600000000 - 100);
  EXPECT_EQ(d.st_atim.tv_nsec, 123456790);
  EXPECT_EQ(*GetXattr(dst_.Sub("f"), "user.a"), "1");
  EXPECT_EQ(*GetXattr(dst_.Sub("f"), "trusted.t"), "two");
  EXPECT_EQ(*GetXattr(dst_.Sub("f"), "trusted.overlay.opaque"), "y");

  // The union format's own xattrs can be left out.
  test::WriteFile(dst_.Sub("g"), "x");
  ASSERT_TRUE(CopyMetadata(s, st, dst_fd_.get(), "g", {.skip_internal_xattrs = true}));
  auto opaque = GetXattr(dst_.Sub("g"), "trusted.overlay.opaque");
  ASSERT_FALSE(opaque);
  EXPECT_EQ(opaque.error().code(), ENODATA);
  EXPECT_EQ(*GetXattr(dst_.Sub("g"), "trusted.t"), "two");
}

// CopyMetadataFd: the same result through fds, also when some of it is
// already in place (owner, mode) and when set-id bits or an ACL interact.
TEST_F(CopyMetadataTest, FdVariantOwnerModeXattrsTimes) {
  if (!test::IsRoot()) GTEST_SKIP() << "chown and trusted.* need root";
  struct Case {
    uid_t uid;
    gid_t gid;
    mode_t mode;
    mode_t created;  // mode the copy starts with
  };
  for (const Case& c : {Case{1234, 5678, 04751, 0600}, Case{0, 0, 0644, 0644},
                        Case{0, 0, 02755, 0755}, Case{7, 0, 0640, 0640}}) {
    SCOPED_TRACE(std::to_string(c.uid) + ":" + std::to_string(c.gid) + " " +
                 std::to_string(c.mode));
    std::string s = src_.Sub("f");
    std::string d = dst_.Sub("f");
    test::WriteFile(s, "x");
    ASSERT_EQ(::chown(s.c_str(), c.uid, c.gid), 0);
    ASSERT_EQ(::chmod(s.c_str(), c.mode), 0);
    ASSERT_EQ(::lsetxattr(s.c_str(), "user.a", "1", 1, 0), 0);
    ASSERT_EQ(::lsetxattr(s.c_str(), "trusted.t", "two", 3, 0), 0);
    SetTimes(s, 1600000000, 123456789);
    test::WriteFile(d, "x");
    ASSERT_EQ(::chmod(d.c_str(), c.created), 0);
    auto src_fd = Open(s, O_RDONLY);
    auto dst_fd = Open(d, O_WRONLY);
    ASSERT_TRUE(src_fd && dst_fd);
    ASSERT_TRUE(CopyMetadataFd(src_fd->get(), Lstat(s), dst_fd->get(), {}));
    struct stat got = Lstat(d);
    EXPECT_EQ(got.st_uid, c.uid);
    EXPECT_EQ(got.st_gid, c.gid);
    EXPECT_EQ(got.st_mode & 07777, c.mode);
    EXPECT_EQ(got.st_mtim.tv_sec, 1600000000);
    EXPECT_EQ(got.st_mtim.tv_nsec, 123456789);
    EXPECT_EQ(got.st_atim.tv_sec, 1600000000 - 100);
    EXPECT_EQ(*GetXattr(d, "user.a"), "1");
    EXPECT_EQ(*GetXattr(d, "trusted.t"), "two");
    ASSERT_EQ(::unlink(s.c_str()), 0);
    ASSERT_EQ(::unlink(d.c_str()), 0);
  }
}

TEST_F(CopyMetadataTest, FdVariantKeepsModeAfterAnAcl) {
  std::string s = src_.Sub("f");
  std::string d = dst_.Sub("f");
  test::WriteFile(s, "x");
  test::WriteFile(d, "x");
  ASSERT_EQ(::chmod(d.c_str(), 0640), 0);
  // user::rw- user:nobody:rwx group::r-- mask::r-x other::---: the mode's
  // group bits are the mask (r-x) once the ACL is set.
  auto setfacl = test::Run({"setfacl", "-m", "u:65534:rwx,m::r-x", s});
  if (setfacl.status != 0) GTEST_SKIP() << "setfacl failed (no ACL support here?): " << setfacl.err;
  ASSERT_EQ(::chmod(s.c_str(), 0640), 0);  // mask r--: the ACL's mask follows
  auto src_fd = Open(s, O_RDONLY);
  auto dst_fd = Open(d, O_WRONLY);
  ASSERT_TRUE(src_fd && dst_fd);
  ASSERT_TRUE(CopyMetadataFd(src_fd->get(), Lstat(s), dst_fd->get(), {}));
  EXPECT_EQ(Lstat(d).st_mode & 07777, 0640u);
  EXPECT_EQ(*GetXattr(d, "system.posix_acl_access"), *GetXattr(s, "system.posix_acl_access"));
}

TEST_F(CopyMetadataTest, SymlinkIsNeverFollowed) {
  if (!test::IsRoot()) GTEST_SKIP() << "chown needs root";
  test::WriteFile(dst_.Sub("target"), "t");
  ASSERT_EQ(::chmod(dst_.Sub("target").c_str(), 0600), 0);
  std::string s = src_.Sub("l");
  ASSERT_EQ(::symlink("target", s.c_str()), 0);
  ASSERT_EQ(::lchown(s.c_str(), 42, 43), 0);
  ASSERT_EQ(::lsetxattr(s.c_str(), "trusted.l", "v", 1, 0), 0);
  SetTimes(s, 1500000000, 1);
  ASSERT_EQ(::symlink("target", dst_.Sub("l").c_str()), 0);
  struct stat target_before = Lstat(dst_.Sub("target"));
  ASSERT_TRUE(CopyMetadata(s, Lstat(s), dst_fd_.get(), "l", {}));
  struct stat d = Lstat(dst_.Sub("l"));
  EXPECT_EQ(d.st_uid, 42u);
  EXPECT_EQ(d.st_gid, 43u);
  EXPECT_EQ(d.st_mtim.tv_sec, 1500000000);
  EXPECT_EQ(d.st_mtim.tv_nsec, 1);
  EXPECT_EQ(*GetXattr(dst_.Sub("l"), "trusted.l"), "v");
  struct stat target_after = Lstat(dst_.Sub("target"));
  EXPECT_EQ(target_after.st_uid, target_before.st_uid);
  EXPECT_EQ(target_after.st_mode, target_before.st_mode);
  EXPECT_EQ(target_after.st_mtim.tv_sec, target_before.st_mtim.tv_sec);
  EXPECT_FALSE(GetXattr(dst_.Sub("target"), "trusted.l"));
}

TEST_F(CopyMetadataTest, DirectoryAndRootByDot) {
  std::string s = src_.Sub("d");
  ASSERT_EQ(::mkdir(s.c_str(), 0710), 0);
  SetTimes(s, 1400000000, 999999998);
  struct stat st = Lstat(s);
  // "." names the directory dst_dirfd itself.
  ASSERT_TRUE(CopyMetadata(s, st, dst_fd_.get(), ".", {}));
  struct stat d = Lstat(dst_.path());
  EXPECT_EQ(d.st_mode & 07777, 0710u);
  EXPECT_EQ(d.st_mtim.tv_sec, 1400000000);
  EXPECT_EQ(d.st_mtim.tv_nsec, 999999998);
  ASSERT_EQ(::chmod(dst_.path().c_str(), 0755), 0);
}

TEST_F(CopyMetadataTest, MissingTargetIsENOENT) {
  test::WriteFile(src_.Sub("f"), "");
  auto r = CopyMetadata(src_.Sub("f"), Lstat(src_.Sub("f")), dst_fd_.get(), "nope", {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ENOENT);
  EXPECT_NE(r.error().message().find("nope"), std::string::npos) << r.error().message();
}

// As an unprivileged user (a forked child with setresuid), chown to another
// owner fails with EPERM: skipped unless owner_strict; trusted.* is skipped.
TEST_F(CopyMetadataTest, RootlessSkipsOwnerAndTrustedXattrs) {
  if (!test::IsRoot()) GTEST_SKIP() << "needs root to set up and drop privileges";
  const uid_t nobody = 65534;
  std::string s = src_.Sub("f");
  test::WriteFile(s, "x");
  ASSERT_EQ(::lsetxattr(s.c_str(), "trusted.t", "v", 1, 0), 0);
  ASSERT_EQ(::lsetxattr(s.c_str(), "user.u", "w", 1, 0), 0);
  ASSERT_EQ(::chown(s.c_str(), 1, 1), 0);
  ASSERT_EQ(::chmod(src_.path().c_str(), 0755), 0);
  test::WriteFile(dst_.Sub("f"), "x");
  ASSERT_EQ(::chown(dst_.Sub("f").c_str(), nobody, nobody), 0);
  ASSERT_EQ(::chown(dst_.path().c_str(), nobody, nobody), 0);
  struct stat st = Lstat(s);

  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (::setresgid(nobody, nobody, nobody) != 0 || ::setresuid(nobody, nobody, nobody) != 0) {
      ::_exit(10);
    }
    auto lax = CopyMetadata(s, st, dst_fd_.get(), "f", {});
    if (!lax) ::_exit(11);
    auto strict = CopyMetadata(s, st, dst_fd_.get(), "f", {.owner_strict = true});
    if (strict || strict.error().code() != EPERM) ::_exit(12);
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10: setresuid, 11: lax copy failed, 12: strict not EPERM";
  struct stat d = Lstat(dst_.Sub("f"));
  EXPECT_EQ(d.st_uid, nobody);
  EXPECT_EQ(*GetXattr(dst_.Sub("f"), "user.u"), "w");
  EXPECT_FALSE(GetXattr(dst_.Sub("f"), "trusted.t"));
}

}  // namespace
}  // namespace lamina

namespace lamina {
namespace {

// The loop filesystem helper used above: mounted while alive, and the mount,
// the loop device and the image are gone afterwards.
TEST(LoopFsTest, MountsAndCleansUp) {
  std::string image_dir, device;
  {
    auto fs = test::LoopFs::Make({.type = "ext4", .size_mib = 16});
    if (!fs) GTEST_SKIP() << fs.error();
    device = (*fs)->device();
    image_dir = (*fs)->path();
    EXPECT_TRUE(device.starts_with("/dev/loop")) << device;
    EXPECT_EQ(*FilesystemType((*fs)->path()), "ext4");
    auto mounted = IsMountPoint((*fs)->path());
    ASSERT_TRUE(mounted);
    EXPECT_TRUE(*mounted);
    test::WriteFile((*fs)->Sub("x"), "y");
  }
  EXPECT_FALSE(PathExists(image_dir));
  std::string out;
  auto status = RunCommand({"losetup", "-a"}, &out);
  ASSERT_TRUE(status);
  EXPECT_EQ(out.find(image_dir.substr(0, image_dir.size() - 4)), std::string::npos) << out;
}

TEST(LoopFsTest, UnknownTypeIsAReason) {
  auto fs = test::LoopFs::Make({.type = "nosuchfs"});
  ASSERT_FALSE(fs);
  EXPECT_FALSE(fs.error().empty());
}

}  // namespace
}  // namespace lamina
