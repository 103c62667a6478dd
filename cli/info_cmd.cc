// `lamina info`: the host facts, every driver's verdict and the driver chosen.

#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "drivers/driver.h"
#include "store/store.h"

namespace lamina::cli {

namespace {

nlohmann::json HostJson(const HostFacts& host) {
  nlohmann::json j = nlohmann::json::object();
  j["euid"] = host.euid;
  j["in_user_namespace"] = host.in_user_namespace;
  j["kernel"] = host.kernel_release;
  j["overlay_listed"] = host.overlay_listed;
  j["fuse_listed"] = host.fuse_listed;
  j["store_root"] = host.store_root;
  j["backing_fs"] = host.backing_fs;
  j["d_type"] = host.d_type;
  j["dev_fuse"] = host.dev_fuse;
  j["fusermount3"] = host.fusermount3;
  j["ficlone"] = host.ficlone;
  j["mknod_whiteout"] = host.mknod_whiteout;
  j["trusted_xattrs"] = host.trusted_xattrs;
  j["user_xattrs"] = host.user_xattrs;
  return j;
}

nlohmann::json InfoJson(const store::InfoReport& report) {
  nlohmann::json j = nlohmann::json::object();
  j["host"] = HostJson(report.host);
  nlohmann::json drivers = nlohmann::json::array();
  for (const auto& verdict : report.verdicts) {
    nlohmann::json d = nlohmann::json::object();
    d["name"] = verdict.name;
    d["usable"] = verdict.result.usable;
    d["reason"] = verdict.result.reason;
    d["features"] = verdict.result.features;
    drivers.push_back(std::move(d));
  }
  j["drivers"] = std::move(drivers);
  nlohmann::json chosen = nlohmann::json::object();
  chosen["name"] = report.chosen.empty() ? nlohmann::json(nullptr) : nlohmann::json(report.chosen);
  chosen["why"] = report.why;
  nlohmann::json status = nlohmann::json::object();
  for (const auto& [key, value] : report.driver_status) status[key] = value;
  chosen["status"] = std::move(status);
  j["chosen"] = std::move(chosen);
  nlohmann::json store = nlohmann::json::object();
  store["root"] = report.root;
  store["initialized"] = report.config.has_value();
  if (report.config) {
    store["version"] = report.config->version;
    store["driver"] = report.config->driver;
    store["xattr_namespace"] = std::string(XattrNamespaceName(report.config->xattr_ns));
  }
  store["layers"] = report.layers;
  j["store"] = std::move(store);
  return j;
}

void PrintInfoText(const store::InfoReport& report) {
  std::cout << "Host:\n";
  for (const auto& [key, value] : report.host.Describe()) {
    std::cout << "  " << key << ": " << value << "\n";
  }
  std::cout << "Store:\n  root: " << report.root << "\n";
  if (report.config) {
    std::cout << "  format version: " << report.config->version << "\n"
              << "  driver: " << report.config->driver << "\n"
              << "  xattr namespace: " << XattrNamespaceName(report.config->xattr_ns) << "\n";
  } else {
    std::cout << "  state: not initialised yet (first use writes store.json)\n";
  }
  std::cout << "  layers: " << report.layers << "\n";
  std::cout << "Drivers:\n";
  for (const auto& verdict : report.verdicts) {
    std::cout << "  " << verdict.name << ": " << (verdict.result.usable ? "usable" : "not usable")
              << " (" << verdict.result.reason << ")\n";
    for (const auto& [key, value] : verdict.result.features) {
      std::cout << "    " << key << ": " << value << "\n";
    }
  }
  if (report.chosen.empty()) {
    std::cout << "Chosen driver: none: " << report.why << "\n";
  } else {
    std::cout << "Chosen driver: " << report.chosen << " (" << report.why << ")\n";
    for (const auto& [key, value] : report.driver_status) {
      std::cout << "  " << key << ": " << value << "\n";
    }
  }
}

}  // namespace

void AddInfoCommand(CLI::App& app, GlobalOptions& global) {
  CLI::App* info = app.add_subcommand(
      "info", "show the host facts, every driver's verdict and the driver chosen");
  info->add_flag("--json", global.json, "print JSON for programs");
  info->callback([&global] {
    auto report = OrThrow(store::GatherInfo(StoreOptions(global)));
    if (global.json) {
      std::cout << InfoJson(report).dump(2) << "\n";
    } else {
      PrintInfoText(report);
    }
  });
}

}  // namespace lamina::cli
