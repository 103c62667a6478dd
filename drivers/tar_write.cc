// WriteLayerTar: layer directory → OCI layer tar (see drivers/tar.h).

#include "drivers/tar.h"

namespace lamina {

Result<TarStats> WriteLayerTar(int /*out_fd*/, const std::string& /*root*/,
                               std::vector<DiffEntry> /*entries*/) {
  return Fail(ENOSYS, "WriteLayerTar: not yet");
}

}  // namespace lamina
