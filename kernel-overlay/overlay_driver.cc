#include "kernel-overlay/overlay_driver.h"

#include "drivers/unavailable_driver.h"

namespace lamina::overlay {

// Placeholder until the kernel-overlay driver lands.
std::unique_ptr<Driver> MakeOverlayDriver(const DriverConfig&) {
  return std::make_unique<UnavailableDriver>("overlay", "not built yet");
}

}  // namespace lamina::overlay
