// lamina: the command line of the lamina storage suite.

#include <pwd.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "common/fs.h"
#include "common/log.h"

namespace lamina::cli {

namespace {

std::string HomeDir() {
  const char* home = std::getenv("HOME");
  if (home != nullptr && *home != '\0') return home;
  struct passwd* pw = ::getpwuid(::geteuid());
  return pw != nullptr ? pw->pw_dir : "/";
}

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return (value != nullptr && *value != '\0') ? value : fallback;
}

// The config file: /etc/lamina/lamina.json for root,
// ${XDG_CONFIG_HOME:-~/.config}/lamina/lamina.json otherwise;
// $LAMINA_CONFIG names another. Keys: "root", "driver", "log_level".
std::string ConfigPath() {
  std::string explicit_path = EnvOr("LAMINA_CONFIG", "");
  if (!explicit_path.empty()) return explicit_path;
  if (::geteuid() == 0) return "/etc/lamina/lamina.json";
  return EnvOr("XDG_CONFIG_HOME", HomeDir() + "/.config") + "/lamina/lamina.json";
}

// Fills unset options from the environment, then the config file.
void ApplyDefaults(GlobalOptions& global) {
  if (global.root.empty()) global.root = EnvOr("LAMINA_ROOT", "");
  if (global.driver.empty()) global.driver = EnvOr("LAMINA_DRIVER", "");
  if (global.log_level.empty()) global.log_level = EnvOr("LAMINA_LOG", "");

  std::string path = ConfigPath();
  if (PathExists(path)) {
    auto text = ReadFile(path);
    if (!text) throw CommandError("config " + path + ": " + text.error().message());
    nlohmann::json config = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded() || !config.is_object()) {
      throw CommandError("config " + path + ": not a JSON object");
    }
    auto take = [&](const char* key, std::string& field) {
      if (!field.empty() || !config.contains(key)) return;
      if (!config[key].is_string()) {
        throw CommandError("config " + path + ": \"" + std::string(key) + "\" must be a string");
      }
      field = config[key].get<std::string>();
    };
    take("root", global.root);
    take("driver", global.driver);
    take("log_level", global.log_level);
  }
  if (global.root.empty()) global.root = DefaultRoot();
}

}  // namespace

std::string DefaultRoot() {
  if (::geteuid() == 0) return "/var/lib/lamina";
  return EnvOr("XDG_DATA_HOME", HomeDir() + "/.local/share") + "/lamina";
}

}  // namespace lamina::cli

int main(int argc, char** argv) {
  using lamina::cli::CommandError;
  lamina::cli::GlobalOptions global;
  CLI::App app{"lamina: union filesystem storage drivers for Linux containers"};
  app.name("lamina");
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("lamina ") + LAMINA_VERSION);
  app.add_option("--root", global.root,
                 "store directory (default /var/lib/lamina for root, "
                 "$XDG_DATA_HOME/lamina otherwise; env LAMINA_ROOT)");
  app.add_option("--driver", global.driver,
                 "storage driver: overlay, fuse or vfs (default: the first usable; env "
                 "LAMINA_DRIVER)");
  app.add_option("--log-level", global.log_level,
                 "trace, debug, info, warn, error, critical or off (env LAMINA_LOG)");
  app.add_flag("--json", global.json, "machine-readable output where offered");

  lamina::cli::AddInfoCommand(app, global);
  lamina::cli::AddLayerCommands(app, global);
  lamina::cli::AddImageCommands(app, global);
  lamina::cli::AddRunCommands(app, global);
  lamina::cli::AddBenchCommand(app, global);

  // Defaults and logging are settled after parsing, before any subcommand runs.
  app.parse_complete_callback([&] {
    lamina::cli::ApplyDefaults(global);
    auto logging = lamina::InitLogging(global.log_level);
    if (!logging) throw CommandError(logging.error().message(), 2);
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version are "errors" with status 0; usage errors exit 2.
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const CommandError& e) {
    std::cerr << "lamina: " << e.what() << "\n";
    return e.status();
  } catch (const std::exception& e) {
    std::cerr << "lamina: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
