// The lamina-fuse command line: every option, every error, round trips.

#include <gtest/gtest.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "common/fs.h"
#include "fuse/options.h"
#include "tests/support/test_util.h"

namespace lamina::fuse {
namespace {

constexpr ParseEnv kUser{1000};
constexpr ParseEnv kRoot{0};

Result<CommandLine> Parse(std::vector<std::string> args, ParseEnv env = kUser) {
  return ParseCommandLine(args, env);
}

// Parses "MNT -o <opts>" and returns the config; fails the test on error.
FsConfig ParseOk(const std::string& opts, ParseEnv env = kUser) {
  auto cl = Parse({"/mnt", "-o", opts}, env);
  EXPECT_TRUE(cl.has_value()) << opts << ": " << (cl ? "" : cl.error().message());
  return cl ? cl->config : FsConfig{};
}

// Expects EINVAL with `needle` in the message.
void ExpectBad(const std::vector<std::string>& args, const std::string& needle,
               ParseEnv env = kUser) {
  auto cl = Parse(args, env);
  ASSERT_FALSE(cl.has_value()) << "accepted: " << testing::PrintToString(args);
  EXPECT_EQ(cl.error().code(), EINVAL);
  EXPECT_NE(cl.error().message().find(needle), std::string::npos)
      << "message '" << cl.error().message() << "' does not name '" << needle << "'";
}
void ExpectBadOpt(const std::string& opts, const std::string& needle) {
  ExpectBad({"/mnt", "-o", opts}, needle);
}

void ExpectSameConfig(const FsConfig& a, const FsConfig& b) {
  EXPECT_EQ(a.lowers, b.lowers);
  EXPECT_EQ(a.upper, b.upper);
  EXPECT_EQ(a.work, b.work);
  EXPECT_EQ(a.mountpoint, b.mountpoint);
  EXPECT_EQ(a.uid_map, b.uid_map);
  EXPECT_EQ(a.gid_map, b.gid_map);
  EXPECT_EQ(a.squash_to_root, b.squash_to_root);
  EXPECT_EQ(a.squash_to_uid, b.squash_to_uid);
  EXPECT_EQ(a.squash_to_gid, b.squash_to_gid);
  EXPECT_EQ(a.xattr_permissions, b.xattr_permissions);
  EXPECT_EQ(a.static_nlink, b.static_nlink);
  EXPECT_EQ(a.noacl, b.noacl);
  EXPECT_EQ(a.noxattrs, b.noxattrs);
  EXPECT_EQ(a.timeout, b.timeout);
  EXPECT_EQ(a.threaded, b.threaded);
  EXPECT_EQ(a.fsync, b.fsync);
  EXPECT_EQ(a.volatile_mode, b.volatile_mode);
  EXPECT_EQ(a.writeback, b.writeback);
  EXPECT_EQ(a.ino32, b.ino32);
  EXPECT_EQ(a.redirect_dir, b.redirect_dir);
  EXPECT_EQ(a.xino, b.xino);
  EXPECT_EQ(a.read_only, b.read_only);
  EXPECT_EQ(a.context, b.context);
  EXPECT_EQ(a.allow_other, b.allow_other);
  EXPECT_EQ(a.default_permissions, b.default_permissions);
  EXPECT_EQ(a.fsname, b.fsname);
  EXPECT_EQ(a.subtype, b.subtype);
  EXPECT_EQ(a.kernel_mount_options, b.kernel_mount_options);
}

// ---- the basic forms ---------------------------------------------------------

TEST(FuseOptions, LowerUpperWork) {
  auto cl = Parse({"-o", "lowerdir=/l1:/l2,upperdir=/u,workdir=/w", "/m"});
  ASSERT_TRUE(cl) << cl.error().message();
  EXPECT_EQ(cl->config.lowers, (std::vector<std::string>{"/l1", "/l2"}));
  EXPECT_EQ(cl->config.upper, "/u");
  EXPECT_EQ(cl->config.work, "/w");
  EXPECT_EQ(cl->config.mountpoint, "/m");
  EXPECT_FALSE(cl->config.read_only);
  EXPECT_TRUE(cl->source.empty());
  EXPECT_FALSE(cl->config.foreground);
  EXPECT_FALSE(cl->config.debug);
  EXPECT_TRUE(cl->config.threaded);
}

TEST(FuseOptions, LowerOnlyIsReadOnly) {
  FsConfig c = ParseOk("lowerdir=/a:/b");
  EXPECT_TRUE(c.read_only);
  EXPECT_TRUE(c.upper.empty());
  // "rw" cannot make a mount without an upper writable.
  EXPECT_TRUE(ParseOk("lowerdir=/a,rw").read_only);
}

TEST(FuseOptions, RoAndRw) {
  EXPECT_TRUE(ParseOk("lowerdir=/a,upperdir=/u,workdir=/w,ro").read_only);
  EXPECT_FALSE(ParseOk("lowerdir=/a,upperdir=/u,workdir=/w,ro,rw").read_only);
}

TEST(FuseOptions, SourceAndMountpoint) {
  auto cl = Parse({"lamina-fuse", "/m", "-o", "lowerdir=/a"});
  ASSERT_TRUE(cl) << cl.error().message();
  EXPECT_EQ(cl->source, "lamina-fuse");
  EXPECT_EQ(cl->config.mountpoint, "/m");
  // The source names the mount (as mount.fuse3 users expect) unless fsname= does.
  EXPECT_EQ(cl->config.fsname, "lamina-fuse");
  auto named = Parse({"src", "/m", "-o", "lowerdir=/a,fsname=mine"});
  ASSERT_TRUE(named);
  EXPECT_EQ(named->config.fsname, "mine");
}

TEST(FuseOptions, SeveralGroupsAndGluedForm) {
  auto cl = Parse({"-olowerdir=/a", "/m", "-o", "upperdir=/u", "-o", "workdir=/w,noacl"});
  ASSERT_TRUE(cl) << cl.error().message();
  EXPECT_EQ(cl->config.lowers, (std::vector<std::string>{"/a"}));
  EXPECT_EQ(cl->config.upper, "/u");
  EXPECT_EQ(cl->config.work, "/w");
  EXPECT_TRUE(cl->config.noacl);
}

TEST(FuseOptions, LaterValueWins) {
  FsConfig c = ParseOk("lowerdir=/a,lowerdir=/b:/c,timeout=1,timeout=2");
  EXPECT_EQ(c.lowers, (std::vector<std::string>{"/b", "/c"}));
  EXPECT_EQ(c.timeout, 2.0);
}

TEST(FuseOptions, EmptyItemsAndTrailingComma) {
  FsConfig c = ParseOk(",lowerdir=/a,,upperdir=/u,workdir=/w,,volatile,");
  EXPECT_EQ(c.lowers, (std::vector<std::string>{"/a"}));
  EXPECT_EQ(c.upper, "/u");
  EXPECT_TRUE(c.volatile_mode);
  // Empty items inside lowerdir are skipped too.
  EXPECT_EQ(ParseOk("lowerdir=/a::/b:").lowers, (std::vector<std::string>{"/a", "/b"}));
}

TEST(FuseOptions, EscapedColonCommaAndBackslash) {
  FsConfig c = ParseOk(R"(lowerdir=/x/a\:b:/y\,z:/w\\v,upperdir=/u\:1,workdir=/w\,2)");
  EXPECT_EQ(c.lowers, (std::vector<std::string>{"/x/a:b", "/y,z", "/w\\v"}));
  EXPECT_EQ(c.upper, "/u:1");
  EXPECT_EQ(c.work, "/w,2");
}

TEST(FuseOptions, SplitLowerDirs) {
  EXPECT_EQ(SplitLowerDirs("a:b"), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(SplitLowerDirs(R"(a\:b)"), (std::vector<std::string>{"a:b"}));
  EXPECT_EQ(SplitLowerDirs(":a:"), (std::vector<std::string>{"a"}));
  EXPECT_TRUE(SplitLowerDirs("").empty());
}

TEST(FuseOptions, Flags) {
  auto cl = Parse({"-f", "/m", "-o", "lowerdir=/a"});
  ASSERT_TRUE(cl);
  EXPECT_TRUE(cl->config.foreground);
  EXPECT_FALSE(cl->config.debug);
  for (const char* d : {"-d", "--debug"}) {
    auto dbg = Parse({d, "/m", "-o", "lowerdir=/a"});
    ASSERT_TRUE(dbg) << d;
    EXPECT_TRUE(dbg->config.debug) << d;
    EXPECT_TRUE(dbg->config.foreground) << d << " implies -f";
  }
  FsConfig c = ParseOk("lowerdir=/a,debug");
  EXPECT_TRUE(c.debug);
  EXPECT_TRUE(c.foreground);
  auto single = Parse({"-s", "/m", "-o", "lowerdir=/a"});
  ASSERT_TRUE(single);
  EXPECT_FALSE(single->config.threaded);
}

TEST(FuseOptions, HelpAndVersionNeedNothingElse) {
  for (const char* a : {"-h", "--help"}) {
    auto cl = Parse({a});
    ASSERT_TRUE(cl) << a;
    EXPECT_TRUE(cl->show_help);
  }
  for (const char* a : {"-V", "--version"}) {
    auto cl = Parse({a});
    ASSERT_TRUE(cl) << a;
    EXPECT_TRUE(cl->show_version);
  }
  EXPECT_NE(UsageText("lamina-fuse").find("lowerdir="), std::string::npos);
}

TEST(FuseOptions, DoubleDashEndsOptions) {
  auto cl = Parse({"-o", "lowerdir=/a", "--", "-weird-mnt"});
  ASSERT_TRUE(cl) << cl.error().message();
  EXPECT_EQ(cl->config.mountpoint, "-weird-mnt");
}

// ---- id mappings and squashing ------------------------------------------------

TEST(FuseOptions, IdMappings) {
  FsConfig c = ParseOk("lowerdir=/a,uidmapping=0:1000:1:1:100000:65536,gidmapping=0:10:5");
  EXPECT_EQ(c.uid_map, (std::vector<IdMapRange>{{0, 1000, 1}, {1, 100000, 65536}}));
  EXPECT_EQ(c.gid_map, (std::vector<IdMapRange>{{0, 10, 5}}));
  // containers-storage writes a leading colon.
  EXPECT_EQ(ParseOk("lowerdir=/a,uidmapping=:0:1:10000").uid_map,
            (std::vector<IdMapRange>{{0, 1, 10000}}));
  EXPECT_EQ(FormatIdMapping(c.uid_map), "0:1000:1:1:100000:65536");
}

TEST(FuseOptions, BadIdMappings) {
  ExpectBadOpt("lowerdir=/a,uidmapping=0:1:x", "uidmapping");
  ExpectBadOpt("lowerdir=/a,uidmapping=0:1", "uidmapping");
  ExpectBadOpt("lowerdir=/a,gidmapping=0:1:2:3", "gidmapping");
  ExpectBadOpt("lowerdir=/a,uidmapping=", "uidmapping");
  ExpectBadOpt("lowerdir=/a,uidmapping", "uidmapping");
  ExpectBadOpt("lowerdir=/a,uidmapping=0:1:0", "count 0");
  ExpectBadOpt("lowerdir=/a,uidmapping=-1:1:1", "uidmapping");
  ExpectBadOpt("lowerdir=/a,uidmapping=0:4294967295:2", "2^32");
  ExpectBadOpt("lowerdir=/a,uidmapping=4294967296:0:1", "uidmapping");
  ExpectBadOpt("lowerdir=/a,uidmapping=0:100:10:5:200:10", "overlap");
  ExpectBadOpt("lowerdir=/a,gidmapping=0:100:10:20:105:10", "overlap");
}

TEST(FuseOptions, Squash) {
  FsConfig c = ParseOk("lowerdir=/a,squash_to_root,squash_to_uid=7,squash_to_gid=8");
  EXPECT_TRUE(c.squash_to_root);
  EXPECT_EQ(c.squash_to_uid, 7);
  EXPECT_EQ(c.squash_to_gid, 8);
  FsConfig d = ParseOk("lowerdir=/a");
  EXPECT_FALSE(d.squash_to_root);
  EXPECT_EQ(d.squash_to_uid, -1);
  EXPECT_EQ(d.squash_to_gid, -1);
  ExpectBadOpt("lowerdir=/a,squash_to_uid=abc", "squash_to_uid");
  ExpectBadOpt("lowerdir=/a,squash_to_uid=-1", "squash_to_uid");
  ExpectBadOpt("lowerdir=/a,squash_to_gid=4294967295", "squash_to_gid");
  ExpectBadOpt("lowerdir=/a,squash_to_gid=", "squash_to_gid");
  ExpectBadOpt("lowerdir=/a,squash_to_root=1", "squash_to_root");
}

// ---- the other fuse-overlayfs options ----------------------------------------

TEST(FuseOptions, FuseOverlayfsOptions) {
  FsConfig c = ParseOk(
      "lowerdir=/a,upperdir=/u,workdir=/w,xattr_permissions=2,static_nlink,noacl,noxattrs,"
      "timeout=2.5,threaded=0,fsync=0,writeback=1,ino32_t,redirect_dir=off,xino=off,"
      "fast_ino=1,plugins=");
  EXPECT_EQ(c.xattr_permissions, 2);
  EXPECT_TRUE(c.static_nlink);
  EXPECT_TRUE(c.noacl);
  EXPECT_TRUE(c.noxattrs);
  EXPECT_EQ(c.timeout, 2.5);
  EXPECT_FALSE(c.threaded);
  EXPECT_FALSE(c.fsync);
  EXPECT_TRUE(c.writeback);
  EXPECT_TRUE(c.ino32);
  EXPECT_FALSE(c.redirect_dir);
  EXPECT_FALSE(c.xino);
}

TEST(FuseOptions, Defaults) {
  FsConfig c = ParseOk("lowerdir=/a,upperdir=/u,workdir=/w");
  EXPECT_EQ(c.xattr_permissions, 0);
  EXPECT_EQ(c.timeout, FsConfig{}.timeout);
  EXPECT_TRUE(c.threaded);
  EXPECT_TRUE(c.fsync);
  EXPECT_FALSE(c.volatile_mode);
  EXPECT_FALSE(c.writeback);
  EXPECT_TRUE(c.redirect_dir);
  EXPECT_TRUE(c.xino);
  EXPECT_TRUE(c.default_permissions);
  EXPECT_FALSE(c.allow_other);
  EXPECT_EQ(c.kernel_mount_options, (std::vector<std::string>{"noatime"}));
  // As fuse-overlayfs, root mounts are shared and honour set-id bits.
  FsConfig r = ParseOk("lowerdir=/a", kRoot);
  EXPECT_TRUE(r.allow_other);
  EXPECT_EQ(r.kernel_mount_options, (std::vector<std::string>{"suid", "noatime"}));
}

TEST(FuseOptions, VolatileImpliesNoFsync) {
  FsConfig c = ParseOk("lowerdir=/a,upperdir=/u,workdir=/w,volatile");
  EXPECT_TRUE(c.volatile_mode);
  EXPECT_FALSE(c.fsync);
}

TEST(FuseOptions, NoxattrsWithValue) {
  EXPECT_TRUE(ParseOk("lowerdir=/a,noxattrs=1").noxattrs);
  EXPECT_FALSE(ParseOk("lowerdir=/a,noxattrs=0").noxattrs);
  ExpectBadOpt("lowerdir=/a,noxattrs=2", "noxattrs");
}

TEST(FuseOptions, RedirectDirAndXino) {
  for (const char* v : {"on", "follow", "nofollow", "off"}) {
    auto cl = Parse({"/m", "-o", std::string("lowerdir=/a,redirect_dir=") + v});
    ASSERT_TRUE(cl) << v;
    EXPECT_EQ(cl->config.redirect_dir, std::string(v) == "on") << v;
    EXPECT_EQ(cl->redirect_dir_mode, v);
  }
  for (const char* v : {"on", "auto", "off"}) {
    auto cl = Parse({"/m", "-o", std::string("lowerdir=/a,xino=") + v});
    ASSERT_TRUE(cl) << v;
    EXPECT_EQ(cl->config.xino, std::string(v) != "off") << v;
  }
  ExpectBadOpt("lowerdir=/a,redirect_dir=maybe", "redirect_dir");
  ExpectBadOpt("lowerdir=/a,redirect_dir", "redirect_dir");
  ExpectBadOpt("lowerdir=/a,xino=1", "xino");
}

TEST(FuseOptions, Context) {
  EXPECT_EQ(ParseOk(R"(lowerdir=/a,context="system_u:object_r:container_file_t:s0:c1,c2")").context,
            "system_u:object_r:container_file_t:s0:c1,c2");
  EXPECT_EQ(ParseOk("lowerdir=/a,context=system_u:object_r:x:s0").context,
            "system_u:object_r:x:s0");
  // The quoted comma does not split the group.
  FsConfig c = ParseOk(R"(lowerdir=/a,context="a,b",noacl)");
  EXPECT_EQ(c.context, "a,b");
  EXPECT_TRUE(c.noacl);
}

TEST(FuseOptions, BadNumbers) {
  ExpectBadOpt("lowerdir=/a,timeout=abc", "timeout");
  ExpectBadOpt("lowerdir=/a,timeout=", "timeout");
  ExpectBadOpt("lowerdir=/a,timeout=-1", "timeout");
  ExpectBadOpt("lowerdir=/a,timeout=inf", "timeout");
  ExpectBadOpt("lowerdir=/a,timeout=1s", "timeout");
  ExpectBadOpt("lowerdir=/a,threaded=2", "threaded");
  ExpectBadOpt("lowerdir=/a,threaded=yes", "threaded");
  ExpectBadOpt("lowerdir=/a,fsync=", "fsync");
  ExpectBadOpt("lowerdir=/a,writeback", "writeback");
  ExpectBadOpt("lowerdir=/a,fast_ino=x", "fast_ino");
  ExpectBadOpt("lowerdir=/a,xattr_permissions=3", "xattr_permissions");
  ExpectBadOpt("lowerdir=/a,xattr_permissions=-1", "xattr_permissions");
  ExpectBadOpt("lowerdir=/a,xattr_permissions=1x", "xattr_permissions");
  ExpectBadOpt("lowerdir=/a,max_threads=many", "max_threads");
  ExpectBadOpt("lowerdir=/a,max_read=0", "max_read");
}

TEST(FuseOptions, FlagsTakeNoValue) {
  for (const char* f : {"static_nlink", "noacl", "volatile", "ino32_t", "ro", "rw", "allow_other",
                        "default_permissions", "debug", "nosuid", "noatime", "nofail"}) {
    ExpectBadOpt(std::string("lowerdir=/a,") + f + "=1", f);
  }
}

// ---- ordinary mount options ----------------------------------------------------

TEST(FuseOptions, KernelFlagsPassOnLastWins) {
  FsConfig c = ParseOk("lowerdir=/a,nosuid,nodev,noexec,sync,dirsync,atime,suid,exec,async");
  EXPECT_EQ(c.kernel_mount_options,
            (std::vector<std::string>{"suid", "nodev", "exec", "async", "dirsync", "atime"}));
  FsConfig d = ParseOk("lowerdir=/a,allow_root,auto_unmount,max_read=131072");
  EXPECT_EQ(d.kernel_mount_options,
            (std::vector<std::string>{"noatime", "allow_root", "auto_unmount", "max_read=131072"}));
}

TEST(FuseOptions, MountOptionsAccepted) {
  FsConfig c = ParseOk(
      "lowerdir=/a,rw,noatime,nodiratime,relatime,strictatime,lazytime,suid,nosuid,dev,nodev,"
      "exec,noexec,sync,async,allow_other,default_permissions,fsname=myfs,subtype=mine,auto,"
      "noauto,user,users,nofail,_netdev,x-systemd.automount,x-foo=bar,defaults,comment=hi,"
      "user=lamina,kernel_cache,splice_read,splice_write,splice_move,max_write,clone_fd,"
      "max_threads=4,max_idle_threads=2,nonempty,index=off,metacopy=off,userxattr");
  EXPECT_TRUE(c.allow_other);
  EXPECT_TRUE(c.default_permissions);
  EXPECT_EQ(c.fsname, "myfs");
  EXPECT_EQ(c.subtype, "mine");
  EXPECT_EQ(c.kernel_mount_options,
            (std::vector<std::string>{"nosuid", "nodev", "noexec", "async", "noatime"}));
}

TEST(FuseOptions, SessionArgs) {
  FsConfig c = ParseOk("lowerdir=/a,fsname=a\\,b,nodev", kRoot);
  auto args = SessionArgs(c, "lamina-fuse");
  ASSERT_EQ(args.size(), 3u);
  EXPECT_EQ(args[0], "lamina-fuse");
  EXPECT_EQ(args[1], "-o");
  EXPECT_EQ(args[2],
            "fsname=a\\,b,subtype=lamina-fuse,allow_other,default_permissions,ro,suid,nodev,"
            "noatime");
  c.debug = true;
  EXPECT_EQ(SessionArgs(c, "x").back(), "-d");
}

// ---- errors ---------------------------------------------------------------------

TEST(FuseOptions, UnknownOptions) {
  ExpectBadOpt("lowerdir=/a,bogus", "bogus");
  ExpectBadOpt("lowerdir=/a,bogus=1", "bogus=1");
  ExpectBadOpt("lowerdir=/a,=x", "=x");
  ExpectBad({"--frobnicate", "/m", "-o", "lowerdir=/a"}, "--frobnicate");
  ExpectBad({"-x", "/m", "-o", "lowerdir=/a"}, "-x");
}

TEST(FuseOptions, MissingPieces) {
  ExpectBad({"-o", "lowerdir=/a"}, "mount point");
  ExpectBad({"/m"}, "lowerdir");
  ExpectBad({"/m", "-o"}, "-o");
  ExpectBad({"/m", "-o", "lowerdir="}, "lowerdir");
  ExpectBad({"/m", "-o", "lowerdir=::"}, "lowerdir");
  ExpectBad({"/m", "-o", "lowerdir"}, "lowerdir");
  // As fuse-overlayfs: an upper needs a workdir, and at least one lower.
  ExpectBad({"/m", "-o", "lowerdir=/a,upperdir=/u"}, "workdir");
  ExpectBad({"/m", "-o", "upperdir=/u,workdir=/w"}, "lowerdir");
  ExpectBad({"/m", "-o", "lowerdir=/a,upperdir="}, "upperdir");
  ExpectBad({"/m", "-o", "lowerdir=/a,upperdir=/u,workdir="}, "workdir");
  ExpectBad({"src", "/m", "extra", "-o", "lowerdir=/a"}, "extra");
  ExpectBad({"", "-o", "lowerdir=/a"}, "mount point");
  ExpectBad({"/m", "-o", "lowerdir=/a,plugins=/x.so"}, "plugins");
  ExpectBad({"/m", "-o", "lowerdir=/a,fsname="}, "fsname");
}

// ---- round trips ----------------------------------------------------------------

void RoundTrip(const std::string& opts, ParseEnv env) {
  SCOPED_TRACE(opts);
  FsConfig first = ParseOk(opts, env);
  std::string formatted = FormatOptions(first);
  FsConfig second = ParseOk(formatted, env);
  ExpectSameConfig(first, second);
  EXPECT_EQ(FormatOptions(second), formatted);
}

TEST(FuseOptions, RoundTrip) {
  for (ParseEnv env : {kUser, kRoot}) {
    RoundTrip("lowerdir=/a", env);
    RoundTrip("lowerdir=/a:/b,upperdir=/u,workdir=/w", env);
    RoundTrip(R"(lowerdir=/x\:y:/p\,q:/b\\s,upperdir=/u\:1,workdir=/w\,1,ro)", env);
    RoundTrip(
        "lowerdir=/a,upperdir=/u,workdir=/w,uidmapping=0:1000:1:1:100000:65536,"
        "gidmapping=:0:1:10,squash_to_root,squash_to_uid=5,squash_to_gid=6,xattr_permissions=1,"
        "static_nlink,noacl,noxattrs,timeout=0.1,threaded=0,fsync=0,volatile,writeback=1,"
        "ino32_t,redirect_dir=nofollow,xino=off,allow_other,fsname=f\\,s,subtype=t,nodev,"
        "noexec,sync,dirsync,atime",
        env);
    RoundTrip(R"(lowerdir=/a,context="system_u:object_r:container_file_t:s0:c1,c2")", env);
  }
}

TEST(FuseOptions, EscapePath) {
  EXPECT_EQ(EscapePath(R"(/a:b,c\d"e)"), R"(/a\:b\,c\\d\"e)");
  EXPECT_EQ(SplitLowerDirs(EscapePath("/a:b") + ":" + EscapePath("/c,d")),
            (std::vector<std::string>{"/a:b", "/c,d"}));
}

// ---- path resolution --------------------------------------------------------------

TEST(FuseOptions, ResolvePathsRelativeAndSymlinks) {
  test::TempDir tmp("fuse-options");
  const std::string& g = tmp.path();
  ASSERT_TRUE(MakeDirs(g + "/real/A"));
  ASSERT_TRUE(MakeDirs(g + "/real/B"));
  ASSERT_TRUE(MakeDirs(g + "/l"));
  ASSERT_TRUE(MakeDirs(g + "/ID/diff"));
  ASSERT_TRUE(MakeDirs(g + "/ID/work"));
  ASSERT_TRUE(MakeDirs(g + "/ID/merged"));
  ASSERT_EQ(::symlink("../real/A", (g + "/l/A").c_str()), 0);
  ASSERT_EQ(::symlink("../real/B", (g + "/l/B").c_str()), 0);

  FsConfig c = ParseOk("lowerdir=l/A:l/B,upperdir=ID/diff,workdir=ID/work");
  c.mountpoint = "ID/merged";
  auto resolved = ResolvePaths(&c, g);
  ASSERT_TRUE(resolved) << resolved.error().message();
  char real[PATH_MAX];
  ASSERT_NE(::realpath(g.c_str(), real), nullptr);
  std::string rg = real;
  EXPECT_EQ(c.lowers, (std::vector<std::string>{rg + "/real/A", rg + "/real/B"}));
  EXPECT_EQ(c.upper, rg + "/ID/diff");
  EXPECT_EQ(c.work, rg + "/ID/work");
  EXPECT_EQ(c.mountpoint, rg + "/ID/merged");
}

TEST(FuseOptions, ResolvePathsErrorsNameTheOption) {
  test::TempDir tmp("fuse-options");
  test::WriteFile(tmp.Sub("file"), "x");
  FsConfig c = ParseOk("lowerdir=missing");
  c.mountpoint = "m";
  auto r = ResolvePaths(&c, tmp.path());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ENOENT);
  EXPECT_NE(r.error().message().find("lowerdir=missing"), std::string::npos);

  FsConfig f = ParseOk("lowerdir=file");
  f.mountpoint = "m";
  auto nd = ResolvePaths(&f, tmp.path());
  ASSERT_FALSE(nd);
  EXPECT_EQ(nd.error().code(), ENOTDIR);

  ASSERT_TRUE(MakeDirs(tmp.Sub("a")));
  FsConfig u = ParseOk("lowerdir=a,upperdir=nope,workdir=a");
  u.mountpoint = "m";
  auto nu = ResolvePaths(&u, tmp.path());
  ASSERT_FALSE(nu);
  EXPECT_NE(nu.error().message().find("upperdir=nope"), std::string::npos);
}

}  // namespace
}  // namespace lamina::fuse
