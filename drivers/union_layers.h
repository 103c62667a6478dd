#pragma once

// What the union-format drivers (kernel overlay, fuse) do the same way on a
// LayerHome: the layer content calls of Driver that do not depend on how the
// union is mounted. Each takes the home and the layer id, checks the id, and
// wraps errors with "<verb> of layer <id>".

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "drivers/driver.h"
#include "drivers/layer_home.h"

namespace lamina {

// ENOENT unless `id` is a valid id of an existing layer.
Result<void> CheckLayerExists(const LayerHome& home, const std::string& id);

// The diff/ directories of `id`'s ancestors (parent first), for
// UnionChanges / UnionDiffEntries.
Result<std::vector<std::string>> LowerDiffDirs(const LayerHome& home, const std::string& id);

// Driver::Changes: the layer's diff/ against the merged view of its ancestors.
Result<std::vector<Change>> UnionLayerChanges(const LayerHome& home, const std::string& id);

// Driver::Diff: the layer tar of diff/ (redirected directories resolved
// against the ancestors).
Result<TarStats> UnionLayerDiff(const LayerHome& home, const std::string& id, int out_fd);

// Driver::ApplyDiff: OCI whiteouts become union whiteouts/opaque xattrs in
// `xattr_ns`; a rootless (kUser) store keeps the tar's owners in
// user.containers.override_stat instead of chowning.
Result<TarStats> UnionLayerApplyDiff(const LayerHome& home, const std::string& id, int tar_fd,
                                     XattrNamespace xattr_ns);

// Driver::Usage: allocated bytes (st_blocks * 512) below diff/, each inode
// once, symlinks not followed.
Result<uint64_t> LayerUsage(const LayerHome& home, const std::string& id);

// Driver::Remove for a driver whose mounts are at <id>/merged: EBUSY when
// merged is a mount point, otherwise the layer's directory goes, under the
// mount-count lock so a concurrent Mount fails cleanly. A missing layer is
// fine.
Result<void> RemoveUnmountedLayer(const LayerHome& home, const std::string& id);

// Driver::MountCount for a driver whose mounts are at <id>/merged with a
// MountRefs count: a count whose mount is gone is repaired to 0 (logged
// with `driver` as the prefix).
Result<int> CheckedMountCount(const LayerHome& home, const std::string& id,
                              std::string_view driver);

// Driver::Unmount's reference counting for the same kind of driver: EINVAL
// when not mounted (a stale count is repaired instead), one reference
// dropped when there are more, otherwise `unmount(merged)` is called and
// the count goes to 0. An EBUSY from `unmount` comes back with a message
// naming the layer.
Result<void> DropMountRef(const LayerHome& home, const std::string& id, std::string_view driver,
                          const std::function<Result<void>(const std::string& merged)>& unmount);

}  // namespace lamina
