#pragma once

// A full, exact copy of a directory tree: the vfs driver's layer creation.
//
// Everything below `src` is recreated below `dst` (an existing, empty
// directory): regular files (data through CopyFileData: FICLONE, else
// copy_file_range, else read/write; holes kept), directories, symlinks,
// fifos, sockets and device nodes; hard links stay hard links (one inode,
// linked again at every path); owner, mode, xattrs and times of every entry
// and of `dst` itself (as of `src`). Directory times are set after their
// content is complete.
//
// Regular files are copied by a small pool of worker threads while the tree
// is walked; directories and special files are made by the walking thread.
//
// Failure: the first error (errno kept, the path named) stops the copy;
// what was copied so far stays in `dst` for the caller to remove. Device
// nodes where mknod is not permitted (rootless) fail with EPERM, naming the
// path. Paths longer than PATH_MAX are refused (ENAMETOOLONG).

#include <cstdint>
#include <string>

#include "common/result.h"
#include "drivers/copy.h"

namespace lamina::vfs {

struct TreeCopyOptions {
  // Threads copying file data; 0 = one per online CPU (at least 1, at most 8).
  unsigned workers = 0;
  MetadataOptions metadata;
};

struct TreeCopyStats {
  uint64_t files = 0;        // regular files with their own inode
  uint64_t directories = 0;  // below the root
  uint64_t others = 0;       // symlinks, fifos, sockets, devices
  uint64_t hard_links = 0;   // extra paths linked to an inode copied already
  uint64_t bytes = 0;        // regular file sizes
  uint64_t cloned = 0;       // files per method
  uint64_t copy_file_range = 0;
  uint64_t read_write = 0;
};

Result<TreeCopyStats> CopyTree(const std::string& src, const std::string& dst,
                               const TreeCopyOptions& options = {});

}  // namespace lamina::vfs
