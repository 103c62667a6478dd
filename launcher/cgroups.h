#pragma once

// cgroup limits for one container: cgroup v2 where the controllers are on
// the unified hierarchy, v1 where they live on per-controller hierarchies
// (hybrid hosts: controllers on v1, an empty cgroup2 beside them).
//
// The groups are made below the launcher's own cgroup in each hierarchy
// (".../lamina/<id>"), so limits that apply to the launcher still apply to
// the container. A Cgroup object owns its directories: the destructor kills
// what is left in them and removes them (retrying rmdir until the kernel has
// reaped the last task).

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "launcher/spec.h"

namespace lamina::launcher {

enum class CgroupVersion { kNone, kV1, kV2 };

// Where the controllers live on this host.
struct CgroupLayout {
  CgroupVersion version = CgroupVersion::kNone;
  // The cgroup2 mount point, wherever one is mounted (also beside v1 on a
  // hybrid host, where it holds none of the controllers we use).
  std::string v2_mount;
  // v1: the mount point of each controller hierarchy ("memory" -> /sys/fs/cgroup/memory).
  std::string v1_memory, v1_pids, v1_cpu;
  // The launcher's own cgroup directory in each hierarchy (from /proc/self/cgroup).
  std::string own_v2, own_memory, own_pids, own_cpu;
  std::string Describe() const;  // "cgroup v1 (memory, pids, cpu)" ...
};

// Reads /proc/self/mountinfo and /proc/self/cgroup.
Result<CgroupLayout> DetectCgroups();

class Cgroup {
 public:
  // Creates the container's groups and writes the limits. Without any limit
  // and as root, the groups are still made (the container gets its own
  // cgroup namespace root); rootless without limits makes none. A limit that
  // cannot be applied fails (EPERM/ENOTSUP with a clear message), never
  // silently ignored.
  static Result<Cgroup> Create(const CgroupLayout& layout, const std::string& id,
                               const Limits& limits, bool required);

  Cgroup() = default;
  Cgroup(Cgroup&& other) noexcept { *this = std::move(other); }
  Cgroup& operator=(Cgroup&& other) noexcept;
  Cgroup(const Cgroup&) = delete;
  Cgroup& operator=(const Cgroup&) = delete;
  ~Cgroup() { (void)Destroy(); }

  // Moves process `pid` into every group.
  Result<void> AddProcess(pid_t pid) const;
  // How many tasks the memory cgroup's OOM killer killed (0 without a memory group).
  uint64_t OomKills() const;
  // Kills every task left and removes the directories (idempotent).
  Result<void> Destroy();

  const std::vector<std::string>& dirs() const { return dirs_; }
  bool empty() const { return dirs_.empty(); }

 private:
  static Result<Cgroup> CreateImpl(const CgroupLayout& layout, const std::string& id,
                                   const Limits& limits, bool required);

  CgroupVersion version_ = CgroupVersion::kNone;
  // The groups made, one per hierarchy. The ".../lamina" parents stay: another
  // launcher may be making its group in them right now.
  std::vector<std::string> dirs_;
  std::string memory_dir_;
};

// Removes groups a killed launcher left behind (Cgroup::dirs() as recorded
// in the container record), killing their tasks; quiet about missing ones.
void RemoveCgroupDirs(const std::vector<std::string>& dirs);

}  // namespace lamina::launcher
