#include "kernel-overlay/overlay_options.h"

#include <gtest/gtest.h>

#include "kernel-overlay/overlay_mount.h"

namespace lamina::overlay {
namespace {

TEST(OverlayOptions, DefaultsAreAutoAndRedirectOn) {
  auto parsed = ParseOverlayOptions({});
  ASSERT_TRUE(parsed) << parsed.error().message();
  EXPECT_EQ(parsed->mount_api, MountApi::kAuto);
  EXPECT_TRUE(parsed->redirect_dir);
}

TEST(OverlayOptions, ParsesOwnKeysAndSkipsOthers) {
  auto parsed = ParseOverlayOptions(
      {"vfs.copy=reflink", "overlay.mount_api=legacy", "overlay.redirect_dir=off"});
  ASSERT_TRUE(parsed) << parsed.error().message();
  EXPECT_EQ(parsed->mount_api, MountApi::kLegacy);
  EXPECT_FALSE(parsed->redirect_dir);
}

TEST(OverlayOptions, EnvironmentWins) {
  auto parsed = ParseOverlayOptions({"overlay.mount_api=new"}, "legacy");
  ASSERT_TRUE(parsed) << parsed.error().message();
  EXPECT_EQ(parsed->mount_api, MountApi::kLegacy);
}

TEST(OverlayOptions, BadInputIsEinvalNamingTheItem) {
  for (const auto& bad : std::vector<std::vector<std::string>>{
           {"overlay.mount_api=fast"},
           {"overlay.mount_api"},
           {"overlay.redirect_dir=maybe"},
           {"overlay.bogus=1"}}) {
    auto parsed = ParseOverlayOptions(bad);
    ASSERT_FALSE(parsed) << bad[0];
    EXPECT_EQ(parsed.error().code(), EINVAL);
    EXPECT_NE(parsed.error().message().find(bad[0]), std::string::npos)
        << parsed.error().message();
  }
  auto env = ParseOverlayOptions({}, "sideways");
  ASSERT_FALSE(env);
  EXPECT_EQ(env.error().code(), EINVAL);
  EXPECT_NE(env.error().message().find("LAMINA_OVERLAY_MOUNT_API"), std::string::npos);
}

TEST(OverlayOptions, MountApiNamesRoundTrip) {
  for (auto api : {MountApi::kAuto, MountApi::kNew, MountApi::kLegacy}) {
    auto parsed = ParseMountApi(MountApiName(api));
    ASSERT_TRUE(parsed);
    EXPECT_EQ(*parsed, api);
  }
}

TEST(OverlayLegacyData, BuildsOptionStringAndRefusesOverOnePage) {
  OverlaySpec spec;
  spec.lowers = {"l/A", "l/B"};
  spec.upper = "x/diff";
  spec.work = "x/work";
  spec.redirect_dir = true;
  auto data = LegacyMountData(spec);
  ASSERT_TRUE(data) << data.error().message();
  EXPECT_EQ(*data, "lowerdir=l/A:l/B,upperdir=x/diff,workdir=x/work,redirect_dir=on,index=off,"
                   "metacopy=off");
  spec.userxattr = true;
  spec.redirect_dir = false;
  EXPECT_EQ(*LegacyMountData(spec), "lowerdir=l/A:l/B,upperdir=x/diff,workdir=x/work,userxattr");

  spec.lowers.assign(200, "l/ABCDEFGHIJKLMNOPQRSTUVWXYZ");
  auto big = LegacyMountData(spec);
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code(), E2BIG);
  EXPECT_NE(big.error().message().find("200 layers"), std::string::npos) << big.error().message();

  spec.lowers.clear();
  EXPECT_EQ(LegacyMountData(spec).error().code(), EINVAL);
}

}  // namespace
}  // namespace lamina::overlay
