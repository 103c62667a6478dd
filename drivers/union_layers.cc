#include "drivers/union_layers.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <set>
#include <utility>

#include "common/fd.h"
#include "common/fs.h"
#include "drivers/tar.h"

namespace lamina {

Result<void> CheckLayerExists(const LayerHome& home, const std::string& id) {
  LAMINA_CHECK(ValidateLayerId(id));
  if (!home.Exists(id)) return Fail(ENOENT, "layer " + id);
  return {};
}

Result<std::vector<std::string>> LowerDiffDirs(const LayerHome& home, const std::string& id) {
  auto chain = LAMINA_TRY(home.Chain(id));
  std::vector<std::string> lowers;
  for (size_t i = 1; i < chain.size(); ++i) lowers.push_back(home.DiffDir(chain[i]));
  return lowers;
}

Result<std::vector<Change>> UnionLayerChanges(const LayerHome& home, const std::string& id) {
  LAMINA_CHECK(CheckLayerExists(home, id));
  auto lowers = LAMINA_TRY(LowerDiffDirs(home, id));
  auto changes = UnionChanges(home.DiffDir(id), lowers);
  if (!changes) return Fail(changes.error().Wrap("changes of layer " + id));
  return changes;
}

Result<TarStats> UnionLayerDiff(const LayerHome& home, const std::string& id, int out_fd) {
  LAMINA_CHECK(CheckLayerExists(home, id));
  auto lowers = LAMINA_TRY(LowerDiffDirs(home, id));
  std::string diff = home.DiffDir(id);
  auto entries = UnionDiffEntries(diff, lowers);
  if (!entries) return Fail(entries.error().Wrap("diff of layer " + id));
  auto stats = WriteLayerTar(out_fd, diff, std::move(*entries));
  if (!stats) return Fail(stats.error().Wrap("diff of layer " + id));
  return stats;
}

Result<TarStats> UnionLayerApplyDiff(const LayerHome& home, const std::string& id, int tar_fd,
                                     XattrNamespace xattr_ns) {
  LAMINA_CHECK(CheckLayerExists(home, id));
  ApplyOptions options;
  options.whiteouts = WhiteoutMode::kUnion;
  options.xattr_ns = xattr_ns;
  // Root of a user namespace (rootless overlay, lamina-fuse in a namespace)
  // owns what its id map allows; ids it cannot set go to override_stat.
  options.same_owner = ::geteuid() == 0;
  auto applied = ApplyTar(tar_fd, home.DiffDir(id), options);
  if (!applied) return Fail(applied.error().Wrap("apply diff to layer " + id));
  return applied->stats;
}

namespace {

Result<void> SumBlocks(int dirfd, const std::string& path, std::set<std::pair<dev_t, ino_t>>& seen,
                       uint64_t& total) {
  auto names = LAMINA_TRY(ListDir(dirfd));
  for (const auto& name : names) {
    struct stat st;
    if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) continue;
      return FailErrno("stat " + path + "/" + name);
    }
    if (seen.insert({st.st_dev, st.st_ino}).second) {
      total += static_cast<uint64_t>(st.st_blocks) * 512;
    }
    if (S_ISDIR(st.st_mode)) {
      auto child = OpenAt(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
      if (!child) {
        if (child.error().code() == ENOENT) continue;
        return Fail(child.error());
      }
      LAMINA_CHECK(SumBlocks(child->get(), path + "/" + name, seen, total));
    }
  }
  return {};
}

}  // namespace

Result<uint64_t> LayerUsage(const LayerHome& home, const std::string& id) {
  LAMINA_CHECK(CheckLayerExists(home, id));
  std::string diff = home.DiffDir(id);
  Fd root = LAMINA_TRY(Open(diff, O_RDONLY | O_DIRECTORY));
  struct stat st;
  if (::fstat(root.get(), &st) != 0) return FailErrno("stat " + diff);
  std::set<std::pair<dev_t, ino_t>> seen{{st.st_dev, st.st_ino}};
  uint64_t total = static_cast<uint64_t>(st.st_blocks) * 512;
  auto summed = SumBlocks(root.get(), diff, seen, total);
  if (!summed) return Fail(summed.error().Wrap("usage of layer " + id));
  return total;
}

Result<void> RemoveUnmountedLayer(const LayerHome& home, const std::string& id) {
  LAMINA_CHECK(ValidateLayerId(id));
  std::string dir = home.Dir(id);
  if (!PathExists(dir)) return {};
  auto refs = LAMINA_TRY(MountRefs::Lock(home, id));
  bool mounted = LAMINA_TRY(IsMountPoint(home.MergedDir(id)));
  if (mounted) {
    return Fail(EBUSY, "layer " + id + " is mounted (" + std::to_string(refs.count()) +
                           " reference(s)) at " + home.MergedDir(id) +
                           "; unmount it before removing it");
  }
  return RemoveTree(dir);
}

namespace {
void WarnStale(std::string_view driver, const std::string& id, int count) {
  spdlog::warn("{}: layer {} had a stale mount count {} (not mounted); repaired", driver, id,
               count);
}
}  // namespace

Result<int> CheckedMountCount(const LayerHome& home, const std::string& id,
                              std::string_view driver) {
  LAMINA_CHECK(CheckLayerExists(home, id));
  auto refs = LAMINA_TRY(MountRefs::Lock(home, id));
  if (refs.count() == 0) return 0;
  bool mounted = LAMINA_TRY(IsMountPoint(home.MergedDir(id)));
  if (!mounted) {
    WarnStale(driver, id, refs.count());
    LAMINA_CHECK(refs.Set(0));
    return 0;
  }
  return refs.count();
}

Result<void> DropMountRef(const LayerHome& home, const std::string& id, std::string_view driver,
                          const std::function<Result<void>(const std::string& merged)>& unmount) {
  LAMINA_CHECK(CheckLayerExists(home, id));
  auto refs = LAMINA_TRY(MountRefs::Lock(home, id));
  std::string merged = home.MergedDir(id);
  bool mounted = LAMINA_TRY(IsMountPoint(merged));
  if (!mounted) {
    if (refs.count() <= 0) return Fail(EINVAL, "layer " + id + " is not mounted");
    WarnStale(driver, id, refs.count());
    return refs.Set(0);
  }
  if (refs.count() > 1) return refs.Set(refs.count() - 1);
  auto unmounted = unmount(merged);
  if (!unmounted) {
    if (unmounted.error().code() == EBUSY) {
      return Fail(EBUSY, "layer " + id + ": " + merged +
                             " is busy (open files or a process working in it); not unmounted");
    }
    return Fail(unmounted.error().Wrap("unmount layer " + id));
  }
  return refs.Set(0);
}

}  // namespace lamina
