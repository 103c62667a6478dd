#include "drivers/select/registry.h"

#include "fuse/fuse_driver.h"
#include "kernel-overlay/overlay_driver.h"
#include "vfs/vfs_driver.h"

namespace lamina {

const std::vector<std::string>& DriverNames() {
  static const std::vector<std::string> kNames = {"overlay", "fuse", "vfs"};
  return kNames;
}

Result<std::unique_ptr<Driver>> MakeDriver(const std::string& name, const DriverConfig& config) {
  if (name == "overlay") return overlay::MakeOverlayDriver(config);
  if (name == "fuse") return fuse::MakeFuseDriver(config);
  if (name == "vfs") return vfs::MakeVfsDriver(config);
  return Fail(EINVAL, "unknown driver '" + name + "' (overlay, fuse, vfs)");
}

std::string DriverFormat(const std::string& name) { return name == "vfs" ? "vfs" : "union"; }

Result<Selection> SelectDriver(const HostFacts& host, const DriverConfig& config,
                               const std::string& requested, const std::string& recorded) {
  Selection selection;
  std::vector<std::unique_ptr<Driver>> drivers;
  for (const auto& name : DriverNames()) {
    auto driver = LAMINA_TRY(MakeDriver(name, config));
    selection.verdicts.push_back({name, driver->Probe(host)});
    drivers.push_back(std::move(driver));
  }
  auto index_of = [&](const std::string& name) -> int {
    for (size_t i = 0; i < drivers.size(); ++i) {
      if (DriverNames()[i] == name) return static_cast<int>(i);
    }
    return -1;
  };
  auto format_check = [&](const std::string& name) -> Result<void> {
    if (!recorded.empty() && DriverFormat(name) != DriverFormat(recorded)) {
      return Fail(EXDEV, "the store was written by the " + recorded + " driver; the " + name +
                             " driver keeps layers in another format, so switching needs a "
                             "re-import into a new store (--root)");
    }
    return {};
  };

  if (!requested.empty()) {
    int i = index_of(requested);
    if (i < 0) return Fail(EINVAL, "unknown driver '" + requested + "' (overlay, fuse, vfs)");
    LAMINA_CHECK(format_check(requested));
    const auto& verdict = selection.verdicts[static_cast<size_t>(i)].result;
    if (!verdict.usable) {
      return Fail(ENODEV, "driver " + requested + " is not usable here: " + verdict.reason);
    }
    selection.driver = std::move(drivers[static_cast<size_t>(i)]);
    selection.why = "requested";
    return selection;
  }
  if (!recorded.empty()) {
    int i = index_of(recorded);
    if (i >= 0 && selection.verdicts[static_cast<size_t>(i)].result.usable) {
      selection.driver = std::move(drivers[static_cast<size_t>(i)]);
      selection.why = "recorded in the store";
      return selection;
    }
  }
  for (size_t i = 0; i < drivers.size(); ++i) {
    if (!selection.verdicts[i].result.usable) continue;
    if (!format_check(DriverNames()[i])) continue;
    selection.driver = std::move(drivers[i]);
    selection.why = recorded.empty() ? "first usable by priority (overlay, fuse, vfs)"
                                     : "first usable driver for the store's format";
    return selection;
  }
  std::string reasons;
  for (const auto& v : selection.verdicts) reasons += "\n  " + v.name + ": " + v.result.reason;
  return Fail(ENODEV, "no usable storage driver on this host:" + reasons);
}

}  // namespace lamina
