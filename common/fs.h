#pragma once

#include <sys/stat.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/fd.h"
#include "common/result.h"

namespace lamina {

// Small filesystem helpers for lamina's own (trusted) paths.

Result<std::string> ReadFile(const std::string& path);
// Writes `data` to `path` crash-safely: a temporary sibling, fsync, rename,
// fsync of the directory. Readers see the old or the new file, never a mix.
Result<void> WriteFileAtomic(const std::string& path, std::string_view data, mode_t mode = 0644);
// An unnamed file in `dir`, open read-write (O_TMPFILE; where the
// filesystem has none, a named one unlinked at once): nothing of it stays
// when the process dies.
Result<Fd> OpenUnnamedFile(const std::string& dir);
// mkdir -p; existing directories are fine.
Result<void> MakeDirs(const std::string& path, mode_t mode = 0755);
// rm -rf, fd-relative and without following symlinks; a missing path is fine.
Result<void> RemoveTree(const std::string& path);
// rm -rf of `name` inside `dirfd`.
Result<void> RemoveTreeAt(int dirfd, const std::string& name);
// lstat; nullopt when the path does not exist, an error for anything else.
Result<std::optional<struct stat>> LstatIfExists(const std::string& path);
bool PathExists(const std::string& path);
Result<void> FsyncPath(const std::string& path);

// Names in a directory (without "." and ".."), sorted.
Result<std::vector<std::string>> ListDir(int dirfd);
Result<std::vector<std::string>> ListDir(const std::string& path);

// Extended attributes. The fd variants need a real (non-O_PATH) fd; the
// path variants never follow a final symlink (l*xattr).
// Values; ENODATA when missing.
Result<std::string> GetXattr(const std::string& path, const std::string& name);
Result<std::string> FGetXattr(int fd, const std::string& name);
Result<void> SetXattr(const std::string& path, const std::string& name, std::string_view value,
                      int flags = 0);
Result<void> FSetXattr(int fd, const std::string& name, std::string_view value, int flags = 0);
Result<std::vector<std::string>> ListXattrs(const std::string& path);
Result<std::vector<std::string>> FListXattrs(int fd);
Result<void> RemoveXattr(const std::string& path, const std::string& name);

// "/proc/self/fd/N": a path for an fd (also O_PATH) where the kernel offers
// no *at variant (xattrs on O_PATH fds, for instance).
std::string ProcFdPath(int fd);
// The path of `name` in the directory open as `dirfd`, through /proc/self/fd
// (for the calls that take no dirfd: xattrs, open by name without O_PATH).
std::string AtPath(int dirfd, const std::string& name);

// Runs argv (argv[0] looked up in PATH), waits, returns the exit status
// (128+signal when killed). stdout is captured into *out when out != nullptr,
// stderr is captured into *err when err != nullptr (otherwise inherited).
Result<int> RunCommand(const std::vector<std::string>& argv, std::string* out = nullptr,
                       std::string* err = nullptr);

// A fresh, random 64-hex-digit id (as Docker's layer ids).
std::string RandomId();

// The path of the running executable's directory (for finding lamina-fuse
// beside lamina).
std::string SelfDir();

}  // namespace lamina
