// The launcher's parsers and small pieces: option values, users from an
// image's /etc/passwd, environment merging, sub-id ranges, the capability
// set, and container records.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "common/fd.h"
#include "common/fs.h"
#include "launcher/capabilities.h"
#include "launcher/idmap.h"
#include "launcher/spec.h"
#include "store/containers.h"
#include "tests/support/test_util.h"

namespace lamina::launcher {
namespace {

TEST(ParseMemory, Units) {
  EXPECT_EQ(ParseMemory("64m").value(), 64ull << 20);
  EXPECT_EQ(ParseMemory("64M").value(), 64ull << 20);
  EXPECT_EQ(ParseMemory("64MiB").value(), 64ull << 20);
  EXPECT_EQ(ParseMemory("64mb").value(), 64ull << 20);
  EXPECT_EQ(ParseMemory("1g").value(), 1ull << 30);
  EXPECT_EQ(ParseMemory("512k").value(), 512ull << 10);
  EXPECT_EQ(ParseMemory("1048576").value(), 1048576ull);
  EXPECT_EQ(ParseMemory("4096b").value(), 4096ull);
}

TEST(ParseMemory, BadInput) {
  for (const char* bad : {"", "m", "lots", "-1m", "0", "1.5g", "64q", "99999999999999999999t", "64 m"}) {
    auto r = ParseMemory(bad);
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().code(), EINVAL) << bad;
  }
}

TEST(ParseCpus, GoodAndBad) {
  EXPECT_DOUBLE_EQ(ParseCpus("0.5").value(), 0.5);
  EXPECT_DOUBLE_EQ(ParseCpus("2").value(), 2.0);
  for (const char* bad : {"", "0", "-1", "abc", "1x", "inf", "nan", "5000"}) {
    EXPECT_FALSE(ParseCpus(bad).has_value()) << bad;
  }
}

TEST(ParseVolume, Forms) {
  auto v = ParseVolume("/host/dir:/data:ro").value();
  EXPECT_EQ(v.host, "/host/dir");
  EXPECT_EQ(v.container, "/data");
  EXPECT_TRUE(v.read_only);
  v = ParseVolume("/a:/b/./c//d").value();
  EXPECT_EQ(v.container, "/b/c/d");
  EXPECT_FALSE(v.read_only);
  EXPECT_FALSE(ParseVolume("/a:/b:rw").value().read_only);
  for (const char* bad : {"/a", "a:/b", "/a:b", "/a:/b:xx", "/a:/", "/a:/../..", "/a:/b:ro:x", ""}) {
    auto r = ParseVolume(bad);
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().code(), EINVAL) << bad;
  }
}

TEST(ParseNet, Modes) {
  EXPECT_EQ(ParseNet("none").value(), NetMode::kNone);
  EXPECT_EQ(ParseNet("host").value(), NetMode::kHost);
  EXPECT_FALSE(ParseNet("bridge").has_value());
}

TEST(FormatBytes, Readable) {
  EXPECT_EQ(FormatBytes(64ull << 20), "64 MiB");
  EXPECT_EQ(FormatBytes(1ull << 30), "1 GiB");
  EXPECT_EQ(FormatBytes(1000), "1000 B");
  EXPECT_EQ(FormatBytes(1536ull << 20), "1536 MiB");
}

class ResolveUserTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::mkdir(dir_.Sub("etc").c_str(), 0755), 0);
    test::WriteFile(dir_.Sub("etc/passwd"),
                    "root:x:0:0:root:/root:/bin/sh\n"
                    "# a comment\n"
                    "www:x:33:33:www:/var/www:/bin/sh\n"
                    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n");
    test::WriteFile(dir_.Sub("etc/group"),
                    "root:x:0:\nwww:x:33:\nstaff:x:50:www,other\nvideo:x:44:www\n");
    root_ = std::move(OpenDirPath(dir_.path()).value());
  }
  test::TempDir dir_{"lamina-user"};
  Fd root_;
};

TEST_F(ResolveUserTest, Names) {
  auto u = ResolveUser(root_.get(), "www").value();
  EXPECT_EQ(u.uid, 33u);
  EXPECT_EQ(u.gid, 33u);
  EXPECT_EQ(u.home, "/var/www");
  EXPECT_EQ(u.groups, (std::vector<gid_t>{50, 44}));
  u = ResolveUser(root_.get(), "").value();
  EXPECT_EQ(u.uid, 0u);
  EXPECT_EQ(u.home, "/root");
  u = ResolveUser(root_.get(), "www:video").value();
  EXPECT_EQ(u.gid, 44u);
  EXPECT_TRUE(u.groups.empty());
}

TEST_F(ResolveUserTest, Numbers) {
  auto u = ResolveUser(root_.get(), "1234:5678").value();
  EXPECT_EQ(u.uid, 1234u);
  EXPECT_EQ(u.gid, 5678u);
  EXPECT_EQ(u.home, "/");
  u = ResolveUser(root_.get(), "65534").value();
  EXPECT_EQ(u.gid, 65534u);
  EXPECT_EQ(u.home, "/nonexistent");
}

TEST_F(ResolveUserTest, Unknown) {
  auto r = ResolveUser(root_.get(), "ghost");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ENOENT);
  EXPECT_NE(r.error().message().find("ghost"), std::string::npos);
  EXPECT_EQ(ResolveUser(root_.get(), "www:nogroup").error().code(), ENOENT);
  EXPECT_EQ(ResolveUser(root_.get(), "99999999999").error().code(), EINVAL);
}

TEST_F(ResolveUserTest, PasswdSymlinkCannotLeaveTheRoot) {
  // An image whose /etc/passwd points at the host's: read below the root.
  ASSERT_EQ(::unlink(dir_.Sub("etc/passwd").c_str()), 0);
  ASSERT_EQ(::symlink("/etc/passwd", dir_.Sub("etc/passwd").c_str()), 0);
  EXPECT_EQ(ResolveUser(root_.get(), "root").error().code(), ENOENT);
}

TEST(MergeEnv, OverridesAndDefaults) {
  auto env = MergeEnv({"A=1", "PATH=/bin"}, {"A=2", "B=3"}, "/root");
  EXPECT_EQ(env, (std::vector<std::string>{"A=2", "PATH=/bin", "B=3", "HOME=/root"}));
  ::setenv("LAMINA_TEST_PASS", "through", 1);
  env = MergeEnv({}, {"LAMINA_TEST_PASS", "LAMINA_TEST_UNSET_XYZ"}, "/");
  EXPECT_EQ(env[0], "LAMINA_TEST_PASS=through");
  EXPECT_TRUE(env[1].starts_with("PATH="));
  EXPECT_EQ(env.size(), 3u);
}

TEST(ParseSubIds, ByNameAndUid) {
  std::string text = "# comment\nalice:100000:65536\n1001:200000:1000\nbob:300000:0\nbad line\n";
  EXPECT_EQ(ParseSubIds(text, "alice", 1000),
            (std::vector<std::pair<uint32_t, uint32_t>>{{100000, 65536}}));
  EXPECT_EQ(ParseSubIds(text, "carol", 1001),
            (std::vector<std::pair<uint32_t, uint32_t>>{{200000, 1000}}));
  EXPECT_TRUE(ParseSubIds(text, "bob", 5).empty());
}

TEST(IdMaps, Mapped) {
  std::vector<IdRange> ranges = {{0, 1001, 1}, {1, 100000, 65536}};
  EXPECT_TRUE(IsMapped(ranges, 0));
  EXPECT_TRUE(IsMapped(ranges, 5));
  EXPECT_TRUE(IsMapped(ranges, 65536));
  EXPECT_FALSE(IsMapped(ranges, 65537));
  EXPECT_FALSE(IsMapped({{0, 1001, 1}}, 5));
}

TEST(Capabilities, DockerDefaultSet) {
  EXPECT_EQ(DefaultCapabilities().size(), 14u);
  EXPECT_EQ(DefaultCapabilityMask(), 0xa80425fbull);
  EXPECT_GE(LastCapability(), 37);
}

TEST(ContainerRecord, RoundTripAndBadInput) {
  store::ContainerRecord r;
  r.id = "abc123";
  r.name = "web";
  r.image = "busybox";
  r.image_layers = {"l1", "l2"};
  r.layer = "abc123";
  r.command = {"sh", "-c", "echo 'hi'"};
  r.created = "2026-11-23T00:00:00Z";
  r.state = "exited";
  r.exit_status = 137;
  r.cgroups = {"/sys/fs/cgroup/memory/lamina/abc123"};
  auto parsed = store::ParseContainerRecord(store::FormatContainerRecord(r)).value();
  EXPECT_EQ(parsed.name, "web");
  EXPECT_EQ(parsed.command, r.command);
  EXPECT_EQ(parsed.exit_status, 137);
  EXPECT_EQ(parsed.cgroups, r.cgroups);
  EXPECT_EQ(parsed.image_layers, r.image_layers);
  EXPECT_FALSE(store::ParseContainerRecord("[]").has_value());
  EXPECT_FALSE(store::ParseContainerRecord("{\"id\": \"../x\", \"layer\": \"y\"}").has_value());
  EXPECT_FALSE(store::ParseContainerRecord("{\"id\": 5}").has_value());
  EXPECT_TRUE(store::ValidateContainerName("web-1.a_b").has_value());
  for (const char* bad : {"", "-x", ".x", "a/b", "a b", "../x"}) {
    EXPECT_FALSE(store::ValidateContainerName(bad).has_value()) << bad;
  }
}

}  // namespace
}  // namespace lamina::launcher
