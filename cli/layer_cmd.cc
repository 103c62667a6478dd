// Placeholder until the store lands; replaced by the real `lamina layer`.
#include "cli/cli.h"

namespace lamina::cli {
void AddLayerCommands(CLI::App& app, GlobalOptions&) {
  app.add_subcommand("layer", "manage layers")->callback([] {
    throw CommandError("layer: not built yet");
  });
}
}  // namespace lamina::cli
