// `lamina run` end to end: the real binary, real namespaces, cgroups, mounts
// and processes, one store per driver (overlay, vfs, fuse) in a TempDir.
// A driver the store reports unusable here is skipped with its reason.

#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/fs.h"
#include "common/hash.h"
#include "tests/support/test_util.h"

namespace lamina {
namespace {

using nlohmann::json;
using test::CommandResult;
using test::TempDir;

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  return s;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(line);
  }
  return lines;
}

std::string Describe(const CommandResult& r) {
  return "status " + std::to_string(r.status) + "\nstdout: " + r.out + "\nstderr: " + r.err;
}

// The driver's verdict in a store at `root` ("" = usable, else the reason).
std::string DriverUnusable(const std::string& driver, const std::string& root,
                           const std::vector<std::string>& as_user = {}) {
  std::vector<std::string> argv = as_user;
  argv.push_back(test::LaminaBinary());
  argv.insert(argv.end(), {"--root", root, "info", "--json"});
  CommandResult info = test::Run(argv);
  if (info.status != 0) return "lamina info failed: " + info.err;
  json j = json::parse(info.out, nullptr, false);
  if (j.is_discarded()) return "lamina info: no JSON";
  for (const auto& d : j["drivers"]) {
    if (d["name"] == driver) {
      if (d["usable"] == true) return {};
      return d.value("reason", std::string("not usable"));
    }
  }
  return "unknown driver";
}

// A process started in the background with its stdout read through a pipe.
class Background {
 public:
  explicit Background(const std::vector<std::string>& argv) {
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    ::close(out[1]);
    out_ = out[0];
  }
  ~Background() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (out_ >= 0) ::close(out_);
  }
  pid_t pid() const { return pid_; }
  // Reads stdout until `text` shows up (or EOF / the deadline).
  bool WaitFor(const std::string& text, int seconds = 30) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (output_.find(text) == std::string::npos) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                      deadline - std::chrono::steady_clock::now())
                      .count();
      if (left <= 0) return false;
      struct pollfd p = {out_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) return false;
      char buf[4096];
      ssize_t n = ::read(out_, buf, sizeof buf);
      if (n <= 0) return output_.find(text) != std::string::npos;
      output_.append(buf, static_cast<size_t>(n));
    }
    return true;
  }
  int Wait() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    reaped_ = true;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(out_, buf, sizeof buf)) > 0) output_.append(buf, static_cast<size_t>(n));
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  const std::string& output() const { return output_; }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  bool reaped_ = false;
  std::string output_;
};

class RunTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    // Unprivileged (the rootless ctest entries run every case as
    // lamina-test): the same runs, with what a rootless user has.
    rootless_ = !test::IsRoot();
    driver_ = GetParam();
    std::string reason = DriverUnusable(driver_, dir_.Sub("probe"));
    if (!reason.empty()) GTEST_SKIP() << "driver " << driver_ << " is not usable here: " << reason;
  }
  void TearDown() override {
    // Kept containers and the image's layers go with the TempDir; mounts first.
    if (!driver_.empty()) (void)test::RunLamina({"--root", Root(), "ps"});
  }

  std::string Root() const { return dir_.Sub("store"); }

  // Rootless without a delegated cgroup, a limit is refused with lamina's
  // own message and nothing is left behind; true (the caller skips the
  // rest) when that is what happened.
  bool LimitRefusedRootless(const std::string& option, const std::string& value) {
    if (!rootless_) return false;
    EXPECT_EQ(Sh("true").status, 0);  // the image exists: only a container layer could leak
    size_t layers = Layers().size();
    CommandResult r = RunBox({option, value, "busybox", "true"});
    if (r.status == 0) return false;  // a delegated cgroup: the limit works
    EXPECT_EQ(r.status, 125) << Describe(r);
    EXPECT_NE(r.err.find(option + " needs a delegated cgroup; not available for this user"),
              std::string::npos)
        << r.err;
    EXPECT_EQ(Layers().size(), layers);
    return true;
  }

  // A rootless fuse run: lamina-fuse, mounted by the user outside the
  // container's user namespace, shows the store's owners untranslated (no
  // uidmapping= for the container's id map) and to the user alone (no
  // allow_other), so root in the container cannot change the image's
  // root-owned files and other container users cannot reach the tree at
  // all. A known bug of rootless `run --driver fuse` (reported); the cases
  // that meet it skip with this reason until the launcher maps the ids.
  bool RootlessFuseIdsUnmapped() const { return rootless_ && driver_ == "fuse"; }
  static constexpr const char* kRootlessFuseIds =
      "known bug: rootless fuse runs show the store's owners unmapped (no uidmapping=, no "
      "allow_other for the container's ids)";

  std::vector<std::string> Argv(const std::vector<std::string>& args) const {
    std::vector<std::string> argv = {test::LaminaBinary(), "--root", Root(), "--driver", driver_};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }
  CommandResult Lamina(const std::vector<std::string>& args) { return test::Run(Argv(args)); }
  CommandResult RunBox(const std::vector<std::string>& args) {
    std::vector<std::string> all = {"run"};
    all.insert(all.end(), args.begin(), args.end());
    return Lamina(all);
  }
  // `lamina run busybox sh -c SCRIPT` with extra run options before the image.
  CommandResult Sh(const std::string& script, const std::vector<std::string>& options = {}) {
    std::vector<std::string> args = options;
    args.insert(args.end(), {"busybox", "sh", "-c", script});
    return RunBox(args);
  }

  // Layers in the store (ids, writable or not).
  json Layers() {
    CommandResult r = Lamina({"layer", "ls", "--json"});
    EXPECT_EQ(r.status, 0) << Describe(r);
    json j = json::parse(r.out, nullptr, false);
    return j.is_discarded() ? json::array() : j;
  }

  std::string driver_;
  bool rootless_ = false;
  TempDir dir_{"lamina-run"};
};

TEST_P(RunTest, CommandIsPid1AndHostnameIsTheContainers) {
  CommandResult r = Sh("echo $$; hostname; readlink /proc/1/exe", {"--hostname", "box1"});
  ASSERT_EQ(r.status, 0) << Describe(r);
  auto lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 3u) << r.out;
  EXPECT_EQ(lines[0], "1");
  EXPECT_EQ(lines[1], "box1");
  // The image's busybox (the name it was run by), never a host binary.
  EXPECT_TRUE(lines[2] == "/bin/sh" || lines[2] == "/bin/busybox") << lines[2];
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  EXPECT_NE(std::string(host), "box1");
}

// The container's root is the driver's union: a kernel overlay (rootless
// too: mounted inside the container's own namespaces), lamina-fuse, or the
// vfs layer's plain directory.
TEST_P(RunTest, RootIsTheDriversUnion) {
  CommandResult r = Sh("awk '$5 == \"/\"' /proc/self/mountinfo");
  ASSERT_EQ(r.status, 0) << Describe(r);
  ASSERT_FALSE(r.out.empty()) << Describe(r);
  bool overlay = r.out.find(" - overlay ") != std::string::npos;
  bool fuse = r.out.find(" - fuse") != std::string::npos;
  EXPECT_EQ(overlay, driver_ == "overlay") << r.out;
  EXPECT_EQ(fuse, driver_ == "fuse") << r.out;
  // A rootless overlay mount never shows outside (it lived in the container's namespace).
  std::ifstream mounts("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mounts, line)) {
    EXPECT_EQ(line.find(Root() + "/layers"), std::string::npos) << line;
  }
}

// Rootless on the kernel overlay: a mount outside a container is refused
// with advice, and the advice works.
TEST_P(RunTest, RootlessOverlayLayerMountAdvisesFuse) {
  if (!rootless_ || driver_ != "overlay") GTEST_SKIP() << "for the overlay driver rootless";
  ASSERT_EQ(Sh("true").status, 0);
  std::string top;
  for (const auto& layer : Layers()) top = layer["id"];
  ASSERT_FALSE(top.empty());
  CommandResult mount = Lamina({"layer", "mount", top});
  EXPECT_NE(mount.status, 0) << Describe(mount);
  EXPECT_NE(mount.err.find("only inside a user namespace"), std::string::npos) << mount.err;
  EXPECT_NE(mount.err.find("--driver fuse"), std::string::npos) << mount.err;
  std::string fuse = DriverUnusable("fuse", dir_.Sub("probe-fuse"));
  if (!fuse.empty()) GTEST_SKIP() << "fuse is not usable here to follow the advice: " << fuse;
  std::vector<std::string> with_fuse = {test::LaminaBinary(), "--root", Root(),
                                        "--driver",           "fuse",   "layer"};
  auto fuse_cmd = [&](const std::string& verb) {
    std::vector<std::string> argv = with_fuse;
    argv.insert(argv.end(), {verb, top});
    return test::Run(argv);
  };
  CommandResult mounted = fuse_cmd("mount");
  ASSERT_EQ(mounted.status, 0) << Describe(mounted);
  EXPECT_TRUE(PathExists(Trim(mounted.out) + "/bin/busybox")) << mounted.out;
  CommandResult unmounted = fuse_cmd("umount");
  EXPECT_EQ(unmounted.status, 0) << Describe(unmounted);
}

TEST_P(RunTest, HostMountsAndProcessesAreInvisible) {
  test::WriteFile(dir_.Sub("host-marker"), "host\n");
  CommandResult r = Sh("set -- /proc/[0-9]*; echo procs $#; cut -d' ' -f2 /proc/mounts; "
                       "test -e " + dir_.Sub("host-marker") + " && echo marker-visible; "
                       "cat /proc/net/dev | tail -n +3 | cut -d: -f1");
  ASSERT_EQ(r.status, 0) << Describe(r);
  auto lines = Lines(r.out);
  ASSERT_FALSE(lines.empty());
  // sh itself, and cut (the last pipeline's children are not started yet).
  EXPECT_EQ(lines[0], "procs 1") << r.out;
  std::set<std::string> interfaces;
  for (size_t i = 1; i < lines.size(); ++i) {
    const std::string& l = lines[i];
    EXPECT_NE(l, "marker-visible");
    if (l.starts_with("/")) {
      bool ours = l == "/" || l.starts_with("/proc") || l.starts_with("/dev") || l.starts_with("/sys");
      EXPECT_TRUE(ours) << "host mount visible in the container: " << l;
    } else if (!l.empty()) {
      std::string name = l;
      name.erase(0, name.find_first_not_of(' '));
      interfaces.insert(name);
    }
  }
  EXPECT_EQ(interfaces, std::set<std::string>({"lo"})) << r.out;
  // --net host shares the host's interfaces.
  CommandResult host = Sh("tail -n +3 /proc/net/dev | wc -l", {"--net", "host"});
  ASSERT_EQ(host.status, 0) << Describe(host);
  std::ifstream net("/proc/net/dev");
  std::string line;
  int host_count = -2;
  while (std::getline(net, line)) ++host_count;
  EXPECT_EQ(Trim(host.out), std::to_string(host_count));
}

TEST_P(RunTest, WritesLandInTheContainerLayerOnly) {
  if (RootlessFuseIdsUnmapped()) GTEST_SKIP() << kRootlessFuseIds;
  // The image's layers as tars, before and after.
  ASSERT_EQ(Sh("true").status, 0);
  auto image_layers = [&] {
    std::vector<std::string> digests;
    for (const auto& l : Layers()) {
      if (l["writable"] == true) continue;
      CommandResult d = Lamina({"layer", "diff", l["id"].get<std::string>(), "-o",
                                dir_.Sub("layer.tar")});
      EXPECT_EQ(d.status, 0) << Describe(d);
      digests.push_back(test::ReadFileOrDie(dir_.Sub("layer.tar")));
    }
    return digests;
  };
  auto before = image_layers();
  ASSERT_FALSE(before.empty());
  CommandResult r = Sh("echo new > /new-file && rm /bin/ls && mkdir -p /etc/x && echo y > /etc/passwd "
                       "&& cat /new-file");
  ASSERT_EQ(r.status, 0) << Describe(r);
  EXPECT_EQ(Trim(r.out), "new");
  EXPECT_EQ(image_layers(), before);
  // A fresh container sees the image as it was; the first one's layer is gone.
  CommandResult again = Sh("test -e /new-file && echo leaked; test -e /bin/ls && echo ls; "
                           "grep -c root /etc/passwd");
  ASSERT_EQ(again.status, 0) << Describe(again);
  EXPECT_EQ(Lines(again.out), std::vector<std::string>({"ls", "1"}));
  for (const auto& l : Layers()) EXPECT_NE(l["writable"], true) << l.dump();
}

TEST_P(RunTest, WhiteoutAndOpaqueDirOfAnImageHideWhatTheyMust) {
  ASSERT_EQ(Sh("mkdir -p /d/sub && echo a > /d/a && echo b > /d/sub/b && echo x > /x",
               {"--name", "base"}).status, 0);
  CommandResult c1 = Lamina({"commit", "base", "img1"});
  ASSERT_EQ(c1.status, 0) << Describe(c1);
  ASSERT_EQ(RunBox({"--name", "upper", "img1", "sh", "-c",
                    "rm /x && rm -rf /d && mkdir /d && echo c > /d/c"}).status, 0);
  CommandResult c2 = Lamina({"commit", "upper", "img2"});
  ASSERT_EQ(c2.status, 0) << Describe(c2);
  CommandResult r = RunBox({"img2", "sh", "-c", "ls -A /d; test -e /x || echo no-x; test -e /bin/sh && echo sh"});
  ASSERT_EQ(r.status, 0) << Describe(r);
  EXPECT_EQ(Lines(r.out), std::vector<std::string>({"c", "no-x", "sh"}));
  // img1 still has what img2 hides.
  CommandResult old = RunBox({"img1", "sh", "-c", "ls -A /d; cat /x"});
  EXPECT_EQ(Lines(old.out), std::vector<std::string>({"a", "sub", "x"})) << Describe(old);
  // Kept containers: ps lists them, rm removes them and their layers.
  CommandResult ps = Lamina({"ps"});
  EXPECT_NE(ps.out.find("base"), std::string::npos) << ps.out;
  EXPECT_NE(ps.out.find("exited (0)"), std::string::npos) << ps.out;
  EXPECT_EQ(Lamina({"rm", "base", "upper"}).status, 0);
  for (const auto& l : Layers()) EXPECT_NE(l["writable"], true) << l.dump();
  EXPECT_NE(Lamina({"rm", "base"}).status, 0);
}

TEST_P(RunTest, MemoryHogIsKilledAtTheLimit) {
  if (LimitRefusedRootless("--memory", "64m")) {
    GTEST_SKIP() << "rootless without a delegated cgroup: --memory is refused (checked)";
  }
  CommandResult r = Sh("head -c 300m /dev/zero | sort > /dev/null; echo unreachable", {"--memory", "64m"});
  // The shell goes on after its pipeline died; what matters is how it died.
  EXPECT_NE(r.out.find("unreachable"), std::string::npos) << Describe(r);
  // PID 1 itself as the hog: 137 and the reason.
  r = RunBox({"--memory", "64m", "busybox", "sort", "/dev/zero"});
  EXPECT_EQ(r.status, 137) << Describe(r);
  EXPECT_NE(r.err.find("lamina: container killed: out of memory (limit 64 MiB)"), std::string::npos)
      << r.err;
}

TEST_P(RunTest, ForkBombStopsAtThePidsLimit) {
  if (LimitRefusedRootless("--pids", "32")) {
    GTEST_SKIP() << "rootless without a delegated cgroup: --pids is refused (checked)";
  }
  auto start = std::chrono::steady_clock::now();
  // The bomb in a subshell (ash gives up when a fork fails); the shell
  // counts what runs with builtins only.
  CommandResult r = Sh("(for i in $(seq 100); do sleep 10 & done) 2>/dev/null; "
                       "set -- /proc/[0-9]*; echo $#",
                       {"--pids", "32"});
  ASSERT_EQ(r.status, 0) << Describe(r);
  int count = std::atoi(Trim(r.out).c_str());
  EXPECT_LE(count, 32) << r.out;
  EXPECT_GE(count, 16) << r.out;
  // PID 1's end took the sleeps with it.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(9));
}

TEST_P(RunTest, CpuLimitThrottles) {
  if (LimitRefusedRootless("--cpus", "0.2")) {
    GTEST_SKIP() << "rootless without a delegated cgroup: --cpus is refused (checked)";
  }
  // One second of a busy loop; `times` gives the children's CPU time.
  CommandResult r = Sh("timeout 1 sh -c 'while :; do :; done'; times", {"--cpus", "0.2"});
  ASSERT_EQ(r.status, 0) << Describe(r);
  // The second line: the children's "0m0.200s 0m0.000s".
  auto lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 2u) << r.out;
  std::string user = lines[1];
  size_t m = user.find('m');
  ASSERT_NE(m, std::string::npos) << r.out;
  double seconds = std::atof(user.substr(0, m).c_str()) * 60 + std::atof(user.c_str() + m + 1);
  // 0.2 s of CPU in 1 s, with room for the period boundaries; it ran at all.
  EXPECT_LT(seconds, 0.5) << r.out;
  EXPECT_GT(seconds, 0.0) << r.out;
}

TEST_P(RunTest, ExitCodesAndSignalsPassThrough) {
  EXPECT_EQ(Sh("exit 7").status, 7);
  CommandResult missing = RunBox({"busybox", "no-such-command"});
  EXPECT_EQ(missing.status, 127) << Describe(missing);
  EXPECT_NE(missing.err.find("no-such-command"), std::string::npos) << missing.err;
  // SIGTERM to lamina reaches the command (PID 1 with a handler).
  {
    Background bg(Argv({"run", "busybox", "sh", "-c",
                        "trap 'echo got-term; exit 42' TERM; echo ready; "
                        "while :; do sleep 0.05; done"}));
    ASSERT_TRUE(bg.WaitFor("ready")) << bg.output();
    ::kill(bg.pid(), SIGTERM);
    EXPECT_EQ(bg.Wait(), 42);
    EXPECT_NE(bg.output().find("got-term"), std::string::npos) << bg.output();
  }
  // A PID 1 killed by a signal: 128+signal.
  {
    Background bg(Argv({"run", "--name", "victim", "busybox", "sh", "-c", "echo ready; sleep 30"}));
    ASSERT_TRUE(bg.WaitFor("ready")) << bg.output();
    CommandResult ps = Lamina({"ps", "--json"});
    json j = json::parse(ps.out, nullptr, false);
    ASSERT_TRUE(j.is_array() && j.size() == 1) << ps.out;
    pid_t pid = j[0]["pid"].get<int>();
    ASSERT_GT(pid, 1);
    EXPECT_TRUE(j[0]["running"].get<bool>());
    ::kill(pid, SIGKILL);
    EXPECT_EQ(bg.Wait(), 137);
    CommandResult after = Lamina({"ps"});
    EXPECT_NE(after.out.find("exited (137)"), std::string::npos) << after.out;
  }
}

TEST_P(RunTest, LauncherBinaryCannotBeWrittenFromInside) {
  std::string before = test::ReadFileOrDie(test::LaminaBinary());
  CommandResult r = Sh("for f in /proc/self/exe /proc/1/exe; do echo x > $f && echo wrote $f; "
                       "readlink $f; done; ls /proc | grep -c '^[0-9]'");
  EXPECT_EQ(r.out.find("wrote"), std::string::npos) << Describe(r);
  EXPECT_EQ(r.out.find("lamina"), std::string::npos) << Describe(r);
  EXPECT_EQ(test::ReadFileOrDie(test::LaminaBinary()), before);
}

TEST_P(RunTest, NoInheritedFdsOrIgnoredSignalsReachTheCommand) {
  // An fd without O_CLOEXEC and an ignored signal, as a careless caller of
  // lamina might leave them.
  int leak = ::open("/etc/hostname", O_RDONLY);
  ASSERT_GE(leak, 0);
  struct sigaction ignore = {}, old = {};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(::sigaction(SIGUSR1, &ignore, &old), 0);
  // The command itself as PID 1 shows what it was given.
  CommandResult fds = RunBox({"busybox", "ls", "/proc/self/fd"});
  CommandResult sigs = RunBox({"busybox", "grep", "SigIgn", "/proc/self/status"});
  ::sigaction(SIGUSR1, &old, nullptr);
  ::close(leak);
  ASSERT_EQ(fds.status, 0) << Describe(fds);
  // 0, 1, 2 and the directory ls is reading.
  EXPECT_EQ(Lines(fds.out), std::vector<std::string>({"0", "1", "2", "3"})) << fds.out;
  EXPECT_EQ(Trim(sigs.out), "SigIgn:\t0000000000000000") << Describe(sigs);
}

TEST_P(RunTest, ContainerCannotWriteHostFilesOutsideItsRoot) {
  ASSERT_EQ(::mkdir(dir_.Sub("vol").c_str(), 0755), 0);
  test::WriteFile(dir_.Sub("vol/f"), "orig\n");
  test::WriteFile(dir_.Sub("secret"), "orig\n");
  std::string secret = dir_.Sub("secret");
  CommandResult r = Sh("echo bad > /ro/f; echo ok > /rw/new; "
                       "echo bad > ../../../.." + secret + "; echo bad > /proc/1/root/../.." + secret +
                           "; ln -s / /up && echo bad > /up/.." + secret + "; true",
                       {"-v", dir_.Sub("vol") + ":/ro:ro", "-v", dir_.Sub("vol") + ":/rw"});
  ASSERT_EQ(r.status, 0) << Describe(r);
  EXPECT_EQ(test::ReadFileOrDie(dir_.Sub("vol/f")), "orig\n");
  EXPECT_EQ(test::ReadFileOrDie(secret), "orig\n");
  EXPECT_EQ(test::ReadFileOrDie(dir_.Sub("vol/new")), "ok\n");
  EXPECT_NE(r.err.find("Read-only file system"), std::string::npos) << r.err;
}

TEST_P(RunTest, EnvWorkdirUserReadOnlyAndCapabilities) {
  if (RootlessFuseIdsUnmapped()) GTEST_SKIP() << kRootlessFuseIds;
  CommandResult r = Sh("echo $FOO; pwd; id -u; id -g; grep -E '^(CapEff|CapBnd|NoNewPrivs)' "
                       "/proc/self/status",
                       {"-e", "FOO=bar", "-w", "/tmp", "-u", "nobody"});
  ASSERT_EQ(r.status, 0) << Describe(r);
  auto lines = Lines(r.out);
  ASSERT_GE(lines.size(), 7u) << r.out;
  EXPECT_EQ(lines[0], "bar");
  EXPECT_EQ(lines[1], "/tmp");
  EXPECT_EQ(lines[2], "65534");
  EXPECT_NE(r.out.find("CapEff:\t0000000000000000"), std::string::npos) << r.out;
  // Docker's default set: 0x00000000a80425fb.
  EXPECT_NE(r.out.find("CapBnd:\t00000000a80425fb"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("NoNewPrivs:\t1"), std::string::npos) << r.out;
  CommandResult root = Sh("grep CapEff /proc/self/status");
  EXPECT_EQ(Trim(root.out), "CapEff:\t00000000a80425fb") << Describe(root);
  CommandResult ro = Sh("touch /x && echo wrote; touch /dev/shm/ok && echo shm", {"--read-only"});
  EXPECT_EQ(Trim(ro.out), "shm") << Describe(ro);
  CommandResult bad = RunBox({"--memory", "lots", "busybox", "true"});
  EXPECT_EQ(bad.status, 2) << Describe(bad);
}

TEST_P(RunTest, UserNamespaceOnRequestForRoot) {
  if (rootless_) GTEST_SKIP() << "--userns is for root: a rootless run always has one";
  CommandResult r = Sh("cat /proc/self/uid_map; id -u; touch /x && echo wrote", {"--userns"});
  ASSERT_EQ(r.status, 0) << Describe(r);
  auto lines = Lines(r.out);
  ASSERT_GE(lines.size(), 3u) << r.out;
  // Not the initial namespace's identity map of all 2^32 ids.
  EXPECT_EQ(r.out.find("4294967295"), std::string::npos) << r.out;
  EXPECT_EQ(lines[lines.size() - 2], "0");
  EXPECT_EQ(lines.back(), "wrote");
}

TEST_P(RunTest, NamesAreUniqueAndARunningContainerIsNotCommitted) {
  ASSERT_EQ(Sh("true", {"--name", "one"}).status, 0);
  size_t layers = Layers().size();
  CommandResult again = Sh("true", {"--name", "one"});
  EXPECT_EQ(again.status, 125) << Describe(again);
  EXPECT_NE(again.err.find("name is taken"), std::string::npos) << again.err;
  EXPECT_EQ(Layers().size(), layers);  // the refused run left no layer
  EXPECT_EQ(Sh("true", {"--name", "bad/name"}).status, 2);
  Background bg(Argv({"run", "--name", "busy", "busybox", "sh", "-c", "echo ready; sleep 30"}));
  ASSERT_TRUE(bg.WaitFor("ready")) << bg.output();
  CommandResult commit = Lamina({"commit", "busy", "img"});
  EXPECT_NE(commit.status, 0);
  EXPECT_NE(commit.err.find("running"), std::string::npos) << commit.err;
  CommandResult rm = Lamina({"rm", "busy"});
  EXPECT_NE(rm.status, 0);
  ::kill(bg.pid(), SIGTERM);  // forwarded; sh as PID 1 has no handler: SIGKILL ends it
  ::kill(bg.pid(), SIGKILL);
  bg.Wait();
  EXPECT_EQ(Lamina({"rm", "one", "busy"}).status, 0) << Lamina({"ps"}).out;
  EXPECT_EQ(Lamina({"ps", "--json"}).out, "[]\n");
}

TEST_P(RunTest, TerminalWithDashT) {
  int master = -1;
  pid_t pid = ::forkpty(&master, nullptr, nullptr, nullptr);
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto argv = Argv({"run", "-t", "busybox", "sh", "-c", "tty; test -t 0 && echo is-a-tty"});
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  std::string out;
  char buf[1024];
  for (;;) {
    struct pollfd p = {master, POLLIN, 0};
    if (::poll(&p, 1, 20000) <= 0) break;
    ssize_t n = ::read(master, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::close(master);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  EXPECT_NE(out.find("/dev/pts/0"), std::string::npos) << out;
  EXPECT_NE(out.find("is-a-tty"), std::string::npos) << out;
}

TEST_P(RunTest, KilledLauncherLeavesALayerTheNextRunCleans) {
  ASSERT_EQ(Sh("true").status, 0);
  size_t image_layers = Layers().size();
  // As root with a memory limit, so that there are cgroups to clean too.
  std::vector<std::string> run = {"run"};
  if (!rootless_) run.insert(run.end(), {"--memory", "32m"});
  run.insert(run.end(), {"busybox", "sh", "-c", "echo ready; sleep 60"});
  Background bg(Argv(run));
  ASSERT_TRUE(bg.WaitFor("ready")) << bg.output();
  EXPECT_EQ(Layers().size(), image_layers + 1);
  ::kill(bg.pid(), SIGKILL);
  bg.Wait();
  // The next lamina command cleans the layer, its mount and its cgroups.
  CommandResult ps = Lamina({"ps", "--json"});
  ASSERT_EQ(ps.status, 0) << Describe(ps);
  EXPECT_EQ(Trim(ps.out), "[]");
  EXPECT_EQ(Layers().size(), image_layers);
  std::ifstream mounts("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mounts, line)) {
    EXPECT_EQ(line.find(Root() + "/layers"), std::string::npos) << line;
  }
}

// Rootless: the real binary as the project's unprivileged account.
TEST_P(RunTest, Rootless) {
  if (rootless_) GTEST_SKIP() << "unprivileged already: every case of this run is rootless";
  uid_t uid = test::TestUserUid();
  if (uid == 0) GTEST_SKIP() << "no lamina-test account (scripts/setup-test-env.sh makes it)";
  std::string home = dir_.Sub("rootless");
  ASSERT_EQ(::mkdir(home.c_str(), 0700), 0);
  ASSERT_EQ(::chown(home.c_str(), uid, uid), 0);
  std::vector<std::string> as_user = {"runuser", "-u", "lamina-test", "--", "env", "HOME=" + home,
                                      "XDG_RUNTIME_DIR=" + home};
  if (test::Run({"runuser", "-u", "lamina-test", "--", "test", "-x", test::LaminaBinary()}).status != 0) {
    GTEST_SKIP() << "lamina-test cannot run " << test::LaminaBinary();
  }
  std::string reason = DriverUnusable(driver_, home + "/probe", as_user);
  if (!reason.empty()) GTEST_SKIP() << "driver " << driver_ << " is not usable rootless: " << reason;
  auto lamina = [&](const std::vector<std::string>& args) {
    std::vector<std::string> argv = as_user;
    argv.insert(argv.end(), {test::LaminaBinary(), "--root", home + "/store", "--driver", driver_});
    argv.insert(argv.end(), args.begin(), args.end());
    return test::Run(argv);
  };
  CommandResult r = lamina({"run", "--hostname", "rl", "busybox", "sh", "-c",
                            "id -u; echo $$; hostname; cat /proc/self/uid_map; touch /new && echo wrote"});
  ASSERT_EQ(r.status, 0) << Describe(r);
  auto lines = Lines(r.out);
  ASSERT_GE(lines.size(), 5u) << r.out;
  EXPECT_EQ(lines[0], "0");
  EXPECT_EQ(lines[1], "1");
  EXPECT_EQ(lines[2], "rl");
  EXPECT_NE(r.out.find(std::to_string(uid)), std::string::npos) << r.out;
  EXPECT_EQ(lines.back(), "wrote");
  EXPECT_EQ(lamina({"run", "busybox", "sh", "-c", "exit 3"}).status, 3);
  // Owners as the container sees them: its root directory and the image's
  // root-owned files are root's, so are new ones, a chown to another user
  // sticks, and another user can work in the tree (fuse: through the
  // container's id maps and allow_other).
  CommandResult owners =
      lamina({"run", "busybox", "sh", "-c",
              "stat -c '%u:%g %a' /; stat -c '%u:%g' /etc/passwd; touch /f; stat -c '%u:%g' /f; "
              "chown 33:33 /f; stat -c '%u:%g' /f; "
              "su nobody -s /bin/sh -c 'id -u; cat /etc/passwd >/dev/null && touch /tmp/n' && "
              "stat -c '%u' /tmp/n"});
  ASSERT_EQ(owners.status, 0) << Describe(owners);
  EXPECT_EQ(Lines(owners.out),
            (std::vector<std::string>{"0:0 755", "0:0", "0:0", "33:33", "65534", "65534"}))
      << Describe(owners);
  if (driver_ == "overlay") {
    // The kernel overlay rootless, mounted inside the container's namespaces.
    CommandResult root = lamina({"run", "busybox", "awk", "$5 == \"/\"", "/proc/self/mountinfo"});
    EXPECT_NE(root.out.find(" - overlay "), std::string::npos) << Describe(root);
  }
  CommandResult limited = lamina({"run", "--memory", "64m", "busybox", "true"});
  EXPECT_EQ(limited.status, 125) << Describe(limited);
  EXPECT_NE(limited.err.find("--memory needs a delegated cgroup; not available for this user"),
            std::string::npos)
      << limited.err;
  // Cleanup as the user (its FUSE daemons, its layers).
  (void)lamina({"ps"});
}

// Issue 7's "cannot escape its root" list, one test each: host files
// (ContainerCannotWriteHostFilesOutsideItsRoot), the launcher binary
// (LauncherBinaryCannotBeWrittenFromInside), host mounts
// (HostMountsAndProcessesAreInvisible, HostMountsCannotBeReachedOrMade),
// capabilities and no_new_privs (the next one).
TEST_P(RunTest, CapabilitiesAreExactlyTheDefaultSetAndNoNewPrivsIsSet) {
  CommandResult r =
      Sh("grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status");
  ASSERT_EQ(r.status, 0) << Describe(r);
  // Docker's default set (0x00000000a80425fb) for root, nothing inheritable
  // or ambient: an exec'd program gains nothing.
  EXPECT_EQ(Lines(r.out), std::vector<std::string>({"CapInh:\t0000000000000000",
                                                    "CapPrm:\t00000000a80425fb",
                                                    "CapEff:\t00000000a80425fb",
                                                    "CapBnd:\t00000000a80425fb",
                                                    "CapAmb:\t0000000000000000", "NoNewPrivs:\t1"}))
      << r.out;
  // What the set leaves out is refused: mounting and the host name of the
  // container's UTS namespace (CAP_SYS_ADMIN), its network interfaces
  // (CAP_NET_ADMIN; --net host for root would be the host's).
  CommandResult denied = Sh(
      "mount -t tmpfs t /tmp 2>/dev/null && echo mounted; hostname other 2>/dev/null && "
      "echo renamed; ifconfig lo mtu 1280 2>/dev/null && echo mtu-set; hostname");
  ASSERT_EQ(denied.status, 0) << Describe(denied);
  EXPECT_EQ(Lines(denied.out), std::vector<std::string>({"lamina"})) << Describe(denied);
  if (RootlessFuseIdsUnmapped()) return;  // -u nobody cannot reach the tree (known bug)
  // Another user: no capability at all, no_new_privs too.
  CommandResult user = Sh("grep -E '^(CapPrm|CapEff|NoNewPrivs)' /proc/self/status", {"-u", "nobody"});
  ASSERT_EQ(user.status, 0) << Describe(user);
  EXPECT_EQ(Lines(user.out), std::vector<std::string>({"CapPrm:\t0000000000000000",
                                                       "CapEff:\t0000000000000000",
                                                       "NoNewPrivs:\t1"}))
      << user.out;
}

TEST_P(RunTest, HostMountsCannotBeReachedOrMade) {
  test::WriteFile(dir_.Sub("host-marker"), "host\n");
  std::string marker = dir_.Sub("host-marker");
  // No host block device to mount, no bind of anything, no unmounting the
  // container's own mounts to uncover what is below, no host root through
  // /proc (only the container's processes are there).
  CommandResult r = Sh("for d in /dev/* /dev/*/*; do test -b $d && echo block $d; done; "
                       "mount --bind / /tmp 2>/dev/null && echo bound; "
                       "mount -t proc proc /tmp 2>/dev/null && echo proc-mounted; "
                       "umount /proc 2>/dev/null && echo proc-unmounted; "
                       "umount -l / 2>/dev/null && echo root-unmounted; "
                       "for p in /proc/[0-9]*; do test -e $p/root" + marker +
                       " && echo marker-via-$p; done; "
                       "test -e /proc/1/root/proc/1/root" + marker + " && echo marker-via-1; "
                       "cat " + marker + " 2>/dev/null; echo done");
  ASSERT_EQ(r.status, 0) << Describe(r);
  EXPECT_EQ(Lines(r.out), std::vector<std::string>({"done"})) << Describe(r);
}

INSTANTIATE_TEST_SUITE_P(Drivers, RunTest, ::testing::Values("overlay", "vfs", "fuse"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace lamina
