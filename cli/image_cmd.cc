// `lamina image ...`: import, list, inspect, remove and export images, and
// make the built-in busybox image.

#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/common.h"
#include "store/image_export.h"
#include "store/image_import.h"
#include "store/images.h"
#include "store/store.h"

namespace lamina::cli {

namespace {

// "image x:latest: not found" / "...: already exists", else the store's text.
std::string DescribeImageError(const Error& error) {
  const std::string& context = error.context();
  bool about_image = context.starts_with("image ") && context.find(": ") == std::string::npos;
  if (about_image && error.code() == ENOENT) return context + ": not found";
  if (about_image && error.code() == EEXIST) return context + ": already exists";
  return store::Describe(error);
}

template <class T>
T Check(Result<T>&& result) {
  return OrThrow(std::move(result), 1, &DescribeImageError);
}

std::unique_ptr<store::Store> OpenImageStore(const GlobalOptions& global) {
  return OpenStore(global, 1, &DescribeImageError);
}

std::string Megabytes(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MB", static_cast<double>(bytes) / 1e6);
  return buf;
}

// The image's layers with their metadata, and their total size.
struct LayerFacts {
  std::vector<store::LayerInfo> layers;
  uint64_t size = 0;
};
LayerFacts Facts(store::Store& store, const store::Image& image) {
  LayerFacts facts;
  for (const auto& id : image.layers) {
    if (auto layer = store.GetLayer(id)) {
      facts.size += layer->size;
      facts.layers.push_back(*layer);
    }
  }
  return facts;
}

struct ImageArgs {
  std::string path;
  std::string name;
  std::string ref;
  std::string format = "auto";
  bool replace = false;
  std::vector<std::string> names;
  std::string dir;
};

void AddImport(CLI::App& image, GlobalOptions& global, ImageArgs& args) {
  CLI::App* cmd = image.add_subcommand(
      "import",
      "import an OCI image layout (directory or tar), a docker save archive or a rootfs tarball "
      "(plain, gzip, zstd); prints the image name");
  cmd->add_option("--name", args.name, "the image name (default: from the input)");
  cmd->add_option("--ref", args.ref,
                  "which image of a layout or archive holding several (ref.name or tag)");
  cmd->add_option("--format", args.format, "auto, oci, docker or rootfs (default: auto)");
  cmd->add_flag("--replace", args.replace, "replace an image of the same name");
  cmd->add_flag("--json", global.json, "print what was imported as JSON");
  cmd->add_option("PATH", args.path, "the layout directory or the archive")->required();
  cmd->callback([&global, &args] {
    store::ImportOptions options;
    options.path = args.path;
    options.format = Check(store::ParseImportFormat(args.format));
    options.name = args.name;
    options.ref = args.ref;
    options.replace = args.replace;
    auto store = OpenImageStore(global);
    store::ImageStore images(*store);
    auto report = Check(store::ImportImage(images, options));
    if (global.json) {
      nlohmann::json out = store::ImageJson(report.image);
      out["applied"] = report.applied;
      out["reused"] = report.reused;
      std::cout << out.dump(2) << "\n";
    } else {
      std::cout << report.image.name << "\n";
    }
  });
}

void AddList(CLI::App& image, GlobalOptions& global) {
  CLI::App* cmd = image.add_subcommand("ls", "list the images");
  cmd->add_flag("--json", global.json, "print JSON for programs");
  cmd->callback([&global] {
    auto store = OpenImageStore(global);
    store::ImageStore images(*store);
    auto list = Check(images.List());
    if (global.json) {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& i : list) {
        nlohmann::json j = store::ImageJson(i);
        j["size"] = Facts(*store, i).size;
        out.push_back(j);
      }
      std::cout << out.dump(2) << "\n";
      return;
    }
    std::vector<std::vector<std::string>> rows = {
        {"NAME", "LAYERS", "SIZE", "CREATED", "SOURCE", "TOP LAYER"}};
    for (const auto& i : list) {
      rows.push_back({i.name, std::to_string(i.layers.size()), Megabytes(Facts(*store, i).size),
                      i.created.substr(0, 19), i.source.empty() ? "-" : i.source,
                      i.layers.empty() ? "-" : i.layers.back().substr(0, 12)});
    }
    PrintColumns(rows);
  });
}

void AddInspect(CLI::App& image, GlobalOptions& global, ImageArgs& args) {
  CLI::App* cmd = image.add_subcommand("inspect", "show an image as JSON");
  cmd->add_option("NAME", args.name, "image name")->required();
  cmd->callback([&global, &args] {
    auto store = OpenImageStore(global);
    store::ImageStore images(*store);
    auto image = Check(images.Get(args.name));
    nlohmann::json out = store::ImageJson(image);
    LayerFacts facts = Facts(*store, image);
    nlohmann::json details = nlohmann::json::array();
    for (const auto& layer : facts.layers) details.push_back(store::LayerInfoJson(layer));
    out["layer_details"] = details;
    out["size"] = facts.size;
    std::cout << out.dump(2) << "\n";
  });
}

void AddRemove(CLI::App& image, GlobalOptions& global, ImageArgs& args) {
  CLI::App* cmd = image.add_subcommand(
      "rm", "remove images (and their layers that no other image or container uses)");
  cmd->add_option("NAME", args.names, "image names")->required();
  cmd->callback([&global, &args] {
    auto store = OpenImageStore(global);
    store::ImageStore images(*store);
    Failures failures;
    for (const auto& name : args.names) {
      auto removed = images.Remove(name);
      if (!removed) failures.Add(DescribeImageError(removed.error()));
    }
    failures.ThrowIfAny();
  });
}

void AddExport(CLI::App& image, GlobalOptions& global, ImageArgs& args) {
  CLI::App* cmd = image.add_subcommand(
      "export",
      "write an image as an OCI image layout (new, empty or existing directory); "
      "prints the manifest digest");
  cmd->add_option("--ref", args.ref, "ref.name in index.json (default: the name's tag)");
  cmd->add_option("NAME", args.name, "image name")->required();
  cmd->add_option("DIR", args.dir, "the layout directory")->required();
  cmd->callback([&global, &args] {
    auto store = OpenImageStore(global);
    store::ImageStore images(*store);
    store::ExportOptions options;
    options.ref = args.ref;
    auto report = Check(store::ExportImage(images, args.name, args.dir, options));
    if (global.json) {
      nlohmann::json out = {{"name", report.name},
                            {"ref", report.ref},
                            {"manifest_digest", report.manifest_digest},
                            {"bytes", report.bytes}};
      std::cout << out.dump(2) << "\n";
    } else {
      std::cout << report.manifest_digest << "\n";
    }
  });
}

void AddBusybox(CLI::App& image, GlobalOptions& global) {
  CLI::App* cmd = image.add_subcommand(
      "busybox",
      "make the built-in busybox image from the host's busybox-static if it is "
      "not there yet; prints its name");
  cmd->callback([&global] {
    auto store = OpenImageStore(global);
    store::ImageStore images(*store);
    std::cout << Check(images.EnsureBusybox()).name << "\n";
  });
}

}  // namespace

void AddImageCommands(CLI::App& app, GlobalOptions& global) {
  static ImageArgs args;  // bound to the options; lives as long as the app
  CLI::App* image = app.add_subcommand("image", "manage images (stacks of layers plus a config)");
  image->require_subcommand(1);
  AddImport(*image, global, args);
  AddList(*image, global);
  AddInspect(*image, global, args);
  AddRemove(*image, global, args);
  AddExport(*image, global, args);
  AddBusybox(*image, global);
}

}  // namespace lamina::cli
