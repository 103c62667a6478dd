#pragma once

// The registry of lamina's drivers and the choice of one per host:
// overlay, then fuse, then vfs, unless the user asks for one by name
// (--driver, LAMINA_DRIVER, or the config file).

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "drivers/driver.h"
#include "drivers/host.h"

namespace lamina {

// Driver names in priority order.
const std::vector<std::string>& DriverNames();

// Makes the named driver; EINVAL naming the known drivers for an unknown name.
Result<std::unique_ptr<Driver>> MakeDriver(const std::string& name, const DriverConfig& config);

struct DriverVerdict {
  std::string name;
  ProbeResult result;
  // False when the choice was made without probing this driver (then
  // result says so and is not usable); see SelectOptions::probe_all.
  bool probed = true;
};

struct Selection {
  std::unique_ptr<Driver> driver;
  std::vector<DriverVerdict> verdicts;  // every driver, in priority order
  std::string why;                      // "requested with --driver", "first usable by priority", ...
};

struct SelectOptions {
  // Probe every driver (for `lamina info`), or only as many as the choice
  // needs: the requested one, else the recorded one, else by priority
  // until one is usable (for every other command: trial mounts cost time).
  bool probe_all = true;
  // How a verdict is found; empty: Driver::Probe. (The store passes one
  // that keeps usable verdicts for the rest of the boot.)
  std::function<ProbeResult(Driver& driver, const HostFacts& host)> probe;
};

// Probes the drivers (see SelectOptions) and picks one.
// - `requested` (non-empty): that driver, failing with a clear error (ENODEV,
//   with the probe's reason) if it is not usable here.
// - else `recorded` (the store's driver, non-empty): that one if usable,
//   else the first usable driver that reads the same on-disk format.
// - else the first usable driver in priority order.
// - when host.store_full (no room to probe), the requested or recorded
//   driver without a probe (ENOSPC when there is neither).
// The on-disk formats: overlay and fuse share one; vfs has its own. A choice
// that would change format on a store that has one fails with EXDEV, saying
// that the store must be re-imported.
Result<Selection> SelectDriver(const HostFacts& host, const DriverConfig& config,
                               const std::string& requested, const std::string& recorded,
                               const SelectOptions& options = {});

// "union" for overlay and fuse, "vfs" for vfs.
std::string DriverFormat(const std::string& name);

}  // namespace lamina
