// WriteLayerTar: content, whiteouts, opaque markers, hard links, xattrs,
// override_stat, determinism, and apply → write → apply round trips.

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "common/fd.h"
#include "common/fs.h"
#include "common/hash.h"
#include "drivers/format.h"
#include "drivers/tar.h"
#include "tests/support/tar_builder.h"
#include "tests/support/test_util.h"
#include "tests/support/tree_compare.h"

namespace lamina {
namespace {

using test::TarBuilder;
using test::TarEntry;
using test::TempDir;

// What a tar holds, as read back by libarchive.
struct ReadEntry {
  std::string path;
  mode_t type = 0;
  mode_t perm = 0;
  int64_t uid = 0, gid = 0, size = 0, mtime = 0;
  std::string hardlink, symlink, data, uname, gname;
  std::vector<std::pair<std::string, std::string>> xattrs;
  bool atime_set = false, ctime_set = false;
};

std::vector<ReadEntry> ReadTar(const std::string& bytes) {
  std::vector<ReadEntry> out;
  struct archive* a = archive_read_new();
  archive_read_support_format_tar(a);
  EXPECT_EQ(archive_read_open_memory(a, bytes.data(), bytes.size()), ARCHIVE_OK);
  struct archive_entry* e;
  while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
    ReadEntry r;
    r.path = archive_entry_pathname(e);
    r.type = archive_entry_filetype(e);
    r.perm = archive_entry_perm(e);
    r.uid = archive_entry_uid(e);
    r.gid = archive_entry_gid(e);
    r.size = archive_entry_size(e);
    r.mtime = archive_entry_mtime(e);
    if (archive_entry_hardlink(e)) r.hardlink = archive_entry_hardlink(e);
    if (archive_entry_symlink(e)) r.symlink = archive_entry_symlink(e);
    if (archive_entry_uname(e)) r.uname = archive_entry_uname(e);
    if (archive_entry_gname(e)) r.gname = archive_entry_gname(e);
    r.atime_set = archive_entry_atime_is_set(e);
    r.ctime_set = archive_entry_ctime_is_set(e);
    archive_entry_xattr_reset(e);
    const char* name;
    const void* value;
    size_t size;
    while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
      r.xattrs.emplace_back(name, std::string(static_cast<const char*>(value), size));
    }
    char buf[4096];
    la_ssize_t n;
    while ((n = archive_read_data(a, buf, sizeof(buf))) > 0) r.data.append(buf, n);
    out.push_back(std::move(r));
  }
  archive_read_free(a);
  return out;
}

class TarWriteTest : public ::testing::Test {
 protected:
  Result<std::string> Write(const std::string& root, std::vector<DiffEntry> entries) {
    std::string file = tmp_.Sub("out-" + std::to_string(counter_++) + ".tar");
    Fd fd = LAMINA_TRY(Open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644));
    LAMINA_TRY(WriteLayerTar(fd.get(), root, std::move(entries)));
    return ReadFile(file);
  }
  Result<ApplyResult> Apply(const std::string& bytes, const std::string& target,
                            const ApplyOptions& options = {}) {
    std::string file = tmp_.Sub("in-" + std::to_string(counter_++) + ".tar");
    test::WriteTarFile(file, bytes);
    LAMINA_CHECK(MakeDirs(target));
    Fd fd = LAMINA_TRY(Open(file, O_RDONLY));
    return ApplyTar(fd.get(), target, options);
  }
  // A union-format layer with every kind of entry.
  std::string RichLayerTar() {
    TarBuilder b;
    b.Dir("etc/", 0755);
    b.Add({.path = "etc/passwd", .data = "root:x:0:0\n", .mode = 0644, .uid = 0, .gid = 0,
           .mtime = 1500000000, .mtime_nsec = 5});
    b.Add({.path = "etc/shadow", .data = "secret", .mode = 0640, .uid = 0, .gid = 42});
    b.Add({.path = "bin/", .type = TarEntry::Type::kDir, .mode = 0755,
           .xattrs = {{"user.dir", "d"}}});
    b.Add({.path = "bin/ping", .data = std::string(100000, 'p'), .mode = 04755,
           .xattrs = {{"user.a", "1"}, {"user.b", std::string("\0bin", 4)}}});
    b.Hardlink("bin/ping6", "bin/ping");
    b.Symlink("bin/sh", "busybox");
    b.Dir("run/");
    b.Fifo("run/fifo", 0620);
    b.Dir("dev/");
    if (test::IsRoot()) b.CharDev("dev/null", 1, 3);
    b.Dir("var/");
    // Whiteouts carry no times of their own in OCI tars: written as 0.
    b.Add({.path = "var/.wh.cache", .mtime = 0});
    b.Dir("opt/", 0700);
    b.File("opt/.wh..wh..opq", "");
    b.File("opt/tool", "t");
    b.File(std::string(150, 'n'), "long name");
    return b.Finish();
  }

  TempDir tmp_{"tar-write"};
  int counter_ = 0;
};

TEST_F(TarWriteTest, RoundTripApplyWriteApplyGivesTheSameTree) {
  std::string a = tmp_.Sub("a"), b = tmp_.Sub("b");
  auto first = Apply(RichLayerTar(), a);
  ASSERT_TRUE(first.has_value()) << first.error().message();
  auto entries = UnionDiffEntries(a);
  ASSERT_TRUE(entries.has_value()) << entries.error().message();
  auto tar = Write(a, *entries);
  ASSERT_TRUE(tar.has_value()) << tar.error().message();
  auto second = Apply(*tar, b);
  ASSERT_TRUE(second.has_value()) << second.error().message();
  test::TreeCompareOptions options;
  options.internal_xattrs = true;  // whiteouts and opaque dirs too
  auto diffs = test::CompareTrees(a, b, options);
  EXPECT_TRUE(diffs.empty()) << ::testing::PrintToString(diffs) << "\n"
                             << test::DescribeTree(a, options);
  EXPECT_EQ(second->diff_id, Sha256Hex(*tar));
}

TEST_F(TarWriteTest, OutputIsDeterministic) {
  std::string a = tmp_.Sub("a");
  ASSERT_TRUE(Apply(RichLayerTar(), a).has_value());
  auto entries = UnionDiffEntries(a);
  ASSERT_TRUE(entries.has_value());
  auto one = Write(a, *entries);
  ASSERT_TRUE(one.has_value()) << one.error().message();
  // Reversed input order, and another process (a pid must not leak in).
  std::vector<DiffEntry> reversed(entries->rbegin(), entries->rend());
  std::string file = tmp_.Sub("child.tar");
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    bool ok = fd >= 0 && WriteLayerTar(fd, a, reversed).has_value();
    ::_exit(ok ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  auto two = ReadFile(file);
  ASSERT_TRUE(two.has_value());
  EXPECT_TRUE(*one == *two) << "two writes of the same tree differ";
  for (const auto& e : ReadTar(*one)) {
    EXPECT_EQ(e.uname, "") << e.path;
    EXPECT_EQ(e.gname, "") << e.path;
    EXPECT_FALSE(e.atime_set) << e.path;
    EXPECT_FALSE(e.ctime_set) << e.path;
  }
}

TEST_F(TarWriteTest, WhiteoutsOpaqueMarkersAndOrder) {
  std::string root = tmp_.Sub("root");
  ASSERT_TRUE(MakeDirs(root + "/d/sub").has_value());
  test::WriteFile(root + "/d/+plus", "p");
  test::WriteFile(root + "/d/sub/f", "f");
  test::WriteFile(root + "/d-x", "x");
  std::vector<DiffEntry> entries = {
      {"d-x", DiffEntry::Kind::kContent},     {"d/sub/f", DiffEntry::Kind::kContent},
      {"d/gone", DiffEntry::Kind::kWhiteout}, {"d", DiffEntry::Kind::kOpaque},
      {"d/+plus", DiffEntry::Kind::kContent}, {"d/sub", DiffEntry::Kind::kContent},
      {"d", DiffEntry::Kind::kContent},       {"d/sub/f", DiffEntry::Kind::kContent},
  };
  auto tar = Write(root, entries);
  ASSERT_TRUE(tar.has_value()) << tar.error().message();
  auto read = ReadTar(*tar);
  std::vector<std::string> paths;
  for (const auto& e : read) paths.push_back(e.path);
  EXPECT_EQ(paths, (std::vector<std::string>{"d/", "d/.wh..wh..opq", "d/+plus", "d/.wh.gone",
                                             "d/sub/", "d/sub/f", "d-x"}));
  for (const auto& e : read) {
    if (e.path.find(".wh.") == std::string::npos) continue;
    EXPECT_EQ(e.type, AE_IFREG) << e.path;
    EXPECT_EQ(e.perm, 0u) << e.path;
    EXPECT_EQ(e.size, 0) << e.path;
    EXPECT_EQ(e.mtime, 0) << e.path;
    EXPECT_EQ(e.uid, 0) << e.path;
  }
}

TEST_F(TarWriteTest, HardLinksWrittenOnceThenAsLinks) {
  std::string root = tmp_.Sub("root");
  ASSERT_TRUE(MakeDirs(root).has_value());
  test::WriteFile(root + "/b", "shared data");
  ASSERT_EQ(::link((root + "/b").c_str(), (root + "/a").c_str()), 0);
  ASSERT_EQ(::link((root + "/b").c_str(), (root + "/c").c_str()), 0);
  auto tar = Write(root, {{"c"}, {"b"}, {"a"}});
  ASSERT_TRUE(tar.has_value()) << tar.error().message();
  auto read = ReadTar(*tar);
  ASSERT_EQ(read.size(), 3u);
  EXPECT_EQ(read[0].path, "a");
  EXPECT_EQ(read[0].data, "shared data");
  EXPECT_EQ(read[1].hardlink, "a");
  EXPECT_EQ(read[2].hardlink, "a");
  EXPECT_EQ(read[1].data, "");
}

TEST_F(TarWriteTest, XattrsAndOverrideStat) {
  std::string root = tmp_.Sub("root");
  ASSERT_TRUE(MakeDirs(root).has_value());
  test::WriteFile(root + "/f", "x");
  ASSERT_TRUE(SetXattr(root + "/f", "user.keep", "v").has_value());
  ASSERT_TRUE(SetXattr(root + "/f", "user.overlay.origin", "x").has_value());
  ASSERT_TRUE(SetXattr(root + "/f", std::string(kOverrideStatXattr), "1000:1001:04711").has_value());
  test::WriteFile(root + "/dev", "");
  ASSERT_TRUE(
      SetXattr(root + "/dev", std::string(kOverrideStatXattr), "0:0:0666:char-1-5").has_value());
  auto tar = Write(root, {{"f"}, {"dev"}});
  ASSERT_TRUE(tar.has_value()) << tar.error().message();
  auto read = ReadTar(*tar);
  ASSERT_EQ(read.size(), 2u);
  EXPECT_EQ(read[0].path, "dev");
  EXPECT_EQ(read[0].type, AE_IFCHR);
  EXPECT_EQ(read[0].perm, 0666u);
  EXPECT_EQ(read[1].path, "f");
  EXPECT_EQ(read[1].uid, 1000);
  EXPECT_EQ(read[1].gid, 1001);
  EXPECT_EQ(read[1].perm, 04711u);
  EXPECT_EQ(read[1].xattrs,
            (std::vector<std::pair<std::string, std::string>>{{"user.keep", "v"}}));
  // Only SCHILY.xattr records, no LIBARCHIVE.xattr duplicates.
  EXPECT_NE(tar->find("SCHILY.xattr.user.keep"), std::string::npos);
  EXPECT_EQ(tar->find("LIBARCHIVE.xattr"), std::string::npos);
}

TEST_F(TarWriteTest, NonAsciiNamesRoundTrip) {
  std::string a = tmp_.Sub("a"), b = tmp_.Sub("b");
  ASSERT_TRUE(MakeDirs(a + "/caf\xc3\xa9").has_value());
  test::WriteFile(a + "/caf\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac", "utf-8");
  test::WriteFile(a + "/raw-\xff\xfe", "not utf-8");
  ASSERT_EQ(::symlink("caf\xc3\xa9", (a + "/link-\xc3\xa9").c_str()), 0);
  auto entries = UnionDiffEntries(a);
  ASSERT_TRUE(entries.has_value()) << entries.error().message();
  auto tar = Write(a, *entries);
  ASSERT_TRUE(tar.has_value()) << tar.error().message();
  auto res = Apply(*tar, b);
  ASSERT_TRUE(res.has_value()) << res.error().message();
  auto diffs = test::CompareTrees(a, b);
  EXPECT_TRUE(diffs.empty()) << ::testing::PrintToString(diffs);
}

TEST_F(TarWriteTest, MissingSourceIsAnError) {
  std::string root = tmp_.Sub("root");
  ASSERT_TRUE(MakeDirs(root).has_value());
  auto tar = Write(root, {{"nope"}});
  ASSERT_FALSE(tar.has_value());
  EXPECT_EQ(tar.error().code(), ENOENT);
  EXPECT_NE(tar.error().message().find("nope"), std::string::npos);
}

}  // namespace
}  // namespace lamina
