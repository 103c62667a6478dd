#include "fuse/fuse_driver.h"

#include "drivers/unavailable_driver.h"

namespace lamina::fuse {

// lamina-fuse is not written yet (its own issue); until then the driver says so.
std::unique_ptr<Driver> MakeFuseDriver(const DriverConfig&) {
  return std::make_unique<UnavailableDriver>("fuse", "lamina-fuse is not built yet");
}

}  // namespace lamina::fuse
