#pragma once

// The benchmark image, the targets it is mounted on and the workloads run
// on them.
//
// The image: `dirs` directories d0000, d0001, ... at the top, `files` small
// files spread over them round-robin (file i is d<i % dirs>/f<i>, 1 to 4096
// bytes, mode 0644), and one big file "big" of `big_mb` MiB, pseudo-random
// so that nothing can compress or skip it. Every target gets its own copy,
// written the same way, so the targets never share page cache or inodes.
//
// A target is one way to present the image as a writable tree: a lamina
// driver through the store (overlay, fuse, vfs: the image is a base layer,
// each view a fresh container layer on it), fuse-overlayfs over a plain
// lower directory, or the plain directory itself (the floor: no union at
// all; what a workload changed is put back after it).

#include <sys/types.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bench/report.h"
#include "common/result.h"

namespace lamina::bench {

struct ImageSpec {
  int files = 50000;
  int dirs = 1000;
  int big_mb = 512;
  int create = 10000;  // files the create workload makes

  // The directories rm-rf removes and chmod-R changes: a tenth of the
  // image each (at least one directory), rm-rf the first, chmod-R the next.
  int TouchedDirs() const { return dirs >= 20 ? dirs / 10 : 1; }
};

std::string DirName(int d);                     // "d0042"
std::string FileName(const ImageSpec&, int i);  // "d0042/f1042"
uint64_t FileSize(int i);                       // 1..4096

// Writes the image into `root` (an empty directory). Directories
// [first_dir, last_dir) only when a range is given (to put back what a
// workload removed).
Result<void> GenerateImage(const std::string& root, const ImageSpec& spec);
Result<void> GenerateDirs(const std::string& root, const ImageSpec& spec, int first_dir,
                          int last_dir);
// Writes `mb` MiB of pseudo-random data to `path` (a new file).
Result<void> GenerateBigFile(const std::string& path, int mb);

// Every workload, in the order a run does them.
const std::vector<WorkloadInfo>& AllWorkloads();
// How a workload uses its view of the image.
enum class Scope {
  kShared,       // on the run's view: reads the image, or writes new files only
  kFresh,        // changes what the image holds: on the same view after the
                 // kShared ones, their files removed and the view mounted again
  kWholeTarget,  // uses the target itself (layer create, mounts, containers)
};
Scope WorkloadScope(const std::string& name);
// Whether the workload starts with caches dropped (and, for a union target,
// a fresh mount).
bool IsCold(const std::string& name);

// What a target needs from the run.
struct BenchEnv {
  std::string work_dir;  // everything of the run lives below
  ImageSpec image;
  std::string lamina;      // the lamina executable (for `lamina run`)
  std::string helper_dir;  // where lamina-fuse is; "" = the store's default
  std::string untar_path;  // the archive the untar workload unpacks
  std::string log;         // stderr of child processes
};

class Target {
 public:
  virtual ~Target() = default;
  virtual std::string Name() const = 0;

  // Builds the target's copy of the image. A failure makes the target
  // unusable; the message says why. Returns what the target is, for people.
  virtual Result<std::string> Setup() = 0;

  // A fresh writable view of the image; returns its path.
  virtual Result<std::string> Open() = 0;
  // The same view mounted again (a cold start for a union: daemons restart).
  virtual Result<void> Remount() = 0;
  // Done with the view (`workload` ran last); a target without layers puts
  // back what the workloads changed.
  virtual Result<void> Close(const std::string& workload) = 0;
  // The daemon serving the view, if there is one.
  virtual std::optional<pid_t> Daemon() const { return std::nullopt; }

  // Why `workload` means nothing on this target, or "" when it applies.
  virtual std::string NotApplicable(const std::string& workload) const;

  // The whole-target workloads: creating (and mounting) a container layer
  // on the image, mounting a container on a 100-layer stack, `lamina run
  // busybox true`. Each returns the seconds it took.
  virtual Result<double> LayerCreate() { return Fail(ENOTSUP, "layer create"); }
  virtual Result<double> MountStack() { return Fail(ENOTSUP, "mount of a layer stack"); }
  virtual Result<double> RunContainer() { return Fail(ENOTSUP, "container start"); }
};

// The targets by name: "overlay", "fuse", "vfs" (lamina drivers through a
// store each), "fuse-overlayfs", "plain".
const std::vector<std::string>& AllTargetNames();
Result<std::unique_ptr<Target>> MakeTarget(const std::string& name, const BenchEnv& env);

// One measurement: the seconds, and extra figures ("mb_per_s").
struct Measurement {
  double seconds = 0;
  std::map<std::string, double> extra;
};

// Runs a kShared or kFresh workload on the view at `root` (caches are the
// caller's business). Work files go below env.work_dir.
Result<Measurement> RunWorkload(const std::string& name, const std::string& root,
                                const BenchEnv& env);

// Removes what the kShared workloads that write left in `root`.
Result<void> RemoveWorkloadFiles(const std::string& root);

// Writes the untar workload's archive (5 MB: 40 directories of 25 files of
// 5 KiB) to env.untar_path.
Result<void> MakeUntarArchive(const BenchEnv& env);

}  // namespace lamina::bench
