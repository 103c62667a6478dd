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
                               const std::string& requested, const std::string& recorded,
                               const SelectOptions& options) {
  Selection selection;
  std::vector<std::unique_ptr<Driver>> drivers;
  for (const auto& name : DriverNames()) {
    drivers.push_back(LAMINA_TRY(MakeDriver(name, config)));
    ProbeResult not_probed;
    not_probed.reason =
        "not probed: the choice was made without it (lamina info probes every driver)";
    selection.verdicts.push_back({name, std::move(not_probed), /*probed=*/false});
  }
  // A full store's filesystem has no room for the drivers' trials: the
  // driver asked for (or the store's own) is taken on trust, as it was
  // usable when the kept facts were found; its operations then fail with
  // ENOSPC where they need room.
  const std::string& trusted = !requested.empty() ? requested : recorded;
  if (host.store_full && trusted.empty()) {
    return Fail(ENOSPC, "the store's filesystem is full: no driver can be chosen for it");
  }
  // The verdict of driver i, probed on first use.
  auto verdict = [&](size_t i) -> const ProbeResult& {
    auto& v = selection.verdicts[i];
    if (!v.probed && host.store_full) {
      v.result.usable = DriverNames()[i] == trusted;
      v.result.reason = "not probed: the store's filesystem is full";
      v.probed = true;
    }
    if (!v.probed) {
      v.result = options.probe ? options.probe(*drivers[i], host) : drivers[i]->Probe(host);
      v.probed = true;
    }
    return v.result;
  };
  if (options.probe_all) {
    for (size_t i = 0; i < drivers.size(); ++i) verdict(i);
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
    const auto& found = verdict(static_cast<size_t>(i));
    if (!found.usable) {
      return Fail(ENODEV, "driver " + requested + " is not usable here: " + found.reason);
    }
    selection.driver = std::move(drivers[static_cast<size_t>(i)]);
    selection.why = "requested";
    return selection;
  }
  if (!recorded.empty()) {
    int i = index_of(recorded);
    if (i >= 0 && verdict(static_cast<size_t>(i)).usable) {
      selection.driver = std::move(drivers[static_cast<size_t>(i)]);
      selection.why = "recorded in the store";
      return selection;
    }
  }
  for (size_t i = 0; i < drivers.size(); ++i) {
    if (!format_check(DriverNames()[i])) continue;
    if (!verdict(i).usable) continue;
    selection.driver = std::move(drivers[i]);
    selection.why = recorded.empty() ? "first usable by priority (overlay, fuse, vfs)"
                                     : "first usable driver for the store's format";
    return selection;
  }
  std::string reasons;
  for (size_t i = 0; i < drivers.size(); ++i) {
    reasons += "\n  " + DriverNames()[i] + ": " + verdict(i).reason;
  }
  return Fail(ENODEV, "no usable storage driver on this host:" + reasons);
}

}  // namespace lamina
