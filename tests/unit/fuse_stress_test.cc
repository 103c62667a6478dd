// Several threads of mixed operations on one lamina-fuse mount for a bounded
// time, then the tree is checked against what the threads recorded.
//
// All threads work in one merged directory `s`, each on names of its own
// (t<N>_...) so that it can keep an exact model of them: create, append,
// truncate, rename (over its own names too), unlink, mkdir, rmdir, directory
// rename, chmod, hard links, readdir, and copy-up of its lower files, lower
// hard links and lower directories. Each result is checked against the model
// as it happens (a thread's own names change only through it), including
// that a listing of `s` shows exactly the thread's names. Shared names race
// on purpose: all threads copy up the same lower files (c<K>), and copy up
// lower files while their owner renames (r<K>) or unlinks (u<K>) them.
//
// Afterwards the tree must match the models: through the same mount, after
// a new mount (nothing cached, st_nlink from the layers), and through the
// kernel overlay on lamina's upper; every whiteout in the upper covers a
// name that some lower layer has.

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/fs.h"
#include "drivers/format.h"
#include "fuse/config.h"
#include "fuse/union_fs.h"
#include "tests/support/fuse_harness.h"
#include "tests/support/test_util.h"

namespace lamina::test {
namespace {

using namespace std::chrono_literals;

constexpr int kThreads = 8;
constexpr auto kRunTime = 3s;
constexpr int kMaxOpsPerThread = 20000;
constexpr int kCommon = 8;   // c<K>: copied up by everyone
constexpr int kRacers = 16;  // r<K> / u<K>: renamed / unlinked by thread K % kThreads

std::string Text(int e) {
  const char* name = ::strerrorname_np(e);
  return name != nullptr ? name : std::to_string(e);
}

// Content of `path`, or "!ERRNO".
std::string ReadAll(const std::string& path) {
  auto data = ReadFile(path);
  return data ? *data : "!" + Text(data.error().code());
}

std::set<std::string> Names(const std::string& dir, std::string* error = nullptr) {
  std::set<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    if (error != nullptr) *error = "opendir " + dir + ": " + Text(errno);
    return names;
  }
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.insert(n);
  }
  ::closedir(d);
  return names;
}

std::string LowerContent(const std::string& name) { return "lower content of " + name + "\n"; }

struct Inode {
  std::string data;
  mode_t mode = 0;
  bool lower_link = false;  // a lower hard link (the kernel without index breaks it)
};
struct Entry {
  bool dir = false;
  std::shared_ptr<Inode> inode;
};
// Paths relative to the mount root ("s/t3_n7", "s/t3_d2/x9").
using Model = std::map<std::string, Entry>;

std::string Parent(const std::string& path) { return path.substr(0, path.rfind('/')); }
std::string Base(const std::string& path) { return path.substr(path.rfind('/') + 1); }

size_t LinkCount(const Model& model, const std::shared_ptr<Inode>& inode) {
  size_t n = 0;
  for (const auto& [p, e] : model) n += e.inode == inode ? 1 : 0;
  return n;
}

// What is wrong with `path` under `root` against `e`; "" when right.
std::string CheckEntry(const std::string& root, const std::string& path, const Entry& e,
                       const Model& model, bool kernel) {
  struct stat st;
  if (::lstat((root + "/" + path).c_str(), &st) != 0) return path + ": lstat " + Text(errno);
  if (S_ISDIR(st.st_mode) != e.dir) return path + ": type " + std::to_string(st.st_mode);
  if (kernel && e.inode->lower_link) return "";
  if ((st.st_mode & 07777) != e.inode->mode) {
    return path + ": mode " + std::to_string(st.st_mode & 07777) + " want " +
           std::to_string(e.inode->mode);
  }
  if (e.dir) return "";
  if (!e.inode->lower_link && st.st_nlink != LinkCount(model, e.inode)) {
    return path + ": nlink " + std::to_string(st.st_nlink) + " want " +
           std::to_string(LinkCount(model, e.inode));
  }
  std::string data = ReadAll(root + "/" + path);
  if (data != e.inode->data) return path + ": content '" + data + "' want '" + e.inode->data + "'";
  return "";
}

// Every difference between the tree under `root` and `model`: entries, and
// the listing of every directory in it.
std::vector<std::string> CheckTree(const std::string& root, const Model& model, bool kernel) {
  std::vector<std::string> out;
  std::map<std::string, std::set<std::string>> children;
  children["s"];
  for (const auto& [path, e] : model) {
    children[Parent(path)].insert(Base(path));
    if (e.dir) children[path];
    std::string why = CheckEntry(root, path, e, model, kernel);
    if (!why.empty()) out.push_back(why);
  }
  for (const auto& [dir, want] : children) {
    std::string error;
    std::set<std::string> got = Names(root + "/" + dir, &error);
    if (!error.empty()) {
      out.push_back(error);
      continue;
    }
    for (const auto& n : got) {
      if (!want.contains(n)) out.push_back(dir + ": unexpected " + n);
    }
    for (const auto& n : want) {
      if (!got.contains(n)) out.push_back(dir + ": missing " + n);
    }
  }
  return out;
}

class FuseStressTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why = FuseUnavailableReason();
    if (why.empty()) why = OverlayUnavailableReason();
    if (!why.empty()) GTEST_SKIP() << why;
    for (const char* d : {"l1", "l2", "upper", "work", "mnt", "k_mnt"}) {
      ASSERT_EQ(::mkdir(tmp_.Sub(d).c_str(), 0755), 0) << d;
    }
    mode_t um = ::umask(0);
    ::umask(um);
    umask_ = um;
  }

  fuse::FsConfig Config() const {
    return UnionConfig({tmp_.Sub("l1"), tmp_.Sub("l2")}, tmp_.Sub("upper"), tmp_.Sub("work"),
                       tmp_.Sub("mnt"));
  }

  // A lower file in layer `l` ("l1" or "l2") with its model entry.
  void LowerFile(Model& model, const std::string& l, const std::string& path) {
    WriteFile(tmp_.Sub(l + "/" + path), LowerContent(Base(path)));
    ASSERT_EQ(::chmod(tmp_.Sub(l + "/" + path).c_str(), 0644), 0);
    model[path] = {false, std::make_shared<Inode>(Inode{LowerContent(Base(path)), 0644})};
  }

  // The layers: `s` in both lowers, and per thread lower files, lower hard
  // links and lower directories (one of them merged from both layers).
  void BuildLayers() {
    for (const char* l : {"l1", "l2"}) {
      ASSERT_EQ(::mkdir(tmp_.Sub(std::string(l) + "/s").c_str(), 0755), 0);
    }
    model_.assign(kThreads, {});
    for (int t = 0; t < kThreads; ++t) {
      std::string p = "s/t" + std::to_string(t) + "_";
      Model& m = model_[static_cast<size_t>(t)];
      for (int k = 0; k < 6; ++k)
        LowerFile(m, k % 2 == 0 ? "l1" : "l2", p + "L" + std::to_string(k));
      for (int k = 0; k < 2; ++k) {
        std::string a = p + "H" + std::to_string(k) + "a", b = p + "H" + std::to_string(k) + "b";
        LowerFile(m, "l2", a);
        ASSERT_EQ(::link(tmp_.Sub("l2/" + a).c_str(), tmp_.Sub("l2/" + b).c_str()), 0);
        m[a].inode->lower_link = true;
        m[b] = m[a];
      }
      for (int k = 0; k < 2; ++k) {
        std::string d = p + "LD" + std::to_string(k);
        ASSERT_EQ(::mkdir(tmp_.Sub("l2/" + d).c_str(), 0755), 0);
        m[d] = {true, std::make_shared<Inode>(Inode{"", 0755})};
        LowerFile(m, "l2", d + "/f");
      }
      ASSERT_EQ(::mkdir(tmp_.Sub("l1/" + p + "LD0").c_str(), 0755), 0);
      LowerFile(m, "l1", p + "LD0/g");
    }
    for (int k = 0; k < kCommon; ++k) LowerFile(shared_, "l2", "s/c" + std::to_string(k));
    for (int k = 0; k < kRacers; ++k) {
      LowerFile(shared_, k % 2 == 0 ? "l1" : "l2", "s/r" + std::to_string(k));
      LowerFile(shared_, "l2", "s/u" + std::to_string(k));
    }
  }

  // One thread's run; returns what went wrong.
  std::vector<std::string> Work(int t, std::chrono::steady_clock::time_point end);

  // All models together, with the shared names' final state.
  Model Final() const {
    Model all = shared_;
    for (const auto& m : model_) all.insert(m.begin(), m.end());
    for (int k = 0; k < kRacers; ++k) {
      std::string r = "s/r" + std::to_string(k);
      all["s/r" + std::to_string(k) + "m"] = all[r];
      all.erase(r);
      all.erase("s/u" + std::to_string(k));
    }
    for (int k = 0; k < kCommon; ++k) {
      if (chmodded_[k]) all["s/c" + std::to_string(k)].inode->mode = 0640;
    }
    return all;
  }

  std::string M(const std::string& rel) const { return tmp_.Sub("mnt/" + rel); }

  TempDir tmp_{"lamina-fusestress"};
  mode_t umask_ = 022;
  std::vector<Model> model_;  // per thread, touched only by that thread while running
  Model shared_;              // c<K>, r<K>, u<K> as layered (read-only while running)
  std::atomic<bool> chmodded_[kCommon] = {};
  std::atomic<bool> moved_[kRacers] = {};
  std::atomic<bool> unlinked_[kRacers] = {};
  std::atomic<int> ops_{0};  // done by all threads
};

std::vector<std::string> FuseStressTest::Work(int t, std::chrono::steady_clock::time_point end) {
  std::vector<std::string> errors;
  Model& m = model_[static_cast<size_t>(t)];
  std::mt19937 rng(static_cast<unsigned>(1234 + t));
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  const std::string prefix = "t" + std::to_string(t) + "_";
  int counter = 0;
  // What this thread did, for the report of a failure: the ops before it
  // that named the same object.
  std::vector<std::string> history;
  auto fail = [&](const std::string& what, std::string key = {}) {
    if (errors.size() >= 20) return;
    if (key.empty()) {
      size_t space = what.find(' ');
      key = what.substr(space + 1, what.find_first_of(" :", space + 1) - space - 1);
    }
    std::string base = Base(key);
    std::string past;
    int shown = 0;
    for (auto it = history.rbegin(); it != history.rend() && shown < 8; ++it) {
      if (it->find(base) != std::string::npos) {
        past = *it + "; " + past;
        ++shown;
      }
    }
    errors.push_back(what + " [after: " + past + "]");
  };
  auto expect_ok = [&](int rc, const std::string& what) {
    if (rc != 0) fail(what + ": " + Text(errno));
    return rc == 0;
  };
  auto paths = [&](bool dirs) {
    std::vector<std::string> out;
    for (const auto& [p, e] : m) {
      if (e.dir == dirs) out.push_back(p);
    }
    return out;
  };
  auto any_of = [&](const std::vector<std::string>& v) {
    return v[static_cast<size_t>(pick(static_cast<int>(v.size())))];
  };
  // A new name: top level, or in one of the thread's directories.
  auto fresh = [&](bool top) {
    std::string name = prefix + "n" + std::to_string(counter++);
    std::vector<std::string> dirs = paths(true);
    if (top || dirs.empty() || pick(2) == 0) return "s/" + name;
    return any_of(dirs) + "/" + name;
  };
  auto write = [&](const std::string& p, const std::string& data, int flags) {
    int fd = ::open(M(p).c_str(), flags | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) {
      fail("open " + p + ": " + Text(errno));
      return false;
    }
    bool ok = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
    if (!ok) fail("write " + p + ": " + Text(errno));
    ::close(fd);
    return ok;
  };

  for (int op = 0; op < kMaxOpsPerThread && std::chrono::steady_clock::now() < end; ++op) {
    ops_.fetch_add(1, std::memory_order_relaxed);
    std::vector<std::string> files = paths(false);
    int what = pick(16);
    if (files.size() > 60 && what < 3) what = 4;  // keep the tree small
    if (files.empty() && what != 0 && what != 5) what = 0;
    std::string tag = std::to_string(t) + "." + std::to_string(op);
    switch (what) {
      case 0: {  // create
        std::string p = fresh(false);
        if (write(p, "new " + tag, O_CREAT | O_EXCL)) {
          history.push_back(tag + " create " + p);
          m[p] = {false, std::make_shared<Inode>(Inode{"new " + tag, 0644 & ~umask_})};
        }
        break;
      }
      case 1: {  // append (copies a lower file up)
        std::string p = any_of(files);
        if (write(p, "+" + tag, O_APPEND)) m[p].inode->data += "+" + tag;
        history.push_back(tag + " append " + p);
        break;
      }
      case 2: {  // truncate and write
        std::string p = any_of(files);
        if (write(p, "T" + tag, O_TRUNC)) m[p].inode->data = "T" + tag;
        history.push_back(tag + " trunc " + p);
        break;
      }
      case 3: {  // rename a file, to a new name or over another of ours
        std::string from = any_of(files);
        std::string to = pick(2) == 0 ? fresh(false) : any_of(files);
        if (from == to) break;
        history.push_back(tag + " rename " + from + " " + to);
        if (!expect_ok(::rename(M(from).c_str(), M(to).c_str()), "rename " + from + " " + to)) {
          break;
        }
        // Two names of one inode: rename does nothing.
        if (m.contains(to) && m[to].inode == m[from].inode) break;
        m[to] = m[from];
        m.erase(from);
        break;
      }
      case 4: {  // unlink
        std::string p = any_of(files);
        history.push_back(tag + " unlink " + p);
        if (expect_ok(::unlink(M(p).c_str()), "unlink " + p)) m.erase(p);
        break;
      }
      case 5: {  // mkdir
        std::string p = "s/" + prefix + "d" + std::to_string(counter++);
        history.push_back(tag + " mkdir " + p);
        if (expect_ok(::mkdir(M(p).c_str(), 0755), "mkdir " + p)) {
          m[p] = {true, std::make_shared<Inode>(Inode{"", 0755 & ~umask_})};
        }
        break;
      }
      case 6: {  // rmdir: ENOTEMPTY where the model has children
        std::vector<std::string> dirs = paths(true);
        if (dirs.empty()) break;
        std::string p = any_of(dirs);
        auto it = m.lower_bound(p + "/");
        bool empty = it == m.end() || !it->first.starts_with(p + "/");
        history.push_back(tag + " rmdir " + p);
        int rc = ::rmdir(M(p).c_str());
        if (empty) {
          if (expect_ok(rc, "rmdir " + p)) m.erase(p);
        } else if (rc == 0 || errno != ENOTEMPTY) {
          fail("rmdir " + p + " (not empty): " + (rc == 0 ? "ok" : Text(errno)));
          if (rc == 0) return errors;  // the model is lost
        }
        break;
      }
      case 7: {  // directory rename (lower ones get a redirect)
        std::vector<std::string> dirs = paths(true);
        if (dirs.empty()) break;
        std::string from = any_of(dirs);
        std::string to = "s/" + prefix + "d" + std::to_string(counter++);
        history.push_back(tag + " rename " + from + " " + to);
        if (!expect_ok(::rename(M(from).c_str(), M(to).c_str()), "rename dir " + from)) break;
        Model moved;
        for (auto it = m.begin(); it != m.end();) {
          if (it->first == from || it->first.starts_with(from + "/")) {
            moved[to + it->first.substr(from.size())] = it->second;
            it = m.erase(it);
          } else {
            ++it;
          }
        }
        m.merge(moved);
        break;
      }
      case 8: {  // chmod a file or a directory
        std::vector<std::string> dirs = paths(true);
        bool dir = !dirs.empty() && pick(3) == 0;
        std::string p = dir ? any_of(dirs) : any_of(files);
        static constexpr mode_t kModes[] = {0600, 0640, 0700, 0755};
        mode_t mode = kModes[pick(4)];
        if (dir) mode |= 0700;
        history.push_back(tag + " chmod " + p + " " + std::to_string(mode));
        if (expect_ok(::chmod(M(p).c_str(), mode), "chmod " + p)) m[p].inode->mode = mode;
        break;
      }
      case 9: {  // hard link
        std::string from = any_of(files);
        std::string to = fresh(false);
        history.push_back(tag + " link " + from + " " + to);
        if (expect_ok(::link(M(from).c_str(), M(to).c_str()), "link " + from)) m[to] = m[from];
        break;
      }
      case 10: {  // the listing of `s` shows exactly our names
        std::set<std::string> want, got;
        for (const auto& [p, e] : m) {
          if (Parent(p) == "s") want.insert(Base(p));
        }
        std::string error;
        for (const auto& n : Names(M("s"), &error)) {
          if (n.starts_with(prefix)) got.insert(n);
        }
        if (!error.empty()) fail(error);
        for (const auto& n : got) {
          if (!want.contains(n)) fail("listing of s at " + tag + ": unexpected " + n, n);
        }
        for (const auto& n : want) {
          if (!got.contains(n)) fail("listing of s at " + tag + ": missing " + n, n);
        }
        break;
      }
      case 11: {  // read and stat one of ours
        std::string p = any_of(files);
        std::string why = CheckEntry(M(""), p, m[p], m, false);
        if (!why.empty()) fail(why, p);
        break;
      }
      case 12: {  // everyone copies up the same lower files
        int k = pick(kCommon);
        std::string p = "s/c" + std::to_string(k);
        if (expect_ok(::chmod(M(p).c_str(), 0640), "chmod " + p)) chmodded_[k] = true;
        std::string data = ReadAll(M(p));
        if (data != LowerContent(Base(p))) fail(p + ": '" + data + "'");
        break;
      }
      case 13:
      case 14: {  // copy-up racing with the owner's rename (13) or unlink (14)
        int k = pick(kRacers);
        bool rename = what == 13;
        std::string p = std::string(rename ? "s/r" : "s/u") + std::to_string(k);
        std::atomic<bool>& done = rename ? moved_[k] : unlinked_[k];
        if (k % kThreads == t && !done.exchange(true)) {
          int rc = rename ? ::rename(M(p).c_str(), M(p + "m").c_str()) : ::unlink(M(p).c_str());
          expect_ok(rc, (rename ? "rename " : "unlink ") + p);
          break;
        }
        std::string target = rename && pick(2) == 0 ? p + "m" : p;
        // A chmod (the kernel serialises it with the unlink on the inode
        // lock) or an open for writing (it does not).
        if (pick(2) == 0) {
          if (::chmod(M(target).c_str(), 0644) != 0 && errno != ENOENT) {
            fail("chmod " + target + ": " + Text(errno));
          }
        } else {
          int fd = ::open(M(target).c_str(), O_WRONLY | O_CLOEXEC);
          if (fd >= 0) {
            ::close(fd);
          } else if (errno != ENOENT) {
            fail("open " + target + ": " + Text(errno));
          }
        }
        std::string data = ReadAll(M(target));
        if (data != LowerContent(Base(p)) && data != "!ENOENT") fail(target + ": '" + data + "'");
        break;
      }
      default: {  // read a directory of ours
        std::vector<std::string> dirs = paths(true);
        if (!dirs.empty()) Names(M(any_of(dirs)));
        break;
      }
    }
  }
  return errors;
}

TEST_F(FuseStressTest, MixedOperationsThenTheTreeIsConsistent) {
  BuildLayers();
  {
    auto f = FuseMount::Start(Config());
    ASSERT_TRUE(f) << f.error().message();
    auto end = std::chrono::steady_clock::now() + kRunTime;
    std::vector<std::vector<std::string>> errors(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] { errors[static_cast<size_t>(t)] = Work(t, end); });
    }
    for (auto& th : threads) th.join();
    RecordProperty("operations", ops_.load());
    RecordProperty("listing_caches_dropped", (*f)->fs().listing_stats().caches_dropped);
    for (int t = 0; t < kThreads; ++t) {
      EXPECT_TRUE(errors[static_cast<size_t>(t)].empty())
          << "thread " << t << ":\n"
          << ::testing::PrintToString(errors[static_cast<size_t>(t)]);
    }
    // The owners' renames and unlinks that did not come up in the run.
    for (int k = 0; k < kRacers; ++k) {
      std::string r = "s/r" + std::to_string(k), u = "s/u" + std::to_string(k);
      if (!moved_[k]) {
        ASSERT_EQ(::rename(M(r).c_str(), M(r + "m").c_str()), 0) << r;
      }
      if (!unlinked_[k]) {
        ASSERT_EQ(::unlink(M(u).c_str()), 0) << u;
      }
    }
    Model want = Final();
    EXPECT_EQ(CheckTree(M(""), want, false), std::vector<std::string>{}) << "live mount";
  }
  Model want = Final();
  {
    auto f = FuseMount::Start(Config());
    ASSERT_TRUE(f) << f.error().message();
    EXPECT_EQ(CheckTree(M(""), want, false), std::vector<std::string>{}) << "new mount";
  }
  // Whiteouts in the upper only where a lower layer has the name (below the
  // directory's lower path, which a redirect xattr changes).
  std::vector<std::string> stray;
  std::function<void(const std::string&, const std::string&)> walk = [&](const std::string& rel,
                                                                         const std::string& low) {
    for (const auto& n : Names(tmp_.Sub("upper/" + rel))) {
      std::string p = rel.empty() ? n : rel + "/" + n;
      std::string lp = low.empty() ? n : low + "/" + n;
      struct stat st;
      ASSERT_EQ(::lstat(tmp_.Sub("upper/" + p).c_str(), &st), 0);
      std::string covered;
      if (IsWhiteoutStat(st)) covered = lp;
      if (IsWhiteoutName(n)) {
        covered = (low.empty() ? "" : low + "/") + std::string(WhiteoutTarget(n));
      }
      if (!covered.empty()) {
        struct stat lst;
        if (::lstat(tmp_.Sub("l1/" + covered).c_str(), &lst) != 0 &&
            ::lstat(tmp_.Sub("l2/" + covered).c_str(), &lst) != 0) {
          stray.push_back(p);
        }
      } else if (S_ISDIR(st.st_mode)) {
        char redirect[PATH_MAX];
        ssize_t len = ::lgetxattr(tmp_.Sub("upper/" + p).c_str(), "trusted.overlay.redirect",
                                  redirect, sizeof(redirect));
        if (len > 0) {
          std::string r(redirect, static_cast<size_t>(len));
          lp = r.starts_with("/") ? r.substr(1) : (low.empty() ? r : low + "/" + r);
        }
        walk(p, lp);
      }
    }
  };
  walk("", "");
  EXPECT_EQ(stray, std::vector<std::string>{});
  // The kernel overlay on lamina's upper shows the same tree (but for lower
  // hard links, which it keeps apart without an index).
  auto k = OverlayMount::Start({tmp_.Sub("l1"), tmp_.Sub("l2")}, tmp_.Sub("upper"),
                               tmp_.Sub("work"), tmp_.Sub("k_mnt"), "redirect_dir=on");
  ASSERT_TRUE(k) << k.error().message();
  EXPECT_EQ(CheckTree(tmp_.Sub("k_mnt"), want, true), std::vector<std::string>{}) << "kernel";
}

}  // namespace
}  // namespace lamina::test
