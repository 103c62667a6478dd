#include "common/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>

namespace lamina {

Result<void> InitLogging(const std::string& level) {
  std::string name = level;
  if (name.empty()) {
    const char* env = std::getenv("LAMINA_LOG");
    name = (env != nullptr && *env != '\0') ? env : "warn";
  }
  auto parsed = spdlog::level::from_str(name);
  // from_str maps unknown names to "off"; only "off" itself may mean off.
  if (parsed == spdlog::level::off && name != "off") {
    return Fail(EINVAL, "unknown log level '" + name +
                            "' (trace, debug, info, warn, error, critical, off)");
  }
  auto logger = spdlog::stderr_color_mt("lamina");
  logger->set_pattern("lamina: %^%l%$: %v");
  logger->set_level(parsed);
  spdlog::set_default_logger(logger);
  return {};
}

}  // namespace lamina
