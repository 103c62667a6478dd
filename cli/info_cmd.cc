// Placeholder until the store lands; replaced by the real `lamina info`.
#include "cli/cli.h"

namespace lamina::cli {
void AddInfoCommand(CLI::App& app, GlobalOptions&) {
  app.add_subcommand("info", "host facts and each driver's verdict")->callback([] {
    throw CommandError("info: not built yet");
  });
}
}  // namespace lamina::cli
