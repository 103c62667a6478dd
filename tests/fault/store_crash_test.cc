// A `lamina layer apply` killed with SIGKILL in the middle of its content
// leaves a store whose next open shows no half-made layer, and where the
// same apply then succeeds.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/fd.h"
#include "common/fs.h"
#include "common/hash.h"
#include "common/scope_guard.h"
#include "store/metadata.h"
#include "tests/support/test_util.h"
#include "tests/support/tree_compare.h"

namespace lamina {
namespace {

using nlohmann::json;
using test::CommandResult;
using test::TempDir;

// The driver under test: $LAMINA_TEST_DRIVER, else vfs when usable, else
// lamina's own choice; empty when none is usable.
std::string PickDriver(const std::string& probe_root) {
  if (const char* env = std::getenv("LAMINA_TEST_DRIVER"); env != nullptr && *env) return env;
  CommandResult info = test::RunLamina({"--root", probe_root, "info", "--json"});
  json j = json::parse(info.out, nullptr, false);
  if (info.status != 0 || j.is_discarded()) return {};
  for (const auto& d : j["drivers"]) {
    if (d["name"] == "vfs" && d["usable"] == true) return "vfs";
  }
  return j["chosen"]["name"].is_string() ? j["chosen"]["name"].get<std::string>() : "";
}

// `lamina ... layer apply --id ID -` with stdin from a pipe this test feeds.
struct ApplyProcess {
  pid_t pid = -1;
  Fd stdin_w;
  ~ApplyProcess() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

void StartApply(ApplyProcess& proc, const std::vector<std::string>& args) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  std::vector<std::string> argv = {test::LaminaBinary()};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::dup2(fds[0], STDIN_FILENO);
    int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, STDOUT_FILENO);
    ::execv(cargv[0], cargv.data());
    ::_exit(127);
  }
  ::close(fds[0]);
  proc.pid = pid;
  proc.stdin_w.Reset(fds[1]);
}

TEST(StoreCrash, KilledApplyLeavesNoHalfMadeLayer) {
  TempDir dir;
  std::string driver = PickDriver(dir.Sub("probe"));
  if (driver.empty()) GTEST_SKIP() << "no usable storage driver on this host";
  std::string root = dir.Sub("store");
  auto lamina_args = [&](std::vector<std::string> args) {
    std::vector<std::string> all = {"--root", root, "--driver", driver};
    all.insert(all.end(), args.begin(), args.end());
    return all;
  };

  // A base layer that must survive, and a large tar for the layer to kill.
  ASSERT_EQ(test::RunLamina(lamina_args({"layer", "create", "--id", "base"})).status, 0);
  ASSERT_TRUE(MakeDirs(dir.Sub("src/data")));
  for (int i = 0; i < 4; ++i) {
    test::WriteNoise(dir.Sub("src/data/blob" + std::to_string(i)), 24 << 20, 1000 + i);
  }
  test::WriteFile(dir.Sub("src/data/last"), "the end\n");
  CommandResult tarred = test::Run({"tar", "-C", dir.Sub("src"), "-cf", dir.Sub("big.tar"), "."});
  ASSERT_EQ(tarred.status, 0) << tarred.err;
  std::string tar = test::ReadFileOrDie(dir.Sub("big.tar"));
  ASSERT_GT(tar.size(), size_t{90} << 20);

  ::signal(SIGPIPE, SIG_IGN);
  auto restore_sigpipe = Defer([] { ::signal(SIGPIPE, SIG_DFL); });
  {
    ApplyProcess proc;
    StartApply(proc, lamina_args({"layer", "apply", "--parent", "base", "--id", "big", "-"}));
    ASSERT_GT(proc.pid, 0);
    // Feed half of the tar: once the pipe has taken it, lamina is in the
    // middle of writing the layer's content.
    size_t half = tar.size() / 2;
    for (size_t done = 0; done < half;) {
      ssize_t n =
          ::write(proc.stdin_w.get(), tar.data() + done, std::min<size_t>(half - done, 1 << 20));
      ASSERT_GT(n, 0) << "lamina stopped reading: " << std::strerror(errno);
      done += static_cast<size_t>(n);
    }
    // It really is half-made on disk right now.
    auto layer = store::ParseLayerInfo(test::ReadFileOrDie(root + "/layers/big/layer.json"));
    ASSERT_TRUE(layer) << layer.error().message();
    EXPECT_EQ(layer->state, store::LayerState::kIncomplete);
    ASSERT_EQ(::kill(proc.pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(proc.pid, &status, 0), proc.pid);
    proc.pid = -1;
    ASSERT_TRUE(WIFSIGNALED(status));
  }
  ASSERT_TRUE(PathExists(root + "/layers/big"));

  // The next open (any command) shows no half-made layer and removes it.
  CommandResult ls = test::RunLamina(lamina_args({"layer", "ls", "--json"}));
  ASSERT_EQ(ls.status, 0) << ls.err;
  json list = json::parse(ls.out, nullptr, false);
  ASSERT_TRUE(list.is_array()) << ls.out;
  ASSERT_EQ(list.size(), 1u) << ls.out;
  EXPECT_EQ(list[0]["id"], "base");
  EXPECT_FALSE(PathExists(root + "/layers/big"));
  CommandResult inspect = test::RunLamina(lamina_args({"layer", "inspect", "big"}));
  EXPECT_NE(inspect.status, 0);
  EXPECT_NE(inspect.err.find("layer big: not found"), std::string::npos) << inspect.err;

  // The same apply now succeeds, with the right DiffID and content.
  CommandResult again = test::RunLamina(
      lamina_args({"layer", "apply", "--parent", "base", "--id", "big", dir.Sub("big.tar")}));
  ASSERT_EQ(again.status, 0) << again.err;
  CommandResult info = test::RunLamina(lamina_args({"layer", "inspect", "big"}));
  ASSERT_EQ(info.status, 0) << info.err;
  json big = json::parse(info.out, nullptr, false);
  EXPECT_EQ(big["state"], "ready");
  EXPECT_EQ(big["diff_id"], "sha256:" + Sha256Hex(tar));
  CommandResult changes = test::RunLamina(lamina_args({"layer", "changes", "big"}));
  ASSERT_EQ(changes.status, 0) << changes.err;
  EXPECT_NE(changes.out.find("A data/last\n"), std::string::npos) << changes.out;
  EXPECT_NE(changes.out.find("A data/blob3\n"), std::string::npos) << changes.out;
}

TEST(StoreCrash, KilledApplyOfACompressedStream) {
  TempDir dir;
  std::string driver = PickDriver(dir.Sub("probe"));
  if (driver.empty()) GTEST_SKIP() << "no usable storage driver on this host";
  std::string root = dir.Sub("store");
  ASSERT_TRUE(MakeDirs(dir.Sub("src")));
  test::WriteNoise(dir.Sub("src/blob"), 48 << 20, 7);
  CommandResult tarred =
      test::Run({"tar", "-C", dir.Sub("src"), "-czf", dir.Sub("big.tar.gz"), "."});
  ASSERT_EQ(tarred.status, 0) << tarred.err;
  std::string tgz = test::ReadFileOrDie(dir.Sub("big.tar.gz"));

  ::signal(SIGPIPE, SIG_IGN);
  auto restore_sigpipe = Defer([] { ::signal(SIGPIPE, SIG_DFL); });
  {
    ApplyProcess proc;
    StartApply(proc, {"--root", root, "--driver", driver, "layer", "apply", "--id", "z", "-"});
    ASSERT_GT(proc.pid, 0);
    size_t part = tgz.size() * 2 / 3;
    ASSERT_EQ(::write(proc.stdin_w.get(), tgz.data(), part), static_cast<ssize_t>(part));
    // Give the decompressor a moment to have written some content.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    ASSERT_EQ(::kill(proc.pid, SIGKILL), 0);
  }
  CommandResult ls = test::RunLamina({"--root", root, "--driver", driver, "layer", "ls", "--json"});
  ASSERT_EQ(ls.status, 0) << ls.err;
  EXPECT_EQ(json::parse(ls.out, nullptr, false), json::array());
  EXPECT_FALSE(PathExists(root + "/layers/z"));
  CommandResult again = test::RunLamina(
      {"--root", root, "--driver", driver, "layer", "apply", "--id", "z", dir.Sub("big.tar.gz")});
  ASSERT_EQ(again.status, 0) << again.err;
}

}  // namespace
}  // namespace lamina
