#pragma once

// Copying one filesystem object: the vfs driver's tree copy and the fuse
// driver's copy-up both use these, so data and metadata are copied the same
// way everywhere.

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <string>

#include "common/result.h"

namespace lamina {

enum class CopyMethod { kClone, kCopyFileRange, kReadWrite };
std::string_view CopyMethodName(CopyMethod method);  // "ficlone", "copy_file_range", "read_write"

struct CopyOptions {
  // Start writing the copied data out to disk while copying (every 8 MiB,
  // without waiting), for a caller that makes the copy durable afterwards
  // (fuse copy-up): the disk then works while the copy goes on, and the
  // final sync has little left to do.
  bool write_behind = false;
  // Try FICLONE first; a caller that knows it fails between these two
  // filesystems saves the call.
  bool try_clone = true;
};

// Copies the whole content of `src_fd` into `dst_fd` (an empty regular file
// open for writing): FICLONE where the filesystem shares extents, else
// copy_file_range, else read/write. Holes stay holes (SEEK_DATA/SEEK_HOLE);
// the result has exactly `size` bytes. Returns the method that did the work.
// Errors keep the errno (ENOSPC, EIO, ...).
Result<CopyMethod> CopyFileData(int src_fd, int dst_fd, uint64_t size,
                                const CopyOptions& options = {});

struct MetadataOptions {
  bool owner = true;  // lchown; EPERM is an error only when `owner_strict`
  bool owner_strict = false;
  bool xattrs = true;                 // every xattr that can be read; EPERM/ENOTSUP on
                                      // trusted.*/security.* are skipped, others fail
  bool skip_internal_xattrs = false;  // leave the union format's own xattrs out
  bool times = true;                  // atime/mtime (ns precision), set last
};

// Copies owner, mode, xattrs and times from `src` (st as lstat'ed) to the
// object `name` in `dst_dirfd` (never following a symlink). Call after the
// data is copied (and, for directories, after their children), since
// writing changes mtime.
Result<void> CopyMetadata(const std::string& src_path, const struct stat& st, int dst_dirfd,
                          const std::string& name, const MetadataOptions& options);

// The same for a regular file or directory open in both places (`src_fd`
// and `dst_fd` real, non-O_PATH fds): no path is resolved, and a step whose
// result is already in place (the owner the new file got anyway, the mode
// it was created with) is skipped, so a tree copy of root-owned files costs
// one metadata transaction per file (the times) instead of three.
Result<void> CopyMetadataFd(int src_fd, const struct stat& st, int dst_fd,
                            const MetadataOptions& options);

}  // namespace lamina
