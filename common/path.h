#pragma once

#include <linux/openat2.h>

#include <string>
#include <string_view>
#include <vector>

#include "common/fd.h"
#include "common/result.h"

namespace lamina {

// Path safety. Anything that acts on content coming from outside (tar
// entries, image manifests, container paths) opens it fd-relative to a root
// with openat2, so that `..`, absolute paths and symlinks can never lead out
// of that root. Plain path strings are only for trusted, lamina-made paths.

// openat2(dirfd, path, how). `resolve` is a mask of RESOLVE_* flags, e.g.
// RESOLVE_BENEATH (fail on escape) or RESOLVE_IN_ROOT (treat dirfd as "/").
// O_CLOEXEC is always added.
Result<Fd> OpenAt2(int dirfd, const std::string& path, int flags, mode_t mode, uint64_t resolve);

// Opens `path` below `root` with `..`/absolute/symlink escapes impossible
// (RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS): an absolute symlink is taken as
// relative to `root`, a `..` stops at `root`.
Result<Fd> OpenInRoot(int root, const std::string& path, int flags, mode_t mode = 0);
// Like OpenInRoot, but fails with EXDEV if resolution would leave `root`
// (RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS).
Result<Fd> OpenBeneath(int root, const std::string& path, int flags, mode_t mode = 0);

// Lexically cleans a relative path taken from untrusted input: strips leading
// "/" and "./", folds "//" and "."; returns EINVAL-free "" for the root itself.
// Fails (EINVAL, with the path in the context) when a ".." would climb above
// the start, or the path holds a NUL byte.
Result<std::string> CleanRelativePath(std::string_view path);

// Splits "a/b/c" into {"a/b", "c"}; "c" into {"", "c"}.
std::pair<std::string, std::string> SplitParent(std::string_view path);

// Joins two path parts with exactly one "/" ("" + "x" -> "x").
std::string JoinPath(std::string_view a, std::string_view b);

// Splits on "/", dropping empty items.
std::vector<std::string> SplitComponents(std::string_view path);

}  // namespace lamina
