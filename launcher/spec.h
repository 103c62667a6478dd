#pragma once

// What a container is started with: plain data, filled by `lamina run` from
// the image config and the command line, and handed to launcher::Run.

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "launcher/idmap.h"

namespace lamina::launcher {

// cgroup limits; an unset field is "no limit".
struct Limits {
  std::optional<uint64_t> memory_bytes;  // --memory
  std::optional<double> cpus;            // --cpus (fraction of one CPU per unit)
  std::optional<uint64_t> pids;          // --pids
  bool any() const { return memory_bytes || cpus || pids; }
};

// --volume HOST:CTR[:ro|:rw]
struct Volume {
  std::string host;       // absolute host path (must exist)
  std::string container;  // absolute path inside the container
  bool read_only = false;
};

enum class NetMode { kNone, kHost };

struct ContainerSpec {
  std::string id;       // the container's id (names cgroups); [a-z0-9]+
  std::string rootfs;   // the mounted merged tree (host path)
  std::vector<std::string> argv;  // argv[0] looked up in the container's PATH
  // The image's environment ("KEY=value"), and --env over it ("KEY=value",
  // or "KEY" for the launcher's own value): merged inside the container
  // (MergeEnv), where the user's home is known.
  std::vector<std::string> env, env_overrides;
  std::string cwd = "/";
  // The user as --user or the image config give it ("name", "uid:gid", ...;
  // empty: root), resolved inside the container against its own
  // /etc/passwd and /etc/group (ResolveUser), once its root is mounted.
  std::string user;
  std::string hostname;
  NetMode net = NetMode::kNone;
  Limits limits;
  std::vector<Volume> volumes;
  bool read_only = false;  // --read-only: the root mount read-only
  bool tty = false;        // -t: a pseudo-terminal on stdin/stdout/stderr
  // A user namespace: always when not root, on request (--userns) for root.
  bool user_namespace = false;
  // Its id maps (PlanIdMaps()) when user_namespace: planned once, for the
  // namespace and for the drivers that present owners through them.
  IdMapPlan id_maps;
  // Set when the root is mounted at `rootfs` inside the container's own
  // mount namespace, by its first process as root of its user namespace,
  // before anything else is mounted (a driver whose mounts live only there:
  // Driver::Scope() kUserNamespace). Unset: `rootfs` is mounted already.
  std::function<Result<void>()> mount_root;
};

// Parsers for the command line; EINVAL with what is wrong.
// "64m", "1g", "512k", "1048576" (bytes); suffixes b,k,m,g,t (1024-based),
// an optional trailing "b"/"ib" ("64MiB", "64mb").
Result<uint64_t> ParseMemory(std::string_view text);
// "0.5", "2" -> > 0 and <= 1024.
Result<double> ParseCpus(std::string_view text);
// "HOST:CTR[:ro|:rw]", both absolute.
Result<Volume> ParseVolume(std::string_view text);
// "net none|host"
Result<NetMode> ParseNet(std::string_view text);
// "64 MiB", "1.5 GiB": for messages.
std::string FormatBytes(uint64_t bytes);

// A user as `--user` or the image config give it: "name", "uid",
// "uid:gid", "name:group". Resolved against the container's /etc/passwd and
// /etc/group, read below `rootfs_fd` (never escaping it).
struct ResolvedUser {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
  std::string home = "/";
};
Result<ResolvedUser> ResolveUser(int rootfs_fd, std::string_view user);

// Merges `overrides` ("KEY=value", or "KEY" to take the launcher's own value)
// over `base`; adds PATH and HOME defaults when missing.
std::vector<std::string> MergeEnv(const std::vector<std::string>& base,
                                  const std::vector<std::string>& overrides,
                                  const std::string& home);

}  // namespace lamina::launcher
