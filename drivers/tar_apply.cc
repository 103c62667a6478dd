// ApplyTar: OCI layer tar → layer directory (see drivers/tar.h).

#include "drivers/tar.h"

namespace lamina {

Result<ApplyResult> ApplyTar(int /*tar_fd*/, const std::string& /*target_dir*/,
                             const ApplyOptions& /*options*/) {
  return Fail(ENOSYS, "ApplyTar: not yet");
}

}  // namespace lamina
