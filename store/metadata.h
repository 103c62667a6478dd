#pragma once

// The store's metadata files and their JSON form.
//
//   <root>/store.json          {"version": 1, "driver": "vfs", "xattr_namespace": "trusted"}
//   <root>/layers/<id>/layer.json
//     {"id", "parent", "created" (RFC 3339 UTC), "writable", "size",
//      "diff_id" ("sha256:<hex>" when the layer came from a tar, else ""),
//      "state" ("incomplete" | "ready")}
//
// Parsers are strict about types and known values and return EINVAL with
// what is wrong; unknown keys are ignored so that newer versions can add some.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/result.h"
#include "drivers/driver.h"

namespace lamina::store {

inline constexpr int kStoreFormatVersion = 1;

struct StoreConfig {
  int version = kStoreFormatVersion;
  std::string driver;
  XattrNamespace xattr_ns = XattrNamespace::kTrusted;
  bool operator==(const StoreConfig&) const = default;
};

Result<StoreConfig> ParseStoreConfig(std::string_view text);
std::string FormatStoreConfig(const StoreConfig& config);

enum class LayerState { kIncomplete, kReady };
std::string_view LayerStateName(LayerState state);  // "incomplete" / "ready"
Result<LayerState> ParseLayerState(std::string_view name);

struct LayerInfo {
  std::string id;
  std::string parent;   // "" for a base layer
  std::string created;  // RFC 3339, UTC, e.g. "2026-11-23T08:01:02.123456789Z"
  bool writable = false;
  uint64_t size = 0;    // bytes of the layer's own content (Driver::Usage)
  std::string diff_id;  // "sha256:<hex>" or ""
  LayerState state = LayerState::kIncomplete;
  bool operator==(const LayerInfo&) const = default;
};

Result<LayerInfo> ParseLayerInfo(std::string_view text);
// The JSON object of layer.json (also what `lamina layer inspect` shows).
nlohmann::json LayerInfoJson(const LayerInfo& layer);
// Pretty-printed LayerInfoJson with a trailing newline.
std::string FormatLayerInfo(const LayerInfo& layer);

// The current time as RFC 3339 UTC with nanoseconds.
std::string NowRfc3339();

}  // namespace lamina::store
