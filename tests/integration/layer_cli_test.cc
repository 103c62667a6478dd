// `lamina layer ...` end to end: the real binary on a store in a TempDir,
// real tars made by GNU tar, gzip and zstd.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <pty.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/fs.h"
#include "common/hash.h"
#include "tests/support/test_util.h"
#include "tests/support/tree_compare.h"

namespace lamina {
namespace {

using nlohmann::json;
using test::CommandResult;
using test::TempDir;

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

bool HaveCommand(const std::string& name) {
  return test::Run({"sh", "-c", "command -v " + name}).status == 0;
}

// The driver the tests use: $LAMINA_TEST_DRIVER, else vfs when it is usable
// here, else the one lamina chooses; empty when none is usable.
std::string PickDriver(const std::string& probe_root) {
  if (const char* env = std::getenv("LAMINA_TEST_DRIVER"); env != nullptr && *env) return env;
  CommandResult info = test::RunLamina({"--root", probe_root, "info", "--json"});
  if (info.status != 0) return {};
  json j = json::parse(info.out, nullptr, false);
  if (j.is_discarded()) return {};
  for (const auto& d : j["drivers"]) {
    if (d["name"] == "vfs" && d["usable"] == true) return "vfs";
  }
  return j["chosen"]["name"].is_string() ? j["chosen"]["name"].get<std::string>() : "";
}

class LayerCli : public ::testing::Test {
 protected:
  void SetUp() override {
    driver_ = PickDriver(dir_.Sub("probe"));
    if (driver_.empty()) GTEST_SKIP() << "no usable storage driver on this host";
  }

  std::string Root(const std::string& name = "store") const { return dir_.Sub(name); }

  CommandResult Lamina(const std::vector<std::string>& args, const std::string& root = {}) {
    std::vector<std::string> argv = {"--root", root.empty() ? Root() : root, "--driver", driver_};
    argv.insert(argv.end(), args.begin(), args.end());
    return test::RunLamina(argv);
  }

  // Runs and expects success; returns stdout.
  std::string Ok(const std::vector<std::string>& args, const std::string& root = {}) {
    CommandResult r = Lamina(args, root);
    EXPECT_EQ(r.status, 0) << "lamina " << ::testing::PrintToString(args) << ": " << r.err;
    return r.out;
  }

  json Inspect(const std::string& id, const std::string& root = {}) {
    return json::parse(Ok({"layer", "inspect", id}, root), nullptr, false);
  }

  // Where the layer's content is: the base layers used here hold their whole
  // tree in diff/ with every driver.
  std::string DiffDir(const std::string& id, const std::string& root = {}) const {
    return (root.empty() ? Root() : root) + "/layers/" + id + "/diff";
  }

  // A small tree: files, a directory, a symlink, a hard link, odd modes,
  // and (as root) a file of another owner; an unprivileged run (the
  // rootless ctest entries) cannot make one, and its store keeps what it can.
  void MakeTree(const std::string& src) {
    ASSERT_TRUE(MakeDirs(src + "/etc/conf.d"));
    ASSERT_TRUE(MakeDirs(src + "/usr/bin"));
    test::WriteFile(src + "/etc/hostname", "lamina\n");
    test::WriteFile(src + "/etc/conf.d/a.conf", "a=1\n");
    std::string big;
    for (int i = 0; i < 50000; ++i) big += std::to_string(i * 2654435761u) + "\n";
    test::WriteFile(src + "/usr/bin/tool", big);
    ASSERT_EQ(::chmod((src + "/usr/bin/tool").c_str(), 0755), 0);
    ASSERT_EQ(::symlink("../etc/hostname", (src + "/usr/name").c_str()), 0);
    ASSERT_EQ(::link((src + "/usr/bin/tool").c_str(), (src + "/usr/bin/tool2").c_str()), 0);
    if (test::IsRoot()) {
      ASSERT_EQ(::chown((src + "/etc/conf.d/a.conf").c_str(), 1234, 5678), 0);
    }
  }

  void Tar(const std::string& src, const std::string& out) {
    CommandResult r = test::Run({"tar", "-C", src, "-cf", out, "."});
    ASSERT_EQ(r.status, 0) << r.err;
  }

  // GNU tar's default format keeps whole seconds only: compare times only
  // between trees that went through lamina's own (PAX, nanosecond) tars.
  void ExpectSameTree(const std::string& a, const std::string& b, bool times = true) {
    test::TreeCompareOptions options;
    options.times = times;
    auto diffs = test::CompareTrees(a, b, options);
    std::string joined;
    for (const auto& d : diffs) joined += d + "\n";
    EXPECT_TRUE(diffs.empty()) << joined;
  }

  TempDir dir_;
  std::string driver_;
};

TEST_F(LayerCli, CreateListInspectRemove) {
  std::string base = Trim(Ok({"layer", "create"}));
  EXPECT_TRUE(std::regex_match(base, std::regex("[0-9a-f]{64}"))) << base;
  EXPECT_EQ(Trim(Ok({"layer", "create", "--parent", base, "--writable", "--id", "top"})), "top");

  auto table = Lines(Ok({"layer", "ls"}));
  ASSERT_EQ(table.size(), 3u);
  EXPECT_TRUE(table[0].starts_with("ID")) << table[0];
  EXPECT_TRUE(table[1].starts_with(base)) << table[1];
  EXPECT_TRUE(table[2].starts_with("top ")) << table[2];

  json list = json::parse(Ok({"layer", "ls", "--json"}), nullptr, false);
  ASSERT_TRUE(list.is_array());
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0]["id"], base);
  EXPECT_EQ(list[1]["parent"], base);
  // The global --json works too.
  EXPECT_EQ(json::parse(Ok({"--json", "layer", "ls"}), nullptr, false), list);

  json top = Inspect("top");
  EXPECT_EQ(top["id"], "top");
  EXPECT_EQ(top["parent"], base);
  EXPECT_EQ(top["writable"], true);
  EXPECT_EQ(top["state"], "ready");
  EXPECT_EQ(top["diff_id"], "");
  EXPECT_TRUE(top["created"].get<std::string>().ends_with("Z"));

  CommandResult refused = Lamina({"layer", "rm", base});
  EXPECT_NE(refused.status, 0);
  EXPECT_EQ(Trim(refused.err),
            "lamina: layer " + base + " is the parent of layer top; remove that first");

  CommandResult taken = Lamina({"layer", "create", "--id", "top"});
  EXPECT_NE(taken.status, 0);
  EXPECT_EQ(Trim(taken.err), "lamina: layer top: already exists");

  Ok({"layer", "rm", "top", base});
  CommandResult gone = Lamina({"layer", "inspect", "top"});
  EXPECT_EQ(gone.status, 1);
  EXPECT_EQ(Trim(gone.err), "lamina: layer top: not found");
  EXPECT_EQ(json::parse(Ok({"layer", "ls", "--json"})), json::array());

  CommandResult missing = Lamina({"layer", "rm", "nope"});
  EXPECT_EQ(missing.status, 1);
  EXPECT_EQ(Trim(missing.err), "lamina: layer nope: not found");
}

TEST_F(LayerCli, BadUsageIsAUsageError) {
  for (const auto& args : std::vector<std::vector<std::string>>{{"layer", "create", "--bogus"},
                                                                {"layer", "rm"},
                                                                {"layer", "frobnicate"},
                                                                {"layer", "apply"},
                                                                {"layer"}}) {
    CommandResult r = Lamina(args);
    EXPECT_EQ(r.status, 2) << ::testing::PrintToString(args) << ": " << r.err;
    EXPECT_FALSE(r.err.empty());
  }
  CommandResult bad_id = Lamina({"layer", "create", "--id", "../etc"});
  EXPECT_NE(bad_id.status, 0);
  EXPECT_NE(bad_id.err.find("bad layer id '../etc'"), std::string::npos) << bad_id.err;
  CommandResult no_parent = Lamina({"layer", "create", "--parent", "ghost"});
  EXPECT_EQ(Trim(no_parent.err), "lamina: parent layer ghost: not found");
}

TEST_F(LayerCli, ApplyPlainGzipAndZstdTars) {
  MakeTree(dir_.Sub("src"));
  Tar(dir_.Sub("src"), dir_.Sub("layer.tar"));
  std::string diff_id = "sha256:" + Sha256Hex(test::ReadFileOrDie(dir_.Sub("layer.tar")));
  ASSERT_EQ(test::Run({"gzip", "-k", dir_.Sub("layer.tar")}).status, 0);
  std::vector<std::pair<std::string, std::string>> inputs = {{"plain", dir_.Sub("layer.tar")},
                                                             {"gz", dir_.Sub("layer.tar.gz")}};
  if (HaveCommand("zstd")) {
    ASSERT_EQ(test::Run({"zstd", "-q", "-k", dir_.Sub("layer.tar")}).status, 0);
    inputs.push_back({"zst", dir_.Sub("layer.tar.zst")});
  }
  for (const auto& [id, path] : inputs) {
    SCOPED_TRACE(id);
    EXPECT_EQ(Trim(Ok({"layer", "apply", "--id", id, path})), id);
    json info = Inspect(id);
    // The DiffID is the digest of the uncompressed tar, whatever the wrapping.
    EXPECT_EQ(info["diff_id"], diff_id);
    EXPECT_EQ(info["writable"], false);
    EXPECT_GT(info["size"].get<uint64_t>(), 300000u);
    ExpectSameTree(dir_.Sub("src"), DiffDir(id), /*times=*/false);
  }
  if (inputs.size() < 3) GTEST_SKIP() << "zstd is not installed; plain and gzip were tested";
}

TEST_F(LayerCli, ApplyFromStdinAndBadInput) {
  MakeTree(dir_.Sub("src"));
  Tar(dir_.Sub("src"), dir_.Sub("layer.tar"));
  CommandResult r = test::Run(
      {"sh", "-c", "exec \"$0\" --root \"$1\" --driver \"$2\" layer apply --id in - < \"$3\"",
       test::LaminaBinary(), Root(), driver_, dir_.Sub("layer.tar")});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(Trim(r.out), "in");
  ExpectSameTree(dir_.Sub("src"), DiffDir("in"), /*times=*/false);

  test::WriteFile(dir_.Sub("junk.tar"), std::string(5000, 'j'));
  CommandResult junk = Lamina({"layer", "apply", "--id", "junk", dir_.Sub("junk.tar")});
  EXPECT_NE(junk.status, 0);
  EXPECT_TRUE(junk.err.starts_with("lamina: apply layer junk: ")) << junk.err;
  EXPECT_FALSE(PathExists(Root() + "/layers/junk"));
  CommandResult missing = Lamina({"layer", "apply", dir_.Sub("no-such.tar")});
  EXPECT_NE(missing.status, 0);
  EXPECT_NE(missing.err.find("no-such.tar"), std::string::npos) << missing.err;
  EXPECT_EQ(json::parse(Ok({"layer", "ls", "--json"})).size(), 1u);
}

TEST_F(LayerCli, DiffThenApplyIntoAFreshStoreGivesTheSameTree) {
  MakeTree(dir_.Sub("src"));
  Tar(dir_.Sub("src"), dir_.Sub("layer.tar"));
  Ok({"layer", "apply", "--id", "base", dir_.Sub("layer.tar")});

  Ok({"layer", "diff", "base", "-o", dir_.Sub("out.tar")});
  std::string to_file = test::ReadFileOrDie(dir_.Sub("out.tar"));
  std::string to_stdout = Ok({"layer", "diff", "base"});
  // Byte for byte the same, to a file or through a pipe.
  EXPECT_TRUE(to_file == to_stdout) << "diff -o and diff to stdout differ: " << to_file.size()
                                    << " vs " << to_stdout.size() << " bytes";
  EXPECT_EQ(to_file.size() % 512, 0u);
  // GNU tar reads what we wrote.
  CommandResult listing = test::Run({"tar", "-tvf", dir_.Sub("out.tar")});
  ASSERT_EQ(listing.status, 0) << listing.err;
  EXPECT_NE(listing.out.find("usr/bin/tool2 link to usr/bin/tool"), std::string::npos)
      << listing.out;

  std::string fresh = Root("fresh");
  Ok({"layer", "apply", "--id", "copy", dir_.Sub("out.tar")}, fresh);
  ExpectSameTree(DiffDir("base"), DiffDir("copy", fresh));
  EXPECT_EQ(Inspect("copy", fresh)["diff_id"], "sha256:" + Sha256Hex(to_file));

  CommandResult none = Lamina({"layer", "diff", "ghost", "-o", dir_.Sub("ghost.tar")});
  EXPECT_EQ(Trim(none.err), "lamina: layer ghost: not found");
  EXPECT_FALSE(PathExists(dir_.Sub("ghost.tar")));
}

// diff holds only the layer's use.lock while it streams, so piping it into an
// apply on the same store cannot deadlock on the store lock.
TEST_F(LayerCli, DiffPipedIntoApplyOnTheSameStore) {
  MakeTree(dir_.Sub("src"));
  Tar(dir_.Sub("src"), dir_.Sub("layer.tar"));
  Ok({"layer", "apply", "--id", "one", dir_.Sub("layer.tar")});
  std::string lamina = "\"$0\" --root \"$1\" --driver \"$2\" layer ";
  CommandResult r =
      test::Run({"timeout", "120", "sh", "-c", lamina + "diff one | " + lamina + "apply --id two -",
                 test::LaminaBinary(), Root(), driver_});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(Trim(r.out), "two");
  ExpectSameTree(DiffDir("one"), DiffDir("two"));
}

TEST_F(LayerCli, DiffRefusesATerminal) {
  Ok({"layer", "create", "--id", "t"});
  int master = -1, slave = -1;
  if (::openpty(&master, &slave, nullptr, nullptr, nullptr) != 0) {
    GTEST_SKIP() << "no pseudo-terminal: " << std::strerror(errno);
  }
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(slave, STDOUT_FILENO);
    int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, STDERR_FILENO);
    ::execl(test::LaminaBinary().c_str(), "lamina", "--root", Root().c_str(), "--driver",
            driver_.c_str(), "layer", "diff", "t", nullptr);
    ::_exit(127);
  }
  ::close(slave);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::close(master);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 2);
}

TEST_F(LayerCli, ChangesOfAChildLayer) {
  std::string base = dir_.Sub("base");
  ASSERT_TRUE(MakeDirs(base + "/etc"));
  ASSERT_TRUE(MakeDirs(base + "/var/cache"));
  test::WriteFile(base + "/etc/a", "a\n");
  test::WriteFile(base + "/etc/b", "b\n");
  test::WriteFile(base + "/etc/keep", "k\n");
  test::WriteFile(base + "/var/cache/x", "x\n");
  Tar(base, dir_.Sub("base.tar"));
  Ok({"layer", "apply", "--id", "base", dir_.Sub("base.tar")});

  // The child as an OCI layer: etc/a changed, etc/b deleted, new/c added.
  std::string child = dir_.Sub("child");
  ASSERT_TRUE(MakeDirs(child + "/etc"));
  ASSERT_TRUE(MakeDirs(child + "/new"));
  test::WriteFile(child + "/etc/a", "changed\n");
  test::WriteFile(child + "/etc/.wh.b", "");
  test::WriteFile(child + "/new/c", "c\n");
  CommandResult r = test::Run({"tar", "-C", child, "-cf", dir_.Sub("child.tar"), "etc", "new"});
  ASSERT_EQ(r.status, 0) << r.err;
  Ok({"layer", "apply", "--parent", "base", "--id", "child", dir_.Sub("child.tar")});

  auto lines = Lines(Ok({"layer", "changes", "child"}));
  std::set<std::string> got(lines.begin(), lines.end());
  for (const char* want : {"C etc/a", "D etc/b", "A new", "A new/c"}) {
    EXPECT_TRUE(got.contains(want)) << want << " missing from:\n"
                                    << ::testing::PrintToString(lines);
  }
  for (const auto& line : lines) {
    EXPECT_TRUE(std::regex_match(line, std::regex("[ACD] .+"))) << line;
    EXPECT_EQ(line.find("keep"), std::string::npos) << line;
    EXPECT_EQ(line.find("var"), std::string::npos) << line;
  }
  EXPECT_TRUE(std::is_sorted(
      lines.begin(), lines.end(),
      [](const std::string& a, const std::string& b) { return a.substr(2) < b.substr(2); }));

  // The child's diff carries the deletion as an OCI whiteout.
  Ok({"layer", "diff", "child", "-o", dir_.Sub("child-out.tar")});
  CommandResult listing = test::Run({"tar", "-tf", dir_.Sub("child-out.tar")});
  ASSERT_EQ(listing.status, 0);
  auto entries = Lines(listing.out);
  EXPECT_TRUE(std::find(entries.begin(), entries.end(), "etc/.wh.b") != entries.end())
      << listing.out;
}

TEST_F(LayerCli, MountAndUnmount) {
  MakeTree(dir_.Sub("src"));
  Tar(dir_.Sub("src"), dir_.Sub("layer.tar"));
  Ok({"layer", "apply", "--id", "img", dir_.Sub("layer.tar")});
  Ok({"layer", "create", "--parent", "img", "--writable", "--id", "ctr"});
  CommandResult mounted = Lamina({"layer", "mount", "ctr"});
  if (mounted.status != 0 && mounted.err.find("not supported") != std::string::npos) {
    GTEST_SKIP() << mounted.err;
  }
  ASSERT_EQ(mounted.status, 0) << mounted.err;
  std::string merged = Trim(mounted.out);
  EXPECT_EQ(test::ReadFileOrDie(merged + "/etc/hostname"), "lamina\n");
  EXPECT_EQ(Inspect("ctr")["mounts"], 1);

  CommandResult busy = Lamina({"layer", "rm", "ctr"});
  EXPECT_NE(busy.status, 0);
  EXPECT_EQ(Trim(busy.err), "lamina: layer ctr is mounted (1 reference); unmount it first");

  Ok({"layer", "umount", "ctr"});
  CommandResult again = Lamina({"layer", "umount", "ctr"});
  EXPECT_EQ(Trim(again.err), "lamina: layer ctr is not mounted");
  Ok({"layer", "rm", "ctr", "img"});
}

}  // namespace
}  // namespace lamina
