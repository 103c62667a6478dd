#pragma once

#include <spdlog/spdlog.h>

#include <string>

#include "common/result.h"

namespace lamina {

// Sets up spdlog's default logger on stderr. `level` is one of trace, debug,
// info, warn, error, critical, off; empty means $LAMINA_LOG or else "warn".
// Unknown names fail with EINVAL (a clear error for --log-level).
Result<void> InitLogging(const std::string& level = {});

}  // namespace lamina
