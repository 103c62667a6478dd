#include "fuse/fuse_driver.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>

#include "common/fs.h"
#include "common/path.h"
#include "common/scope_guard.h"
#include "drivers/format.h"
#include "drivers/layer_home.h"
#include "drivers/union_layers.h"
#include "fuse/options.h"

namespace lamina::fuse {
namespace {

// Whether /etc/fuse.conf lets unprivileged users mount with allow_other.
bool FuseConfAllowsOther() {
  std::ifstream conf("/etc/fuse.conf");
  std::string line;
  while (std::getline(conf, line)) {
    size_t start = line.find_first_not_of(" \t");
    if (start != std::string::npos && line.compare(start, 16, "user_allow_other") == 0) return true;
  }
  return false;
}

using std::chrono::milliseconds;
using std::chrono::steady_clock;

constexpr char kHelperName[] = "lamina-fuse";
// How long Unmount waits for a daemon to go after its mount has gone.
constexpr auto kDaemonExitWait = std::chrono::seconds(10);
// A directory with nothing in it: the lower of a writable base layer.
constexpr char kEmptyDir[] = "empty";

bool IsExecutableFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
         ::access(path.c_str(), X_OK) == 0;
}

// Where lamina-fuse is looked for, in order: DriverConfig::helper_dir only,
// when set; otherwise beside the running binary (an installed lamina and
// lamina-fuse share a bin/), then the build tree's fuse/ beside the running
// binary's directory (<build>/cli/lamina and <build>/tests/... find
// <build>/fuse/lamina-fuse), then $PATH.
std::vector<std::string> HelperCandidates(const DriverConfig& config) {
  if (!config.helper_dir.empty()) return {JoinPath(config.helper_dir, kHelperName)};
  std::string self = SelfDir();
  std::vector<std::string> out = {JoinPath(self, kHelperName),
                                  JoinPath(SplitParent(self).first, std::string("fuse/") +
                                                                        kHelperName)};
  if (const char* path = std::getenv("PATH")) {
    std::string_view rest = path;
    while (!rest.empty()) {
      size_t colon = rest.find(':');
      std::string_view dir = rest.substr(0, colon);
      if (!dir.empty()) out.push_back(JoinPath(dir, kHelperName));
      if (colon == std::string_view::npos) break;
      rest.remove_prefix(colon + 1);
    }
  }
  return out;
}

Result<std::string> FindHelper(const DriverConfig& config) {
  auto candidates = HelperCandidates(config);
  for (const auto& c : candidates) {
    if (IsExecutableFile(c)) return c;
  }
  std::string looked;
  for (const auto& c : candidates) looked += (looked.empty() ? "" : ", ") + c;
  return Fail(ENOENT, "lamina-fuse not found (looked for " + looked + ")");
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// Gone: no such process, or a zombie nobody has reaped yet.
bool ProcessGone(pid_t pid) {
  auto stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return true;
  size_t paren = stat->rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat->size()) return true;
  char state = (*stat)[paren + 2];
  return state == 'Z' || state == 'X';
}

Result<void> WaitGone(const std::vector<pid_t>& pids) {
  auto deadline = steady_clock::now() + kDaemonExitWait;
  for (pid_t pid : pids) {
    while (!ProcessGone(pid)) {
      if (steady_clock::now() > deadline) {
        return Fail(ETIMEDOUT, "lamina-fuse daemon " + std::to_string(pid) +
                                   " did not exit after its unmount");
      }
      std::this_thread::sleep_for(milliseconds(10));
    }
  }
  return {};
}

// The mount is there but its daemon is not (killed): every access fails
// with ENOTCONN.
bool MountIsDead(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) != 0 && (errno == ENOTCONN || errno == ECONNABORTED);
}

// Unmounts a FUSE mount: umount2 as root, fusermount3 -u otherwise (or when
// the kernel refuses root, as inside a user namespace). `lazy` detaches it.
Result<void> UnmountFuse(const std::string& path, bool lazy) {
  if (::geteuid() == 0) {
    if (::umount2(path.c_str(), lazy ? MNT_DETACH : 0) == 0) return {};
    if (errno != EPERM) return FailErrno("unmount " + path);
  }
  std::vector<std::string> argv = {"fusermount3", "-u"};
  if (lazy) argv.push_back("-z");
  argv.push_back(path);
  std::string out, err;
  int status = LAMINA_TRY(RunCommand(argv, &out, &err));
  if (status != 0) {
    err = Trim(err);
    int code = err.find("busy") != std::string::npos ? EBUSY : EIO;
    return Fail(code, "fusermount3 -u " + path + ": " + err);
  }
  return {};
}

class FuseDriver final : public Driver {
 public:
  explicit FuseDriver(const DriverConfig& config) : config_(config), home_(config.home) {}

  std::string_view Name() const override { return "fuse"; }
  ProbeResult Probe(const HostFacts& host) override;

  Result<void> Create(const std::string& id, const std::string& parent,
                      const CreateOptions& options) override {
    LAMINA_CHECK(home_.CreateDirs(id, parent, options.writable));
    // A container's root directory is the container root's. A rootless
    // store owns it itself, so it records the owner the way it records those
    // of a layer's files (override_stat, read through the mount's id map):
    // otherwise the container's `/` shows the user's id as seen from inside
    // its namespace. Other layers keep the user's own (a layer it mounts
    // outside a namespace stays writable to it).
    if (options.container_root && config_.xattr_ns == XattrNamespace::kUser &&
        (::geteuid() != 0 || ::getegid() != 0)) {
      std::string diff = home_.DiffDir(id);
      std::string root_owned = OverrideStatValue(0, 0, 0755);
      if (::setxattr(diff.c_str(), kOverrideStatXattr.data(), root_owned.data(), root_owned.size(),
                     0) != 0) {
        Error error(errno, "layer " + id + ": set " + std::string(kOverrideStatXattr) + " on " + diff);
        (void)RemoveUnmountedLayer(home_, id);
        return Fail(std::move(error));
      }
    }
    return {};
  }
  Result<void> Remove(const std::string& id) override { return RemoveUnmountedLayer(home_, id); }
  bool Exists(const std::string& id) const override { return home_.Exists(id); }
  Result<std::string> Mount(const std::string& id, const MountOptions& options) override;
  Result<void> Unmount(const std::string& id) override;
  Result<int> MountCount(const std::string& id) const override;
  Result<std::vector<Change>> Changes(const std::string& id) override {
    return UnionLayerChanges(home_, id);
  }
  Result<TarStats> Diff(const std::string& id, int out_fd) override {
    return UnionLayerDiff(home_, id, out_fd);
  }
  Result<TarStats> ApplyDiff(const std::string& id, int tar_fd) override {
    return UnionLayerApplyDiff(home_, id, tar_fd, config_.xattr_ns);
  }
  Result<uint64_t> Usage(const std::string& id) override { return LayerUsage(home_, id); }
  std::vector<std::pair<std::string, std::string>> Status() const override;
  std::string DiffPath(const std::string& id) const override { return home_.DiffDir(id); }

 private:
  // The -o string lamina-fuse gets for a stack.
  std::string MountOptionString(const std::vector<std::string>& lowers, const std::string& upper,
                                const std::string& work, bool read_only,
                                const MountOptions& options) const;
  // Runs lamina-fuse; returns once the mount is live.
  Result<void> StartDaemon(const std::string& options, const std::string& mountpoint) const;
  // Unmounts and waits for the daemon to exit.
  Result<void> StopDaemon(const std::string& mountpoint, bool lazy) const;

  DriverConfig config_;
  LayerHome home_;
};

std::string FuseDriver::MountOptionString(const std::vector<std::string>& lowers,
                                          const std::string& upper, const std::string& work,
                                          bool read_only, const MountOptions& options) const {
  FsConfig fs;
  fs.lowers = lowers;
  fs.upper = upper;
  fs.work = work;
  fs.read_only = read_only;
  fs.context = options.mount_label;
  // Used from a user namespace: what the layer stores (the namespace's ids)
  // is shown as the ids they are outside it, which the kernel maps back
  // into the namespace (lamina-fuse answers in the initial namespace's ids).
  // uidmapping's "inner" is what the mount shows, "outer" what is stored.
  for (const auto& e : options.uid_map) fs.uid_map.push_back({e.outside, e.inside, e.count});
  for (const auto& e : options.gid_map) fs.gid_map.push_back({e.outside, e.inside, e.count});
  // The container's other users are other ids than ours: the kernel lets
  // them in only with allow_other, which fusermount3 grants an unprivileged
  // user only where /etc/fuse.conf says user_allow_other.
  if (!options.uid_map.empty() && ::geteuid() != 0) {
    if (FuseConfAllowsOther()) {
      fs.allow_other = true;
    } else {
      spdlog::warn(
          "fuse: /etc/fuse.conf has no user_allow_other, so only the container's root "
          "can reach its files (add the line, or use --driver vfs)");
    }
  }
  // A rootless store keeps owners it could not set in
  // user.containers.override_stat (see UnionLayerApplyDiff).
  if (config_.xattr_ns == XattrNamespace::kUser) fs.xattr_permissions = 2;
  std::string opts = FormatOptions(fs);
  // Driver options "mountopt=a,b" go to lamina-fuse as they are.
  for (const auto& o : config_.options) {
    if (o.starts_with("mountopt=")) opts += "," + o.substr(9);
  }
  return opts;
}

Result<void> FuseDriver::StartDaemon(const std::string& options,
                                     const std::string& mountpoint) const {
  std::string helper = LAMINA_TRY(FindHelper(config_));
  std::string out, err;
  int status = LAMINA_TRY(RunCommand({helper, "-o", options, mountpoint}, &out, &err));
  if (status != 0) {
    return Fail(EIO, helper + " exited with status " + std::to_string(status) + ": " + Trim(err));
  }
  bool mounted = LAMINA_TRY(IsMountPoint(mountpoint));
  if (!mounted) return Fail(EIO, helper + " exited 0 but " + mountpoint + " is not mounted");
  return {};
}

Result<void> FuseDriver::StopDaemon(const std::string& mountpoint, bool lazy) const {
  auto pids = DaemonPids(mountpoint);
  LAMINA_CHECK(UnmountFuse(mountpoint, lazy));
  return WaitGone(pids);
}

Result<std::string> FuseDriver::Mount(const std::string& id, const MountOptions& options) {
  LAMINA_CHECK(ValidateLayerId(id));
  auto chain = LAMINA_TRY(home_.Chain(id));
  auto refs = LAMINA_TRY(MountRefs::Lock(home_, id));
  std::string merged = home_.MergedDir(id);
  bool mounted = LAMINA_TRY(IsMountPoint(merged));
  // The references of a dead daemon's mount stay: their holders still
  // expect a mount there and will unmount it.
  int kept = 0;
  if (mounted && MountIsDead(merged)) {
    spdlog::warn("fuse: the lamina-fuse daemon of layer {} is gone ({} answers ENOTCONN); "
                 "detaching and mounting again",
                 id, merged);
    LAMINA_CHECK(StopDaemon(merged, /*lazy=*/true));
    mounted = false;
    kept = refs.count();
  } else if (!mounted && refs.count() > 0) {
    spdlog::warn("fuse: layer {} had a stale mount count {} (not mounted); repaired", id,
                 refs.count());
  }
  if (mounted) {
    // Count 0 with a live mount: a process died between mounting and
    // counting; the mount is adopted.
    LAMINA_CHECK(refs.Set(refs.count() + 1));
    return merged;
  }
  if (::mkdir(merged.c_str(), 0755) != 0 && errno != EEXIST) return FailErrno("mkdir " + merged);

  bool writable = PathExists(home_.WorkDir(id)) && !options.read_only;
  std::vector<std::string> lowers;
  for (size_t i = writable ? 1 : 0; i < chain.size(); ++i) {
    lowers.push_back(home_.DiffDir(chain[i]));
  }
  if (lowers.empty()) {
    // lamina-fuse (as fuse-overlayfs) wants at least one lower.
    std::string empty = home_.Dir(id) + "/" + kEmptyDir;
    if (::mkdir(empty.c_str(), 0755) != 0 && errno != EEXIST) return FailErrno("mkdir " + empty);
    lowers.push_back(empty);
  }
  std::string opts = MountOptionString(lowers, writable ? home_.DiffDir(id) : "",
                                       writable ? home_.WorkDir(id) : "", !writable, options);
  auto started = StartDaemon(opts, merged);
  if (!started) return Fail(started.error().Wrap("mount layer " + id));
  auto undo = Defer([&] { (void)StopDaemon(merged, /*lazy=*/true); });
  LAMINA_CHECK(refs.Set(kept + 1));
  undo.Dismiss();
  return merged;
}

Result<void> FuseDriver::Unmount(const std::string& id) {
  return DropMountRef(home_, id, "fuse", [&](const std::string& merged) {
    // A dead daemon's mount cannot be busy with anything useful: detach it.
    return StopDaemon(merged, /*lazy=*/MountIsDead(merged));
  });
}

Result<int> FuseDriver::MountCount(const std::string& id) const {
  return CheckedMountCount(home_, id, "fuse");
}

ProbeResult FuseDriver::Probe(const HostFacts& host) {
  ProbeResult result;
  auto& f = result.features;
  f["dev_fuse"] = host.dev_fuse ? "yes" : "no";
  f["fusermount3"] = host.fusermount3.empty() ? "missing" : host.fusermount3;
  if (!host.dev_fuse) {
    result.reason = "/dev/fuse cannot be opened read-write";
    return result;
  }
  if (::geteuid() != 0 && host.fusermount3.empty()) {
    result.reason = "fusermount3 not found (needed to mount FUSE without root; install fuse3)";
    return result;
  }
  auto helper = FindHelper(config_);
  if (!helper) {
    result.reason = helper.error().context();
    return result;
  }
  f["lamina_fuse"] = *helper;

  // A trial mount of a tiny stack inside the store: one file below, one
  // written through the mount, read back, unmounted, all removed.
  std::string tmpl = JoinPath(config_.home, ".fuse-probe-XXXXXX");
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) {
    result.reason = "cannot make a trial directory in " + config_.home + ": " + strerror(errno);
    return result;
  }
  std::string dir = buf.data();
  auto cleanup = Defer([&] {
    if (IsMountPoint(dir + "/merged").value_or(false)) (void)StopDaemon(dir + "/merged", true);
    (void)RemoveTree(dir);
  });
  auto trial = [&]() -> Result<void> {
    for (const char* sub : {"/lower", "/upper", "/work", "/merged"}) {
      LAMINA_CHECK(MakeDirs(dir + sub));
    }
    LAMINA_CHECK(WriteFileAtomic(dir + "/lower/probe", "lamina"));
    std::string opts =
        MountOptionString({dir + "/lower"}, dir + "/upper", dir + "/work", false, MountOptions{});
    LAMINA_CHECK(StartDaemon(opts, dir + "/merged"));
    std::string seen = LAMINA_TRY(ReadFile(dir + "/merged/probe"));
    if (seen != "lamina") return Fail(EIO, "the trial mount shows wrong content");
    {
      Fd out = LAMINA_TRY(Open(dir + "/merged/written", O_WRONLY | O_CREAT | O_EXCL, 0644));
    }
    LAMINA_CHECK(StopDaemon(dir + "/merged", false));
    if (!PathExists(dir + "/upper/written")) {
      return Fail(EIO, "a file written through the trial mount is not in its upper dir");
    }
    return {};
  };
  if (auto ok = trial(); !ok) {
    result.reason = "trial lamina-fuse mount in " + config_.home + " failed: " +
                    ok.error().message();
    return result;
  }
  result.usable = true;
  result.reason = "lamina-fuse mounted in " + host.store_root + " (" + host.backing_fs +
                  (::geteuid() == 0 ? ", as root" : ", through fusermount3") + ")";
  return result;
}

std::vector<std::pair<std::string, std::string>> FuseDriver::Status() const {
  std::vector<std::pair<std::string, std::string>> out;
  auto helper = FindHelper(config_);
  out.emplace_back("lamina_fuse", helper ? *helper : "missing (" + helper.error().message() + ")");
  auto fs = FilesystemType(config_.home);
  out.emplace_back("backing_fs", fs ? *fs : "unknown (" + fs.error().message() + ")");
  out.emplace_back("xattr_namespace", std::string(XattrNamespaceName(config_.xattr_ns)));
  out.emplace_back("unmount_with", ::geteuid() == 0 ? "umount2" : "fusermount3 -u");
  return out;
}

}  // namespace

std::vector<pid_t> DaemonPids(const std::string& mountpoint) {
  std::vector<pid_t> pids;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return pids;
  auto close_proc = Defer([&] { ::closedir(proc); });
  while (struct dirent* e = ::readdir(proc)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid <= 0) continue;
    auto cmdline = ReadFile(std::string("/proc/") + e->d_name + "/cmdline");
    if (!cmdline || cmdline->empty()) continue;
    std::vector<std::string> argv;
    size_t start = 0;
    while (start < cmdline->size()) {
      size_t nul = cmdline->find('\0', start);
      if (nul == std::string::npos) nul = cmdline->size();
      argv.push_back(cmdline->substr(start, nul - start));
      start = nul + 1;
    }
    if (argv.size() < 2 || SplitParent(argv[0]).second != kHelperName ||
        argv.back() != mountpoint) {
      continue;
    }
    pids.push_back(static_cast<pid_t>(pid));
  }
  return pids;
}

std::unique_ptr<Driver> MakeFuseDriver(const DriverConfig& config) {
  return std::make_unique<FuseDriver>(config);
}

}  // namespace lamina::fuse
