#include "store/metadata.h"

#include <ctime>

namespace lamina::store {

namespace {

using nlohmann::json;

// Fetches a typed member; EINVAL naming the key when missing or mistyped.
template <class T>
Result<T> Member(const json& j, const char* key, std::string_view what) {
  auto it = j.find(key);
  if (it == j.end()) return Fail(EINVAL, std::string(what) + ": missing \"" + key + "\"");
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    return Fail(EINVAL, std::string(what) + ": \"" + key + "\" has the wrong type");
  }
}

Result<json> ParseObject(std::string_view text, std::string_view what) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Fail(EINVAL, std::string(what) + ": not a JSON object");
  }
  return j;
}

}  // namespace

Result<StoreConfig> ParseStoreConfig(std::string_view text) {
  constexpr std::string_view kWhat = "store.json";
  json j = LAMINA_TRY(ParseObject(text, kWhat));
  StoreConfig config;
  config.version = LAMINA_TRY(Member<int>(j, "version", kWhat));
  if (config.version != kStoreFormatVersion) {
    return Fail(EINVAL, "store.json: format version " + std::to_string(config.version) +
                            " is not supported (this lamina reads version " +
                            std::to_string(kStoreFormatVersion) + ")");
  }
  config.driver = LAMINA_TRY(Member<std::string>(j, "driver", kWhat));
  auto ns = LAMINA_TRY(Member<std::string>(j, "xattr_namespace", kWhat));
  auto parsed = ParseXattrNamespace(ns);
  if (!parsed) return Fail(EINVAL, "store.json: bad xattr_namespace '" + ns + "'");
  config.xattr_ns = *parsed;
  return config;
}

std::string FormatStoreConfig(const StoreConfig& config) {
  json j = json::object();
  j["version"] = config.version;
  j["driver"] = config.driver;
  j["xattr_namespace"] = std::string(XattrNamespaceName(config.xattr_ns));
  return j.dump(2) + "\n";
}

std::string_view LayerStateName(LayerState state) {
  return state == LayerState::kReady ? "ready" : "incomplete";
}

Result<LayerState> ParseLayerState(std::string_view name) {
  if (name == "ready") return LayerState::kReady;
  if (name == "incomplete") return LayerState::kIncomplete;
  return Fail(EINVAL, "bad layer state '" + std::string(name) + "'");
}

Result<LayerInfo> ParseLayerInfo(std::string_view text) {
  constexpr std::string_view kWhat = "layer.json";
  json j = LAMINA_TRY(ParseObject(text, kWhat));
  LayerInfo layer;
  layer.id = LAMINA_TRY(Member<std::string>(j, "id", kWhat));
  layer.parent = LAMINA_TRY(Member<std::string>(j, "parent", kWhat));
  layer.created = LAMINA_TRY(Member<std::string>(j, "created", kWhat));
  layer.writable = LAMINA_TRY(Member<bool>(j, "writable", kWhat));
  layer.size = LAMINA_TRY(Member<uint64_t>(j, "size", kWhat));
  if (!j["size"].is_number_unsigned()) return Fail(EINVAL, "layer.json: \"size\" is negative");
  layer.diff_id = LAMINA_TRY(Member<std::string>(j, "diff_id", kWhat));
  auto state = LAMINA_TRY(Member<std::string>(j, "state", kWhat));
  layer.state = LAMINA_TRY(ParseLayerState(state));
  return layer;
}

json LayerInfoJson(const LayerInfo& layer) {
  json j = json::object();
  j["id"] = layer.id;
  j["parent"] = layer.parent;
  j["created"] = layer.created;
  j["writable"] = layer.writable;
  j["size"] = layer.size;
  j["diff_id"] = layer.diff_id;
  j["state"] = std::string(LayerStateName(layer.state));
  return j;
}

std::string FormatLayerInfo(const LayerInfo& layer) { return LayerInfoJson(layer).dump(2) + "\n"; }

std::string NowRfc3339() {
  struct timespec ts;
  ::clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  ::gmtime_r(&ts.tv_sec, &tm);
  char buf[64];
  size_t n = std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof(buf) - n, ".%09ldZ", ts.tv_nsec);
  return buf;
}

}  // namespace lamina::store
