#pragma once

// Running a piece of a test as an unprivileged user inside a new user
// namespace (rootless), with the results reported back to the parent.

#include <sys/types.h>

#include <functional>
#include <string>

namespace lamina::test {

struct UsernsResult {
  // Empty when the child ran; otherwise why it could not (for GTEST_SKIP or
  // a failure message).
  std::string setup_error;
  int status = -1;     // the child's exit status (0: body returned)
  std::string output;  // what the body returned
};

// Forks; the child drops to `uid`/`gid` (setgroups/setresgid/setresuid),
// unshares CLONE_NEWUSER|CLONE_NEWNS, maps itself to root inside ("0 <uid>
// 1", setgroups deny), makes its mounts private, runs `body`, and writes the
// returned text to a pipe. The parent waits (killing the child after
// `timeout_seconds`) and returns the text. Mounts made by the child vanish
// with its mount namespace. Run it from a single-threaded test.
UsernsResult RunInUserNamespace(uid_t uid, gid_t gid, const std::function<std::string()>& body,
                                int timeout_seconds = 120);

// Why rootless tests cannot run here (no lamina-test account, not root,
// user namespaces disabled, this process already rootless), or empty when
// they can.
std::string RootlessUnavailableReason();

// For a test binary run by an unprivileged user (the `rootless` ctest
// entries run every conformance case as lamina-test): makes this process
// root of a new user namespace and a new mount namespace with private
// propagation, which is what an unprivileged user has for kernel overlay
// (userxattr), FUSE and chown. The user's /etc/subuid and /etc/subgid
// ranges are mapped after its own id (0 = the user, 1.. = the range) by
// newuidmap/newgidmap, so that layer files owned by other ids (1234:5678)
// work as they do for root. Call it while the process is single-threaded
// (a fixture's SetUp); it acts once, later calls return the first result.
// Returns why it could not (no newuidmap, no range, user namespaces off),
// empty on success. Mounts made afterwards vanish with the process.
std::string EnterRootlessNamespace();

// True when this process runs in a user namespace other than the initial
// one (EnterRootlessNamespace did it, or the caller was started in one).
bool InRootlessNamespace();

}  // namespace lamina::test
