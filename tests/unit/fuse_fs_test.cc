// The lamina-fuse union filesystem against the kernel overlay (the oracle):
// the same layers are mounted both ways, the same operations run on both,
// and their results, errno values and resulting trees must agree.

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <linux/fs.h>
#include <sched.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "common/fs.h"
#include "common/scope_guard.h"
#include "fuse/config.h"
#include "fuse/union_fs.h"
#include "tests/support/fuse_harness.h"
#include "tests/support/test_util.h"
#include "tests/support/tree_compare.h"

namespace lamina::test {
namespace {

std::string Errno(int e) {
  const char* name = ::strerrorname_np(e);
  return std::string("err:") + (name != nullptr ? name : std::to_string(e));
}
std::string Rc(int r) { return r < 0 ? Errno(errno) : "ok"; }

std::string ReadAll(const std::string& path) {
  auto data = ReadFile(path);
  return data ? *data : Errno(data.error().code());
}

std::string WriteTo(const std::string& path, const std::string& data, int flags) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
  if (fd < 0) return Errno(errno);
  ssize_t n = ::write(fd, data.data(), data.size());
  int saved = errno;
  ::close(fd);
  return n < 0 ? Errno(saved) : "ok";
}

// Sorted names of a directory as readdir shows them through the mount.
std::string List(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return Errno(errno);
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) names.emplace_back(e->d_name);
  ::closedir(d);
  std::sort(names.begin(), names.end());
  std::string out;
  for (auto& n : names) out += n + " ";
  return out;
}

// A log of what a script saw; compared between the kernel and lamina.
using Log = std::vector<std::string>;
using Script = std::function<void(const std::string& root, Log& log)>;

class FuseFsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why = FuseUnavailableReason();
    if (why.empty()) why = OverlayUnavailableReason();
    if (!why.empty()) GTEST_SKIP() << why;
    for (const char* d : {"l1", "l2", "k_upper", "k_work", "k_mnt", "f_upper", "f_work", "f_mnt"}) {
      ASSERT_EQ(::mkdir(tmp_.Sub(d).c_str(), 0755), 0) << d;
    }
  }

  std::string L1(const std::string& rel = "") const { return tmp_.Sub("l1/" + rel); }
  std::string L2(const std::string& rel = "") const { return tmp_.Sub("l2/" + rel); }
  std::string K(const std::string& rel = "") const { return tmp_.Sub("k_mnt/" + rel); }
  std::string F(const std::string& rel = "") const { return tmp_.Sub("f_mnt/" + rel); }

  fuse::FsConfig Config() const {
    return UnionConfig({tmp_.Sub("l1"), tmp_.Sub("l2")}, tmp_.Sub("f_upper"), tmp_.Sub("f_work"),
                       tmp_.Sub("f_mnt"));
  }

  void MountBoth() {
    MountKernel();
    MountFuse();
  }
  void MountKernel() {
    auto k = OverlayMount::Start({tmp_.Sub("l1"), tmp_.Sub("l2")}, tmp_.Sub("k_upper"),
                                 tmp_.Sub("k_work"), tmp_.Sub("k_mnt"),
                                 "index=on,redirect_dir=on,metacopy=off");
    ASSERT_TRUE(k) << k.error().message();
    kernel_ = std::move(*k);
  }
  void MountFuse(fuse::FsConfig config = {}) {
    if (config.mountpoint.empty()) config = Config();
    auto f = FuseMount::Start(config);
    ASSERT_TRUE(f) << f.error().message();
    fuse_ = std::move(*f);
  }
  void RemountBoth() {
    fuse_.reset();
    kernel_.reset();
    MountBoth();
  }

  // Runs `script` on both mounts and expects the same log.
  void Same(const Script& script) {
    Log k, f;
    script(K(), k);
    script(F(), f);
    EXPECT_EQ(k, f);
  }
  void SameTrees() {
    TreeCompareOptions o;
    o.times = false;
    auto diff = CompareTrees(K(), F(), o);
    EXPECT_TRUE(diff.empty()) << ::testing::PrintToString(diff) << "\nkernel:\n"
                              << DescribeTree(K(), o) << "\nlamina:\n"
                              << DescribeTree(F(), o);
  }

  // A small two-layer image: merged dirs, a whiteout, an opaque dir.
  void BuildImage() {
    for (const char* d : {"dir", "dir/sub", "opq", "gone_dir", "empty"}) {
      ASSERT_EQ(::mkdir(L2(d).c_str(), 0755), 0);
    }
    WriteFile(L2("a"), "lower a\n");
    WriteFile(L2("b"), "lower b\n");
    WriteFile(L2("hidden"), "must not show\n");
    WriteFile(L2("dir/x"), "x from l2\n");
    WriteFile(L2("dir/sub/deep"), "deep\n");
    WriteFile(L2("opq/old"), "old\n");
    WriteFile(L2("gone_dir/f"), "f\n");
    ASSERT_EQ(::symlink("a", L2("link").c_str()), 0);
    for (const char* d : {"dir", "opq"}) ASSERT_EQ(::mkdir(L1(d).c_str(), 0755), 0);
    WriteFile(L1("b"), "upper-ish b\n");
    WriteFile(L1("dir/y"), "y from l1\n");
    WriteFile(L1("opq/new"), "new\n");
    ASSERT_EQ(::setxattr(L1("opq").c_str(), "trusted.overlay.opaque", "y", 1, 0), 0);
    ASSERT_EQ(::mknod(L1("hidden").c_str(), S_IFCHR | 0, makedev(0, 0)), 0);
    ASSERT_EQ(::mknod(L1("gone_dir").c_str(), S_IFCHR | 0, makedev(0, 0)), 0);
    ASSERT_EQ(::setxattr(L2("a").c_str(), "user.color", "blue", 4, 0), 0);
  }

  TempDir tmp_{"lamina-fusefs"};
  std::unique_ptr<OverlayMount> kernel_;
  std::unique_ptr<FuseMount> fuse_;
};

TEST_F(FuseFsTest, LookupAndMergedListing) {
  BuildImage();
  MountBoth();
  Same([](const std::string& r, Log& log) {
    for (const char* d : {"", "dir", "dir/sub", "opq", "empty"}) log.push_back(List(r + "/" + d));
    for (const char* f : {"a", "b", "hidden", "dir/x", "dir/y", "opq/old", "opq/new", "gone_dir",
                          "link", "nothing", "a/notdir"}) {
      log.push_back(std::string(f) + "=" + ReadAll(r + "/" + f));
    }
    char target[64] = {};
    log.push_back(Rc(static_cast<int>(::readlink((r + "/link").c_str(), target, 63))) + target);
  });
  SameTrees();
}

// Listings with long kernel caching and with timeout=0 (both through
// directory handles while UnionFsImpl::kOpendirLess is off, without
// OPENDIR when it is on) are the kernel's, also after changes and with
// telldir/seekdir.
TEST_F(FuseFsTest, ListingsWithAndWithoutDirectoryHandles) {
  BuildImage();
  for (double timeout : {1000000.0, 0.0}) {
    SCOPED_TRACE(timeout);
    MountKernel();
    fuse::FsConfig config = Config();
    config.timeout = timeout;
    MountFuse(config);
    Same([](const std::string& r, Log& log) {
      for (const char* d : {"", "dir", "opq"}) log.push_back(List(r + "/" + d));
      log.push_back(WriteTo(r + "/dir/z", "z", O_WRONLY | O_CREAT));
      log.push_back(Rc(::unlink((r + "/dir/x").c_str())));
      log.push_back(List(r + "/dir"));
      // telldir/seekdir: back to a position gives the same names from there.
      DIR* d = ::opendir((r + "/dir").c_str());
      if (d == nullptr) return log.push_back("opendir " + Errno(errno));
      ::readdir(d);
      long at = ::telldir(d);
      std::vector<std::string> first, again;
      while (struct dirent* e = ::readdir(d)) first.push_back(e->d_name);
      ::seekdir(d, at);
      while (struct dirent* e = ::readdir(d)) again.push_back(e->d_name);
      ::closedir(d);
      std::sort(first.begin(), first.end());
      std::sort(again.begin(), again.end());
      log.push_back(std::to_string(first.size()) + (first == again ? " same" : " differ"));
    });
    SameTrees();
    fuse_.reset();
    kernel_.reset();
    for (const char* dir : {"f_upper", "f_work", "k_upper", "k_work"}) {
      ASSERT_TRUE(RemoveTree(tmp_.Sub(dir)));
      ASSERT_EQ(::mkdir(tmp_.Sub(dir).c_str(), 0755), 0);
    }
  }
}

// Without OPENDIR the kernel caches the listing of every open directory.
// A pass that a change overtook (its first batch replied before the create,
// its end after) may have put a stale listing in that cache, so the daemon
// drops the cache at the pass's end (UnionFsImpl::CheckListingEnd); passes
// of a directory that nothing changes keep it.
TEST_F(FuseFsTest, ListingCacheIsDroppedAfterAPassThatAChangeOvertook) {
  for (const char* d : {"quiet", "busy"}) ASSERT_EQ(::mkdir(L2(d).c_str(), 0755), 0);
  for (const char* f : {"quiet/q0", "quiet/q1", "busy/b0", "busy/b1"}) WriteFile(L2(f), f);
  MountFuse();
  auto drops = [&] { return fuse_->fs().listing_stats().caches_dropped; };
  uint64_t before = drops();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(List(F("quiet")), ". .. q0 q1 ");
  EXPECT_EQ(drops(), before);

  DIR* d = ::opendir(F("busy").c_str());
  ASSERT_NE(d, nullptr);
  ASSERT_NE(::readdir(d), nullptr);  // the first batch: every name
  ASSERT_EQ(WriteTo(F("busy/new"), "", O_WRONLY | O_CREAT), "ok");
  while (::readdir(d) != nullptr) {
  }
  ::closedir(d);
  EXPECT_EQ(drops(), before + 1);
  EXPECT_EQ(List(F("busy")), ". .. b0 b1 new ");
  EXPECT_EQ(List(F("busy")), ". .. b0 b1 new ");
  // A change right after a listing: the listing may still have been on its
  // way to the cache, so the next pass may drop it again; what it shows is
  // right either way.
  ASSERT_EQ(WriteTo(F("quiet/q2"), "", O_WRONLY | O_CREAT), "ok");
  ASSERT_EQ(::unlink(F("busy/b0").c_str()), 0);
  EXPECT_EQ(List(F("quiet")), ". .. q0 q1 q2 ");
  EXPECT_EQ(List(F("busy")), ". .. b1 new ");
}

TEST_F(FuseFsTest, WhiteoutFilesAndOpaqueMarkersOfOtherTools) {
  BuildImage();
  WriteFile(L1(".wh.a"), "");
  WriteFile(L1("dir/.wh..wh..opq"), "");
  MountFuse();
  EXPECT_EQ(List(F()), ". .. b dir empty link opq ");
  EXPECT_EQ(List(F("dir")), ". .. y ");
  EXPECT_EQ(ReadAll(F("a")), Errno(ENOENT));
  EXPECT_EQ(ReadAll(F(".wh.a")), Errno(ENOENT));
}

TEST_F(FuseFsTest, WritesCopyUp) {
  BuildImage();
  MountBoth();
  Same([](const std::string& r, Log& log) {
    log.push_back(WriteTo(r + "/a", "appended\n", O_WRONLY | O_APPEND));
    log.push_back(WriteTo(r + "/b", "new b", O_WRONLY | O_TRUNC));
    log.push_back(WriteTo(r + "/dir/sub/deep", "Z", O_WRONLY));
    log.push_back(WriteTo(r + "/created", "fresh", O_WRONLY | O_CREAT | O_EXCL));
    log.push_back(WriteTo(r + "/created", "again", O_WRONLY | O_CREAT | O_EXCL));
    log.push_back(WriteTo(r + "/hidden", "back", O_WRONLY | O_CREAT | O_EXCL));
    log.push_back(Rc(::truncate((r + "/dir/x").c_str(), 3)));
    log.push_back(Rc(::chmod((r + "/dir/y").c_str(), 0600)));
    log.push_back(Rc(::chown((r + "/opq/new").c_str(), 123, 456)));
    log.push_back(Rc(::mkdir((r + "/dir/newdir").c_str(), 0700)));
    log.push_back(Rc(::mkdir((r + "/dir").c_str(), 0700)));
    for (const char* f : {"a", "b", "dir/sub/deep", "created", "hidden", "dir/x"}) {
      log.push_back(ReadAll(r + "/" + f));
    }
    log.push_back(List(r + "/dir"));
  });
  SameTrees();
  // The lower layers are never written.
  EXPECT_EQ(ReadAll(L2("a")), "lower a\n");
  EXPECT_EQ(ReadAll(L2("dir/sub/deep")), "deep\n");
  RemountBoth();
  SameTrees();
}

TEST_F(FuseFsTest, UnlinkRmdirAndOpaqueMkdir) {
  BuildImage();
  MountBoth();
  Same([](const std::string& r, Log& log) {
    log.push_back(Rc(::unlink((r + "/a").c_str())));
    log.push_back(Rc(::unlink((r + "/a").c_str())));
    log.push_back(Rc(::unlink((r + "/dir").c_str())));
    log.push_back(Rc(::rmdir((r + "/dir").c_str())));
    log.push_back(Rc(::rmdir((r + "/b").c_str())));
    log.push_back(Rc(::rmdir((r + "/empty").c_str())));
    log.push_back(Rc(::unlink((r + "/dir/x").c_str())));
    log.push_back(Rc(::unlink((r + "/dir/y").c_str())));
    log.push_back(Rc(::unlink((r + "/dir/sub/deep").c_str())));
    log.push_back(Rc(::rmdir((r + "/dir/sub").c_str())));
    log.push_back(List(r + "/dir"));
    log.push_back(Rc(::rmdir((r + "/dir").c_str())));
    log.push_back(Rc(::mkdir((r + "/dir").c_str(), 0755)));
    log.push_back(List(r + "/dir"));
    log.push_back(WriteTo(r + "/a", "new a", O_WRONLY | O_CREAT | O_EXCL));
    log.push_back(ReadAll(r + "/a"));
    log.push_back(List(r));
  });
  SameTrees();
  RemountBoth();
  SameTrees();
  Same([](const std::string& r, Log& log) {
    log.push_back(List(r));
    log.push_back(List(r + "/dir"));
  });
}

TEST_F(FuseFsTest, RenameFilesAndDirectories) {
  BuildImage();
  MountBoth();
  Same([](const std::string& r, Log& log) {
    log.push_back(Rc(::rename((r + "/a").c_str(), (r + "/a2").c_str())));
    log.push_back(Rc(::rename((r + "/dir").c_str(), (r + "/dir2").c_str())));
    log.push_back(List(r + "/dir2"));
    log.push_back(List(r + "/dir2/sub"));
    log.push_back(ReadAll(r + "/dir2/sub/deep"));
    log.push_back(Rc(::rename((r + "/b").c_str(), (r + "/dir2/x").c_str())));
    log.push_back(ReadAll(r + "/dir2/x"));
    log.push_back(Rc(::rename((r + "/empty").c_str(), (r + "/opq").c_str())));
    log.push_back(Rc(::rename((r + "/dir2/sub").c_str(), (r + "/empty").c_str())));
    log.push_back(List(r + "/empty"));
    log.push_back(Rc(::renameat2(AT_FDCWD, (r + "/a2").c_str(), AT_FDCWD, (r + "/link").c_str(),
                                 RENAME_NOREPLACE)));
    log.push_back(Rc(::renameat2(AT_FDCWD, (r + "/nothing").c_str(), AT_FDCWD,
                                 (r + "/link").c_str(), RENAME_NOREPLACE)));
    log.push_back(Rc(::mkdir((r + "/newdir").c_str(), 0755)));
    log.push_back(Rc(::rename((r + "/newdir").c_str(), (r + "/hidden").c_str())));
    log.push_back(List(r + "/hidden"));
    log.push_back(List(r));
  });
  SameTrees();
  RemountBoth();
  SameTrees();
  Same([](const std::string& r, Log& log) {
    log.push_back(List(r + "/dir2"));
    log.push_back(List(r + "/empty"));
    log.push_back(ReadAll(r + "/empty/deep"));
  });
}

TEST_F(FuseFsTest, RenameExchange) {
  BuildImage();
  MountBoth();
  Same([](const std::string& r, Log& log) {
    log.push_back(WriteTo(r + "/up1", "one", O_WRONLY | O_CREAT));
    log.push_back(Rc(::renameat2(AT_FDCWD, (r + "/up1").c_str(), AT_FDCWD, (r + "/a").c_str(),
                                 RENAME_EXCHANGE)));
    log.push_back(ReadAll(r + "/a") + "|" + ReadAll(r + "/up1"));
    log.push_back(Rc(::renameat2(AT_FDCWD, (r + "/b").c_str(), AT_FDCWD, (r + "/link").c_str(),
                                 RENAME_EXCHANGE)));
    log.push_back(Rc(::renameat2(AT_FDCWD, (r + "/b").c_str(), AT_FDCWD, (r + "/nothing").c_str(),
                                 RENAME_EXCHANGE)));
    log.push_back(Rc(::mkdir((r + "/d1").c_str(), 0755)));
    log.push_back(Rc(::renameat2(AT_FDCWD, (r + "/d1").c_str(), AT_FDCWD, (r + "/dir").c_str(),
                                 RENAME_EXCHANGE)));
    log.push_back(List(r + "/d1") + "|" + List(r + "/dir"));
  });
  SameTrees();
}

TEST_F(FuseFsTest, LinksSymlinksAndSpecialFiles) {
  BuildImage();
  MountBoth();
  Same([](const std::string& r, Log& log) {
    log.push_back(Rc(::symlink("dir/x", (r + "/sl").c_str())));
    char buf[64] = {};
    log.push_back(Rc(static_cast<int>(::readlink((r + "/sl").c_str(), buf, 63))) + buf);
    log.push_back(ReadAll(r + "/sl"));
    log.push_back(Rc(::link((r + "/a").c_str(), (r + "/a_link").c_str())));
    log.push_back(Rc(::link((r + "/dir").c_str(), (r + "/dir_link").c_str())));
    log.push_back(Rc(::mkfifo((r + "/fifo").c_str(), 0644)));
    log.push_back(Rc(::mknod((r + "/null").c_str(), S_IFCHR | 0666, makedev(1, 3))));
    struct stat a, b;
    ::lstat((r + "/a").c_str(), &a);
    ::lstat((r + "/a_link").c_str(), &b);
    log.push_back("same ino " + std::to_string(a.st_ino == b.st_ino) + " nlink " +
                  std::to_string(a.st_nlink) + "/" + std::to_string(b.st_nlink));
    log.push_back(WriteTo(r + "/a_link", "via link", O_WRONLY | O_TRUNC));
    log.push_back(ReadAll(r + "/a"));
    log.push_back(Rc(::unlink((r + "/a").c_str())));
    ::lstat((r + "/a_link").c_str(), &b);
    log.push_back("nlink " + std::to_string(b.st_nlink));
  });
  SameTrees();
}

TEST_F(FuseFsTest, LowerHardLinksCopyUpOnce) {
  BuildImage();
  ASSERT_EQ(::link(L2("a").c_str(), L2("dir/a_hard").c_str()), 0);
  MountBoth();
  Same([](const std::string& r, Log& log) {
    struct stat a, b, a2, b2;
    ::lstat((r + "/a").c_str(), &a);
    ::lstat((r + "/dir/a_hard").c_str(), &b);
    log.push_back("before: same " + std::to_string(a.st_ino == b.st_ino) + " nlink " +
                  std::to_string(a.st_nlink));
    log.push_back(WriteTo(r + "/a", "changed", O_WRONLY | O_TRUNC));
    log.push_back(ReadAll(r + "/dir/a_hard"));
    ::lstat((r + "/a").c_str(), &a2);
    ::lstat((r + "/dir/a_hard").c_str(), &b2);
    log.push_back("after: same " + std::to_string(a2.st_ino == b2.st_ino) + " stable " +
                  std::to_string(a2.st_ino == a.st_ino) + " nlink " + std::to_string(a2.st_nlink) +
                  "/" + std::to_string(b2.st_nlink));
    log.push_back(Rc(::unlink((r + "/dir/a_hard").c_str())));
    ::lstat((r + "/a").c_str(), &a2);
    log.push_back("nlink " + std::to_string(a2.st_nlink));
  });
  SameTrees();
}

TEST_F(FuseFsTest, LowerHardLinksAcrossRemount) {
  BuildImage();
  ASSERT_EQ(::link(L2("a").c_str(), L2("dir/a_hard").c_str()), 0);
  ASSERT_EQ(::link(L2("a").c_str(), L2("a_third").c_str()), 0);
  MountBoth();
  Same([](const std::string& r, Log& log) {
    log.push_back(WriteTo(r + "/a", "changed", O_WRONLY | O_TRUNC));
  });
  RemountBoth();
  Same([](const std::string& r, Log& log) {
    struct stat a, b, c;
    ::lstat((r + "/a").c_str(), &a);
    ::lstat((r + "/dir/a_hard").c_str(), &b);
    ::lstat((r + "/a_third").c_str(), &c);
    log.push_back(ReadAll(r + "/dir/a_hard") + ReadAll(r + "/a_third"));
    log.push_back("same " + std::to_string(a.st_ino == b.st_ino && b.st_ino == c.st_ino) +
                  " nlink " + std::to_string(a.st_nlink) + std::to_string(b.st_nlink) +
                  std::to_string(c.st_nlink));
    log.push_back(WriteTo(r + "/a_third", "third", O_WRONLY | O_TRUNC));
    log.push_back(ReadAll(r + "/a"));
    log.push_back(Rc(::unlink((r + "/a").c_str())));
    ::lstat((r + "/a_third").c_str(), &c);
    log.push_back("nlink " + std::to_string(c.st_nlink));
  });
  SameTrees();
}

// Two names of one file: rename between them does nothing (POSIX; the
// kernel overlay with index=on agrees), also where one name is up and the
// other still lower; a link made through a name that was since replaced
// links the file, not the replacement; data written through one name shows
// through the other once it is the only one left.
TEST_F(FuseFsTest, RenameAndLinkBetweenNamesOfOneFile) {
  BuildImage();
  ASSERT_EQ(::link(L2("a").c_str(), L2("a_hard").c_str()), 0);
  MountBoth();
  Same([](const std::string& r, Log& log) {
    log.push_back(WriteTo(r + "/a", "up", O_WRONLY | O_APPEND));
    log.push_back(Rc(::rename((r + "/a").c_str(), (r + "/a_hard").c_str())));
    log.push_back(List(r) + ReadAll(r + "/a") + ReadAll(r + "/a_hard"));
    log.push_back(WriteTo(r + "/n1", "one", O_WRONLY | O_CREAT));
    log.push_back(Rc(::link((r + "/n1").c_str(), (r + "/n2").c_str())));
    log.push_back(Rc(::rename((r + "/n1").c_str(), (r + "/n2").c_str())));
    log.push_back(ReadAll(r + "/n1") + ReadAll(r + "/n2"));
    // n1 replaced by another file, then a link through n2.
    log.push_back(WriteTo(r + "/other", "other", O_WRONLY | O_CREAT));
    log.push_back(Rc(::rename((r + "/other").c_str(), (r + "/n1").c_str())));
    log.push_back(Rc(::link((r + "/n2").c_str(), (r + "/n3").c_str())));
    log.push_back(ReadAll(r + "/n3"));
    struct stat st {};
    ::stat((r + "/n2").c_str(), &st);
    log.push_back("nlink " + std::to_string(st.st_nlink));
    log.push_back(ReadAll(r + "/n2"));  // cached pages of n2
    log.push_back(WriteTo(r + "/n3", "three", O_WRONLY | O_TRUNC));
    log.push_back(Rc(::unlink((r + "/n3").c_str())));
    log.push_back(ReadAll(r + "/n2"));
  });
  SameTrees();
}

TEST_F(FuseFsTest, InodeNumbersStableAcrossCopyUpAndRemount) {
  BuildImage();
  MountFuse();
  struct stat before_a, before_dir, after_a, after_dir;
  ASSERT_EQ(::lstat(F("a").c_str(), &before_a), 0);
  ASSERT_EQ(::lstat(F("dir/sub").c_str(), &before_dir), 0);
  EXPECT_EQ(WriteTo(F("a"), "x", O_WRONLY | O_APPEND), "ok");
  ASSERT_EQ(::chmod(F("dir/sub").c_str(), 0700), 0);
  ASSERT_EQ(::lstat(F("a").c_str(), &after_a), 0);
  EXPECT_EQ(before_a.st_ino, after_a.st_ino);
  fuse_.reset();
  MountFuse();
  ASSERT_EQ(::lstat(F("a").c_str(), &after_a), 0);
  ASSERT_EQ(::lstat(F("dir/sub").c_str(), &after_dir), 0);
  EXPECT_EQ(before_a.st_ino, after_a.st_ino);
  EXPECT_EQ(before_dir.st_ino, after_dir.st_ino);
  EXPECT_EQ(after_dir.st_mode & 07777, 0700u);
  // readdir's d_ino agrees with stat.
  DIR* d = ::opendir(F().c_str());
  ASSERT_NE(d, nullptr);
  while (struct dirent* e = ::readdir(d)) {
    if (std::string(e->d_name) == "a") {
      EXPECT_EQ(e->d_ino, after_a.st_ino);
    }
  }
  ::closedir(d);
}

TEST_F(FuseFsTest, UnlinkWhileOpen) {
  BuildImage();
  MountBoth();
  Same([](const std::string& r, Log& log) {
    for (const char* name : {"a", "fresh"}) {
      std::string p = r + "/" + name;
      if (std::string(name) == "fresh") log.push_back(WriteTo(p, "fresh data", O_WRONLY | O_CREAT));
      int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
      log.push_back(Rc(fd));
      log.push_back(Rc(::unlink(p.c_str())));
      struct stat st {};
      log.push_back(Rc(::fstat(fd, &st)) + " nlink " + std::to_string(st.st_nlink));
      char buf[64] = {};
      log.push_back(Rc(static_cast<int>(::pread(fd, buf, 63, 0))) + buf);
      ::close(fd);
      log.push_back(ReadAll(p));
    }
  });
}

TEST_F(FuseFsTest, XattrsAndInternalOnesHidden) {
  BuildImage();
  MountBoth();
  Same([](const std::string& r, Log& log) {
    char buf[256] = {};
    log.push_back(Rc(static_cast<int>(::getxattr((r + "/a").c_str(), "user.color", buf, 255))) +
                  buf);
    log.push_back(Rc(::setxattr((r + "/b").c_str(), "user.k", "v", 1, 0)));
    log.push_back(Rc(::removexattr((r + "/a").c_str(), "user.color")));
    log.push_back(Rc(::removexattr((r + "/a").c_str(), "user.color")));
    log.push_back(
        Rc(static_cast<int>(::getxattr((r + "/opq").c_str(), "trusted.overlay.opaque", buf, 255))));
    log.push_back(Rc(::setxattr((r + "/b").c_str(), "trusted.overlay.opaque", "y", 1, 0)));
    std::memset(buf, 0, sizeof(buf));
    ssize_t n = ::listxattr((r + "/opq").c_str(), buf, 255);
    std::string names;
    for (ssize_t i = 0; i < n; i += static_cast<ssize_t>(std::strlen(buf + i)) + 1) {
      names += std::string(buf + i) + ",";
    }
    log.push_back(names);
  });
  SameTrees();
}

// Lower objects known to have no xattrs answer getxattr from memory; the
// answers must follow copy-up, also of another name of a hard link.
TEST_F(FuseFsTest, XattrAnswersFollowCopyUp) {
  BuildImage();
  WriteFile(L2("h1"), "linked\n");
  ASSERT_EQ(::link(L2("h1").c_str(), L2("h2").c_str()), 0);
  MountBoth();
  Same([](const std::string& r, Log& log) {
    auto get = [&](const std::string& rel, const char* name) {
      char buf[64] = {};
      ssize_t n = ::getxattr((r + "/" + rel).c_str(), name, buf, sizeof(buf) - 1);
      return rel + ":" + name + "=" + (n < 0 ? Errno(errno) : std::string(buf));
    };
    for (int round = 0; round < 2; ++round) {
      log.push_back(get("dir/x", "security.selinux"));
      log.push_back(get("dir/x", "user.k"));
      log.push_back(get("a", "security.selinux"));
      log.push_back(get("a", "user.color"));
      log.push_back(get("h2", "user.k"));
    }
    log.push_back(Rc(::setxattr((r + "/dir/x").c_str(), "user.k", "v", 1, 0)));
    log.push_back(get("dir/x", "user.k"));
    log.push_back(Rc(::setxattr((r + "/h1").c_str(), "user.k", "linked", 6, 0)));
    log.push_back(get("h2", "user.k"));
    log.push_back(get("h1", "user.k"));
  });
}

// Upper files also answer getxattr from memory once known to have no
// xattrs; a change through the mount (set, remove, or through another name
// made by link) must show at once.
TEST_F(FuseFsTest, XattrAnswersFollowChangesOfUpperFiles) {
  BuildImage();
  MountBoth();
  Same([](const std::string& r, Log& log) {
    auto get = [&](const std::string& rel) {
      char buf[64] = {};
      ssize_t n = ::getxattr((r + "/" + rel).c_str(), "user.k", buf, sizeof(buf) - 1);
      return rel + "=" + (n < 0 ? Errno(errno) : std::string(buf));
    };
    log.push_back(WriteTo(r + "/new", "n", O_WRONLY | O_CREAT | O_EXCL));
    for (int round = 0; round < 2; ++round) log.push_back(get("new"));
    log.push_back(Rc(::setxattr((r + "/new").c_str(), "user.k", "v1", 2, 0)));
    log.push_back(get("new"));
    log.push_back(Rc(::removexattr((r + "/new").c_str(), "user.k")));
    log.push_back(get("new"));
    log.push_back(get("new"));
    log.push_back(Rc(::link((r + "/new").c_str(), (r + "/other").c_str())));
    log.push_back(Rc(::setxattr((r + "/other").c_str(), "user.k", "v2", 2, 0)));
    log.push_back(get("new"));
    log.push_back(get("other"));
  });
}

// Whiteouts are links to one shared 0/0 device, as the kernel overlay
// makes them; both drivers read them back as whiteouts.
TEST_F(FuseFsTest, WhiteoutsShareOneInode) {
  BuildImage();
  for (const char* f : {"w1", "w2", "w3"}) WriteFile(L2(f), "lower\n");
  MountBoth();
  Same([](const std::string& r, Log& log) {
    for (const char* f : {"w1", "w2", "w3"}) log.push_back(Rc(::unlink((r + "/" + f).c_str())));
    log.push_back(Rc(::unlink((r + "/dir/x").c_str())));
    log.push_back(List(r));
    log.push_back(List(r + "/dir"));
  });
  std::vector<ino_t> inos;
  for (const char* f : {"w1", "w2", "w3", "dir/x"}) {
    struct stat st;
    ASSERT_EQ(::lstat(tmp_.Sub(std::string("f_upper/") + f).c_str(), &st), 0) << f;
    EXPECT_TRUE(S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0)) << f;
    inos.push_back(st.st_ino);
  }
  EXPECT_EQ(std::count(inos.begin(), inos.end(), inos[0]), 4);
  SameTrees();
  RemountBoth();
  SameTrees();
}

TEST_F(FuseFsTest, NamesAndDeepPaths) {
  BuildImage();
  // A lower tree whose deepest file is near PATH_MAX through the mounts.
  std::string lower_deep = "deep";
  ASSERT_EQ(::mkdir(L2(lower_deep).c_str(), 0755), 0);
  while (tmp_.Sub("k_mnt/" + lower_deep).size() < 3900) {
    lower_deep += "/" + std::string(120, 'l');
    ASSERT_EQ(::mkdir(L2(lower_deep).c_str(), 0755), 0);
  }
  WriteFile(L2(lower_deep + "/f"), "deep lower\n");
  MountBoth();
  Same([&](const std::string& r, Log& log) {
    std::string n255(255, 'n'), n256(256, 'n');
    log.push_back(WriteTo(r + "/" + n255, "ok", O_WRONLY | O_CREAT));
    log.push_back(ReadAll(r + "/" + n255));
    log.push_back(WriteTo(r + "/" + n256, "no", O_WRONLY | O_CREAT));
    log.push_back(ReadAll(r + "/" + n256));
    log.push_back(Rc(::mkdir((r + "/" + n256).c_str(), 0755)));
    log.push_back(Rc(::symlink("a", (r + "/" + n256).c_str())));
    log.push_back(Rc(::link((r + "/a").c_str(), (r + "/" + n256).c_str())));
    log.push_back(Rc(::rename((r + "/a").c_str(), (r + "/" + n256).c_str())));
    log.push_back(Rc(::rename((r + "/" + n255).c_str(), (r + "/dir/" + n255).c_str())));
    // Copy-up of the whole lower chain, then a rename deep down.
    std::string f = r + "/" + lower_deep + "/f";
    log.push_back(std::to_string(f.size() < PATH_MAX) + WriteTo(f, "+", O_WRONLY | O_APPEND));
    log.push_back(ReadAll(f));
    log.push_back(Rc(::rename(f.c_str(), (f + "2").c_str())));
    log.push_back(ReadAll(f + "2"));
    std::string p = r;
    int depth = 0;
    while (p.size() < 3900) {
      p += "/" + std::string(100, 'd');
      if (::mkdir(p.c_str(), 0755) != 0) break;
      ++depth;
    }
    log.push_back("depth " + std::to_string(depth));
    log.push_back(WriteTo(p + "/leaf", "leaf", O_WRONLY | O_CREAT));
    log.push_back(ReadAll(p + "/leaf"));
  });
}

TEST_F(FuseFsTest, StatfsIsTheUppers) {
  BuildImage();
  MountFuse();
  struct statvfs mnt, upper;
  ASSERT_EQ(::statvfs(F().c_str(), &mnt), 0);
  ASSERT_EQ(::statvfs(tmp_.Sub("f_upper").c_str(), &upper), 0);
  EXPECT_EQ(mnt.f_blocks, upper.f_blocks);
  EXPECT_EQ(mnt.f_bsize, upper.f_bsize);
}

TEST_F(FuseFsTest, ReadOnlyWithoutUpper) {
  BuildImage();
  fuse::FsConfig c = Config();
  c.upper.clear();
  c.work.clear();
  MountFuse(c);
  EXPECT_EQ(ReadAll(F("dir/x")), "x from l2\n");
  EXPECT_EQ(WriteTo(F("new"), "x", O_WRONLY | O_CREAT), Errno(EROFS));
  EXPECT_EQ(WriteTo(F("a"), "x", O_WRONLY), Errno(EROFS));
  EXPECT_EQ(Rc(::unlink(F("a").c_str())), Errno(EROFS));
  EXPECT_EQ(Rc(::mkdir(F("d").c_str(), 0755)), Errno(EROFS));
}

// The daemon keeps no fd per lower file the kernel knows: with the open-file
// limit far below the number of files, every one of them can still be
// stat'ed, read, listed with its xattrs and copied up (before, lookups failed
// with EMFILE once the kernel knew about a limit's worth of files).
TEST_F(FuseFsTest, MoreLowerFilesThanTheOpenFileLimit) {
  constexpr int kDirs = 10, kFiles = 250;  // 2,500 files, limit 512
  for (int d = 0; d < kDirs; ++d) {
    std::string dir = L2("d" + std::to_string(d));
    ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
    for (int f = 0; f < kFiles; ++f) WriteFile(dir + "/f" + std::to_string(f), "x");
    ASSERT_EQ(::symlink("f0", (dir + "/link").c_str()), 0);
  }
  struct rlimit saved;
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  auto restore = Defer([&] { ::setrlimit(RLIMIT_NOFILE, &saved); });
  struct rlimit low = saved;
  low.rlim_cur = 512;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  MountFuse();
  int stated = 0;
  for (int d = 0; d < kDirs; ++d) {
    std::string dir = F("d" + std::to_string(d));
    for (int f = 0; f < kFiles; ++f) {
      struct stat st;
      std::string path = dir + "/f" + std::to_string(f);
      if (::lstat(path.c_str(), &st) == 0 && st.st_size == 1) {
        ++stated;
      } else {
        ADD_FAILURE() << path << ": " << std::strerror(errno);
      }
    }
    char target[16] = {};
    EXPECT_EQ(::readlink((dir + "/link").c_str(), target, sizeof(target) - 1), 2) << dir;
    EXPECT_EQ(ReadAll(dir + "/f1"), "x");
    char names[64];
    EXPECT_GE(::llistxattr((dir + "/f2").c_str(), names, sizeof(names)), 0) << dir;
  }
  EXPECT_EQ(stated, kDirs * kFiles);
  // Copy-up of a lower file that has no fd of its own.
  EXPECT_EQ(WriteTo(F("d3/f7"), "y", O_WRONLY | O_APPEND), "ok");
  EXPECT_EQ(ReadAll(F("d3/f7")), "xy");
  EXPECT_EQ(ReadAll(tmp_.Sub("f_upper/d3/f7")), "xy");
  EXPECT_EQ(ReadAll(L2("d3/f7")), "x");
  ASSERT_EQ(::chmod(F("d4/f9").c_str(), 0600), 0);
  struct stat st;
  ASSERT_EQ(::stat(tmp_.Sub("f_upper/d4/f9").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

TEST_F(FuseFsTest, WorkLeftoversRemovedAtStart) {
  BuildImage();
  ASSERT_EQ(::mkdir(tmp_.Sub("f_work/work").c_str(), 0700), 0);
  WriteFile(tmp_.Sub("f_work/work/#lamina-1-0"), "half copied");
  ASSERT_EQ(::mkdir(tmp_.Sub("f_work/work/#lamina-1-1").c_str(), 0700), 0);
  MountFuse();
  EXPECT_EQ(List(tmp_.Sub("f_work/work")), ". .. ");
}

TEST_F(FuseFsTest, ConfigErrorsNameTheDirectory) {
  fuse::FsConfig c = Config();
  c.lowers.push_back(tmp_.Sub("missing"));
  auto fs = fuse::UnionFs::Create(c);
  ASSERT_FALSE(fs);
  EXPECT_EQ(fs.error().code(), ENOENT);
  EXPECT_NE(fs.error().message().find("missing"), std::string::npos) << fs.error().message();
  c = Config();
  c.work.clear();
  fs = fuse::UnionFs::Create(c);
  ASSERT_FALSE(fs);
  EXPECT_EQ(fs.error().code(), EINVAL);
}

TEST_F(FuseFsTest, CopyUpKeepsHolesTimesAndXattrs) {
  BuildImage();
  {
    int fd = ::open(L2("sparse").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0640);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, "end", 3, 64 << 20), 3);
    ::close(fd);
    struct timespec times[2] = {{1000000000, 5}, {1100000000, 7}};
    ASSERT_EQ(::utimensat(AT_FDCWD, L2("sparse").c_str(), times, 0), 0);
    ASSERT_EQ(::setxattr(L2("sparse").c_str(), "user.k", "v", 1, 0), 0);
  }
  MountFuse();
  ASSERT_EQ(::chmod(F("sparse").c_str(), 0600), 0);  // copy-up, data included
  struct stat up;
  ASSERT_EQ(::stat(tmp_.Sub("f_upper/sparse").c_str(), &up), 0);
  EXPECT_EQ(up.st_size, (64 << 20) + 3);
  EXPECT_LT(up.st_blocks, 1024) << "holes were filled";
  EXPECT_EQ(up.st_mtim.tv_sec, 1100000000);
  EXPECT_EQ(up.st_mtim.tv_nsec, 7);
  EXPECT_EQ(up.st_mode & 07777, 0600u);
  char buf[8] = {};
  EXPECT_EQ(::getxattr(F("sparse").c_str(), "user.k", buf, sizeof(buf)), 1);
  EXPECT_EQ(ReadAll(F("sparse")).substr(64 << 20), "end");
}

TEST_F(FuseFsTest, OwnershipMappingAndSquash) {
  BuildImage();
  ASSERT_EQ(::chown(L2("a").c_str(), 100000, 100000), 0);
  ASSERT_EQ(::chown(L2("b").c_str(), 4321, 4321), 0);
  fuse::FsConfig c = Config();
  c.uid_map = {{0, 100000, 65536}};
  c.gid_map = {{0, 100000, 65536}};
  MountFuse(c);
  struct stat st;
  ASSERT_EQ(::lstat(F("a").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_gid, 0u);
  ASSERT_EQ(::lstat(F("b").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 65534u) << "unmapped ids show as the overflow id";
  EXPECT_EQ(WriteTo(F("new"), "x", O_WRONLY | O_CREAT), "ok");
  ASSERT_EQ(::lstat(tmp_.Sub("f_upper/new").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 100000u) << "created as the caller, mapped out";
  ASSERT_EQ(::chown(F("new").c_str(), 7, 8), 0);
  ASSERT_EQ(::lstat(tmp_.Sub("f_upper/new").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 100007u);
  EXPECT_EQ(st.st_gid, 100008u);
  fuse_.reset();

  c = Config();
  c.squash_to_root = true;
  MountFuse(c);
  ASSERT_EQ(::lstat(F("b").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_gid, 0u);
  fuse_.reset();

  c = Config();
  c.squash_to_uid = 55;
  c.squash_to_gid = 66;
  MountFuse(c);
  ASSERT_EQ(::lstat(F("b").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 55u);
  EXPECT_EQ(st.st_gid, 66u);
}

TEST_F(FuseFsTest, OverrideStatXattr) {
  BuildImage();
  const char value[] = "5:6:0700";
  ASSERT_EQ(::setxattr(L2("a").c_str(), "user.containers.override_stat", value, 8, 0), 0);
  fuse::FsConfig c = Config();
  c.xattr_permissions = 2;
  MountFuse(c);
  struct stat st;
  ASSERT_EQ(::lstat(F("a").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 5u);
  EXPECT_EQ(st.st_gid, 6u);
  EXPECT_EQ(st.st_mode, S_IFREG | 0700u);
  char names[256] = {};
  ssize_t n = ::listxattr(F("a").c_str(), names, sizeof(names));
  EXPECT_EQ(std::string(names, static_cast<size_t>(std::max<ssize_t>(n, 0))),
            std::string("user.color\0", 11));
}

TEST_F(FuseFsTest, StaticNlinkNoxattrsIno32NoFsync) {
  BuildImage();
  fuse::FsConfig c = Config();
  c.static_nlink = true;
  c.noxattrs = true;
  c.ino32 = true;
  c.fsync = false;
  MountFuse(c);
  struct stat st;
  ASSERT_EQ(::lstat(F("dir/sub").c_str(), &st), 0);
  EXPECT_EQ(st.st_nlink, 1u);
  EXPECT_LT(st.st_ino, 1ull << 32);
  char buf[16];
  EXPECT_EQ(Rc(static_cast<int>(::getxattr(F("a").c_str(), "user.color", buf, sizeof(buf)))),
            Errno(EOPNOTSUPP));
  EXPECT_EQ(Rc(::setxattr(F("a").c_str(), "user.x", "1", 1, 0)), Errno(EOPNOTSUPP));
  int fd = ::open(F("a").c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(::fsync(fd), 0);
  ::close(fd);
}

TEST_F(FuseFsTest, MixedMetadataAndRenameCases) {
  BuildImage();
  MountBoth();
  Same([](const std::string& r, Log& log) {
    auto stat_line = [&](const std::string& rel) {
      struct stat st {};
      int rc = ::lstat((r + "/" + rel).c_str(), &st);
      log.push_back(
          rel + ": " + Rc(rc) + " mode " + std::to_string(st.st_mode) + " size " +
          std::to_string(st.st_size) + " uid " + std::to_string(st.st_uid) +
          // Only times set explicitly compare: "now" differs between the runs.
          (st.st_mtim.tv_sec < 100000 ? " mtime " + std::to_string(st.st_mtim.tv_sec) : ""));
    };
    log.push_back(Rc(::mknod((r + "/wh").c_str(), S_IFCHR | 0600, makedev(0, 0))));
    log.push_back(List(r));
    log.push_back(Rc(::chmod((r + "/dir").c_str(), 0711)));
    stat_line("dir");
    log.push_back(List(r + "/dir"));
    struct timespec times[2] = {{1234, 0}, {5678, 0}};
    log.push_back(Rc(::utimensat(AT_FDCWD, (r + "/dir/x").c_str(), times, 0)));
    stat_line("dir/x");
    log.push_back(Rc(::lchown((r + "/link").c_str(), 77, 88)));
    stat_line("link");
    log.push_back(Rc(::truncate((r + "/b").c_str(), 100)));
    stat_line("b");
    int fd = ::open((r + "/dir/y").c_str(), O_RDWR | O_CLOEXEC);
    log.push_back(Rc(::ftruncate(fd, 2)));
    ::close(fd);
    log.push_back(ReadAll(r + "/dir/y"));
    // A directory over a merged-empty directory.
    log.push_back(Rc(::unlink((r + "/dir/sub/deep").c_str())));
    log.push_back(Rc(::rename((r + "/opq").c_str(), (r + "/dir/sub").c_str())));
    log.push_back(List(r + "/dir/sub"));
    // A file over a lower file, a file into a deleted name, a dir into a new dir.
    log.push_back(Rc(::rename((r + "/a").c_str(), (r + "/b").c_str())));
    log.push_back(ReadAll(r + "/b"));
    log.push_back(Rc(::rename((r + "/b").c_str(), (r + "/hidden").c_str())));
    log.push_back(Rc(::mkdir((r + "/newdir").c_str(), 0755)));
    log.push_back(Rc(::rename((r + "/dir").c_str(), (r + "/newdir/moved").c_str())));
    log.push_back(List(r + "/newdir/moved"));
    log.push_back(Rc(::rename((r + "/newdir/moved").c_str(), (r + "/dir").c_str())));
    log.push_back(List(r + "/dir"));
    log.push_back(List(r + "/dir/sub"));
    log.push_back(Rc(::rmdir((r + "/empty").c_str())));
    log.push_back(WriteTo(r + "/empty", "file now", O_WRONLY | O_CREAT | O_EXCL));
    log.push_back(List(r));
  });
  SameTrees();
  RemountBoth();
  SameTrees();
}

// The on-disk format both ways: what the kernel overlay wrote (relative and
// absolute redirects, opaque dirs, whiteouts, its own index) reads the same
// through lamina, and what lamina wrote reads the same through the kernel.
TEST_F(FuseFsTest, FormatCompatibleWithTheKernelBothWays) {
  BuildImage();
  Script script = [](const std::string& r, Log& log) {
    log.push_back(Rc(::rename((r + "/dir").c_str(), (r + "/dir2").c_str())));
    log.push_back(Rc(::mkdir((r + "/nest").c_str(), 0755)));
    log.push_back(Rc(::rename((r + "/dir2/sub").c_str(), (r + "/nest/sub").c_str())));
    log.push_back(Rc(::unlink((r + "/a").c_str())));
    log.push_back(Rc(::rmdir((r + "/empty").c_str())));
    log.push_back(Rc(::mkdir((r + "/empty").c_str(), 0700)));
    log.push_back(WriteTo(r + "/empty/in", "in", O_WRONLY | O_CREAT));
    log.push_back(WriteTo(r + "/b", "b2", O_WRONLY | O_TRUNC));
  };
  MountBoth();
  Same(script);
  TreeCompareOptions o;
  o.times = false;
  std::string kernel_view = DescribeTree(K(), o);
  std::string lamina_view = DescribeTree(F(), o);
  EXPECT_EQ(kernel_view, lamina_view);
  fuse_.reset();
  kernel_.reset();
  // lamina on the kernel's upper, the kernel on lamina's.
  fuse::FsConfig c = Config();
  c.upper = tmp_.Sub("k_upper");
  c.work = tmp_.Sub("k_work");
  MountFuse(c);
  auto k = OverlayMount::Start({tmp_.Sub("l1"), tmp_.Sub("l2")}, tmp_.Sub("f_upper"),
                               tmp_.Sub("f_work"), tmp_.Sub("k_mnt"), "redirect_dir=on");
  ASSERT_TRUE(k) << k.error().message();
  kernel_ = std::move(*k);
  EXPECT_EQ(DescribeTree(F(), o), kernel_view);
  EXPECT_EQ(DescribeTree(K(), o), lamina_view);
}

TEST_F(FuseFsTest, ReadOnlyOpenSeesCopyUp) {
  BuildImage();
  MountBoth();
  Same([](const std::string& r, Log& log) {
    int ro = ::open((r + "/a").c_str(), O_RDONLY | O_CLOEXEC);
    log.push_back(Rc(ro));
    char buf[32] = {};
    log.push_back(Rc(static_cast<int>(::pread(ro, buf, 31, 0))) + buf);
    log.push_back(WriteTo(r + "/a", "NEW", O_WRONLY));
    // Not from the page cache: the read must reach the upper copy.
    ::sync();
    std::ofstream("/proc/sys/vm/drop_caches") << "1";
    std::memset(buf, 0, sizeof(buf));
    log.push_back(Rc(static_cast<int>(::pread(ro, buf, 31, 0))) + buf);
    struct stat st {};
    log.push_back(Rc(::fstat(ro, &st)) + " size " + std::to_string(st.st_size));
    ::close(ro);
  });
}

TEST_F(FuseFsTest, WritebackCache) {
  BuildImage();
  fuse::FsConfig c = Config();
  c.writeback = true;
  MountFuse(c);
  EXPECT_EQ(WriteTo(F("a"), "more", O_WRONLY | O_APPEND), "ok");
  EXPECT_EQ(WriteTo(F("w"), "wb", O_WRONLY | O_CREAT), "ok");
  EXPECT_EQ(ReadAll(F("a")), "lower a\nmore");
  EXPECT_EQ(ReadAll(F("w")), "wb");
  fuse_.reset();
  EXPECT_EQ(ReadAll(tmp_.Sub("f_upper/a")), "lower a\nmore");
  EXPECT_EQ(ReadAll(tmp_.Sub("f_upper/w")), "wb");
}

// A walk that reads names only gets listings without attributes after a
// few directories (the kernel then looks up what it needs); the first lookup
// of a file turns them on again. Names, types and inode numbers stay those
// of the kernel overlay's listing and of stat.
TEST_F(FuseFsTest, ListingsDropAttributesWhileNoFileIsUsed) {
  constexpr int kFiles = 40;
  for (int d = 0; d < 8; ++d) {
    std::string dir = "w" + std::to_string(d);
    ASSERT_EQ(::mkdir(L2(dir).c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(L1(dir).c_str(), 0755), 0);
    for (int f = 0; f < kFiles; ++f) WriteFile(L2(dir + "/f" + std::to_string(f)), "f\n");
    WriteFile(L1(dir + "/f0"), "shadows f0\n");
    ASSERT_EQ(::mknod(L1(dir + "/f1").c_str(), S_IFCHR | 0, makedev(0, 0)), 0);
    ASSERT_EQ(::symlink("f2", L1(dir + "/s").c_str()), 0);
    ASSERT_EQ(::mkdir(L2(dir + "/sub").c_str(), 0755), 0);
  }
  MountBoth();
  // A copy-up first: its listing entry must carry the lower inode number.
  ASSERT_EQ(::chmod(F("w1/f3").c_str(), 0600), 0);
  ASSERT_EQ(::chmod(K("w1/f3").c_str(), 0600), 0);
  struct Entry {
    std::string name;
    ino_t ino;
    unsigned char type;
  };
  auto read_dir = [](const std::string& path) {
    std::vector<Entry> out;
    DIR* d = ::opendir(path.c_str());
    if (d == nullptr) return out;
    while (struct dirent* e = ::readdir(d)) out.push_back({e->d_name, e->d_ino, e->d_type});
    ::closedir(d);
    std::sort(out.begin(), out.end(),
              [](const Entry& a, const Entry& b) { return a.name < b.name; });
    return out;
  };
  auto names_and_types = [](const std::vector<Entry>& entries) {
    std::string s;
    for (const Entry& e : entries) s += e.name + ":" + std::to_string(e.type) + " ";
    return s;
  };
  auto stats = [&] { return fuse_->fs().listing_stats(); };
  std::vector<std::vector<Entry>> listed;
  for (int d = 0; d < 4; ++d) {
    std::string dir = "w" + std::to_string(d);
    listed.push_back(read_dir(F(dir)));
    EXPECT_EQ(names_and_types(listed.back()), names_and_types(read_dir(K(dir)))) << dir;
  }
  auto walked = stats();
  EXPECT_EQ(walked.attrs_turned_off, 1u);
  EXPECT_GE(walked.files_without_attrs, 2u * kFiles);
  // Every name lists the inode number that stat gives it.
  for (int d = 0; d < 4; ++d) {
    for (const Entry& e : listed[d]) {
      if (e.name == "." || e.name == "..") continue;
      struct stat st;
      std::string path = F("w" + std::to_string(d) + "/" + e.name);
      ASSERT_EQ(::lstat(path.c_str(), &st), 0) << path;
      EXPECT_EQ(e.ino, st.st_ino) << path;
      EXPECT_EQ(e.type, IFTODT(st.st_mode)) << path;
    }
  }
  // Those lookups turned the attributes on again, for a while.
  auto looked = stats();
  read_dir(F("w4"));
  read_dir(F("w5"));
  auto after = stats();
  EXPECT_EQ(after.attrs_turned_off, 1u);
  EXPECT_EQ(after.files_without_attrs, looked.files_without_attrs);
  EXPECT_GE(after.files_with_attrs, looked.files_with_attrs + 2 * kFiles);
  // A reader that uses every file (ls -l asks for xattrs) keeps them on.
  for (const char* dir : {"w6", "w7"}) {
    for (const Entry& e : read_dir(F(dir))) {
      char value[64];
      (void)::lgetxattr(F(std::string(dir) + "/" + e.name).c_str(), "user.x", value,
                        sizeof(value));
    }
  }
  EXPECT_EQ(stats().files_without_attrs, after.files_without_attrs);
}

TEST_F(FuseFsTest, ReaddirInodesMatchStatAndSurviveForget) {
  BuildImage();
  MountFuse();
  ASSERT_EQ(WriteTo(F("a"), "x", O_WRONLY | O_APPEND), "ok");
  ASSERT_EQ(::chmod(F("dir").c_str(), 0700), 0);
  ASSERT_EQ(::rename(F("b").c_str(), F("dir/b").c_str()), 0);
  auto check = [&](const std::string& rel) {
    DIR* d = ::opendir(F(rel).c_str());
    ASSERT_NE(d, nullptr);
    while (struct dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name == "..") continue;
      struct stat st;
      ASSERT_EQ(::lstat((F(rel) + "/" + name).c_str(), &st), 0) << name;
      EXPECT_EQ(e->d_ino, st.st_ino) << rel << "/" << name;
    }
    ::closedir(d);
  };
  check("");
  check("dir");
  struct stat before;
  ASSERT_EQ(::lstat(F("dir/b").c_str(), &before), 0);
  // Make the kernel forget what it can, then use the tree again.
  ::sync();
  std::ofstream("/proc/sys/vm/drop_caches") << "2";
  struct stat after;
  ASSERT_EQ(::lstat(F("dir/b").c_str(), &after), 0);
  EXPECT_EQ(before.st_ino, after.st_ino);
  EXPECT_EQ(ReadAll(F("dir/b")), "upper-ish b\n");
  check("dir");
}

TEST_F(FuseFsTest, LayersOnDifferentFilesystemsKeepInodesApart) {
  BuildImage();
  std::string other = tmp_.Sub("tmpfs");
  ASSERT_EQ(::mkdir(other.c_str(), 0755), 0);
  ASSERT_EQ(::mount("tmpfs", other.c_str(), "tmpfs", 0, "size=16m"), 0);
  WriteFile(other + "/from_tmpfs", "t");
  fuse::FsConfig c = Config();
  c.lowers.push_back(other);
  MountFuse(c);
  struct stat t, a, root;
  ASSERT_EQ(::lstat(F("from_tmpfs").c_str(), &t), 0);
  ASSERT_EQ(::lstat(F("a").c_str(), &a), 0);
  ASSERT_EQ(::lstat(F().c_str(), &root), 0);
  EXPECT_NE(t.st_ino, a.st_ino);
  EXPECT_NE(t.st_ino, root.st_ino);
  struct stat raw;
  ASSERT_EQ(::lstat((other + "/from_tmpfs").c_str(), &raw), 0);
  EXPECT_NE(t.st_ino, raw.st_ino) << "the second filesystem gets its own inode range";
  ASSERT_EQ(WriteTo(F("from_tmpfs"), "u", O_WRONLY | O_APPEND), "ok");
  struct stat up;
  ASSERT_EQ(::lstat(F("from_tmpfs").c_str(), &up), 0);
  EXPECT_EQ(up.st_ino, t.st_ino);
  fuse_.reset();
  ::umount2(other.c_str(), MNT_DETACH);
}

// Rootless: the daemon runs as an unprivileged user inside a user namespace,
// so the format must use the user.* xattr namespace; the kernel overlay with
// `userxattr` then reads the same upper.
TEST_F(FuseFsTest, RootlessUsesUserXattrs) {
  uid_t uid = TestUserUid();
  if (uid == 0) GTEST_SKIP() << "no lamina-test account for rootless tests";
  BuildImage();
  // The image belongs to the user (ids outside the namespace's map would be
  // unusable in it, as for any rootless mount).
  std::string ids = std::to_string(uid) + ":" + std::to_string(uid);
  ASSERT_EQ(lamina::test::Run({"chown", "-R", "-h", ids, tmp_.Sub("l1"), tmp_.Sub("l2"),
                               tmp_.Sub("f_upper"), tmp_.Sub("f_work"), tmp_.Sub("f_mnt")})
                .status,
            0);
  int pipefd[2];
  ASSERT_EQ(::pipe2(pipefd, O_CLOEXEC), 0);
  fuse::FsConfig config = Config();
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(pipefd[0]);
    std::string out;
    auto write_map = [](const char* file, const std::string& text) {
      int fd = ::open(file, O_WRONLY | O_CLOEXEC);
      bool ok =
          fd >= 0 && ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
      if (fd >= 0) ::close(fd);
      return ok;
    };
    if (::setgroups(0, nullptr) != 0 || ::setresgid(uid, uid, uid) != 0 ||
        ::setresuid(uid, uid, uid) != 0 || ::prctl(PR_SET_DUMPABLE, 1) != 0 ||
        ::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0 || !write_map("/proc/self/setgroups", "deny") ||
        !write_map("/proc/self/uid_map", "0 " + std::to_string(uid) + " 1") ||
        !write_map("/proc/self/gid_map", "0 " + std::to_string(uid) + " 1") ||
        ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      out = "setup: " + std::string(std::strerror(errno));
    } else {
      if (std::getenv("LAMINA_TEST_DEBUG") != nullptr) spdlog::set_level(spdlog::level::debug);
      auto m = FuseMount::Start(config);
      if (!m) {
        out = "mount: " + m.error().message();
      } else {
        std::string r = (*m)->path();
        out += WriteTo(r + "/new", "n", O_WRONLY | O_CREAT) + ";";
        out += Rc(::unlink((r + "/a").c_str())) + ";";
        out += Rc(::rmdir((r + "/empty").c_str())) + ";";
        out += Rc(::mkdir((r + "/empty").c_str(), 0755)) + ";";
        out += Rc(::rename((r + "/dir").c_str(), (r + "/dir2").c_str())) + ";";
        out += List(r + "/dir2") + ";" + List(r);
      }
    }
    (void)!::write(pipefd[1], out.data(), out.size());
    ::_exit(0);
  }
  ::close(pipefd[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(pipefd[0], buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(pipefd[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (out.starts_with("setup:")) GTEST_SKIP() << "user namespace: " << out;
  EXPECT_EQ(out, "ok;ok;ok;ok;ok;. .. sub x y ;. .. b dir2 empty link new opq ");
  char value[64] = {};
  EXPECT_EQ(::getxattr(tmp_.Sub("f_upper/empty").c_str(), "user.overlay.opaque", value, 63), 1);
  EXPECT_EQ(::getxattr(tmp_.Sub("f_upper/dir2").c_str(), "user.overlay.redirect", value, 63), 4);
  EXPECT_EQ(std::string(value, 4), "/dir");
  EXPECT_LT(::getxattr(tmp_.Sub("f_upper/empty").c_str(), "trusted.overlay.opaque", value, 63), 0);
  // The kernel overlay (userxattr) reads what the rootless daemon wrote.
  auto k = OverlayMount::Start({tmp_.Sub("l1"), tmp_.Sub("l2")}, tmp_.Sub("f_upper"),
                               tmp_.Sub("f_work"), tmp_.Sub("k_mnt"), "userxattr");
  ASSERT_TRUE(k) << k.error().message();
  EXPECT_EQ(List(K("empty")), ". .. ");
  EXPECT_EQ(ReadAll(K("a")), Errno(ENOENT));
  EXPECT_EQ(ReadAll(K("new")), "n");
}

// No global lock: while one copy-up waits for its lower file (the test holds
// a write lease on it, so the daemon's open blocks until the test lets go),
// operations on other objects, in the same directory too, and another
// copy-up all complete.
TEST_F(FuseFsTest, OtherOperationsProceedWhileACopyUpWaits) {
  BuildImage();
  WriteFile(L2("slow"), "slow lower\n");
  // The lease break signal would end the process.
  struct sigaction ignore {
  }, old{};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(::sigaction(SIGIO, &ignore, &old), 0);
  auto restore = Defer([&] { ::sigaction(SIGIO, &old, nullptr); });
  int lease = ::open(L2("slow").c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(lease, 0);
  auto close_lease = Defer([&] { ::close(lease); });
  ASSERT_EQ(::fcntl(lease, F_SETLEASE, F_WRLCK), 0) << std::strerror(errno);
  MountFuse();
  auto waiting =
      std::async(std::launch::async, [&] { return Rc(::chmod(F("slow").c_str(), 0600)); });
  // Bounded wait until the daemon's open of the lower file breaks the lease.
  for (int i = 0; i < 2000 && ::fcntl(lease, F_GETLEASE) == F_WRLCK; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_NE(::fcntl(lease, F_GETLEASE), F_WRLCK) << "the copy-up never opened the lower file";
  auto others = std::async(std::launch::async, [&] {
    Log log;
    struct stat st;
    log.push_back(Rc(::lstat(F("a").c_str(), &st)));
    log.push_back(Rc(::lstat(F("slow").c_str(), &st)));
    log.push_back(List(F("dir")));
    log.push_back(WriteTo(F("fresh"), "fresh", O_WRONLY | O_CREAT));
    log.push_back(ReadAll(F("dir/x")));
    log.push_back(Rc(::chmod(F("b").c_str(), 0600)));  // another copy-up
    log.push_back(Rc(::rename(F("fresh").c_str(), F("dir/fresh").c_str())));
    return log;
  });
  // Bounded: with a lock held across the waiting copy-up these would wait
  // for the lease break timeout (45 s by default).
  bool done = others.wait_for(std::chrono::seconds(30)) == std::future_status::ready;
  EXPECT_EQ(waiting.wait_for(std::chrono::seconds(0)), std::future_status::timeout);
  ASSERT_EQ(::fcntl(lease, F_SETLEASE, F_UNLCK), 0);
  EXPECT_TRUE(done) << "operations on other objects waited for the copy-up";
  EXPECT_EQ(others.get(), (Log{"ok", "ok", ". .. sub x y ", "ok", "x from l2\n", "ok", "ok"}));
  EXPECT_EQ(waiting.get(), "ok");
  struct stat st;
  ASSERT_EQ(::lstat(F("slow").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(ReadAll(F("slow")), "slow lower\n");
}

TEST_F(FuseFsTest, ParallelWorkload) {
  BuildImage();
  for (int i = 0; i < 50; ++i)
    WriteFile(L2("dir/f" + std::to_string(i)), "lower " + std::to_string(i));
  MountFuse();
  std::vector<std::thread> threads;
  std::vector<std::string> errors(8);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::string mine = F("t" + std::to_string(t));
      if (::mkdir(mine.c_str(), 0755) != 0) errors[t] += "mkdir;";
      for (int i = 0; i < 100; ++i) {
        std::string p = mine + "/f" + std::to_string(i);
        if (WriteTo(p, "data" + std::to_string(i), O_WRONLY | O_CREAT) != "ok") errors[t] += "w;";
        if (ReadAll(p) != "data" + std::to_string(i)) errors[t] += "r;";
        if (::rename(p.c_str(), (p + "x").c_str()) != 0) errors[t] += "mv;";
        if (i % 2 == 0 && ::unlink((p + "x").c_str()) != 0) errors[t] += "rm;";
        // Everyone copies up and reads the same lower files.
        std::string shared = F("dir/f" + std::to_string(i % 50));
        if (i % 7 == t) WriteTo(shared, "x", O_WRONLY | O_APPEND);
        if (ReadAll(shared).rfind("lower", 0) != 0) errors[t] += "shared;";
        List(F("dir"));
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 8; ++t) EXPECT_EQ(errors[t], "") << "thread " << t;
  std::string listing = List(F("t3"));
  EXPECT_EQ(std::count(listing.begin(), listing.end(), ' '), 52);
}

}  // namespace
}  // namespace lamina::test
