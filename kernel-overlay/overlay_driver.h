#pragma once

#include <memory>

#include "drivers/driver.h"

namespace lamina::overlay {

// The kernel overlayfs driver: layers are overlay upper/lower directories,
// mounted with the new mount API (fsopen/fsconfig lowerdir+).
std::unique_ptr<Driver> MakeOverlayDriver(const DriverConfig& config);

}  // namespace lamina::overlay
