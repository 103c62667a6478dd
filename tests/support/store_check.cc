#include "tests/support/store_check.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/support/test_util.h"

namespace lamina::test {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

json ReadJson(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
}

void CheckNoTempFiles(const fs::path& dir, std::vector<std::string>& problems) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    std::string name = entry.path().filename().string();
    if (name.starts_with(".") && name.find(".tmp-") != std::string::npos) {
      problems.push_back("temporary file left: " + entry.path().string());
    }
  }
}

}  // namespace

std::vector<std::string> StoreProblems(const std::string& root) {
  std::vector<std::string> problems;
  fs::path layers = fs::path(root) / "layers";
  std::error_code ec;
  std::map<std::string, json> ready;
  CheckNoTempFiles(root, problems);
  CheckNoTempFiles(layers, problems);
  for (const auto& entry : fs::directory_iterator(layers, ec)) {
    std::string id = entry.path().filename().string();
    if (id.starts_with(".") && id.find(".tmp-") != std::string::npos) continue;  // reported
    if (!entry.is_directory()) {
      problems.push_back("layers/" + id + " is not a directory");
      continue;
    }
    CheckNoTempFiles(entry.path(), problems);
    json layer = ReadJson(entry.path() / "layer.json");
    if (layer.is_discarded() || !layer.is_object()) {
      problems.push_back("layer " + id + ": no readable layer.json (a half-made layer)");
      continue;
    }
    if (layer.value("state", "") != "ready") {
      problems.push_back("layer " + id + ": state " + layer.value("state", "?"));
      continue;
    }
    if (layer.value("id", "") != id)
      problems.push_back("layer " + id + ": layer.json names another id");
    if (!fs::is_directory(entry.path() / "diff")) problems.push_back("layer " + id + ": no diff/");
    ready[id] = layer;
  }
  for (const auto& [id, layer] : ready) {
    std::string parent = layer.value("parent", "");
    if (!parent.empty() && !ready.contains(parent)) {
      problems.push_back("layer " + id + ": parent " + parent + " is not a ready layer");
    }
  }
  fs::path images = fs::path(root) / "images";
  CheckNoTempFiles(images, problems);
  for (const auto& entry : fs::directory_iterator(images, ec)) {
    std::string name = entry.path().filename().string();
    if (name.starts_with(".") || !name.ends_with(".json")) continue;
    json image = ReadJson(entry.path());
    if (image.is_discarded() || !image.contains("layers") || !image["layers"].is_array()) {
      problems.push_back("image record " + name + " is unreadable");
      continue;
    }
    std::string below;
    for (const auto& l : image["layers"]) {
      std::string id = l.is_string() ? l.get<std::string>() : "";
      if (!ready.contains(id)) {
        problems.push_back("image " + name + ": layer " + id + " is not a ready layer");
      } else if (ready[id].value("parent", "") != below) {
        problems.push_back("image " + name + ": layer " + id + " is not on " + below);
      }
      below = id;
    }
  }
  fs::path containers = fs::path(root) / "containers";
  for (const auto& entry : fs::directory_iterator(containers, ec)) {
    if (!entry.is_directory()) continue;
    CheckNoTempFiles(entry.path(), problems);
    json record = ReadJson(entry.path() / "container.json");
    if (record.is_discarded()) {
      problems.push_back("container " + entry.path().filename().string() + ": no record");
      continue;
    }
    std::string layer = record.value("layer", "");
    if (!ready.contains(layer)) {
      problems.push_back("container " + entry.path().filename().string() + ": layer " + layer +
                         " is not a ready layer");
    }
  }
  return problems;
}

std::vector<std::string> StoreLayerIds(const std::string& root) {
  std::vector<std::string> ids;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(fs::path(root) / "layers", ec)) {
    json layer = ReadJson(entry.path() / "layer.json");
    if (layer.is_object() && layer.value("state", "") == "ready") {
      ids.push_back(entry.path().filename().string());
    }
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::string DriverUnusable(const std::string& driver, const std::string& probe_root) {
  CommandResult info = RunLamina({"--root", probe_root, "info", "--json"});
  json j = json::parse(info.out, nullptr, /*allow_exceptions=*/false);
  if (info.status != 0 || !j.is_object()) return "lamina info failed: " + info.err;
  for (const auto& d : j["drivers"]) {
    if (d.value("name", "") != driver) continue;
    return d.value("usable", false) ? "" : d.value("reason", std::string("not usable"));
  }
  return "no driver " + driver;
}

}  // namespace lamina::test
