#pragma once

// Running one container: clone into new namespaces, set up its root, limits
// and privileges, exec the command, forward signals, wait and report.
//
// Process model: `lamina run` (the launcher) stays outside every namespace
// it creates. Its child is cloned (clone3, or clone where clone3 is missing)
// into new mount, pid, uts, ipc and net (unless --net host) namespaces, and a
// user namespace when asked; it waits on a sync pipe while the launcher puts
// it into its cgroups and writes its id maps, then unshares its cgroup
// namespace, builds the root (rootfs.cc), pivots into it, drops privileges
// (capabilities.cc) and execs the command, which so becomes PID 1 of the
// container. The launcher is never visible inside (it is not in the
// container's pid namespace) and the container's /proc/1/exe is the
// command's own binary in the container's tree, so no host binary is
// reachable through /proc/*/exe from inside.
//
// Setup errors in the child come back over a CLOEXEC pipe (closed unread by
// a successful exec). The child has PR_SET_PDEATHSIG(SIGKILL): when the
// launcher dies, the container's PID 1 dies, and the kernel kills the rest
// of its pid namespace.

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/result.h"
#include "launcher/cgroups.h"
#include "launcher/idmap.h"
#include "launcher/spec.h"

namespace lamina::launcher {

struct ExitInfo {
  int status = 0;          // as a shell shows it: the code, or 128+signal
  bool signaled = false;   // killed by `signal`
  int signal = 0;
  bool oom_killed = false;  // killed by the memory cgroup's OOM killer
  // Why the command did not run or how it ended, for "lamina: ..." on stderr
  // (empty for a plain exit): "container killed: out of memory (limit 64 MiB)",
  // "exec sh: No such file or directory".
  std::string message;
};

struct RunCallbacks {
  // Called once the container's first process exists and is in its cgroups
  // (before it execs), with its host pid and the cgroup directories, so that
  // the caller can record them for a cleanup after a crash.
  std::function<void(pid_t pid, const std::vector<std::string>& cgroup_dirs)> started;
};

// Runs the container to its end. A failure to set it up is an Error; a
// command that cannot be executed is an ExitInfo with status 127 (not found)
// or 126 (not executable) and a message; otherwise the command's status.
// Everything made here (cgroups, the child, terminal modes) is undone
// before returning, on every path.
Result<ExitInfo> Run(const ContainerSpec& spec, const RunCallbacks& callbacks = {});

// The steps inside the container's child, before exec (rootfs.cc). They run
// in the freshly cloned child, so they never log and never throw.
struct ChildSetup {
  const ContainerSpec* spec = nullptr;
  bool user_namespace = false;
  bool gid5_mapped = true;  // devpts gid=5 only where the gid exists in the container
};
// Private propagation, bind of the root, volumes, /proc, /dev, /sys,
// read-only root, pivot_root with the old root detached, /proc masks.
Result<void> SetupRootfs(const ChildSetup& setup);

}  // namespace lamina::launcher
