#pragma once

#include <memory>

#include "drivers/driver.h"

namespace lamina::vfs {

// The vfs driver: every layer is a full copy of its parent's tree (FICLONE,
// else copy_file_range, else read/write). Works on any filesystem, as any user.
//
// Layout: LayerHome(config.home): <home>/<id>/diff is the layer's full tree.
// - Create copies the parent's diff/ exactly (vfs/tree_copy.h): data with
//   holes, directories, symlinks, fifos, sockets, device nodes (EPERM naming
//   the path where mknod is not permitted), hard links, xattrs, owner (as
//   root; rootless keeps its own uid), mode and ns times. On failure the new
//   layer is removed. Driver option "workers=N" sets the copy threads.
// - Mount returns diff/ itself (no mount is made) and counts the reference
//   in MountRefs; MountOptions::read_only is not enforced. Remove is EBUSY
//   while the count is above 0.
// - Changes compares the parent's tree with the layer's (drivers/tree_diff.h):
//   an added directory is listed with all its children, a deleted directory
//   once (as Docker and the union drivers do); directories holding changes
//   are Modified. Diff writes those as a layer tar, one whiteout per deleted
//   path. ApplyDiff applies a tar in full-tree mode (whiteouts delete).
// - Usage is st_blocks of diff/ with every inode counted once; extents shared
//   through FICLONE are counted in every layer that holds them.
std::unique_ptr<Driver> MakeVfsDriver(const DriverConfig& config);

}  // namespace lamina::vfs
