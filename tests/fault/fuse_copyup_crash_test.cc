// lamina-fuse killed with SIGKILL in the middle of copying up a large lower
// file: the copy is still a temporary file in work/work, so after a new
// mount the name shows the old content (never part of the new one) and the
// leftover is gone; a copy-up that finished before the kill shows the new
// content after the new mount.
//
// The daemon is the real binary in the foreground (-f), a child of the
// test. The test watches work/work while a writer opens the lower file for
// appending (which copies it up), stops the daemon (SIGSTOP) once the
// temporary file has grown, checks that it is partial, then kills it.

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "common/fd.h"
#include "common/fs.h"
#include "tests/support/fuse_harness.h"
#include "tests/support/test_util.h"

namespace lamina::test {
namespace {

using namespace std::chrono_literals;

constexpr size_t kBigSize = size_t{256} << 20;

// "" when the two files have the same bytes, else where they differ.
std::string CompareFiles(const std::string& a, const std::string& b) {
  auto fa = Open(a, O_RDONLY);
  auto fb = Open(b, O_RDONLY);
  if (!fa || !fb) return "cannot open " + (fa ? b : a);
  std::vector<char> ba(1 << 20), bb(1 << 20);
  for (uint64_t off = 0;;) {
    ssize_t na = ::read(fa->get(), ba.data(), ba.size());
    ssize_t nb = ::read(fb->get(), bb.data(), bb.size());
    if (na < 0 || nb < 0) return "read error at " + std::to_string(off);
    // Reads of regular files here return whole buffers until the end.
    if (na != nb) return "sizes differ after " + std::to_string(off + std::min(na, nb));
    if (na == 0) return "";
    if (std::memcmp(ba.data(), bb.data(), static_cast<size_t>(na)) != 0) {
      return "content differs in the MiB at " + std::to_string(off);
    }
    off += static_cast<uint64_t>(na);
  }
}

bool IsMountPoint(const std::string& path) {
  struct stat st, parent;
  return ::stat(path.c_str(), &st) == 0 && ::stat((path + "/..").c_str(), &parent) == 0 &&
         st.st_dev != parent.st_dev;
}

// The process state letter of `pid` ('T' when stopped), 0 when gone.
char ProcState(pid_t pid) {
  auto stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return 0;
  size_t paren = stat->rfind(')');
  return paren != std::string::npos && paren + 2 < stat->size() ? (*stat)[paren + 2] : 0;
}

// Regular files in `dir` with their sizes.
std::vector<std::pair<std::string, off_t>> FilesIn(const std::string& dir) {
  std::vector<std::pair<std::string, off_t>> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat st;
    if (::fstatat(::dirfd(d), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode)) {
      out.emplace_back(name, st.st_size);
    }
  }
  ::closedir(d);
  return out;
}

class FuseCopyUpCrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why = FuseUnavailableReason();
    if (!why.empty()) GTEST_SKIP() << why;
    for (const char* d : {"lower", "upper", "work", "mnt"}) {
      ASSERT_EQ(::mkdir(tmp_.Sub(d).c_str(), 0755), 0) << d;
    }
  }
  void TearDown() override {
    Kill();
    UnmountAllBelow(tmp_.path());
  }

  // Starts `lamina-fuse -f` on the stack and waits for the mount.
  void Start() {
    std::string opts = "lowerdir=" + tmp_.Sub("lower") + ",upperdir=" + tmp_.Sub("upper") +
                       ",workdir=" + tmp_.Sub("work");
    std::vector<std::string> args = {LaminaFuseBinary(), "-f", "-o", opts, tmp_.Sub("mnt")};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = ::fork();
    ASSERT_GE(pid_, 0);
    if (pid_ == 0) {
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    // Bounded wait for the mount (a failing start ends the child).
    for (int i = 0; i < 2000 && !IsMountPoint(tmp_.Sub("mnt")); ++i) {
      int status;
      ASSERT_EQ(::waitpid(pid_, &status, WNOHANG), 0) << "lamina-fuse exited before mounting";
      std::this_thread::sleep_for(5ms);
    }
    ASSERT_TRUE(IsMountPoint(tmp_.Sub("mnt")));
  }

  // SIGKILL for the daemon; its dead mount is detached.
  void Kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
    ::umount2(tmp_.Sub("mnt").c_str(), MNT_DETACH);
  }

  TempDir tmp_{"lamina-copyup-crash"};
  pid_t pid_ = -1;
};

TEST_F(FuseCopyUpCrashTest, KilledMidCopyShowsOldContentAndWorkIsCleaned) {
  // A partial copy shows in work/work as a regular file that has grown but
  // not to the full size. The copy may outrun the watcher (a fast disk, an
  // unlucky schedule); then a fresh lower file is tried, a few times.
  std::string big;
  bool caught = false;
  for (int attempt = 0; attempt < 3 && !caught; ++attempt) {
    big = "big" + std::to_string(attempt);
    Kill();
    WriteNoise(tmp_.Sub("lower/" + big), kBigSize, 42 + attempt);
    Start();
    auto writer = std::async(std::launch::async, [&] {
      // Opening for append copies the whole file up before it returns.
      int fd = ::open(tmp_.Sub("mnt/" + big).c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
      int err = fd < 0 ? errno : 0;
      if (fd >= 0) ::close(fd);
      return err;
    });
    while (writer.wait_for(0ms) != std::future_status::ready) {
      for (const auto& [name, size] : FilesIn(tmp_.Sub("work/work"))) {
        if (size <= 0 || static_cast<size_t>(size) >= kBigSize) continue;
        ASSERT_EQ(::kill(pid_, SIGSTOP), 0);
        while (ProcState(pid_) != 'T') std::this_thread::sleep_for(1ms);
        // Stopped: the file may still have grown by the call in flight, but
        // the rename that shows it cannot have happened.
        struct stat st;
        caught = ::stat(tmp_.Sub("work/work/" + name).c_str(), &st) == 0 &&
                 static_cast<size_t>(st.st_size) < kBigSize;
        break;
      }
      if (caught || ProcState(pid_) == 'T') break;
    }
    Kill();
    // The open fails (ENOTCONN) once the daemon is gone, or succeeded when
    // the copy outran the watcher.
    writer.get();
  }
  if (!caught) GTEST_SKIP() << "every copy-up finished before the watcher saw it partial";

  // Before the new mount: the name is not in the upper, the partial copy is
  // left in work/work.
  struct stat st;
  EXPECT_NE(::lstat(tmp_.Sub("upper/" + big).c_str(), &st), 0);
  EXPECT_FALSE(FilesIn(tmp_.Sub("work/work")).empty());

  Start();
  EXPECT_TRUE(FilesIn(tmp_.Sub("work/work")).empty());
  EXPECT_EQ(CompareFiles(tmp_.Sub("lower/" + big), tmp_.Sub("mnt/" + big)), "");

  // A copy-up that completed, then a kill: the new content stays.
  {
    auto fd = Open(tmp_.Sub("mnt/" + big), O_WRONLY | O_APPEND);
    ASSERT_TRUE(fd) << fd.error().message();
    ASSERT_EQ(::write(fd->get(), "tail", 4), 4);
  }
  Kill();
  Start();
  EXPECT_TRUE(FilesIn(tmp_.Sub("work/work")).empty());
  ASSERT_EQ(::stat(tmp_.Sub("mnt/" + big).c_str(), &st), 0);
  EXPECT_EQ(static_cast<size_t>(st.st_size), kBigSize + 4);
  {
    auto fd = Open(tmp_.Sub("mnt/" + big), O_RDONLY);
    ASSERT_TRUE(fd) << fd.error().message();
    char tail[4] = {};
    ASSERT_EQ(::pread(fd->get(), tail, 4, static_cast<off_t>(kBigSize)), 4);
    EXPECT_EQ(std::string(tail, 4), "tail");
  }
  ASSERT_EQ(::truncate(tmp_.Sub("mnt/" + big).c_str(), static_cast<off_t>(kBigSize)), 0);
  EXPECT_EQ(CompareFiles(tmp_.Sub("lower/" + big), tmp_.Sub("mnt/" + big)), "");
}

}  // namespace
}  // namespace lamina::test
