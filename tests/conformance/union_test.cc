// The conformance suite: one parameterised suite run on every driver. Each
// case builds a small multi-layer stack through the driver's own ApplyDiff,
// mounts a writable layer on it, does the same operation with plain syscalls
// on the driver's tree and on the kernel overlay driver's tree (the oracle,
// a second store), and compares what both answered: return values, errno,
// listings, contents and stat fields. Each case also checks the oracle's
// answer against what overlayfs documents, so a case can fail on overlay
// itself. Where a driver legitimately differs from the kernel, the case says
// so and why.
//
// Adding a driver is one line: kDrivers below.

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <functional>
#include <map>
#include <sstream>

#include "common/fd.h"
#include "common/fs.h"
#include "drivers/format.h"
#include "drivers/host.h"
#include "drivers/select/registry.h"
#include "tests/support/conformance_stack.h"
#include "tests/support/conformance_userns.h"
#include "tests/support/test_util.h"

namespace lamina::test {
namespace {

const std::vector<std::string> kDrivers = {"overlay", "fuse", "vfs"};

// ---- observations: small text records, equal when the behaviour is ----

std::string ErrName(int code) {
  if (code == 0) return "0";
  const char* name = strerrorname_np(code);
  return name != nullptr ? name : std::to_string(code);
}
// "0" or the errno name of a syscall's result.
std::string Rc(int rc) { return rc == 0 ? "0" : ErrName(errno); }

struct Facets {
  bool times = false;  // mtime
  bool nlink = true;
  bool content = true;
};

// Type, mode, owner, size, nlink, content / link target, user-visible xattrs.
std::string Describe(const std::string& root, const std::string& rel, Facets facets = {}) {
  std::string path = root + "/" + rel;
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return rel + ": " + ErrName(errno);
  std::ostringstream out;
  out << rel << ": " << std::oct << st.st_mode << std::dec << " " << st.st_uid << ":" << st.st_gid;
  if (!S_ISDIR(st.st_mode)) out << " size=" << st.st_size;
  if (facets.nlink && !S_ISDIR(st.st_mode)) out << " nlink=" << st.st_nlink;
  if (facets.times) out << " mtime=" << st.st_mtim.tv_sec << "." << st.st_mtim.tv_nsec;
  if (S_ISREG(st.st_mode) && facets.content) {
    auto data = ReadFile(path);
    out << " data=" << (data ? *data : "<" + data.error().message() + ">");
  }
  if (S_ISLNK(st.st_mode)) {
    char target[PATH_MAX];
    ssize_t n = ::readlink(path.c_str(), target, sizeof(target));
    out << " -> " << std::string(target, n > 0 ? static_cast<size_t>(n) : 0);
  }
  if (auto names = ListXattrs(path)) {
    std::vector<std::string> shown;
    for (const auto& name : *names) {
      if (!IsInternalXattr(name) && !name.starts_with("security.")) shown.push_back(name);
    }
    std::sort(shown.begin(), shown.end());
    for (const auto& name : shown) out << " " << name << "=" << GetXattr(path, name).value_or("?");
  }
  return out.str();
}

// readdir of a directory as the kernel returns it, sorted, duplicates kept.
std::string Listing(const std::string& root, const std::string& rel) {
  std::string path = root + "/" + rel;
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) return rel + "/: " + ErrName(errno);
  std::vector<std::string> names;
  while (struct dirent* ent = ::readdir(dir)) {
    std::string name = ent->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(dir);
  std::sort(names.begin(), names.end());
  std::string out = rel + "/:";
  for (const auto& n : names) out += " " + n;
  return out;
}

// Joins observations in order: `<<` operands are sequenced left to right
// (C++17), `+` operands are not, and the steps have side effects.
struct Out {
  std::ostringstream text;
  template <class T>
  Out& operator<<(const T& value) {
    text << value;
    return *this;
  }
  operator std::string() const { return text.str(); }
};

std::string Read(const std::string& root, const std::string& rel) {
  auto data = ReadFile(root + "/" + rel);
  return data ? *data : ErrName(data.error().code());
}

std::string WriteAt(const std::string& root, const std::string& rel, int flags,
                    const std::string& data, off_t offset = -1) {
  int fd = ::open((root + "/" + rel).c_str(), flags | O_CLOEXEC, 0644);
  if (fd < 0) return "open " + ErrName(errno);
  Fd guard(fd);
  ssize_t n = offset < 0 ? ::write(fd, data.data(), data.size())
                         : ::pwrite(fd, data.data(), data.size(), offset);
  if (n < 0) return "write " + ErrName(errno);
  return "wrote " + std::to_string(n);
}

// Runs `body` in a child process with the ids `uid`:`uid` (no supplementary
// groups) and `mask` as umask, and returns what it returned.
std::string AsUser(uid_t uid, mode_t mask, const std::function<std::string()>& body) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return "pipe " + ErrName(errno);
  Fd read_end(fds[0]);
  Fd write_end(fds[1]);
  pid_t pid = ::fork();
  if (pid < 0) return "fork " + ErrName(errno);
  if (pid == 0) {
    std::string out;
    if (::setgroups(0, nullptr) != 0 || ::setresgid(uid, uid, uid) != 0 ||
        ::setresuid(uid, uid, uid) != 0) {
      out = "setuid " + ErrName(errno);
    } else {
      ::umask(mask);
      out = body();
    }
    (void)!::write(write_end.get(), out.data(), out.size());
    ::_exit(0);
  }
  write_end = Fd();
  std::string out;
  char buf[256];
  ssize_t n;
  while ((n = ::read(read_end.get(), buf, sizeof(buf))) > 0)
    out.append(buf, static_cast<size_t>(n));
  int status = 0;
  ::waitpid(pid, &status, 0);
  return out;
}

// A POSIX ACL in its xattr form (system.posix_acl_access / _default).
struct AclEntry {
  uint16_t tag;  // ACL_USER_OBJ 1, ACL_USER 2, ACL_GROUP_OBJ 4, ACL_MASK 0x10, ACL_OTHER 0x20
  uint16_t perm;
  uint32_t id = static_cast<uint32_t>(-1);
};
std::string AclXattr(const std::vector<AclEntry>& entries) {
  std::string out;
  auto put = [&out](uint32_t value, int bytes) {
    for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
  };
  put(2, 4);  // version
  for (const auto& e : entries) {
    put(e.tag, 2);
    put(e.perm, 2);
    put(e.id, 4);
  }
  return out;
}

// Mode bits of a path, in octal ("ENOENT" etc. when it cannot be stat'ed).
std::string ModeOf(int dirfd, const std::string& rel) {
  struct stat st;
  if (::fstatat(dirfd, rel.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return ErrName(errno);
  std::ostringstream out;
  out << std::oct << (st.st_mode & 07777);
  return out.str();
}

// ---- the layers used by the cases ----

void ThreeLayersBottom(TarBuilder& t) {
  t.File("a", "1").File("b", "1").File("c", "1");
  t.Dir("d").File("d/a", "1").File("d/b", "1").File("d/c", "1");
  t.Dir("o").File("o/p", "1").File("o/q", "1");
  t.Dir("w").File("w/x", "1").File("w/y", "1");
  TarEntry meta;
  meta.path = "meta";
  meta.data = "metadata kept";
  meta.mode = 0640;
  meta.uid = 1234;
  meta.gid = 5678;
  meta.mtime = 1600000000;
  meta.mtime_nsec = 0;
  meta.xattrs = {{"user.k", "v"}};
  for (const char* name : {"m-write", "m-trunc", "m-append", "m-chmod", "m-chown", "m-truncate",
                           "m-utimes", "m-xattr", "m-open"}) {
    meta.path = name;
    t.Add(meta);
  }
  t.Dir("ren").File("ren/in", "lower").Dir("ren/sub").File("ren/sub/deep", "deeper");
  t.Dir("empty");
  t.Dir("only-lower").File("only-lower/x", "x");
  t.File("hard1", "linked").Hardlink("hard2", "hard1");
  t.Symlink("sym", "a").Symlink("dangling", "nowhere");
  t.File("ex1", "one").File("ex2", "two");
  t.File(std::string(255, 'n'), "long name");
}
void ThreeLayersMiddle(TarBuilder& t) {
  t.File("a", "2").File("b", "2");
  t.Dir("d").File("d/b", "2").File("d/.wh.c", "").File("d/e", "2");
  t.Dir("o").File("o/.wh..wh..opq", "").File("o/new", "2");
  t.Dir("w").File("w/.wh.y", "");
  t.File(".wh.c", "");
}
void ThreeLayersTop(TarBuilder& t) {
  t.File("a", "3");
  t.Dir("d").File("d/a", "3").File("d/f", "3");
}

const std::vector<LayerContent> kThreeLayers = {ThreeLayersBottom, ThreeLayersMiddle,
                                                ThreeLayersTop};

// ---- the fixture ----

struct Both {
  std::string sut;
  std::string oracle;
};

class UnionConformance : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!IsRoot() || InRootlessNamespace()) {
      // Unprivileged (the `rootless` ctest entries): both stores are built
      // and used as root of a user namespace, with user.overlay xattrs and
      // the kernel overlay's userxattr, as a rootless user has them.
      std::string why = EnterRootlessNamespace();
      if (!why.empty()) GTEST_SKIP() << "rootless mode: " << why;
      rootless_ = true;
    }
    const XattrNamespace ns = rootless_ ? XattrNamespace::kUser : XattrNamespace::kTrusted;
    for (const char* sub : {"sut/layers", "oracle/layers"}) ASSERT_TRUE(MakeDirs(tmp_.Sub(sub)));
    auto facts = ProbeHost(tmp_.Sub("sut"));
    ASSERT_TRUE(facts) << facts.error().message();
    DriverConfig config;
    config.home = tmp_.Sub("sut/layers");
    config.xattr_ns = ns;
    auto probe_driver = MakeDriver(GetParam(), config);
    ASSERT_TRUE(probe_driver) << probe_driver.error().message();
    auto verdict = (*probe_driver)->Probe(*facts);
    if (!verdict.usable) GTEST_SKIP() << GetParam() << " is not usable here: " << verdict.reason;
    auto oracle_config = config;
    oracle_config.home = tmp_.Sub("oracle/layers");
    auto oracle_verdict = (*MakeDriver("overlay", oracle_config))->Probe(*facts);
    if (!oracle_verdict.usable) {
      GTEST_SKIP() << "no kernel overlay oracle: " << oracle_verdict.reason;
    }
    auto sut = MountedStack::Build(GetParam(), tmp_.Sub("sut/layers"), ns, kThreeLayers);
    ASSERT_TRUE(sut) << GetParam() << ": " << sut.error().message();
    auto oracle = MountedStack::Build("overlay", tmp_.Sub("oracle/layers"), ns, kThreeLayers);
    ASSERT_TRUE(oracle) << "oracle: " << oracle.error().message();
    sut_ = std::move(*sut);
    oracle_ = std::move(*oracle);
  }

  // Runs `step` on both trees; the driver's answer must equal the oracle's.
  Both Same(const std::function<std::string(const std::string&)>& step) {
    Both both{step(sut_.root()), step(oracle_.root())};
    EXPECT_EQ(both.sut, both.oracle) << GetParam() << " differs from the kernel overlay";
    return both;
  }
  // Runs `step` on both trees and returns both answers, for the cases where
  // a driver legitimately differs (the caller says why).
  Both Each(const std::function<std::string(const std::string&)>& step) {
    return {step(sut_.root()), step(oracle_.root())};
  }
  bool IsOverlay() const { return GetParam() == "overlay"; }
  // Unprivileged mode: this process is root of its own user namespace
  // (EnterRootlessNamespace), the stores use user.overlay xattrs and the
  // kernel overlay userxattr, which rules out redirect_dir (renaming a
  // directory with lower content is EXDEV there).
  bool Rootless() const { return rootless_; }

  bool rootless_ = false;
  TempDir tmp_{"lamina-conf"};
  MountedStack sut_;
  MountedStack oracle_;
};

// ---- the cases ----

TEST_P(UnionConformance, LookupTakesTheTopmostLayer) {
  EXPECT_EQ(Same([](auto& r) {
              return std::string(Out() << Read(r, "a") << Read(r, "b") << Read(r, "d/a"));
            }).oracle,
            "323");
  EXPECT_EQ(
      Same([](auto& r) { return Describe(r, "d/b"); }).oracle.find("data=2") != std::string::npos,
      true);
  EXPECT_EQ(
      Same([](auto& r) { return std::string(Out() << Read(r, "d/e") << Read(r, "d/f")); }).oracle,
      "23");
}

TEST_P(UnionConformance, WhiteoutsAndOpaqueDirsHideLowerEntries) {
  EXPECT_EQ(Same([](auto& r) { return Describe(r, "c"); }).oracle, "c: ENOENT");
  EXPECT_EQ(Same([](auto& r) { return Describe(r, "w/y"); }).oracle, "w/y: ENOENT");
  EXPECT_EQ(Same([](auto& r) { return Listing(r, "o"); }).oracle, "o/: new");
  EXPECT_EQ(Same([](auto& r) { return Listing(r, "w"); }).oracle, "w/: x");
  // A whited-out name can be made again, and is then a fresh file.
  EXPECT_EQ(
      Same([](auto& r) { return WriteAt(r, "c", O_CREAT | O_EXCL | O_WRONLY, "new"); }).oracle,
      "wrote 3");
  Same([](auto& r) { return Describe(r, "c"); });
}

TEST_P(UnionConformance, ReaddirMergesWithoutDuplicatesOrWhiteouts) {
  EXPECT_EQ(Same([](auto& r) { return Listing(r, "d"); }).oracle, "d/: a b e f");
  std::string root_listing = Same([](auto& r) { return Listing(r, ""); }).oracle;
  EXPECT_EQ(root_listing.find(" c "), std::string::npos) << root_listing;
  EXPECT_EQ(root_listing.find(".wh."), std::string::npos) << root_listing;
  // After changes in the container layer.
  Same([](auto& r) {
    return std::string(Out() << Rc(::unlink((r + "/d/a").c_str()))
                             << WriteAt(r, "d/g", O_CREAT | O_WRONLY, "g")
                             << Rc(::mkdir((r + "/d/h").c_str(), 0755)));
  });
  EXPECT_EQ(Same([](auto& r) { return Listing(r, "d"); }).oracle, "d/: b e f g h");
}

TEST_P(UnionConformance, CopyUpKeepsDataModeOwnerTimesAndXattrs) {
  using Op = std::function<std::string(const std::string&)>;
  struct Case {
    const char* file;
    Op op;
    bool mtime_kept;  // the operation itself leaves mtime alone
  };
  timespec fixed[2] = {{1500000000, 0}, {1500000001, 0}};
  std::vector<Case> cases = {
      {"m-write", [](auto& r) { return WriteAt(r, "m-write", O_WRONLY, "M", 0); }, false},
      {"m-trunc", [](auto& r) { return WriteAt(r, "m-trunc", O_WRONLY | O_TRUNC, "new"); }, false},
      {"m-append", [](auto& r) { return WriteAt(r, "m-append", O_WRONLY | O_APPEND, "+"); }, false},
      {"m-chmod", [](auto& r) { return Rc(::chmod((r + "/m-chmod").c_str(), 0600)); }, true},
      {"m-chown", [](auto& r) { return Rc(::lchown((r + "/m-chown").c_str(), 42, 43)); }, true},
      {"m-truncate", [](auto& r) { return Rc(::truncate((r + "/m-truncate").c_str(), 3)); }, false},
      {"m-utimes",
       [&](auto& r) { return Rc(::utimensat(AT_FDCWD, (r + "/m-utimes").c_str(), fixed, 0)); },
       true},
      {"m-xattr",
       [](auto& r) { return Rc(::lsetxattr((r + "/m-xattr").c_str(), "user.new", "n", 1, 0)); },
       true},
      {"m-open", [](auto& r) { return WriteAt(r, "m-open", O_RDWR, ""); }, true},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.file);
    std::string rc = Same(c.op).oracle;
    EXPECT_TRUE(rc == "0" || rc.starts_with("wrote")) << rc;
    Facets facets;
    facets.times = c.mtime_kept;
    std::string after = Same([&](auto& r) { return Describe(r, c.file, facets); }).oracle;
    // Owner, xattrs and (where the op keeps it) mtime came along.
    if (std::string(c.file) != "m-chown") {
      EXPECT_NE(after.find(" 1234:5678"), std::string::npos) << after;
    }
    EXPECT_NE(after.find("user.k=v"), std::string::npos) << after;
    if (c.mtime_kept && std::string(c.file) != "m-utimes") {
      EXPECT_NE(after.find("mtime=1600000000.0"), std::string::npos) << after;
    }
  }
  EXPECT_NE(Same([](auto& r) { return Describe(r, "m-write"); }).oracle.find("data=Metadata kept"),
            std::string::npos);
  EXPECT_NE(Same([](auto& r) { return Describe(r, "m-chmod"); }).oracle.find(": 100600 "),
            std::string::npos);
  EXPECT_NE(Same([](auto& r) { return Describe(r, "m-chown"); }).oracle.find(" 42:43 "),
            std::string::npos);
  EXPECT_NE(Same([](auto& r) { return Describe(r, "m-truncate"); }).oracle.find("data=met"),
            std::string::npos);
  EXPECT_NE(Same([](auto& r) { return Describe(r, "m-xattr"); }).oracle.find("user.new=n"),
            std::string::npos);
}

TEST_P(UnionConformance, CopyUpKeepsTheInodeNumber) {
  // Overlay (all layers on one filesystem, xino off) keeps a lower file's
  // st_ino across copy-up; vfs has no copy-up, so it is trivially stable.
  auto ino_stable = [](auto& r) {
    struct stat before, after;
    if (::stat((r + "/m-open").c_str(), &before) != 0) return ErrName(errno);
    if (::chmod((r + "/m-open").c_str(), 0600) != 0) return ErrName(errno);
    if (::stat((r + "/m-open").c_str(), &after) != 0) return ErrName(errno);
    return std::string(before.st_ino == after.st_ino && before.st_dev == after.st_dev ? "same"
                                                                                      : "changed");
  };
  EXPECT_EQ(Same(ino_stable).oracle, "same");
}

TEST_P(UnionConformance, RenameFilesAndDirectoriesWithLowerContent) {
  EXPECT_EQ(
      Same([](auto& r) { return Rc(::rename((r + "/b").c_str(), (r + "/b2").c_str())); }).oracle,
      "0");
  Same(
      [](auto& r) { return std::string(Out() << Describe(r, "b") << " | " << Describe(r, "b2")); });
  if (Rootless()) {
    // The kernel refuses redirect_dir=on with userxattr: rootless overlay
    // answers EXDEV for a directory with lower content (`mv` then copies); a
    // driver with its own redirects (fuse) or full trees (vfs) renames it.
    auto renamed =
        Each([](auto& r) { return Rc(::rename((r + "/ren").c_str(), (r + "/ren2").c_str())); });
    EXPECT_EQ(renamed.oracle, "EXDEV");
    if (IsOverlay()) {
      EXPECT_EQ(renamed.sut, renamed.oracle);
    } else {
      EXPECT_EQ(renamed.sut, "0");
    }
    return;
  }
  // Kernel overlay: redirect_dir=on (trusted xattrs) renames a directory with
  // lower content in place instead of EXDEV.
  EXPECT_EQ(Same([](auto& r) {
              return Rc(::rename((r + "/ren").c_str(), (r + "/ren2").c_str()));
            }).oracle,
            "0");
  EXPECT_EQ(Same([](auto& r) {
              return std::string(Out() << Listing(r, "ren2") << " " << Read(r, "ren2/sub/deep"));
            }).oracle,
            "ren2/: in sub deeper");
  EXPECT_EQ(Same([](auto& r) { return Describe(r, "ren"); }).oracle, "ren: ENOENT");
  // And back, then a new directory at the old name is empty.
  Same([](auto& r) {
    return std::string(Out() << Rc(::rename((r + "/ren2").c_str(), (r + "/ren3").c_str()))
                             << Rc(::mkdir((r + "/ren").c_str(), 0755)) << " " << Listing(r, "ren")
                             << " " << Listing(r, "ren3"));
  });
}

TEST_P(UnionConformance, RenameOverTargetsNoReplaceAndExchange) {
  EXPECT_EQ(
      Same([](auto& r) { return Rc(::rename((r + "/ex1").c_str(), (r + "/a").c_str())); }).oracle,
      "0");
  EXPECT_EQ(Same([](auto& r) {
              return std::string(Out() << Read(r, "a") << " " << Describe(r, "ex1"));
            }).oracle,
            "one ex1: ENOENT");
  EXPECT_EQ(Same([](auto& r) {
              return Rc(::renameat2(AT_FDCWD, (r + "/ex2").c_str(), AT_FDCWD, (r + "/b").c_str(),
                                    RENAME_NOREPLACE));
            }).oracle,
            "EEXIST");
  EXPECT_EQ(Same([](auto& r) {
              return std::string(Out() << Rc(::renameat2(AT_FDCWD, (r + "/ex2").c_str(), AT_FDCWD,
                                                         (r + "/hard1").c_str(), RENAME_EXCHANGE))
                                       << " " << Read(r, "ex2") << " " << Read(r, "hard1"));
            }).oracle,
            "0 linked two");
  // A directory over a non-empty directory; a file over a directory. w has
  // lower content: rootless overlay (no redirect_dir) answers EXDEV first.
  auto over_dir =
      Each([](auto& r) { return Rc(::rename((r + "/w").c_str(), (r + "/d").c_str())); });
  EXPECT_EQ(over_dir.oracle, Rootless() ? "EXDEV" : "ENOTEMPTY");
  if (!Rootless() || IsOverlay()) {
    EXPECT_EQ(over_dir.sut, over_dir.oracle);
  } else {
    EXPECT_EQ(over_dir.sut, "ENOTEMPTY");
  }
  EXPECT_EQ(
      Same([](auto& r) { return Rc(::rename((r + "/a").c_str(), (r + "/d").c_str())); }).oracle,
      "EISDIR");
  EXPECT_EQ(Same([](auto& r) {
              return Rc(::rename((r + "/empty").c_str(), (r + "/only-lower/x").c_str()));
            }).oracle,
            "ENOTDIR");
}

// Names removed in the container layer (whiteouts there) made again, as
// every kind of object, then removed again.
TEST_P(UnionConformance, NamesMadeAgainOverTheirWhiteouts) {
  EXPECT_EQ(Same([](auto& r) {
              return std::string(
                  Out() << Rc(::unlink((r + "/a").c_str())) << Rc(::unlink((r + "/b").c_str()))
                        << Rc(::unlink((r + "/sym").c_str())) << Rc(::unlink((r + "/d/a").c_str()))
                        << Rc(::unlink((r + "/d/b").c_str())) << " " << Listing(r, "") << " "
                        << Listing(r, "d"));
            }).oracle.substr(0, 6),
            "00000 ");
  EXPECT_EQ(Same([](auto& r) {
              return std::string(Out() << WriteAt(r, "a", O_CREAT | O_EXCL | O_WRONLY, "again")
                                       << " " << Rc(::mkfifo((r + "/b").c_str(), 0640)) << " "
                                       << Rc(::symlink("d", (r + "/sym").c_str())) << " "
                                       << Rc(::mkdir((r + "/d/a").c_str(), 0750)) << " "
                                       << WriteAt(r, "d/b", O_CREAT | O_WRONLY, "b"));
            }).oracle,
            "wrote 5 0 0 0 wrote 1");
  Same([](auto& r) {
    return std::string(Out() << Describe(r, "a") << " | " << Describe(r, "b") << " | "
                             << Describe(r, "sym") << " | " << Describe(r, "d/a") << " | "
                             << Listing(r, "d/a") << " | " << Describe(r, "d/b") << " | "
                             << Listing(r, "") << " | " << Listing(r, "d"));
  });
  EXPECT_EQ(Same([](auto& r) {
              return std::string(
                  Out() << Rc(::unlink((r + "/a").c_str())) << Rc(::unlink((r + "/b").c_str()))
                        << Rc(::unlink((r + "/sym").c_str())) << Rc(::rmdir((r + "/d/a").c_str()))
                        << Rc(::unlink((r + "/d/b").c_str())) << " " << Describe(r, "a") << " "
                        << Listing(r, "d"));
            }).oracle,
            "00000 a: ENOENT d/: e f");
}

// readdir of a directory that changes in the middle of the pass (and is
// read from the start by someone else meanwhile): every name that exists
// throughout comes exactly once, none twice, and a name that is gone before
// the pass starts never comes.
TEST_P(UnionConformance, ReaddirDuringChangesListsEveryNameOnce) {
  Same([](auto& r) {
    std::string dir = r + "/big";
    if (::mkdir(dir.c_str(), 0755) != 0) return "mkdir " + ErrName(errno);
    for (int i = 0; i < 2000; ++i) {
      std::string rc = WriteAt(r, "big/f" + std::to_string(i), O_CREAT | O_WRONLY, "");
      if (rc != "wrote 0") return rc;
    }
    // Small getdents64 batches, so that the pass takes many requests.
    auto read_batch = [](int fd, std::vector<std::string>* names) {
      alignas(8) char buf[2048];
      long n = ::syscall(SYS_getdents64, fd, buf, sizeof(buf));
      for (long at = 0; at < n;) {
        auto* d = reinterpret_cast<struct dirent64*>(buf + at);
        std::string name = d->d_name;
        if (name != "." && name != "..") names->push_back(name);
        at += d->d_reclen;
      }
      return n;
    };
    Fd pass(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    std::vector<std::string> seen;
    while (seen.size() < 1000 && read_batch(pass.get(), &seen) > 0) {
    }
    for (int i = 0; i < 2000; i += 20) ::unlink((dir + "/f" + std::to_string(i)).c_str());
    for (int i = 0; i < 100; ++i) WriteAt(r, "big/new" + std::to_string(i), O_CREAT | O_WRONLY, "");
    {
      Fd other(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      std::vector<std::string> all;
      while (read_batch(other.get(), &all) > 0) {
      }
      if (all.size() != 2000 - 100 + 100) return "second pass " + std::to_string(all.size());
    }
    while (read_batch(pass.get(), &seen) > 0) {
    }
    std::map<std::string, int> count;
    for (const auto& n : seen) count[n]++;
    std::string out;
    for (int i = 0; i < 2000; ++i) {
      std::string name = "f" + std::to_string(i);
      int c = count.contains(name) ? count[name] : 0;
      if (i % 20 != 0 && c != 1) out += " " + name + "=" + std::to_string(c);
      if (c > 1) out += " " + name + " twice";
    }
    for (const auto& [name, c] : count) {
      if (c > 1 && !name.starts_with("f")) out += " " + name + " twice";
    }
    return "stable names once:" + (out.empty() ? std::string(" yes") : out);
  });
}

TEST_P(UnionConformance, RmdirOfADirectoryWithOnlyLowerContent) {
  EXPECT_EQ(Same([](auto& r) { return Rc(::rmdir((r + "/only-lower").c_str())); }).oracle,
            "ENOTEMPTY");
  EXPECT_EQ(Same([](auto& r) {
              return std::string(Out() << Rc(::unlink((r + "/only-lower/x").c_str()))
                                       << Rc(::rmdir((r + "/only-lower").c_str()))
                                       << Rc(::rmdir((r + "/only-lower").c_str())));
            }).oracle,
            "00ENOENT");
  EXPECT_EQ(Same([](auto& r) { return Rc(::rmdir((r + "/empty").c_str())); }).oracle, "0");
  EXPECT_EQ(Same([](auto& r) { return Rc(::rmdir((r + "/a").c_str())); }).oracle, "ENOTDIR");
}

TEST_P(UnionConformance, MkdirRmdirMkdirGivesAnEmptyDirectory) {
  EXPECT_EQ(Same([](auto& r) {
              return std::string(
                  Out() << Rc(::unlink((r + "/w/x").c_str())) << Rc(::rmdir((r + "/w").c_str()))
                        << Rc(::mkdir((r + "/w").c_str(), 0700)) << " " << Listing(r, "w"));
            }).oracle,
            "000 w/:");
  Same([](auto& r) { return Describe(r, "w"); });
}

TEST_P(UnionConformance, HardLinksAndSymlinks) {
  EXPECT_EQ(Same([](auto& r) {
              return std::string(Out() << Describe(r, "hard1") << " | " << Describe(r, "hard2"));
            }).oracle,
            "hard1: 100644 0:0 size=6 nlink=2 data=linked | "
            "hard2: 100644 0:0 size=6 nlink=2 data=linked");
  EXPECT_EQ(Same([](auto& r) {
              return std::string(Out() << Describe(r, "sym") << " " << Read(r, "sym"));
            }).oracle,
            "sym: 120777 0:0 size=1 nlink=1 -> a 3");
  EXPECT_EQ(Same([](auto& r) { return Read(r, "dangling"); }).oracle, "ENOENT");
  Same([](auto& r) {
    return std::string(Out() << Rc(::symlink("d/e", (r + "/newsym").c_str())) << " "
                             << Describe(r, "newsym") << " " << Read(r, "newsym"));
  });
  // A new link to a lower file: content agrees everywhere. Overlay (index=off)
  // copies hard1 up alone, so hard2 keeps the lower inode and nlink counts
  // differ from a plain tree's, where all three names share one inode.
  Facets no_nlink;
  no_nlink.nlink = false;
  Same([&](auto& r) {
    return std::string(Out() << Rc(::link((r + "/hard1").c_str(), (r + "/hard3").c_str())) << " "
                             << Describe(r, "hard3", no_nlink));
  });
  Same([](auto& r) {
    return std::string(Out() << WriteAt(r, "hard3", O_WRONLY | O_APPEND, "+") << Read(r, "hard1"));
  });
  auto hard2 = Each([](auto& r) { return Read(r, "hard2"); });
  EXPECT_EQ(hard2.oracle, "linked");
  if (IsOverlay()) {
    EXPECT_EQ(hard2.sut, hard2.oracle);
  }
}

TEST_P(UnionConformance, UnlinkWhileOpenKeepsTheData) {
  Same([](auto& r) {
    int fd = ::open((r + "/d/e").c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return "open " + ErrName(errno);
    Fd guard(fd);
    std::string out = Rc(::unlink((r + "/d/e").c_str()));
    out += " " + Describe(r, "d/e");
    char buf[16] = {};
    ssize_t n = ::pread(fd, buf, sizeof(buf), 0);
    out += " read=" + std::string(buf, n > 0 ? static_cast<size_t>(n) : 0);
    out += " write=" + std::to_string(::pwrite(fd, "xy", 2, 0));
    struct stat st;
    out += std::string(Out() << " fstat=" << Rc(::fstat(fd, &st))
                             << " size=" << std::to_string(st.st_size));
    return out + " " + Listing(r, "d");
  });
}

TEST_P(UnionConformance, StatfsDescribesTheWritableLayer) {
  // Both stores are on the same filesystem; overlay answers with its upper
  // filesystem's figures under its own magic. vfs's "mount" is the layer
  // directory itself, so f_type is that filesystem's (a legitimate difference).
  auto fields = [](auto& r) {
    struct statfs sfs;
    if (::statfs(r.c_str(), &sfs) != 0) return ErrName(errno);
    return std::string(Out() << "bsize=" << std::to_string(sfs.f_bsize)
                             << " namelen=" << std::to_string(sfs.f_namelen)
                             << " blocks=" << std::to_string(sfs.f_blocks)
                             << " files=" << std::to_string(sfs.f_files));
  };
  Same(fields);
  auto magic = Each([](auto& r) {
    struct statfs sfs;
    return ::statfs(r.c_str(), &sfs) == 0 ? std::to_string(sfs.f_type) : ErrName(errno);
  });
  EXPECT_EQ(magic.oracle, std::to_string(0x794c7630));
  if (IsOverlay()) {
    EXPECT_EQ(magic.sut, magic.oracle);
  }
}

TEST_P(UnionConformance, LongNamesAndDeepPaths) {
  std::string n255(255, 'n');
  EXPECT_EQ(Same([&](auto& r) { return Read(r, n255); }).oracle, "long name");
  EXPECT_EQ(Same([&](auto& r) {
              return WriteAt(r, std::string(255, 'm'), O_CREAT | O_WRONLY, "x");
            }).oracle,
            "wrote 1");
  EXPECT_EQ(Same([&](auto& r) {
              return WriteAt(r, std::string(256, 'm'), O_CREAT | O_WRONLY, "x");
            }).oracle,
            "open ENAMETOOLONG");
  EXPECT_EQ(Same([&](auto& r) {
              return Rc(::mkdir((r + "/" + std::string(256, 'k')).c_str(), 0755));
            }).oracle,
            "ENAMETOOLONG");
  // Directories nested until the relative path nears PATH_MAX, made one level
  // at a time through fds; then the whole path at once.
  auto deep = [](auto& r) {
    std::string component(200, 'p');
    std::string rel;
    int dirfd = ::open(r.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    Fd guard(dirfd);
    while (rel.size() + component.size() + 1 < PATH_MAX - 16) {
      if (::mkdirat(guard.get(), component.c_str(), 0755) != 0) return "mkdir " + ErrName(errno);
      int next = ::openat(guard.get(), component.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
      if (next < 0) return "openat " + ErrName(errno);
      guard = Fd(next);
      rel += (rel.empty() ? "" : "/") + component;
    }
    std::string out = "depth=" + std::to_string(rel.size());
    int fd =
        ::openat(AT_FDCWD, (r + "/" + rel + "/f").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    out += " absolute=" + (fd >= 0 ? std::string("0") : ErrName(errno));
    if (fd >= 0) ::close(fd);
    int root = ::open(r.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    Fd root_fd(root);
    fd = ::openat(root, (rel + "/f").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    out += " relative=" + (fd >= 0 ? std::string("0") : ErrName(errno));
    if (fd >= 0) ::close(fd);
    fd = ::openat(root, (rel + "/" + std::string(100, 'q')).c_str(), O_CREAT | O_WRONLY | O_CLOEXEC,
                  0644);
    out += " over=" + (fd >= 0 ? std::string("0") : ErrName(errno));
    if (fd >= 0) ::close(fd);
    return out;
  };
  std::string oracle = Same(deep).oracle;
  EXPECT_NE(oracle.find("relative=0 over=ENAMETOOLONG"), std::string::npos) << oracle;
}

// POSIX ACLs: an ACL entry grants what the mode bits alone do not, and a
// parent's default ACL takes the place of the umask for new entries. The
// kernel enforces the first, the backing filesystem does the second.
TEST_P(UnionConformance, AclsGrantAccessAndDefaultAclsReplaceTheUmask) {
  const std::string access =
      AclXattr({{0x01, 6}, {0x02, 4, 4242}, {0x04, 0}, {0x10, 4}, {0x20, 0}});
  const std::string inherit = AclXattr({{0x01, 7}, {0x04, 7}, {0x20, 7}});
  std::string set = Same([&](auto& r) {
                      return std::string(
                          Out() << Rc(::lsetxattr((r + "/a").c_str(), "system.posix_acl_access",
                                                  access.data(), access.size(), 0))
                                << Rc(::mkdir((r + "/dacl").c_str(), 0755))
                                << Rc(::lsetxattr((r + "/dacl").c_str(), "system.posix_acl_default",
                                                  inherit.data(), inherit.size(), 0))
                                << Rc(::mkdir((r + "/plain").c_str(), 0755)));
                    }).oracle;
  if (set.starts_with("EOPNOTSUPP")) GTEST_SKIP() << "the store's filesystem has no POSIX ACLs";
  ASSERT_EQ(set, "0000");
  // The ACL's mask shows as the group bits.
  EXPECT_EQ(Same([](auto& r) { return Describe(r, "a", {}).substr(0, 9); }).oracle, "a: 100640");
  // Paths relative to an fd opened here: the test directory itself may be
  // closed to other users.
  auto opens = [](auto& r) {
    Fd root(::open(r.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    auto try_read = [&root] {
      int fd = ::openat(root.get(), "a", O_RDONLY | O_CLOEXEC);
      std::string rc = fd >= 0 ? "0" : ErrName(errno);
      if (fd >= 0) ::close(fd);
      return rc;
    };
    return std::string(Out() << AsUser(4242, 022, try_read) << " " << AsUser(4343, 022, try_read));
  };
  EXPECT_EQ(Same(opens).oracle, "0 EACCES");
  auto creates = [](auto& r) {
    Fd root(::open(r.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    return AsUser(0, 077, [&root] {
      std::string out;
      for (const char* dir : {"dacl", "plain"}) {
        std::string f = std::string(dir) + "/f";
        std::string sub = std::string(dir) + "/sub";
        std::string node = std::string(dir) + "/fifo";
        int fd = ::openat(root.get(), f.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0666);
        if (fd >= 0) ::close(fd);
        ::mkdirat(root.get(), sub.c_str(), 0777);
        ::mknodat(root.get(), node.c_str(), S_IFIFO | 0666, 0);
        out += std::string(Out() << f << "=" << ModeOf(root.get(), f) << " " << sub << "="
                                 << ModeOf(root.get(), sub) << " " << node << "="
                                 << ModeOf(root.get(), node) << " ");
      }
      return out;
    });
  };
  EXPECT_EQ(Same(creates).oracle,
            "dacl/f=666 dacl/sub=777 dacl/fifo=666 plain/f=600 plain/sub=700 plain/fifo=600 ");
}

// Rootless: both stacks built and used by the unprivileged lamina-test
// account as root of its own user namespace (user.overlay.* xattrs,
// userxattr), answers compared in the parent.
TEST_P(UnionConformance, RootlessInAUserNamespace) {
  std::string why = RootlessUnavailableReason();
  if (!why.empty()) GTEST_SKIP() << why;
  uid_t uid = TestUserUid();
  std::string base = tmp_.Sub("rootless");
  for (const char* sub : {"", "/sut", "/sut/layers", "/oracle", "/oracle/layers"}) {
    ASSERT_TRUE(MakeDirs(base + sub));
    ASSERT_EQ(::chown((base + sub).c_str(), uid, uid), 0);
  }
  auto run = [&](const std::string& name, const std::string& home) {
    return RunInUserNamespace(uid, uid, [&]() -> std::string {
      // Owned by the namespace's root (lamina-test): no chown needed.
      auto bottom = [](TarBuilder& t) {
        t.File("a", "1").File("b", "1").Dir("d").File("d/x", "1").File("d/y", "1");
        t.Dir("o").File("o/p", "1").Dir("ren").File("ren/in", "1").File("m", "meta");
      };
      auto top = [](TarBuilder& t) {
        t.File("a", "2").Dir("d").File("d/.wh.y", "").Dir("o").File("o/.wh..wh..opq", "");
        t.File("o/q", "2");
      };
      auto stack = MountedStack::Build(name, home, XattrNamespace::kUser, {bottom, top});
      if (!stack) return "build: " + stack.error().message();
      const std::string& r = stack->root();
      std::string out;
      out += std::string(Out() << Read(r, "a") << Read(r, "b") << "\n");
      out += std::string(Out() << Listing(r, "d") << "\n" << Listing(r, "o") << "\n");
      out += std::string(Out() << Rc(::chmod((r + "/m").c_str(), 0600)) << " " << Describe(r, "m")
                               << "\n");
      out += std::string(Out() << WriteAt(r, "d/new", O_CREAT | O_WRONLY, "n") << " "
                               << Listing(r, "d") << "\n");
      out +=
          std::string(Out() << Rc(::unlink((r + "/b").c_str())) << " " << Listing(r, "") << "\n");
      out += std::string(Out() << WriteAt(r, "b", O_CREAT | O_EXCL | O_WRONLY, "again") << " "
                               << Read(r, "b") << " " << Rc(::unlink((r + "/d/x").c_str()))
                               << Rc(::mkdir((r + "/d/x").c_str(), 0700)) << " " << Listing(r, "d")
                               << Listing(r, "d/x") << "\n");
      out += "rename_dir=" + Rc(::rename((r + "/ren").c_str(), (r + "/ren2").c_str())) + "\n";
      return out;
    });
  };
  auto sut = run(GetParam(), base + "/sut/layers");
  auto oracle = run("overlay", base + "/oracle/layers");
  ASSERT_TRUE(oracle.setup_error.empty()) << oracle.setup_error;
  ASSERT_EQ(oracle.status, 0) << oracle.output;
  ASSERT_EQ(sut.status, 0) << sut.output;
  // The kernel refuses redirect_dir=on with userxattr, so rootless overlay
  // answers EXDEV for a directory with lower content (`mv` then copies); a
  // driver with its own redirects (fuse) or full trees (vfs) renames it.
  auto split = [](const std::string& text) {
    auto pos = text.find("rename_dir=");
    return std::pair{text.substr(0, pos), pos == std::string::npos ? "" : text.substr(pos)};
  };
  auto [sut_common, sut_rename] = split(sut.output);
  auto [oracle_common, oracle_rename] = split(oracle.output);
  EXPECT_EQ(sut_common, oracle_common);
  EXPECT_EQ(oracle_rename, "rename_dir=EXDEV\n");
  if (IsOverlay()) {
    EXPECT_EQ(sut_rename, oracle_rename);
  }
  EXPECT_NE(oracle_common.find("d/: new x"), std::string::npos) << oracle_common;
  EXPECT_NE(oracle_common.find("o/: q"), std::string::npos) << oracle_common;
  EXPECT_NE(oracle_common.find("0 m: 100600"), std::string::npos) << oracle_common;
}

INSTANTIATE_TEST_SUITE_P(Drivers, UnionConformance, ::testing::ValuesIn(kDrivers),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace lamina::test
