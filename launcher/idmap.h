#pragma once

// User-namespace id maps for a container: the /etc/subuid and /etc/subgid
// ranges of the user through the setuid helpers newuidmap/newgidmap, or,
// when the user has no ranges (or the helpers are missing), a single-id map
// (container 0 -> the user's own uid and gid) written directly, with
// setgroups denied as the kernel requires for that.

#include <sys/types.h>

#include <string>
#include <vector>

#include "common/result.h"

namespace lamina::launcher {

struct IdRange {
  uint32_t inside = 0;   // first id in the container
  uint32_t outside = 0;  // first id on the host
  uint32_t count = 0;
  bool operator==(const IdRange&) const = default;
};

struct IdMapPlan {
  std::vector<IdRange> uids, gids;
  bool use_helpers = false;  // newuidmap/newgidmap; else direct writes
  // setgroups(2) works in the container unless the maps were written by an
  // unprivileged user directly (then /proc/<pid>/setgroups is "deny").
  bool setgroups_allowed = true;
  std::string Describe() const;  // "0:1001:1,1:100000:65536 / ..." for logs and tests
};

// The sub-id ranges (start, count) of a user in an /etc/subuid-format text,
// matched by name or by numeric uid.
std::vector<std::pair<uint32_t, uint32_t>> ParseSubIds(const std::string& text,
                                                       const std::string& user, uid_t uid);

// The maps for the calling user (euid/egid): own id as container root, then
// the first sub-id range as 1..count. Root (on --userns) keeps 0 -> 0 so the
// image's root-owned files stay usable, with root's own sub-ids (if any) above.
IdMapPlan PlanIdMaps();

// Writes the maps of process `pid` (which must be in a fresh user
// namespace and not yet have maps).
Result<void> ApplyIdMaps(pid_t pid, const IdMapPlan& plan);

// Whether container id `id` is mapped by `ranges`.
bool IsMapped(const std::vector<IdRange>& ranges, uint32_t id);

}  // namespace lamina::launcher
