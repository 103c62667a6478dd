#pragma once

// OCI layer tars: apply into a layer directory, write from a layer.
//
// OCI whiteouts in a tar: `DIR/.wh.NAME` deletes NAME from the layers below;
// `DIR/.wh..wh..opq` makes DIR opaque (hides everything below it in lower
// layers). Other `.wh..wh.*` names are reserved and skipped with a warning.

#include <string>
#include <vector>

#include "common/result.h"
#include "drivers/driver.h"

namespace lamina {

enum class WhiteoutMode {
  // Union format (overlay, fuse): a whiteout becomes a 0/0 char device (or a
  // `.wh.NAME` file where mknod is refused), an opaque marker becomes the
  // opaque xattr of `xattr_ns`.
  kUnion,
  // Full-tree format (vfs): the target already holds the parent's full tree;
  // a whiteout deletes NAME from it, an opaque marker empties DIR of what
  // came from the parent (entries of this same tar stay).
  kFullTree,
};

struct ApplyOptions {
  WhiteoutMode whiteouts = WhiteoutMode::kUnion;
  XattrNamespace xattr_ns = XattrNamespace::kTrusted;
  // chown entries to the tar's uid/gid. When false (rootless), or when an id
  // has no mapping in this user namespace (chown's EINVAL), ownership that
  // cannot be set is recorded in user.containers.override_stat instead.
  bool same_owner = true;
  // Limits against hostile input: a larger entry or total fails with EFBIG.
  uint64_t max_entry_bytes = uint64_t{64} << 30;
  uint64_t max_total_bytes = uint64_t{1} << 40;
};

struct ApplyResult {
  TarStats stats;
  // sha256 of the uncompressed tar stream, lower-case hex without "sha256:".
  std::string diff_id;
};

// Reads a plain, gzip, bzip2, xz or zstd tar from `tar_fd` and writes its
// entries below `target_dir` (which exists). Every path is resolved inside
// target_dir (openat2 RESOLVE_IN_ROOT/BENEATH): `..` that climbs out,
// absolute paths, writes through symlinks leading out, and hard links to
// targets outside the layer are refused with an error naming the entry
// (EINVAL / EXDEV), as are names over 255 bytes and paths over PATH_MAX.
// Directory mtimes are set after their children. On failure the target may
// be half-written: the caller throws the layer away.
Result<ApplyResult> ApplyTar(int tar_fd, const std::string& target_dir,
                             const ApplyOptions& options);

// One item of a layer tar, in the order written.
struct DiffEntry {
  enum class Kind {
    kContent,   // the file, dir, link, device... at `path` in the source root
    kWhiteout,  // `.wh.NAME` for a deleted `path`
    kOpaque,    // `path/.wh..wh..opq` for an opaque directory `path`
  };
  std::string path;  // relative, no leading "/"
  Kind kind = Kind::kContent;
  // kContent only: where the object really is when not at `root/path` (an
  // absolute path), e.g. content a redirected directory takes from a lower
  // layer. Empty: `root/path`.
  std::string source;
};

// Writes an uncompressed OCI layer tar to `out_fd`: for kContent entries the
// object at `root/path` (lstat, not followed; directories on their own, not
// recursively), with mode, owner (or user.containers.override_stat when
// present), mtime, xattrs (PAX SCHILY.xattr; internal overlay xattrs left
// out) and data; files that share an inode are written once and then as
// hard links. Entries are sorted by path (a directory before its content,
// opaque markers right after their directory) so equal trees give equal tars.
Result<TarStats> WriteLayerTar(int out_fd, const std::string& root,
                               std::vector<DiffEntry> entries);

// Reads a union-format upper directory (a layer's diff/) and returns the
// entries of its layer tar: every path in it as kContent, whiteouts (0/0 char
// devices, `.wh.NAME` files) as kWhiteout, opaque directories as kContent
// plus kOpaque.
Result<std::vector<DiffEntry>> UnionDiffEntries(const std::string& upper);

// The same, for an upper that may hold redirected directories (the
// `<ns>.overlay.redirect` xattr of kernel redirect_dir=on, or lamina-fuse's
// renames): the OCI format has no redirects, so a redirected directory is
// written opaque with its full merged content, the part that comes from the
// lower layers (`lowers`, top first) carrying its `source`. A redirect met
// without `lowers` to resolve it fails with EINVAL.
Result<std::vector<DiffEntry>> UnionDiffEntries(const std::string& upper,
                                                const std::vector<std::string>& lowers);

// Changes of a union-format upper against the merged view of `lowers`
// (top first): a path in the upper that exists in a lower is Modified,
// otherwise Added; whiteouts of paths that exist below are Deleted (every
// whiteout when `lowers` is empty); children of an opaque or redirected
// directory that existed below and are not in the upper are Deleted; what a
// redirected (renamed) directory brought from its origin is Added (Modified
// if its new path existed below). Sorted by path, one change per path.
Result<std::vector<Change>> UnionChanges(const std::string& upper,
                                         const std::vector<std::string>& lowers);

}  // namespace lamina
