#pragma once

// Child processes and system knobs the benchmark needs: commands whose output
// goes to files (not into memory: `ls -lR` of 50,000 files writes megabytes),
// daemons left running in the background, the page cache, mounts.

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace lamina::bench {

struct SpawnOptions {
  std::string stdout_path = "/dev/null";  // opened for appending
  std::string stderr_path;                // "" = inherited
  std::vector<std::string> env;           // "NAME=value" added to the environment
};

// Starts argv (argv[0] looked up in PATH) and returns its pid.
Result<pid_t> Spawn(const std::vector<std::string>& argv, const SpawnOptions& options = {});

// Waits for `pid`; its exit status (128+signal when killed).
Result<int> WaitExit(pid_t pid);

// Runs argv to its end. Exit status 0 is success; any other fails with EIO
// and a message naming the command, the status and the last line of
// `options.stderr_path` when there is one.
Result<void> RunChecked(const std::vector<std::string>& argv, const SpawnOptions& options = {});

// Whether `name` is an executable on PATH (or a path to one).
bool OnPath(const std::string& name);

// sync, then drops the page cache, dentries and inodes (needs root).
Result<void> DropCaches();

// VmRSS of a process in KiB; nullopt when it is gone.
std::optional<uint64_t> ResidentKiB(pid_t pid);

// Whether `path` is the root of a mount (its device or mount id differs
// from its parent's).
bool IsMountPoint(const std::string& path);

// Unmounts (lazily when busy) every mount at or below `dir`, deepest first.
void UnmountBelow(const std::string& dir);

// Seconds on the monotonic clock.
double Now();

}  // namespace lamina::bench
