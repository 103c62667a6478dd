#pragma once

#include <memory>

#include "drivers/driver.h"

namespace lamina::fuse {

// The fuse driver: the union is served by the lamina-fuse daemon (rootless).
std::unique_ptr<Driver> MakeFuseDriver(const DriverConfig& config);

}  // namespace lamina::fuse
