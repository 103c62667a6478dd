#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "drivers/driver.h"

namespace lamina::fuse {

// The fuse driver: the union is served by the lamina-fuse daemon (rootless).
std::unique_ptr<Driver> MakeFuseDriver(const DriverConfig& config);

// The lamina-fuse daemons serving `mountpoint`: processes whose argv[0] is
// lamina-fuse and whose last argument is the mount point (the way Mount
// starts them). Zombies do not count. (Unmount waits for them; `lamina
// bench` reads their memory use.)
std::vector<pid_t> DaemonPids(const std::string& mountpoint);

}  // namespace lamina::fuse
