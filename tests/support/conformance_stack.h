#pragma once

// A layer stack on one driver for the conformance suite: image layers made
// through Driver::ApplyDiff of small tars (so whiteouts and opaque dirs are
// in the driver's own format), a writable container layer on top, mounted.

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/fd.h"
#include "common/result.h"
#include "drivers/driver.h"
#include "tests/support/tar_builder.h"

namespace lamina::test {

// An image layer: what to put into its tar.
using LayerContent = std::function<void(TarBuilder&)>;

// The tar's bytes in an anonymous file at offset 0.
Result<Fd> TarFd(const std::string& bytes);

class MountedStack {
 public:
  MountedStack() = default;
  MountedStack(MountedStack&&) = default;
  MountedStack& operator=(MountedStack&&) = default;
  // Unmounts (the TempDir holding `home` detaches anything left).
  ~MountedStack();

  // Makes the driver `name` on `home` (which exists), applies `layers`
  // bottom first as layers "layer1", "layer2", ..., creates the writable
  // layer "ctr" on top and mounts it.
  static Result<MountedStack> Build(const std::string& name, const std::string& home,
                                    XattrNamespace ns, const std::vector<LayerContent>& layers);

  const std::string& root() const { return root_; }
  Driver& driver() { return *driver_; }

 private:
  std::unique_ptr<Driver> driver_;
  std::string root_;
};

}  // namespace lamina::test
