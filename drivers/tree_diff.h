#pragma once

// Change detection between two full directory trees (the vfs driver's
// parent and child), in the shape `docker diff` and the union drivers give.
//
// Rules (the same as Docker's archive.ChangesDirs, and what UnionChanges
// reports for a union layer):
// - a path only in the new tree is Added; an added directory is listed
//   together with everything below it (each child Added);
// - a path only in the old tree is Deleted; a deleted directory is listed
//   once, without its children (one whiteout removes it all);
// - a path in both is Modified when its type, mode (07777), owner, rdev,
//   symlink target, xattrs or mtime (ns) differ, or its size for a
//   non-directory (content is not hashed, as Docker does not);
//   a type change from a directory to something else hides the old children
//   (they are not listed as Deleted: the new entry replaces the directory);
// - a directory that is in both trees and has any change below it is listed
//   as Modified too (so a layer tar carries it with its permissions).
// The result is sorted by path (plain byte order), paths relative, no "/".

#include <string>
#include <vector>

#include "common/result.h"
#include "drivers/driver.h"

namespace lamina {

struct TreeDiffOptions {
  // Also list the directories that hold changes (see above).
  bool parent_dirs = true;
  // Compare xattrs (costs two listxattr per path).
  bool xattrs = true;
};

// Changes of `new_root` against `old_root`. An empty `old_root` means an
// empty tree (everything is Added). Errors keep the errno, with the path.
Result<std::vector<Change>> DiffTrees(const std::string& old_root, const std::string& new_root,
                                      const TreeDiffOptions& options = {});

}  // namespace lamina
