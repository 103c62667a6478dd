#include "vfs/vfs_driver.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <set>
#include <thread>
#include <string>
#include <utility>
#include <vector>

#include "common/fd.h"
#include "common/fs.h"
#include "common/path.h"
#include "common/scope_guard.h"
#include "drivers/layer_home.h"
#include "drivers/tar.h"
#include "drivers/tree_diff.h"
#include "vfs/tree_copy.h"

namespace lamina::vfs {
namespace {

// A scratch directory inside `home` for trials, removed on destruction.
class Scratch {
 public:
  static Result<Scratch> Make(const std::string& home) {
    std::string tmpl = home + "/.vfs-probe-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) return FailErrno("mkdtemp in " + home);
    return Scratch(std::move(tmpl));
  }
  Scratch(Scratch&& other) noexcept : path_(std::exchange(other.path_, {})) {}
  ~Scratch() {
    if (!path_.empty()) (void)RemoveTree(path_);
  }
  const std::string& path() const { return path_; }

 private:
  explicit Scratch(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

// Whether FICLONE works inside `home`.
bool CloneWorks(const std::string& home) {
  auto scratch = Scratch::Make(home);
  if (!scratch) return false;
  auto src = Open(scratch->path() + "/a", O_RDWR | O_CREAT | O_EXCL, 0600);
  auto dst = Open(scratch->path() + "/b", O_RDWR | O_CREAT | O_EXCL, 0600);
  if (!src || !dst) return false;
  char block[4096] = {1};
  if (::write(src->get(), block, sizeof block) != static_cast<ssize_t>(sizeof block)) return false;
  return ::ioctl(dst->get(), FICLONE, src->get()) == 0;
}

class VfsDriver final : public Driver {
 public:
  explicit VfsDriver(const DriverConfig& config) : config_(config), home_(config.home) {}

  std::string_view Name() const override { return "vfs"; }

  ProbeResult Probe(const HostFacts& host) override {
    ProbeResult result;
    result.features["ficlone"] = host.ficlone ? "yes" : "no";
    auto scratch = Scratch::Make(config_.home);
    if (!scratch) {
      result.usable = false;
      result.reason = "store directory not writable: " + scratch.error().message();
      return result;
    }
    result.usable = true;
    std::string fs = host.backing_fs.empty() ? "unknown fs" : host.backing_fs;
    result.reason = "full copies in " + config_.home + " (" + fs + ", " +
                    (host.ficlone ? "FICLONE reflinks" : "no FICLONE: copy_file_range") + ")";
    return result;
  }

  Result<void> Create(const std::string& id, const std::string& parent,
                      const CreateOptions&) override {
    LAMINA_CHECK(ValidateLayerId(id));
    if (!parent.empty()) LAMINA_CHECK(ValidateLayerId(parent));
    if (PathExists(home_.Dir(id))) return Fail(EEXIST, "layer " + id + " exists");
    // vfs never needs work/ or merged/: a mount is the diff directory itself.
    LAMINA_CHECK(home_.CreateDirs(id, parent, /*writable=*/false));
    auto undo = Defer([&] { (void)RemoveTree(home_.Dir(id)); });
    if (!parent.empty()) {
      auto copied = CopyTree(home_.DiffDir(parent), home_.DiffDir(id), CopyOptions());
      if (!copied) return Fail(copied.error().Wrap("create vfs layer " + id + " from " + parent));
    }
    undo.Dismiss();
    return {};
  }

  Result<void> Remove(const std::string& id) override {
    LAMINA_CHECK(ValidateLayerId(id));
    if (!PathExists(home_.Dir(id))) return {};
    auto refs = LAMINA_TRY(MountRefs::Lock(home_, id));
    if (refs.count() > 0) {
      return Fail(EBUSY, "layer " + id + " is mounted (" + std::to_string(refs.count()) +
                             " references); unmount it first");
    }
    auto removed = RemoveTree(home_.Dir(id));
    if (!removed) return Fail(removed.error().Wrap("remove layer " + id));
    return {};
  }

  bool Exists(const std::string& id) const override { return home_.Exists(id); }

  // A vfs layer is a plain directory: "mounting" hands out its diff/ and
  // counts the reference. MountOptions::read_only is not enforced (there is
  // no mount to make read-only); the caller is trusted with it.
  Result<std::string> Mount(const std::string& id, const MountOptions&) override {
    LAMINA_CHECK(RequireLayer(id));
    auto refs = LAMINA_TRY(MountRefs::Lock(home_, id));
    LAMINA_CHECK(refs.Set(refs.count() + 1));
    return home_.DiffDir(id);
  }

  Result<void> Unmount(const std::string& id) override {
    LAMINA_CHECK(RequireLayer(id));
    auto refs = LAMINA_TRY(MountRefs::Lock(home_, id));
    if (refs.count() == 0) return Fail(EINVAL, "layer " + id + " is not mounted");
    return refs.Set(refs.count() - 1);
  }

  Result<int> MountCount(const std::string& id) const override {
    LAMINA_CHECK(RequireLayer(id));
    auto refs = LAMINA_TRY(MountRefs::Lock(home_, id));
    return refs.count();
  }

  Result<std::vector<Change>> Changes(const std::string& id) override {
    LAMINA_CHECK(RequireLayer(id));
    std::string parent = LAMINA_TRY(home_.Parent(id));
    std::string old_root = parent.empty() ? std::string() : home_.DiffDir(parent);
    auto changes = DiffTrees(old_root, home_.DiffDir(id));
    if (!changes) return Fail(changes.error().Wrap("changes of layer " + id));
    return changes;
  }

  Result<TarStats> Diff(const std::string& id, int out_fd) override {
    auto changes = LAMINA_TRY(Changes(id));
    std::vector<DiffEntry> entries;
    entries.reserve(changes.size());
    for (auto& change : changes) {
      // DiffTrees lists a deleted directory once, never its children, so
      // every Deleted path is the topmost one: one whiteout each.
      entries.push_back({std::move(change.path), change.kind == ChangeKind::kDeleted
                                                     ? DiffEntry::Kind::kWhiteout
                                                     : DiffEntry::Kind::kContent});
    }
    auto written = WriteLayerTar(out_fd, home_.DiffDir(id), std::move(entries));
    if (!written) return Fail(written.error().Wrap("diff of layer " + id));
    return *written;
  }

  Result<TarStats> ApplyDiff(const std::string& id, int tar_fd) override {
    LAMINA_CHECK(RequireLayer(id));
    ApplyOptions options;
    options.whiteouts = WhiteoutMode::kFullTree;
    options.xattr_ns = config_.xattr_ns;
    options.same_owner = ::geteuid() == 0;
    auto applied = ApplyTar(tar_fd, home_.DiffDir(id), options);
    if (!applied) return Fail(applied.error().Wrap("apply diff to layer " + id));
    return applied->stats;
  }

  // Allocated bytes (st_blocks) of diff/, each inode once. Extents shared
  // by FICLONE with the parent count in full: the kernel does not tell which
  // extents are shared without walking FIEMAP of every file.
  Result<uint64_t> Usage(const std::string& id) override {
    LAMINA_CHECK(RequireLayer(id));
    std::set<std::pair<dev_t, ino_t>> seen;
    uint64_t total = 0;
    LAMINA_CHECK(SumBlocks(home_.DiffDir(id), seen, total));
    return total;
  }

  std::vector<std::pair<std::string, std::string>> Status() const override {
    std::vector<std::pair<std::string, std::string>> out;
    auto fs = FilesystemType(config_.home);
    out.emplace_back("home", config_.home);
    out.emplace_back("backing_fs", fs ? *fs : "unknown (" + fs.error().message() + ")");
    out.emplace_back("ficlone", CloneWorks(config_.home) ? "yes" : "no");
    out.emplace_back("copy_workers", std::to_string(Workers()));
    return out;
  }

  std::string DiffPath(const std::string& id) const override { return home_.DiffDir(id); }

 private:
  Result<void> RequireLayer(const std::string& id) const {
    LAMINA_CHECK(ValidateLayerId(id));
    if (!home_.Exists(id)) return Fail(ENOENT, "layer " + id);
    return {};
  }

  // "workers=N" in the driver options sets the copy threads.
  unsigned Workers() const {
    for (const auto& option : config_.options) {
      if (option.starts_with("workers=")) {
        int n = std::atoi(option.c_str() + 8);
        if (n > 0 && n <= 64) return static_cast<unsigned>(n);
      }
    }
    unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : std::min(n, 8u);
  }

  TreeCopyOptions CopyOptions() const {
    TreeCopyOptions options;
    options.workers = Workers();
    options.metadata.owner = true;
    options.metadata.owner_strict = ::geteuid() == 0;
    options.metadata.xattrs = true;
    options.metadata.times = true;
    return options;
  }

  static Result<void> SumBlocks(const std::string& dir, std::set<std::pair<dev_t, ino_t>>& seen,
                                uint64_t& total) {
    auto names = ListDir(dir);
    if (!names) return Fail(names.error().Wrap("usage: list " + dir));
    for (const auto& name : *names) {
      std::string path = dir + "/" + name;
      struct stat st;
      if (::lstat(path.c_str(), &st) != 0) return FailErrno("usage: stat " + path);
      if (st.st_nlink > 1 && !S_ISDIR(st.st_mode) && !seen.insert({st.st_dev, st.st_ino}).second) {
        continue;
      }
      total += static_cast<uint64_t>(st.st_blocks) * 512;
      if (S_ISDIR(st.st_mode)) LAMINA_CHECK(SumBlocks(path, seen, total));
    }
    return {};
  }

  DriverConfig config_;
  LayerHome home_;
};

}  // namespace

std::unique_ptr<Driver> MakeVfsDriver(const DriverConfig& config) {
  return std::make_unique<VfsDriver>(config);
}

}  // namespace lamina::vfs
