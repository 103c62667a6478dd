#pragma once

#include <memory>

#include "drivers/driver.h"

namespace lamina::vfs {

// The vfs driver: every layer is a full copy of its parent's tree (FICLONE,
// else copy_file_range, else read/write). Works on any filesystem, as any user.
std::unique_ptr<Driver> MakeVfsDriver(const DriverConfig& config);

}  // namespace lamina::vfs
