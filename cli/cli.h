#pragma once

// The `lamina` command: global options and the subcommand groups, each
// group in its own file registering itself on the app.

#include <CLI/CLI.hpp>

#include <string>

namespace lamina::cli {

// Options every subcommand sees.
struct GlobalOptions {
  std::string root;       // --root / LAMINA_ROOT; default per user (see DefaultRoot)
  std::string driver;     // --driver / LAMINA_DRIVER / config file; empty = automatic
  std::string log_level;  // --log-level / LAMINA_LOG
  bool json = false;      // --json: machine-readable output where offered
};

// /var/lib/lamina for root, ${XDG_DATA_HOME:-~/.local/share}/lamina otherwise.
std::string DefaultRoot();

// Each Add*Commands registers its subcommands; their callbacks throw
// CommandError (caught in main, printed as "lamina: message", exit status).
void AddInfoCommand(CLI::App& app, GlobalOptions& global);
void AddLayerCommands(CLI::App& app, GlobalOptions& global);
void AddImageCommands(CLI::App& app, GlobalOptions& global);
void AddRunCommands(CLI::App& app, GlobalOptions& global);
void AddBenchCommand(CLI::App& app, GlobalOptions& global);

// The error a subcommand reports: printed as "lamina: <message>", exits with `status`.
class CommandError : public std::runtime_error {
 public:
  explicit CommandError(const std::string& message, int status = 1)
      : std::runtime_error(message), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

}  // namespace lamina::cli
