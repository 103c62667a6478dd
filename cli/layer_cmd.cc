// `lamina layer ...`: create, remove, list, inspect, mount, apply and export
// layers of the store.

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/common.h"
#include "common/fd.h"
#include "common/scope_guard.h"
#include "store/store.h"

namespace lamina::cli {

namespace {

void PrintTable(const std::vector<store::LayerInfo>& layers) {
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"ID", "PARENT", "CREATED", "SIZE", "WRITABLE", "DIFF ID"});
  for (const auto& layer : layers) {
    std::string diff_id = layer.diff_id.empty() ? "-" : layer.diff_id.substr(0, 19);
    rows.push_back({layer.id, layer.parent.empty() ? "-" : layer.parent,
                    layer.created.substr(0, 19) + "Z", HumanSize(layer.size),
                    layer.writable ? "yes" : "no", diff_id});
  }
  PrintColumns(rows);
}

// Options of the layer subcommands; they live as long as the app.
struct LayerArgs {
  std::string parent;
  std::string id;
  bool writable = false;
  bool read_only = false;
  std::vector<std::string> ids;
  std::string tar;
  std::string output;
};

void AddCreate(CLI::App& layer, GlobalOptions& global, LayerArgs& args) {
  CLI::App* cmd = layer.add_subcommand("create", "create an empty layer; prints its id");
  cmd->add_option("--parent", args.parent, "the layer below (default: a base layer)");
  cmd->add_flag("--writable", args.writable, "a writable (container) layer");
  cmd->add_option("--id", args.id, "the id (default: 64 random hex digits)");
  cmd->callback([&global, &args] {
    auto store = OpenStore(global);
    std::cout << OrThrow(store->CreateLayer(args.parent, args.writable, args.id)) << "\n";
  });
}

void AddRemove(CLI::App& layer, GlobalOptions& global, LayerArgs& args) {
  CLI::App* cmd = layer.add_subcommand("rm", "remove layers");
  cmd->add_option("ID", args.ids, "layer ids")->required();
  cmd->callback([&global, &args] {
    auto store = OpenStore(global);
    Failures failures;
    for (const auto& id : args.ids) {
      auto removed = store->RemoveLayer(id);
      if (!removed) failures.Add(store::Describe(removed.error()));
    }
    failures.ThrowIfAny();
  });
}

void AddList(CLI::App& layer, GlobalOptions& global) {
  CLI::App* cmd = layer.add_subcommand("ls", "list the layers");
  cmd->add_flag("--json", global.json, "print JSON for programs");
  cmd->callback([&global] {
    auto store = OpenStore(global);
    auto layers = OrThrow(store->ListLayers());
    if (global.json) {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& l : layers) out.push_back(store::LayerInfoJson(l));
      std::cout << out.dump(2) << "\n";
    } else {
      PrintTable(layers);
    }
  });
}

void AddInspect(CLI::App& layer, GlobalOptions& global, LayerArgs& args) {
  CLI::App* cmd = layer.add_subcommand("inspect", "show a layer's metadata as JSON");
  cmd->add_option("ID", args.id, "layer id")->required();
  cmd->callback([&global, &args] {
    auto store = OpenStore(global);
    auto info = OrThrow(store->GetLayer(args.id));
    nlohmann::json out = store::LayerInfoJson(info);
    if (auto mounts = store->MountCount(args.id)) out["mounts"] = *mounts;
    std::cout << out.dump(2) << "\n";
  });
}

void AddMount(CLI::App& layer, GlobalOptions& global, LayerArgs& args) {
  CLI::App* mount = layer.add_subcommand("mount", "mount a layer's stack; prints the merged path");
  mount->add_option("ID", args.id, "layer id")->required();
  mount->add_flag("--read-only", args.read_only, "mount read-only");
  mount->callback([&global, &args] {
    auto store = OpenStore(global);
    MountOptions options;
    options.read_only = args.read_only;
    std::cout << OrThrow(store->Mount(args.id, options)) << "\n";
  });
  CLI::App* umount = layer.add_subcommand("umount", "drop one mount reference of a layer");
  umount->add_option("ID", args.id, "layer id")->required();
  umount->callback([&global, &args] {
    auto store = OpenStore(global);
    OrThrow(store->Unmount(args.id));
  });
}

void AddApply(CLI::App& layer, GlobalOptions& global, LayerArgs& args) {
  CLI::App* cmd = layer.add_subcommand(
      "apply", "create a layer from an OCI layer tar (plain, gzip or zstd); prints its id");
  cmd->add_option("--parent", args.parent, "the layer below (default: a base layer)");
  cmd->add_option("--id", args.id, "the id (default: 64 random hex digits)");
  cmd->add_option("TAR", args.tar, "the tar file, or - for standard input")->required();
  cmd->callback([&global, &args] {
    Fd file;
    int fd = STDIN_FILENO;
    if (args.tar != "-") {
      file = OrThrow(Open(args.tar, O_RDONLY));
      fd = file.get();
    }
    auto store = OpenStore(global);
    std::cout << OrThrow(store->ApplyLayer(args.parent, fd, args.id)).id << "\n";
  });
}

void AddDiff(CLI::App& layer, GlobalOptions& global, LayerArgs& args) {
  CLI::App* cmd = layer.add_subcommand(
      "diff", "write a layer's OCI layer tar (against its parent) to stdout or a file");
  cmd->add_option("ID", args.id, "layer id")->required();
  cmd->add_option("-o,--output", args.output, "write the tar to this file");
  cmd->callback([&global, &args] {
    if (args.output.empty() && ::isatty(STDOUT_FILENO)) {
      throw CommandError("refusing to write a tar to a terminal; use -o FILE or a pipe", 2);
    }
    auto store = OpenStore(global);
    OrThrow(store->GetLayer(args.id));
    if (args.output.empty()) {
      OrThrow(store->Diff(args.id, STDOUT_FILENO));
      return;
    }
    Fd out = OrThrow(Open(args.output, O_WRONLY | O_CREAT | O_TRUNC, 0644));
    auto remove_partial = Defer([&] { ::unlink(args.output.c_str()); });
    OrThrow(store->Diff(args.id, out.get()));
    if (::fsync(out.get()) != 0) {
      throw CommandError("write " + args.output + ": " + std::strerror(errno));
    }
    remove_partial.Dismiss();
  });
}

void AddChanges(CLI::App& layer, GlobalOptions& global, LayerArgs& args) {
  CLI::App* cmd = layer.add_subcommand(
      "changes", "list paths added (A), changed (C) or deleted (D) against the parent");
  cmd->add_option("ID", args.id, "layer id")->required();
  cmd->callback([&global, &args] {
    auto store = OpenStore(global);
    for (const auto& change : OrThrow(store->Changes(args.id))) {
      std::cout << ChangeKindName(change.kind) << " " << change.path << "\n";
    }
  });
}

}  // namespace

void AddLayerCommands(CLI::App& app, GlobalOptions& global) {
  static LayerArgs args;  // bound to the options; lives as long as the app
  CLI::App* layer = app.add_subcommand("layer", "manage the layers of the store");
  layer->require_subcommand(1);
  AddCreate(*layer, global, args);
  AddRemove(*layer, global, args);
  AddList(*layer, global);
  AddInspect(*layer, global, args);
  AddMount(*layer, global, args);
  AddApply(*layer, global, args);
  AddDiff(*layer, global, args);
  AddChanges(*layer, global, args);
}

}  // namespace lamina::cli
