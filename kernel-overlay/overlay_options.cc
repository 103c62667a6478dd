#include "kernel-overlay/overlay_options.h"

namespace lamina::overlay {

std::string_view MountApiName(MountApi api) {
  switch (api) {
    case MountApi::kAuto:
      return "auto";
    case MountApi::kNew:
      return "new";
    case MountApi::kLegacy:
      return "legacy";
  }
  return "?";
}

Result<MountApi> ParseMountApi(std::string_view value) {
  if (value == "auto") return MountApi::kAuto;
  if (value == "new") return MountApi::kNew;
  if (value == "legacy") return MountApi::kLegacy;
  return Fail(EINVAL, "bad overlay mount API '" + std::string(value) + "' (auto, new or legacy)");
}

static Result<bool> ParseOnOff(std::string_view item, std::string_view value) {
  if (value == "on" || value == "true" || value == "1") return true;
  if (value == "off" || value == "false" || value == "0") return false;
  return Fail(EINVAL, "bad option '" + std::string(item) + "' (on or off)");
}

Result<OverlayOptions> ParseOverlayOptions(const std::vector<std::string>& options,
                                           std::string_view env_mount_api) {
  constexpr std::string_view kPrefix = "overlay.";
  OverlayOptions parsed;
  for (const auto& item : options) {
    if (!item.starts_with(kPrefix)) continue;
    auto eq = item.find('=');
    if (eq == std::string::npos) {
      return Fail(EINVAL, "bad option '" + item + "' (expected overlay.KEY=VALUE)");
    }
    std::string_view key = std::string_view(item).substr(kPrefix.size(), eq - kPrefix.size());
    std::string_view value = std::string_view(item).substr(eq + 1);
    if (key == "mount_api") {
      auto api = ParseMountApi(value);
      if (!api) return Fail(api.error().Wrap("option " + item));
      parsed.mount_api = *api;
    } else if (key == "redirect_dir") {
      parsed.redirect_dir = LAMINA_TRY(ParseOnOff(item, value));
    } else {
      return Fail(EINVAL, "unknown option '" + item + "' (overlay.mount_api, overlay.redirect_dir)");
    }
  }
  if (!env_mount_api.empty()) {
    auto api = ParseMountApi(env_mount_api);
    if (!api) return Fail(api.error().Wrap("LAMINA_OVERLAY_MOUNT_API"));
    parsed.mount_api = *api;
  }
  return parsed;
}

}  // namespace lamina::overlay
