#pragma once

// Options of the kernel-overlay driver, from DriverConfig::options
// ("key=value" strings; keys of other drivers are ignored) and the
// environment.
//
//   overlay.mount_api=auto|new|legacy   (env LAMINA_OVERLAY_MOUNT_API wins)
//       auto:   the new mount API (fsopen/fsconfig "lowerdir+"/fsmount/
//               move_mount); mount(2) with short symlinks where the kernel
//               lacks it (fsopen ENOSYS, or "lowerdir+" unknown: before 6.8).
//       new:    the new API only; an error where it is missing.
//       legacy: mount(2) only, with `<home>/l/<short>` symlinks (as Docker's
//               overlay2); the 4 KiB mount-data limit allows ~140 layers.
//   overlay.redirect_dir=on|off          (default on; only with trusted
//       xattrs: the kernel refuses redirect_dir=on together with userxattr,
//       so rootless stores rename directories with lower content as EXDEV.)

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace lamina::overlay {

enum class MountApi { kAuto, kNew, kLegacy };

struct OverlayOptions {
  MountApi mount_api = MountApi::kAuto;
  bool redirect_dir = true;
};

// "auto" / "new" / "legacy".
std::string_view MountApiName(MountApi api);
// EINVAL naming the bad value and the good ones.
Result<MountApi> ParseMountApi(std::string_view value);

// Parses the "overlay.*" items of `options` (others are skipped), then the
// environment override `env_mount_api` (the value of
// LAMINA_OVERLAY_MOUNT_API; empty = none). Unknown overlay.* keys and bad
// values fail with EINVAL naming the item.
Result<OverlayOptions> ParseOverlayOptions(const std::vector<std::string>& options,
                                           std::string_view env_mount_api = {});

}  // namespace lamina::overlay
