#include "vfs/vfs_driver.h"

#include "drivers/unavailable_driver.h"

namespace lamina::vfs {

// Placeholder until the vfs driver lands.
std::unique_ptr<Driver> MakeVfsDriver(const DriverConfig&) {
  return std::make_unique<UnavailableDriver>("vfs", "not built yet");
}

}  // namespace lamina::vfs
