#pragma once

#include <string>

#include "drivers/driver.h"

namespace lamina {

// A driver that is not available in this build: Probe says why, every other
// call fails with ENOTSUP. Used for drivers that are not written yet, so
// that `lamina info` still lists them with a reason.
class UnavailableDriver final : public Driver {
 public:
  UnavailableDriver(std::string name, std::string reason)
      : name_(std::move(name)), reason_(std::move(reason)) {}

  std::string_view Name() const override { return name_; }
  ProbeResult Probe(const HostFacts&) override { return {false, reason_, {}}; }
  Result<void> Create(const std::string&, const std::string&, const CreateOptions&) override {
    return Unsupported();
  }
  Result<void> Remove(const std::string&) override { return Unsupported(); }
  bool Exists(const std::string&) const override { return false; }
  Result<std::string> Mount(const std::string&, const MountOptions&) override {
    return Unsupported();
  }
  Result<void> Unmount(const std::string&) override { return Unsupported(); }
  Result<int> MountCount(const std::string&) const override { return Unsupported(); }
  Result<std::vector<Change>> Changes(const std::string&) override { return Unsupported(); }
  Result<TarStats> Diff(const std::string&, int) override { return Unsupported(); }
  Result<TarStats> ApplyDiff(const std::string&, int) override { return Unsupported(); }
  Result<uint64_t> Usage(const std::string&) override { return Unsupported(); }
  std::vector<std::pair<std::string, std::string>> Status() const override {
    return {{"available", "no: " + reason_}};
  }
  std::string DiffPath(const std::string&) const override { return {}; }

 private:
  std::unexpected<Error> Unsupported() const {
    return Fail(ENOTSUP, "the " + name_ + " driver: " + reason_);
  }
  std::string name_;
  std::string reason_;
};

}  // namespace lamina
