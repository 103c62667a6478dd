// `lamina run`, `lamina ps`, `lamina rm`, `lamina commit`: containers on the
// store's layers (the runtime half of the launcher; see launcher/container.h).

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/common.h"
#include "common/fd.h"
#include "common/fs.h"
#include "common/scope_guard.h"
#include "launcher/cgroups.h"
#include "launcher/container.h"
#include "launcher/spec.h"
#include "store/containers.h"
#include "store/images.h"
#include "store/metadata.h"
#include "store/store.h"

namespace lamina::cli {

namespace {

// Runtime errors exit 125 (as docker and podman do), so that they never
// look like the command's own status.
constexpr int kRunError = 125;

// Cleans what killed launchers left behind (see store/containers.h).
void CleanStale(store::Store& store) {
  store::ContainerStore containers(store);
  auto cleaned = containers.CleanStale(
      [](const std::vector<std::string>& dirs) { launcher::RemoveCgroupDirs(dirs); });
  if (cleaned && !cleaned->empty()) {
    spdlog::info("cleaned {} container(s) left by killed launchers", cleaned->size());
  }
}

struct RunArgs {
  std::string image;
  std::vector<std::string> command;
  std::string name;
  std::string memory, cpus, hostname, net = "none", workdir, user;
  uint64_t pids = 0;
  std::vector<std::string> env, volumes;
  bool tty = false, read_only = false, userns = false;
};

// The whole run; returns the exit status. Every step is undone by a guard
// on every path (the launcher's own errors throw CommandError).
int RunContainer(GlobalOptions& global, const RunArgs& args) {
  launcher::ContainerSpec spec;
  // Options first: a usage error must not cost a layer.
  if (!args.memory.empty())
    spec.limits.memory_bytes = OrThrow(launcher::ParseMemory(args.memory), 2);
  if (!args.cpus.empty()) spec.limits.cpus = OrThrow(launcher::ParseCpus(args.cpus), 2);
  if (args.pids > 0) spec.limits.pids = args.pids;
  spec.net = OrThrow(launcher::ParseNet(args.net), 2);
  for (const auto& v : args.volumes) spec.volumes.push_back(OrThrow(launcher::ParseVolume(v), 2));
  if (!args.name.empty()) OrThrow(store::ValidateContainerName(args.name), 2);
  if (!args.hostname.empty() && args.hostname.size() > 64) {
    throw CommandError("--hostname: at most 64 characters", 2);
  }
  spec.hostname = args.hostname;
  spec.read_only = args.read_only;
  spec.tty = args.tty;
  spec.user_namespace = ::geteuid() != 0 || args.userns;
  if (spec.user_namespace) spec.id_maps = launcher::PlanIdMaps();

  auto store = OpenStore(global, kRunError);
  CleanStale(*store);
  store::ContainerStore containers(*store);
  store::Image image = OrThrow(store::ImageStore(*store).Get(args.image), kRunError);
  if (image.layers.empty()) throw CommandError("image " + args.image + " has no layers", kRunError);

  const auto& config = image.config;
  spec.argv = config.entrypoint;
  if (!args.command.empty()) {
    spec.argv.insert(spec.argv.end(), args.command.begin(), args.command.end());
  } else {
    spec.argv.insert(spec.argv.end(), config.cmd.begin(), config.cmd.end());
  }
  if (spec.argv.empty()) spec.argv = {"sh"};
  if (spec.hostname.empty()) spec.hostname = config.hostname;

  // The container's layer, and its record (which marks it for the cleanup
  // of a killed launcher).
  CreateOptions create;
  create.writable = true;
  create.container_root = true;
  std::string layer = OrThrow(store->CreateLayer(image.layers.back(), create), kRunError);
  spec.id = layer;
  bool keep = !args.name.empty();
  auto remove_layer = Defer([&] {
    auto removed = store->RemoveLayer(layer);
    if (!removed) std::cerr << "lamina: " << store::Describe(removed.error()) << "\n";
  });
  store::ContainerRecord record;
  record.id = layer;
  record.name = args.name;
  record.image = args.image;
  record.image_layers = image.layers;
  record.layer = layer;
  record.command = spec.argv;
  record.created = store::NowRfc3339();
  record.state = "created";
  record.launcher_pid = ::getpid();
  store::ContainerLock lock = OrThrow(containers.Create(record), kRunError);
  // The layer goes before its record: a crash in between leaves a record
  // that the next cleanup finishes, never a layer nobody knows.
  remove_layer.Dismiss();
  auto remove_both = Defer([&] {
    auto removed = store->RemoveLayer(layer);
    if (!removed) {
      std::cerr << "lamina: " << store::Describe(removed.error()) << "\n";
      return;
    }
    (void)containers.Delete(record.id);
  });

  // The root: mounted here, or, where the driver mounts only in a user
  // namespace of our own (the kernel overlay rootless), by the container
  // inside its namespaces, gone with them (so nothing to unmount).
  bool host_mount = store->driver().Scope() == MountScope::kHost;
  if (host_mount) {
    record.mounted = true;  // recorded before the mount: a crash in between is harmless
    OrThrow(containers.Update(record), kRunError);
    // A container in a user namespace of its own sees the tree through its
    // id maps (see MountOptions::uid_map).
    MountOptions mount_options;
    for (const auto& r : spec.id_maps.uids) {
      mount_options.uid_map.push_back({r.inside, r.outside, r.count});
    }
    for (const auto& r : spec.id_maps.gids) {
      mount_options.gid_map.push_back({r.inside, r.outside, r.count});
    }
    spec.rootfs = OrThrow(store->Mount(layer, mount_options), kRunError);
  } else {
    NamespaceMount mount = OrThrow(store->PrepareNamespaceMount(layer), kRunError);
    spec.rootfs = mount.target;
    spec.mount_root = std::move(mount.mount);
  }
  auto unmount = Defer([&] {
    if (!host_mount) return;
    auto unmounted = store->Unmount(layer);
    if (!unmounted) std::cerr << "lamina: " << store::Describe(unmounted.error()) << "\n";
  });

  // User, environment and working directory: the image's, overridden (the
  // user and environment are resolved inside the container).
  spec.user = args.user.empty() ? config.user : args.user;
  spec.env = config.env;
  spec.env_overrides = args.env;
  spec.cwd = !args.workdir.empty()        ? args.workdir
             : config.working_dir.empty() ? "/"
                                          : config.working_dir;
  if (spec.cwd.empty() || spec.cwd[0] != '/') {
    throw CommandError("--workdir must be an absolute path", 2);
  }

  launcher::RunCallbacks callbacks;
  callbacks.started = [&](pid_t pid, const std::vector<std::string>& cgroups) {
    record.state = "running";
    record.pid = pid;
    record.cgroups = cgroups;
    (void)containers.Update(record);
  };
  auto ran = launcher::Run(spec, callbacks);
  if (!ran) throw CommandError(ran.error().message(), kRunError);

  unmount.Dismiss();
  Result<void> unmounted;
  if (host_mount) unmounted = store->Unmount(layer);
  if (!unmounted) std::cerr << "lamina: " << store::Describe(unmounted.error()) << "\n";
  record.mounted = !unmounted;
  record.cgroups.clear();
  if (keep) {
    record.state = "exited";
    record.exit_status = ran->status;
    record.finished = store::NowRfc3339();
    (void)containers.Update(record);
    remove_both.Dismiss();
  } else if (!unmounted) {
    // Still mounted: the record stays "running" with its lock about to go,
    // so the next lamina's cleanup unmounts and removes it.
    remove_both.Dismiss();
    (void)containers.Update(record);
  }
  if (!ran->message.empty()) std::cerr << "lamina: " << ran->message << "\n";
  return ran->status;
}

void AddRun(CLI::App& app, GlobalOptions& global, RunArgs& args) {
  CLI::App* cmd = app.add_subcommand("run", "run a command in a new container on an image");
  cmd->add_option("--driver", global.driver, "storage driver (overlay, fuse, vfs)");
  cmd->add_option("--name", args.name, "keep the container under this name after it ends");
  cmd->add_option("-m,--memory", args.memory, "memory limit (64m, 1g, bytes)");
  cmd->add_option("--cpus", args.cpus, "CPU limit (0.5, 2)");
  cmd->add_option("--pids", args.pids, "limit of processes and threads");
  cmd->add_option("--hostname", args.hostname, "the container's hostname");
  cmd->add_option("--net", args.net, "network: none (loopback only, default) or host");
  cmd->add_option("-e,--env", args.env, "KEY=value (or KEY: take it from here)")
      ->allow_extra_args(false);
  cmd->add_option("-w,--workdir", args.workdir, "working directory in the container");
  cmd->add_option("-u,--user", args.user, "user[:group] as name or number");
  cmd->add_option("-v,--volume", args.volumes, "HOST:CONTAINER[:ro] bind mount")
      ->allow_extra_args(false);
  cmd->add_flag("-t,--tty", args.tty, "give the command a terminal");
  cmd->add_flag("--read-only", args.read_only, "mount the container's root read-only");
  cmd->add_flag("--userns", args.userns, "a user namespace also as root (always when rootless)");
  cmd->add_option("IMAGE", args.image, "image name (busybox is built in)")->required();
  // Everything after IMAGE is the command and its arguments (default: the
  // image's), flags included.
  cmd->prefix_command();
  cmd->footer("IMAGE may be followed by the command and its arguments.");
  cmd->callback([&global, &args, cmd] {
    for (const auto& extra : cmd->remaining()) args.command.push_back(extra);
    int status = RunContainer(global, args);
    std::cout.flush();
    std::exit(status);
  });
}

std::string StatusText(const store::ContainerRecord& r, bool running) {
  if (running) return "running";
  if (r.state == "exited") {
    return r.exit_status < 0 ? "exited (unknown)"
                             : "exited (" + std::to_string(r.exit_status) + ")";
  }
  return r.state;
}

void AddPs(CLI::App& app, GlobalOptions& global) {
  CLI::App* cmd = app.add_subcommand("ps", "list containers (kept and running)");
  cmd->add_flag("--json", global.json, "print JSON for programs");
  cmd->callback([&global] {
    auto store = OpenStore(global);
    CleanStale(*store);
    store::ContainerStore containers(*store);
    auto records = OrThrow(containers.List());
    if (global.json) {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& r : records) {
        auto j = nlohmann::json::parse(store::FormatContainerRecord(r));
        j["running"] = containers.Running(r.id);
        out.push_back(j);
      }
      std::cout << out.dump(2) << "\n";
      return;
    }
    std::vector<std::vector<std::string>> rows = {
        {"NAME", "ID", "IMAGE", "STATUS", "CREATED", "COMMAND"}};
    for (const auto& r : records) {
      std::string command;
      for (const auto& a : r.command) command += (command.empty() ? "" : " ") + a;
      rows.push_back({r.name.empty() ? "-" : r.name, r.id.substr(0, 12), r.image,
                      StatusText(r, containers.Running(r.id)), r.created.substr(0, 19) + "Z",
                      command});
    }
    PrintColumns(rows);
  });
}

void AddRm(CLI::App& app, GlobalOptions& global, std::vector<std::string>& names) {
  CLI::App* cmd = app.add_subcommand("rm", "remove kept containers and their layers");
  cmd->add_option("NAME", names, "container names or ids")->required();
  cmd->callback([&global, &names] {
    auto store = OpenStore(global);
    CleanStale(*store);
    store::ContainerStore containers(*store);
    Failures failures;
    for (const auto& name : names) {
      auto record = containers.Find(name);
      if (!record) {
        failures.Add(store::Describe(record.error()));
        continue;
      }
      if (containers.Running(record->id)) {
        failures.Add("container " + name + " is running");
        continue;
      }
      if (record->mounted) {
        if (auto count = store->MountCount(record->layer); count && *count > 0) {
          (void)store->Unmount(record->layer);
        }
      }
      auto removed = store->RemoveLayer(record->layer);
      if (!removed && removed.error().code() != ENOENT) {
        failures.Add(store::Describe(removed.error()));
        continue;
      }
      auto deleted = containers.Delete(record->id);
      if (!deleted) failures.Add(deleted.error().message());
    }
    failures.ThrowIfAny();
  });
}

void AddCommit(CLI::App& app, GlobalOptions& global, std::vector<std::string>& args) {
  CLI::App* cmd = app.add_subcommand("commit", "make a kept container's changes a new image");
  cmd->add_option("NAME", args, "container name, then the new image's name")
      ->required()
      ->expected(2);
  cmd->callback([&global, &args] {
    const std::string& name = args[0];
    const std::string& image_name = args[1];
    auto store = OpenStore(global);
    CleanStale(*store);
    store::ContainerStore containers(*store);
    auto record = OrThrow(containers.Find(name));
    if (containers.Running(record.id)) throw CommandError("container " + name + " is running");
    if (record.image_layers.empty()) throw CommandError("container " + name + " has no image");

    // The container layer's diff, applied as a read-only layer on the same
    // parent. The tar is an unnamed file: a killed commit leaves none behind.
    Fd tar = OrThrow(OpenUnnamedFile(store->root() + "/containers/" + record.id));
    OrThrow(store->Diff(record.layer, tar.get()));
    if (::lseek(tar.get(), 0, SEEK_SET) != 0)
      throw CommandError(FailErrno("rewind").error().message());
    store::LayerInfo layer = OrThrow(store->ApplyLayer(record.image_layers.back(), tar.get()));
    auto remove_new = Defer([&] { (void)store->RemoveLayer(layer.id); });

    store::ImageStore images(*store);
    store::Image image;
    if (auto base = images.Get(record.image)) image.config = base->config;
    image.name = image_name;
    image.layers = record.image_layers;
    image.layers.push_back(layer.id);
    image.created = store::NowRfc3339();
    OrThrow(images.Put(image));
    remove_new.Dismiss();
    std::cout << layer.id << "\n";
  });
}

}  // namespace

void AddRunCommands(CLI::App& app, GlobalOptions& global) {
  static RunArgs run_args;
  static std::vector<std::string> rm_names, commit_args;
  AddRun(app, global, run_args);
  AddPs(app, global);
  AddRm(app, global, rm_names);
  AddCommit(app, global, commit_args);
}

}  // namespace lamina::cli
