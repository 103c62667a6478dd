// Faults the store must survive, with the real `lamina` binary:
//   - SIGKILL in the middle of a vfs layer create and of a `lamina commit`
//     (the apply case is store_crash_test.cc; a killed lamina-fuse copy-up
//     is in the fuse tests);
//   - a full disk (a small loop filesystem as the store root): apply,
//     create, writes through a mount and commit fail with ENOSPC, clearly,
//     and then succeed once there is room again;
//   - several `lamina` processes creating, mounting, writing, unmounting and
//     removing layers at the same time.
// After each, the store is checked whole (support/store_check.h).

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/fd.h"
#include "common/fs.h"
#include "tests/support/loop_fs.h"
#include "tests/support/store_check.h"
#include "tests/support/test_util.h"
#include "tests/support/tree_compare.h"

namespace lamina {
namespace {

using nlohmann::json;
using test::CommandResult;
using test::TempDir;

std::string Describe(const CommandResult& r) {
  return "status " + std::to_string(r.status) + "\nstdout: " + r.out + "\nstderr: " + r.err;
}

std::string Joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

// `lamina` on one store with one driver.
struct Lamina {
  std::string root;
  std::string driver;
  std::vector<std::string> Argv(const std::vector<std::string>& args) const {
    std::vector<std::string> argv = {test::LaminaBinary(), "--root", root, "--driver", driver};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }
  CommandResult operator()(const std::vector<std::string>& args) const {
    return test::Run(Argv(args));
  }
};

// A child process (stdout and stderr to /dev/null), killed and reaped by
// the destructor if still there.
class Child {
 public:
  explicit Child(const std::vector<std::string>& argv) {
    std::vector<char*> cargv;
    for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      int null = ::open("/dev/null", O_RDWR);
      ::dup2(null, STDIN_FILENO);
      ::dup2(null, STDOUT_FILENO);
      ::dup2(null, STDERR_FILENO);
      ::execv(cargv[0], cargv.data());
      ::_exit(127);
    }
  }
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  pid_t pid() const { return pid_; }
  // True while the child has not exited (reaps it when it has).
  bool Running() {
    if (pid_ <= 0) return false;
    if (::waitpid(pid_, &status_, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
    return true;
  }
  // SIGKILL and reap; the wait status.
  int Kill() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status_, 0);
      pid_ = -1;
    }
    return status_;
  }

 private:
  pid_t pid_ = -1;
  int status_ = 0;
};

// Waits (polling) until `ready()` or the child ends; true if `ready()`.
template <class Ready>
bool WaitWhileRunning(Child& child, Ready ready) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(2);
  while (std::chrono::steady_clock::now() < deadline) {
    if (ready()) return true;
    if (!child.Running()) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

bool HasEntries(const std::string& dir) {
  auto names = ListDir(dir);
  return names && !names->empty();
}

// A source tree of `dirs` x `files` small files plus `big_mib` of noise,
// and its tar at `tar`.
void MakeTreeTar(const std::string& src, const std::string& tar, int dirs, int files,
                 size_t big_mib) {
  ASSERT_TRUE(MakeDirs(src));
  for (int d = 0; d < dirs; ++d) {
    std::string sub = src + "/d" + std::to_string(d);
    ASSERT_TRUE(MakeDirs(sub));
    for (int f = 0; f < files; ++f) {
      test::WriteFile(sub + "/f" + std::to_string(f), std::string(4096, char('a' + f % 26)));
    }
  }
  if (big_mib > 0) test::WriteNoise(src + "/big", big_mib << 20, 42);
  CommandResult tarred = test::Run({"tar", "-C", src, "-cf", tar, "."});
  ASSERT_EQ(tarred.status, 0) << tarred.err;
}

json Json(const CommandResult& r) { return json::parse(r.out, nullptr, false); }

std::vector<std::string> LayerIds(const Lamina& lamina) {
  CommandResult ls = lamina({"layer", "ls", "--json"});
  EXPECT_EQ(ls.status, 0) << Describe(ls);
  std::vector<std::string> ids;
  json j = Json(ls);
  if (!j.is_array()) return ids;
  for (const auto& l : j) ids.push_back(l["id"].get<std::string>());
  std::sort(ids.begin(), ids.end());
  return ids;
}

TEST(StoreFaults, KilledVfsLayerCreateLeavesNoHalfMadeLayer) {
  TempDir dir;
  std::string reason = test::DriverUnusable("vfs", dir.Sub("probe"));
  if (!reason.empty()) GTEST_SKIP() << "vfs is not usable here: " << reason;
  Lamina lamina{dir.Sub("store"), "vfs"};
  // A parent that takes a while to copy: thousands of files and some data.
  MakeTreeTar(dir.Sub("src"), dir.Sub("base.tar"), 20, 100, 32);
  CommandResult base = lamina({"layer", "apply", "--id", "base", dir.Sub("base.tar")});
  ASSERT_EQ(base.status, 0) << Describe(base);
  ASSERT_EQ(lamina({"layer", "create", "--parent", "base", "--id", "sibling"}).status, 0);

  std::string child_diff = lamina.root + "/layers/child/diff";
  {
    Child create(lamina.Argv({"layer", "create", "--parent", "base", "--id", "child"}));
    ASSERT_TRUE(WaitWhileRunning(create, [&] { return HasEntries(child_diff); }))
        << "the create ended before its copy could be seen";
    int status = create.Kill();
    ASSERT_TRUE(WIFSIGNALED(status)) << "the create finished before it was killed";
  }
  // Half-made on disk: a diff/ with part of the tree, no layer.json yet.
  ASSERT_TRUE(PathExists(child_diff));
  EXPECT_FALSE(PathExists(lamina.root + "/layers/child/layer.json"));

  // The next command does not show it and removes it; the rest is intact.
  EXPECT_EQ(LayerIds(lamina), std::vector<std::string>({"base", "sibling"}));
  EXPECT_FALSE(PathExists(lamina.root + "/layers/child"));
  EXPECT_EQ(Joined(test::StoreProblems(lamina.root)), "");
  test::TreeCompareOptions same;
  same.times = false;
  EXPECT_EQ(Joined(test::CompareTrees(dir.Sub("src"), lamina.root + "/layers/base/diff", same)),
            "");
  EXPECT_EQ(Joined(test::CompareTrees(dir.Sub("src"), lamina.root + "/layers/sibling/diff", same)),
            "");

  // The same create again makes the whole layer.
  CommandResult again = lamina({"layer", "create", "--parent", "base", "--id", "child"});
  ASSERT_EQ(again.status, 0) << Describe(again);
  EXPECT_EQ(Joined(test::CompareTrees(dir.Sub("src"), child_diff, same)), "");
  EXPECT_EQ(Joined(test::StoreProblems(lamina.root)), "");
}

// The driver of `lamina run` tests here: vfs (the cheapest to set up) when
// usable, else what the store picks.
std::string RunDriver(const std::string& probe_root) {
  for (const char* d : {"vfs", "overlay", "fuse"}) {
    if (test::DriverUnusable(d, probe_root).empty()) return d;
  }
  return "";
}

TEST(StoreFaults, KilledCommitLeavesNoHalfMadeLayerOrImage) {
  if (!test::IsRoot()) GTEST_SKIP() << "needs root for `lamina run`";
  TempDir dir;
  std::string driver = RunDriver(dir.Sub("probe"));
  if (driver.empty()) GTEST_SKIP() << "no usable storage driver here";
  Lamina lamina{dir.Sub("store"), driver};
  // A kept container with enough changes that committing them takes a while.
  CommandResult run = lamina({"run", "--name", "c", "busybox", "sh", "-c",
                              "mkdir /data && dd if=/dev/urandom of=/data/big bs=1M count=96 "
                              "2>/dev/null && echo done > /data/last"});
  ASSERT_EQ(run.status, 0) << Describe(run);
  std::vector<std::string> before = LayerIds(lamina);
  std::string container_dir;
  for (const auto& name :
       ListDir(lamina.root + "/containers").value_or(std::vector<std::string>())) {
    if (name != "lock") container_dir = lamina.root + "/containers/" + name;
  }
  ASSERT_FALSE(container_dir.empty());
  auto container_files = [&] {
    auto names = ListDir(container_dir);  // sorted
    return names ? *names : std::vector<std::string>();
  };
  std::vector<std::string> files_before = container_files();

  // Killed while the new layer is being written.
  {
    Child commit(lamina.Argv({"commit", "c", "img"}));
    std::string new_layer;
    bool seen = WaitWhileRunning(commit, [&] {
      auto names = ListDir(lamina.root + "/layers");
      if (!names) return false;
      for (const auto& name : *names) {
        if (std::find(before.begin(), before.end(), name) != before.end()) continue;
        if (HasEntries(lamina.root + "/layers/" + name + "/diff")) {
          new_layer = name;
          return true;
        }
      }
      return false;
    });
    ASSERT_TRUE(seen) << "the commit ended before its layer could be seen";
    int status = commit.Kill();
    ASSERT_TRUE(WIFSIGNALED(status)) << "the commit finished before it was killed";
  }

  // No image, no new layer, the container and its layer as they were.
  CommandResult images = lamina({"image", "ls", "--json"});
  ASSERT_EQ(images.status, 0) << Describe(images);
  EXPECT_EQ(images.out.find("\"img"), std::string::npos) << images.out;
  EXPECT_EQ(LayerIds(lamina), before);
  EXPECT_EQ(Joined(test::StoreProblems(lamina.root)), "");
  EXPECT_EQ(container_files(), files_before) << "the commit left files in " << container_dir;

  // The commit again, and the image runs with the container's changes.
  CommandResult again = lamina({"commit", "c", "img"});
  ASSERT_EQ(again.status, 0) << Describe(again);
  CommandResult check = lamina({"run", "img", "sh", "-c", "cat /data/last; wc -c < /data/big"});
  ASSERT_EQ(check.status, 0) << Describe(check);
  EXPECT_EQ(check.out, "done\n" + std::to_string(96 << 20) + "\n");
  EXPECT_EQ(Joined(test::StoreProblems(lamina.root)), "");
  EXPECT_EQ(container_files(), files_before);
}

// Full disk: one small ext4 holds the store; a filler file takes every free
// block, then each operation must fail with ENOSPC and leave the store as
// it was; without the filler, each succeeds.
class FullDisk : public ::testing::TestWithParam<std::string> {};

// Fills the filesystem of `path` with one file; true when it is full.
bool Fill(const std::string& path) {
  auto fd = Open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (!fd) return false;
  std::string chunk(1 << 20, 'x');
  for (size_t size = chunk.size(); size > 0;) {
    ssize_t n = ::write(fd->get(), chunk.data(), size);
    if (n < 0 && errno == ENOSPC) {
      if (size == 1) return true;
      size /= 2;  // down to the last byte
    } else if (n < 0) {
      return false;
    }
  }
  return true;
}

bool SaysNoSpace(const CommandResult& r) {
  return r.status != 0 && r.err.find("No space left on device") != std::string::npos;
}

TEST_P(FullDisk, EveryOperationFailsWithEnospcAndTheStoreStaysWhole) {
  std::string driver = GetParam();
  auto fs = test::LoopFs::Make({.type = "ext4", .size_mib = 96, .mkfs_args = {"-m", "0"}});
  if (!fs) GTEST_SKIP() << fs.error();
  TempDir dir;
  Lamina lamina{(*fs)->Sub("store"), driver};
  std::string reason = test::DriverUnusable(driver, (*fs)->Sub("probe"));
  if (!reason.empty()) GTEST_SKIP() << driver << " is not usable here: " << reason;
  (void)RemoveTree((*fs)->Sub("probe"));
  // Before the disk is full: a base layer, a writable layer on it, a kept
  // container with a change to commit.
  MakeTreeTar(dir.Sub("small"), dir.Sub("small.tar"), 2, 10, 0);
  MakeTreeTar(dir.Sub("big"), dir.Sub("big.tar"), 4, 50, 8);
  ASSERT_EQ(lamina({"layer", "apply", "--id", "base", dir.Sub("small.tar")}).status, 0);
  ASSERT_EQ(lamina({"layer", "create", "--parent", "base", "--writable", "--id", "w"}).status, 0);
  bool can_run = test::IsRoot();
  if (can_run) {
    CommandResult run = lamina({"run", "--name", "c", "busybox", "sh", "-c",
                                "dd if=/dev/urandom of=/changed bs=1k count=512 2>/dev/null"});
    ASSERT_EQ(run.status, 0) << Describe(run);
  }
  std::vector<std::string> before = LayerIds(lamina);
  ASSERT_EQ(Joined(test::StoreProblems(lamina.root)), "");

  std::string filler = (*fs)->Sub("filler");
  ASSERT_TRUE(Fill(filler));

  CommandResult apply =
      lamina({"layer", "apply", "--parent", "base", "--id", "a", dir.Sub("big.tar")});
  EXPECT_TRUE(SaysNoSpace(apply)) << Describe(apply);
  CommandResult create = lamina({"layer", "create", "--parent", "base", "--id", "b"});
  EXPECT_TRUE(SaysNoSpace(create)) << Describe(create);
  // A mount that needs room for its reference count fails with ENOSPC;
  // otherwise a write through it fails with ENOSPC itself.
  CommandResult mount = lamina({"layer", "mount", "w"});
  if (mount.status != 0) {
    EXPECT_TRUE(SaysNoSpace(mount)) << Describe(mount);
  } else {
    std::string merged = mount.out.substr(0, mount.out.find('\n'));
    auto fd = Open(merged + "/new", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err = 0;
    if (!fd) {
      err = fd.error().code();
    } else {
      std::string chunk(1 << 20, 'y');
      ssize_t n = 0;
      for (int i = 0; i < 64 && n >= 0; ++i) n = ::write(fd->get(), chunk.data(), chunk.size());
      if (n < 0) err = errno;
      if (err == 0 && ::fsync(fd->get()) != 0) err = errno;
    }
    EXPECT_EQ(err, ENOSPC) << std::strerror(err);
    fd = Fd();
    (void)::unlink((merged + "/new").c_str());
    CommandResult umount = lamina({"layer", "umount", "w"});
    EXPECT_EQ(umount.status, 0) << Describe(umount);
  }
  if (can_run) {
    CommandResult commit = lamina({"commit", "c", "img"});
    EXPECT_TRUE(SaysNoSpace(commit)) << Describe(commit);
  }
  EXPECT_EQ(LayerIds(lamina), before);
  EXPECT_EQ(Joined(test::StoreProblems(lamina.root)), "");

  // With room again, every operation works.
  ASSERT_EQ(::unlink(filler.c_str()), 0);
  CommandResult apply2 =
      lamina({"layer", "apply", "--parent", "base", "--id", "a", dir.Sub("big.tar")});
  EXPECT_EQ(apply2.status, 0) << Describe(apply2);
  CommandResult create2 = lamina({"layer", "create", "--parent", "base", "--id", "b"});
  EXPECT_EQ(create2.status, 0) << Describe(create2);
  if (can_run) {
    CommandResult commit2 = lamina({"commit", "c", "img"});
    EXPECT_EQ(commit2.status, 0) << Describe(commit2);
  }
  EXPECT_EQ(Joined(test::StoreProblems(lamina.root)), "");
  (void)lamina({"rm", "c"});
}

INSTANTIATE_TEST_SUITE_P(Drivers, FullDisk, ::testing::Values("vfs", "overlay", "fuse"),
                         [](const auto& info) { return info.param; });

// Several processes on one store at once: each creates layers on a shared
// base, mounts each, writes a file through the mount, unmounts, and removes
// every other one; one more keeps trying to remove the shared base (refused
// while it has children). Afterwards every layer a worker kept is there
// with its file, no removed one is, and the store is whole.
class Concurrency : public ::testing::TestWithParam<std::string> {};

TEST_P(Concurrency, ProcessesCreatingMountingAndRemovingLayersLoseNothing) {
  std::string driver = GetParam();
  TempDir dir;
  std::string reason = test::DriverUnusable(driver, dir.Sub("probe"));
  if (!reason.empty()) GTEST_SKIP() << driver << " is not usable here: " << reason;
  Lamina lamina{dir.Sub("store"), driver};
  MakeTreeTar(dir.Sub("src"), dir.Sub("base.tar"), 2, 10, 0);
  ASSERT_EQ(lamina({"layer", "apply", "--id", "base", dir.Sub("base.tar")}).status, 0);
  // A child from the start, so that the remover can never win against the
  // workers' first creates: every removal of base must be refused.
  ASSERT_EQ(lamina({"layer", "create", "--parent", "base", "--id", "anchor"}).status, 0);

  constexpr int kWorkers = 4, kOps = 20;
  std::string l = "'" + test::LaminaBinary() + "' --root '" + lamina.root + "' --driver " + driver;
  // Prints "FAIL <what>" for every step that fails.
  std::string worker =
      "w=$1; i=0; while [ $i -lt " + std::to_string(kOps) + " ]; do id=w$w-$i; " +
      "if [ $((i % 2)) -eq 0 ]; then flags=--writable; else flags=; fi; " + l +
      " layer create --parent base $flags --id $id >/dev/null || echo FAIL create $id; "
      "m=$(" +
      l +
      " layer mount $id) || echo FAIL mount $id; "
      "if [ -n \"$flags\" ]; then echo $id > \"$m/owner\" || echo FAIL write $id; fi; " +
      l +
      " layer umount $id || echo FAIL umount $id; "
      "if [ $((i % 3)) -eq 0 ]; then " +
      l +
      " layer rm $id || echo FAIL rm $id; fi; "
      "i=$((i + 1)); done";
  std::string remover = "i=0; while [ $i -lt " + std::to_string(kOps) + " ]; do " + l +
                        " layer rm base 2>/dev/null && echo FAIL removed base; i=$((i + 1)); done";
  std::vector<std::unique_ptr<Child>> children;
  std::vector<std::string> logs;
  for (int w = 0; w <= kWorkers; ++w) {
    logs.push_back(dir.Sub("log" + std::to_string(w)));
    std::string script = w < kWorkers ? worker : remover;
    children.push_back(std::make_unique<Child>(std::vector<std::string>{
        "/bin/sh", "-c", "exec > '" + logs.back() + "' 2>&1; " + script, "sh", std::to_string(w)}));
  }
  for (auto& c : children) {
    while (c->Running()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (const auto& log : logs) {
    std::string text = test::ReadFileOrDie(log);
    EXPECT_EQ(text.find("FAIL"), std::string::npos) << log << ":\n" << text;
  }

  std::vector<std::string> expected = {"anchor", "base"};
  for (int w = 0; w < kWorkers; ++w) {
    for (int i = 0; i < kOps; ++i) {
      if (i % 3 != 0) expected.push_back("w" + std::to_string(w) + "-" + std::to_string(i));
    }
  }
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(LayerIds(lamina), expected);
  EXPECT_EQ(test::StoreLayerIds(lamina.root), expected);
  EXPECT_EQ(Joined(test::StoreProblems(lamina.root)), "");
  for (const auto& id : expected) {
    if (id == "base" || id == "anchor") continue;
    int i = std::stoi(id.substr(id.find('-') + 1));
    std::string owner = lamina.root + "/layers/" + id + "/diff/owner";
    if (i % 2 == 0) {
      EXPECT_EQ(test::ReadFileOrDie(owner), id + "\n");
    } else {
      EXPECT_FALSE(PathExists(owner)) << owner;
    }
  }
  // No mount is left behind.
  std::string mounts = test::ReadFileOrDie("/proc/self/mountinfo");
  EXPECT_EQ(mounts.find(lamina.root), std::string::npos) << mounts;
}

INSTANTIATE_TEST_SUITE_P(Drivers, Concurrency, ::testing::Values("vfs", "overlay", "fuse"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace lamina
