#include "bench/workloads.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <thread>

#include "bench/fio.h"
#include "bench/process.h"
#include "common/fd.h"
#include "common/fs.h"
#include "fuse/fuse_driver.h"
#include "store/store.h"

namespace lamina::bench {

namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr int kStackLayers = 100;
// The shared workloads that write put their files here, below the view.
constexpr const char* kCreateDir = "bench-create";
constexpr const char* kUntarDir = "bench-untar";
constexpr const char* kFioDir = "bench-fio";

// Deterministic bytes that do not compress (xorshift64*).
void FillRandom(char* buf, size_t len, uint64_t seed) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < len; i += 8) {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    uint64_t v = x * 0x2545F4914F6CDD1Dull;
    std::memcpy(buf + i, &v, std::min<size_t>(8, len - i));
  }
}

// A pool the small files take their bytes from.
const std::string& Pool() {
  static const std::string pool = [] {
    std::string p(16384, '\0');
    FillRandom(p.data(), p.size(), 7);
    return p;
  }();
  return pool;
}

Result<void> WriteAll(int fd, const char* data, size_t len, const std::string& what) {
  while (len > 0) {
    ssize_t n = ::write(fd, data, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return FailErrno("write " + what);
    }
    data += n;
    len -= static_cast<size_t>(n);
  }
  return {};
}

Result<void> WriteNewFile(const std::string& path, const char* data, size_t len) {
  Fd fd = LAMINA_TRY(Open(path, O_WRONLY | O_CREAT | O_EXCL, 0644));
  if (::fchmod(fd.get(), 0644) != 0) return FailErrno("chmod " + path);
  return WriteAll(fd.get(), data, len, path);
}

Result<void> MakeDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) return FailErrno("mkdir " + path);
  if (::chmod(path.c_str(), 0755) != 0) return FailErrno("chmod " + path);
  return {};
}

// Reads a file to its end; returns the bytes read.
Result<uint64_t> ReadAll(const std::string& path, std::vector<char>& buf) {
  Fd fd = LAMINA_TRY(Open(path, O_RDONLY));
  uint64_t total = 0;
  for (;;) {
    ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return FailErrno("read " + path);
    }
    if (n == 0) return total;
    total += static_cast<uint64_t>(n);
  }
}

std::vector<std::string> TouchedPaths(const std::string& root, const ImageSpec& spec, int first) {
  std::vector<std::string> out;
  int n = spec.TouchedDirs();
  for (int d = first; d < std::min(first + n, spec.dirs); ++d) {
    out.push_back(root + "/" + DirName(d));
  }
  return out;
}

SpawnOptions Quiet(const BenchEnv& env) {
  SpawnOptions options;
  options.stderr_path = env.log;
  return options;
}

// The layers of the mount-100 workload: stack/l000 ... each with one file.
Result<std::vector<std::string>> MakeStackDirs(const std::string& dir) {
  std::vector<std::string> out;
  LAMINA_CHECK(MakeDirs(dir));
  for (int i = 0; i < kStackLayers; ++i) {
    char name[16];
    std::snprintf(name, sizeof(name), "l%03d", i);
    std::string layer = dir + "/" + name;
    LAMINA_CHECK(MakeDir(layer));
    LAMINA_CHECK(WriteNewFile(layer + "/file-" + name, name, std::strlen(name)));
    out.push_back(layer);
  }
  return out;
}

// ---- lamina drivers through a store of their own ----

class StoreTarget final : public Target {
 public:
  StoreTarget(std::string driver, const BenchEnv& env) : driver_(std::move(driver)), env_(env) {}
  ~StoreTarget() override {
    if (!view_.empty()) (void)Close("");
  }

  std::string Name() const override { return driver_; }

  Result<std::string> Setup() override {
    root_ = env_.work_dir + "/store-" + driver_;
    store::OpenOptions options;
    options.root = root_;
    options.driver = driver_;
    options.helper_dir = env_.helper_dir;
    store_ = LAMINA_TRY(store::Store::Open(options));
    base_ = LAMINA_TRY(store_->CreateLayer("", false, "bench-image"));
    LAMINA_CHECK(GenerateImage(store_->driver().DiffPath(base_), env_.image));
    std::string reason;
    for (const auto& v : store_->verdicts()) {
      if (v.name == driver_) reason = v.result.reason;
    }
    return "lamina " + driver_ + " driver" + (reason.empty() ? "" : ": " + reason);
  }

  Result<std::string> Open() override {
    view_ = LAMINA_TRY(store_->CreateLayer(base_, true));
    auto path = store_->Mount(view_);
    if (!path) {
      (void)store_->RemoveLayer(view_);
      view_.clear();
      return path;
    }
    path_ = *path;
    return path_;
  }

  Result<void> Remount() override {
    LAMINA_CHECK(store_->Unmount(view_));
    path_ = LAMINA_TRY(store_->Mount(view_));
    return {};
  }

  Result<void> Close(const std::string&) override {
    auto unmounted = store_->Unmount(view_);
    auto removed = store_->RemoveLayer(view_);
    view_.clear();
    path_.clear();
    LAMINA_CHECK(unmounted);
    return removed;
  }

  std::optional<pid_t> Daemon() const override {
    if (driver_ != "fuse" || path_.empty()) return std::nullopt;
    auto pids = fuse::DaemonPids(path_);
    if (pids.empty()) return std::nullopt;
    return pids.front();
  }

  Result<double> LayerCreate() override {
    LAMINA_CHECK(DropCaches());
    double t0 = Now();
    std::string id = LAMINA_TRY(store_->CreateLayer(base_, true));
    auto mounted = store_->Mount(id);
    double t1 = Now();
    if (mounted) LAMINA_CHECK(store_->Unmount(id));
    LAMINA_CHECK(store_->RemoveLayer(id));
    if (!mounted) return Fail(mounted.error());
    return t1 - t0;
  }

  Result<double> MountStack() override {
    if (stack_top_.empty()) {
      std::string parent;
      for (int i = 0; i < kStackLayers; ++i) {
        std::string id = LAMINA_TRY(store_->CreateLayer(parent, false));
        std::string name = "file-" + std::to_string(i);
        LAMINA_CHECK(
            WriteNewFile(store_->driver().DiffPath(id) + "/" + name, name.data(), name.size()));
        parent = id;
      }
      stack_top_ = LAMINA_TRY(store_->CreateLayer(parent, true));
    }
    double t0 = Now();
    std::string merged = LAMINA_TRY(store_->Mount(stack_top_));
    double t1 = Now();
    LAMINA_CHECK(store_->Unmount(stack_top_));
    return t1 - t0;
  }

  Result<double> RunContainer() override {
    std::vector<std::string> argv = {env_.lamina, "--root", root_,     "--driver",
                                     driver_,     "run",    "busybox", "true"};
    if (!busybox_ready_) {
      LAMINA_CHECK(RunChecked(argv, Quiet(env_)));  // builds the image; not counted
      busybox_ready_ = true;
    }
    double t0 = Now();
    LAMINA_CHECK(RunChecked(argv, Quiet(env_)));
    return Now() - t0;
  }

 private:
  std::string driver_;
  const BenchEnv& env_;
  std::string root_;
  std::unique_ptr<store::Store> store_;
  std::string base_;
  std::string view_;  // the open container layer, "" when none
  std::string path_;  // where it is mounted
  std::string stack_top_;
  bool busybox_ready_ = false;
};

// ---- fuse-overlayfs, started directly as podman's mount_program would ----

class FuseOverlayfsTarget final : public Target {
 public:
  explicit FuseOverlayfsTarget(const BenchEnv& env) : env_(env) {}
  ~FuseOverlayfsTarget() override { (void)Stop(); }

  std::string Name() const override { return "fuse-overlayfs"; }

  std::string NotApplicable(const std::string& workload) const override {
    if (workload == "layer-create" || workload == "run-busybox") {
      return "fuse-overlayfs has no layer store";
    }
    return {};
  }

  Result<std::string> Setup() override {
    if (!OnPath("fuse-overlayfs")) return Fail(ENOENT, "fuse-overlayfs is not installed");
    dir_ = env_.work_dir + "/fuse-overlayfs";
    mnt_ = dir_ + "/mnt";
    LAMINA_CHECK(MakeDirs(dir_ + "/lower"));
    LAMINA_CHECK(MakeDirs(mnt_));
    LAMINA_CHECK(GenerateImage(dir_ + "/lower", env_.image));
    std::string version, noise;
    (void)RunCommand({"fuse-overlayfs", "--version"}, &version, &noise);
    version = version.substr(0, version.find('\n'));
    return "fuse-overlayfs over a plain lower directory" +
           (version.empty() ? std::string() : " (" + version + ")");
  }

  Result<std::string> Open() override {
    LAMINA_CHECK(NewUpper());
    LAMINA_CHECK(Start(dir_ + "/lower"));
    return mnt_;
  }

  Result<void> Remount() override {
    LAMINA_CHECK(Stop());
    return Start(dir_ + "/lower");
  }

  Result<void> Close(const std::string&) override {
    auto stopped = Stop();
    LAMINA_CHECK(RemoveTree(upper_));
    LAMINA_CHECK(RemoveTree(work_));
    return stopped;
  }

  std::optional<pid_t> Daemon() const override {
    if (pid_ <= 0) return std::nullopt;
    return pid_;
  }

  Result<double> MountStack() override {
    if (stack_lowers_.empty()) {
      auto layers = LAMINA_TRY(MakeStackDirs(dir_ + "/stack"));
      for (auto it = layers.rbegin(); it != layers.rend(); ++it) {
        stack_lowers_ += (stack_lowers_.empty() ? "" : ":") + *it;
      }
    }
    LAMINA_CHECK(NewUpper());
    double t0 = Now();
    auto started = Start(stack_lowers_);
    double t1 = Now();
    LAMINA_CHECK(Close(""));
    LAMINA_CHECK(started);
    return t1 - t0;
  }

 private:
  Result<void> NewUpper() {
    ++seq_;
    upper_ = dir_ + "/upper" + std::to_string(seq_);
    work_ = dir_ + "/work" + std::to_string(seq_);
    LAMINA_CHECK(MakeDirs(upper_));
    return MakeDirs(work_);
  }

  // Starts the daemon and waits for the mount.
  Result<void> Start(const std::string& lowers) {
    std::string opts = "lowerdir=" + lowers + ",upperdir=" + upper_ + ",workdir=" + work_;
    pid_ = LAMINA_TRY(Spawn({"fuse-overlayfs", "-f", "-o", opts, mnt_}, Quiet(env_)));
    for (int i = 0; i < 20000; ++i) {
      if (IsMountPoint(mnt_)) return {};
      int status;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return Fail(EIO, "fuse-overlayfs exited before mounting (see " + env_.log + ")");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
    return Fail(ETIMEDOUT, "fuse-overlayfs did not mount " + mnt_);
  }

  Result<void> Stop() {
    if (pid_ <= 0) return {};
    Result<void> result;
    if (::umount2(mnt_.c_str(), 0) != 0) {
      result = FailErrno("umount " + mnt_);
      ::umount2(mnt_.c_str(), MNT_DETACH);
    }
    (void)WaitExit(pid_);
    pid_ = -1;
    return result;
  }

  const BenchEnv& env_;
  std::string dir_, mnt_, upper_, work_;
  std::string stack_lowers_;
  int seq_ = 0;
  pid_t pid_ = -1;
};

// ---- the plain directory: the floor ----

class PlainTarget final : public Target {
 public:
  explicit PlainTarget(const BenchEnv& env) : env_(env) {}

  std::string Name() const override { return "plain"; }

  std::string NotApplicable(const std::string& workload) const override {
    if (WorkloadScope(workload) == Scope::kWholeTarget) return "a plain directory has no layers";
    return {};
  }

  Result<std::string> Setup() override {
    tree_ = env_.work_dir + "/plain";
    LAMINA_CHECK(MakeDirs(tree_));
    LAMINA_CHECK(GenerateImage(tree_, env_.image));
    return "a plain directory (no union): the floor";
  }

  Result<std::string> Open() override { return tree_; }
  Result<void> Remount() override { return {}; }

  // Puts the image back the way it was: what rm-rf and chmod-R touched is
  // written again, the big file cut back to its size.
  Result<void> Close(const std::string&) override {
    LAMINA_CHECK(RemoveWorkloadFiles(tree_));
    const ImageSpec& spec = env_.image;
    int n = spec.TouchedDirs();
    for (int first : {0, n}) {
      for (const auto& p : TouchedPaths(tree_, spec, first)) LAMINA_CHECK(RemoveTree(p));
      LAMINA_CHECK(GenerateDirs(tree_, spec, first, std::min(first + n, spec.dirs)));
    }
    if (::truncate((tree_ + "/big").c_str(), static_cast<off_t>(spec.big_mb * kMiB)) != 0) {
      return FailErrno("truncate " + tree_ + "/big");
    }
    return {};
  }

 private:
  const BenchEnv& env_;
  std::string tree_;
};

Result<Measurement> Timed(const std::function<Result<void>()>& fn) {
  double t0 = Now();
  LAMINA_CHECK(fn());
  return Measurement{Now() - t0, {}};
}

}  // namespace

std::string DirName(int d) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "d%04d", d);
  return buf;
}

std::string FileName(const ImageSpec& spec, int i) {
  return DirName(i % spec.dirs) + "/f" + std::to_string(i);
}

uint64_t FileSize(int i) { return 1 + (static_cast<uint64_t>(i) * 2654435761u) % 4096; }

Result<void> GenerateDirs(const std::string& root, const ImageSpec& spec, int first_dir,
                          int last_dir) {
  for (int d = first_dir; d < last_dir; ++d) LAMINA_CHECK(MakeDir(root + "/" + DirName(d)));
  const std::string& pool = Pool();
  for (int d = first_dir; d < last_dir; ++d) {
    for (int i = d; i < spec.files; i += spec.dirs) {
      size_t offset = static_cast<size_t>(i) % (pool.size() / 2);
      LAMINA_CHECK(WriteNewFile(root + "/" + FileName(spec, i), pool.data() + offset, FileSize(i)));
    }
  }
  return {};
}

Result<void> GenerateBigFile(const std::string& path, int mb) {
  Fd fd = LAMINA_TRY(Open(path, O_WRONLY | O_CREAT | O_EXCL, 0644));
  if (::fchmod(fd.get(), 0644) != 0) return FailErrno("chmod " + path);
  std::vector<char> buf(kMiB);
  for (int i = 0; i < mb; ++i) {
    FillRandom(buf.data(), buf.size(), static_cast<uint64_t>(i) + 1000);
    LAMINA_CHECK(WriteAll(fd.get(), buf.data(), buf.size(), path));
  }
  return {};
}

Result<void> GenerateImage(const std::string& root, const ImageSpec& spec) {
  LAMINA_CHECK(GenerateDirs(root, spec, 0, spec.dirs));
  return GenerateBigFile(root + "/big", spec.big_mb);
}

const std::vector<WorkloadInfo>& AllWorkloads() {
  static const std::vector<WorkloadInfo> all = {
      {"walk-cold", "meta", "find over the whole image, caches dropped, fresh mount"},
      {"walk-warm", "meta", "find over the whole image again"},
      {"lsR-cold", "meta", "ls -lR of the whole image (stat of every file), caches dropped"},
      {"lsR-warm", "meta", "ls -lR of the whole image again"},
      {"read-small", "data", "read every small file, caches dropped"},
      {"read-big", "data", "sequential read of the big file (1 MiB reads), caches dropped"},
      {"create", "meta", "create N empty files in a new directory"},
      {"untar", "meta", "tar -x of a 5 MB archive (1000 files in 40 dirs)"},
      {"fio-seq-write", "data", "fio: sequential write, 1 MiB blocks, fsync at the end"},
      {"fio-seq-read", "data", "fio: sequential read of that file, 1 MiB blocks"},
      {"fio-rand-read", "data", "fio: random reads, 4 KiB blocks"},
      {"fio-rand-write", "data", "fio: random writes, 4 KiB blocks, fsync at the end"},
      {"rm-rf", "meta", "rm -rf of a tenth of the image's directories (lower layer)"},
      {"chmod-R", "meta", "chmod -R g+w of another tenth (metadata copy-up)"},
      {"append-big", "copy-up", "append one byte to the big lower file (data copy-up)"},
      {"layer-create", "layer", "create a container layer on the image and mount it, cold"},
      {"mount-100", "layer", "mount a container layer on a 100-layer stack"},
      {"run-busybox", "layer", "lamina run busybox true"},
  };
  return all;
}

Scope WorkloadScope(const std::string& name) {
  if (name == "rm-rf" || name == "chmod-R" || name == "append-big") return Scope::kFresh;
  if (name == "layer-create" || name == "mount-100" || name == "run-busybox") {
    return Scope::kWholeTarget;
  }
  return Scope::kShared;
}

bool IsCold(const std::string& name) {
  return name == "walk-cold" || name == "lsR-cold" || name == "read-small" || name == "read-big";
}

std::string Target::NotApplicable(const std::string&) const { return {}; }

const std::vector<std::string>& AllTargetNames() {
  static const std::vector<std::string> names = {"overlay", "fuse", "vfs", "fuse-overlayfs",
                                                 "plain"};
  return names;
}

Result<std::unique_ptr<Target>> MakeTarget(const std::string& name, const BenchEnv& env) {
  if (name == "overlay" || name == "fuse" || name == "vfs") {
    return std::make_unique<StoreTarget>(name, env);
  }
  if (name == "fuse-overlayfs") return std::make_unique<FuseOverlayfsTarget>(env);
  if (name == "plain") return std::make_unique<PlainTarget>(env);
  return Fail(EINVAL, "unknown target " + name + " (overlay, fuse, vfs, fuse-overlayfs, plain)");
}

Result<Measurement> RunWorkload(const std::string& name, const std::string& root,
                                const BenchEnv& env) {
  const ImageSpec& spec = env.image;
  if (name == "walk-cold" || name == "walk-warm") {
    return Timed([&] { return RunChecked({"find", root}, Quiet(env)); });
  }
  if (name == "lsR-cold" || name == "lsR-warm") {
    return Timed([&] { return RunChecked({"ls", "-lR", root}, Quiet(env)); });
  }
  if (name == "read-small") {
    std::vector<char> buf(64 << 10);
    return Timed([&]() -> Result<void> {
      for (int i = 0; i < spec.files; ++i) {
        uint64_t got = LAMINA_TRY(ReadAll(root + "/" + FileName(spec, i), buf));
        if (got != FileSize(i)) return Fail(EIO, "short read of " + FileName(spec, i));
      }
      return {};
    });
  }
  if (name == "read-big") {
    std::vector<char> buf(kMiB);
    uint64_t bytes = 0;
    Measurement m = LAMINA_TRY(Timed([&]() -> Result<void> {
      bytes = LAMINA_TRY(ReadAll(root + "/big", buf));
      return {};
    }));
    if (m.seconds > 0) m.extra["mib_per_s"] = static_cast<double>(bytes) / kMiB / m.seconds;
    return m;
  }
  if (name == "create") {
    std::string dir = root + "/" + kCreateDir;
    return Timed([&]() -> Result<void> {
      LAMINA_CHECK(MakeDir(dir));
      for (int i = 0; i < spec.create; ++i) {
        Fd fd = LAMINA_TRY(Open(dir + "/n" + std::to_string(i), O_WRONLY | O_CREAT | O_EXCL, 0644));
      }
      return {};
    });
  }
  if (name == "untar") {
    std::string dir = root + "/" + kUntarDir;
    LAMINA_CHECK(MakeDir(dir));
    return Timed([&] { return RunChecked({"tar", "-C", dir, "-xf", env.untar_path}, Quiet(env)); });
  }
  if (name.starts_with("fio-")) {
    FioRun run;
    run.job = name.substr(4);
    run.dir = root + "/" + kFioDir;
    run.size = static_cast<uint64_t>(spec.big_mb) * kMiB;
    run.io_size = std::min<uint64_t>(run.size, 64 * kMiB);
    run.scratch = env.work_dir;
    LAMINA_CHECK(MakeDir(run.dir));
    FioResult r = LAMINA_TRY(RunFio(run));
    return Measurement{r.seconds, {{"mib_per_s", r.bytes_per_s / kMiB}, {"iops", r.iops}}};
  }
  if (name == "rm-rf") {
    std::vector<std::string> argv = {"rm", "-rf"};
    for (auto& p : TouchedPaths(root, spec, 0)) argv.push_back(p);
    return Timed([&] { return RunChecked(argv, Quiet(env)); });
  }
  if (name == "chmod-R") {
    std::vector<std::string> argv = {"chmod", "-R", "g+w"};
    for (auto& p : TouchedPaths(root, spec, spec.TouchedDirs())) argv.push_back(p);
    return Timed([&] { return RunChecked(argv, Quiet(env)); });
  }
  if (name == "append-big") {
    return Timed([&]() -> Result<void> {
      Fd fd = LAMINA_TRY(Open(root + "/big", O_WRONLY | O_APPEND));
      return WriteAll(fd.get(), "x", 1, root + "/big");
    });
  }
  return Fail(EINVAL, "workload " + name + " does not run on a view");
}

Result<void> RemoveWorkloadFiles(const std::string& root) {
  for (const char* dir : {kCreateDir, kUntarDir, kFioDir}) {
    LAMINA_CHECK(RemoveTree(root + "/" + dir));
  }
  return {};
}

Result<void> MakeUntarArchive(const BenchEnv& env) {
  std::string src = env.work_dir + "/untar-src";
  LAMINA_CHECK(MakeDirs(src + "/t"));
  std::vector<char> buf(5120);
  for (int d = 0; d < 40; ++d) {
    std::string dir = src + "/t/" + std::to_string(d);
    LAMINA_CHECK(MakeDir(dir));
    for (int f = 0; f < 25; ++f) {
      FillRandom(buf.data(), buf.size(), static_cast<uint64_t>(d * 25 + f));
      LAMINA_CHECK(WriteNewFile(dir + "/" + std::to_string(f), buf.data(), buf.size()));
    }
  }
  LAMINA_CHECK(RunChecked({"tar", "-C", src, "-cf", env.untar_path, "t"}, Quiet(env)));
  return RemoveTree(src);
}

}  // namespace lamina::bench
