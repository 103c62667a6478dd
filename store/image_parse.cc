#include "store/image_parse.h"

#include "store/image_oci.h"

namespace lamina::store::oci {

namespace {

using nlohmann::json;

Result<std::vector<std::string>> JsonStrings(const json& j, const char* key,
                                             const std::string& what) {
  std::vector<std::string> out;
  if (!j.contains(key) || j[key].is_null()) return out;
  if (!j[key].is_array()) return Fail(EINVAL, what + ": " + key + " is not an array");
  for (const auto& item : j[key]) {
    if (!item.is_string()) return Fail(EINVAL, what + ": " + key + " holds a non-string");
    out.push_back(item.get<std::string>());
  }
  return out;
}

Result<std::string> JsonString(const json& j, const char* key, const std::string& what) {
  if (!j.contains(key) || j[key].is_null()) return std::string();
  if (!j[key].is_string()) return Fail(EINVAL, what + ": " + key + " is not a string");
  return j[key].get<std::string>();
}

}  // namespace

Result<json> ParseJson(const std::string& text, const std::string& what) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Fail(EINVAL, what + ": not valid JSON");
  return j;
}

Result<Descriptor> ParseDescriptor(const json& j, const std::string& what) {
  if (!j.is_object()) return Fail(EINVAL, what + ": not an object");
  Descriptor d;
  if (j.contains("mediaType")) {
    if (!j["mediaType"].is_string()) return Fail(EINVAL, what + ": mediaType is not a string");
    d.media_type = j["mediaType"].get<std::string>();
  }
  if (!j.contains("digest") || !j["digest"].is_string()) {
    return Fail(EINVAL, what + ": no digest");
  }
  d.digest = j["digest"].get<std::string>();
  auto hex = DigestHex(d.digest);
  if (!hex) return Fail(hex.error().Wrap(what));
  if (!j.contains("size") || !j["size"].is_number_unsigned()) {
    return Fail(EINVAL, what + ": size missing or not a non-negative integer");
  }
  d.size = j["size"].get<uint64_t>();
  if (j.contains("annotations") && j["annotations"].is_object()) {
    for (const auto& [key, value] : j["annotations"].items()) {
      if (value.is_string()) d.annotations[key] = value.get<std::string>();
    }
  }
  if (j.contains("platform") && j["platform"].is_object()) {
    const json& p = j["platform"];
    if (p.contains("os") && p["os"].is_string()) d.os = p["os"].get<std::string>();
    if (p.contains("architecture") && p["architecture"].is_string()) {
      d.architecture = p["architecture"].get<std::string>();
    }
    if (p.contains("variant") && p["variant"].is_string())
      d.variant = p["variant"].get<std::string>();
  }
  return d;
}

Result<std::vector<Descriptor>> ParseIndex(const json& index, const std::string& what,
                                           bool non_empty) {
  if (!index.is_object() || !index.contains("manifests") || !index["manifests"].is_array()) {
    return Fail(EINVAL, what + ": no manifests array");
  }
  std::vector<Descriptor> entries;
  for (const auto& item : index["manifests"]) {
    entries.push_back(LAMINA_TRY(
        ParseDescriptor(item, what + " manifests[" + std::to_string(entries.size()) + "]")));
  }
  if (non_empty && entries.empty()) return Fail(EINVAL, what + ": lists no image");
  return entries;
}

Result<Descriptor> PickPlatform(const json& index, const std::string& what) {
  std::vector<Descriptor> entries = LAMINA_TRY(ParseIndex(index, what, /*non_empty=*/false));
  std::string arch = HostArchitecture();
  std::string list;
  for (const auto& d : entries) {
    if (d.os == "linux" && d.architecture == arch) return d;
    list += (list.empty() ? "" : ", ") + d.os + "/" + d.architecture;
  }
  return Fail(ENOTSUP, what + ": no linux/" + arch + " image (it has: " + list + ")");
}

Result<Manifest> ParseManifest(const json& manifest, const std::string& what) {
  if (!manifest.is_object()) return Fail(EINVAL, what + ": not an object");
  if (manifest.contains("manifests")) {
    return Fail(EINVAL, what + ": an index where a manifest was expected");
  }
  if (!manifest.contains("config")) return Fail(EINVAL, what + ": no config");
  Manifest out;
  out.config = LAMINA_TRY(ParseDescriptor(manifest["config"], what + " config"));
  if (!manifest.contains("layers") || !manifest["layers"].is_array()) {
    return Fail(EINVAL, what + ": no layers array");
  }
  for (const auto& item : manifest["layers"]) {
    std::string lwhat = what + " layer " + std::to_string(out.layers.size() + 1);
    Descriptor d = LAMINA_TRY(ParseDescriptor(item, lwhat));
    if (!IsLayerMediaType(d.media_type)) {
      return Fail(ENOTSUP,
                  lwhat + ": media type \"" + d.media_type + "\" is not a layer lamina reads");
    }
    out.layers.push_back(std::move(d));
  }
  return out;
}

Result<ParsedConfig> ParseImageConfig(const json& j, const std::string& what) {
  if (!j.is_object()) return Fail(EINVAL, what + ": not an object");
  ParsedConfig out;
  out.created = LAMINA_TRY(JsonString(j, "created", what));
  std::string os = LAMINA_TRY(JsonString(j, "os", what));
  if (!os.empty() && os != "linux") return Fail(ENOTSUP, what + ": an image for " + os);
  if (j.contains("config") && !j["config"].is_null()) {
    const json& c = j["config"];
    if (!c.is_object()) return Fail(EINVAL, what + ": config is not an object");
    out.config.entrypoint = LAMINA_TRY(JsonStrings(c, "Entrypoint", what));
    out.config.cmd = LAMINA_TRY(JsonStrings(c, "Cmd", what));
    out.config.env = LAMINA_TRY(JsonStrings(c, "Env", what));
    out.config.working_dir = LAMINA_TRY(JsonString(c, "WorkingDir", what));
    out.config.user = LAMINA_TRY(JsonString(c, "User", what));
    out.config.hostname = LAMINA_TRY(JsonString(c, "Hostname", what));
  }
  if (!j.contains("rootfs") || !j["rootfs"].is_object()) return Fail(EINVAL, what + ": no rootfs");
  const json& rootfs = j["rootfs"];
  std::string type = LAMINA_TRY(JsonString(rootfs, "type", what));
  if (type != "layers") return Fail(EINVAL, what + ": rootfs.type is \"" + type + "\", not layers");
  out.diff_ids = LAMINA_TRY(JsonStrings(rootfs, "diff_ids", what));
  for (const auto& id : out.diff_ids) {
    auto hex = DigestHex(id);
    if (!hex) return Fail(hex.error().Wrap(what + ": rootfs.diff_ids"));
  }
  return out;
}

Result<std::vector<DockerEntry>> ParseDockerManifest(const json& manifest,
                                                     const std::string& what) {
  if (!manifest.is_array() || manifest.empty()) {
    return Fail(EINVAL, what + ": not a non-empty array");
  }
  std::vector<DockerEntry> out;
  for (const auto& entry : manifest) {
    if (!entry.is_object()) return Fail(EINVAL, what + ": an entry is not an object");
    DockerEntry e;
    e.repo_tags = LAMINA_TRY(JsonStrings(entry, "RepoTags", what));
    e.config = LAMINA_TRY(JsonString(entry, "Config", what));
    e.layers = LAMINA_TRY(JsonStrings(entry, "Layers", what));
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace lamina::store::oci
