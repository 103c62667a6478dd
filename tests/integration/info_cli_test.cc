// `lamina info` end to end: text for people, JSON for programs.

#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/fs.h"
#include "drivers/select/registry.h"
#include "tests/support/test_util.h"

namespace lamina {
namespace {

using nlohmann::json;
using test::CommandResult;
using test::TempDir;

json InfoJson(const std::string& root, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> args = {"--root", root};
  args.insert(args.end(), extra.begin(), extra.end());
  args.push_back("info");
  args.push_back("--json");
  CommandResult r = test::RunLamina(args);
  EXPECT_EQ(r.status, 0) << r.err;
  json j = json::parse(r.out, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << r.out;
  return j;
}

TEST(InfoCli, TextNamesHostFactsEveryDriverAndTheChoice) {
  TempDir dir;
  CommandResult r = test::RunLamina({"--root", dir.Sub("store"), "info"});
  ASSERT_EQ(r.status, 0) << r.err;
  for (const char* want : {"Host:\n", "  euid: ", "  kernel: ", "  backing_fs: ", "  d_type: ",
                           "  dev_fuse: ", "  fusermount3: ", "  ficlone: ", "Store:\n",
                           "  root: ", "Drivers:\n", "Chosen driver: "}) {
    EXPECT_NE(r.out.find(want), std::string::npos) << "missing '" << want << "' in\n" << r.out;
  }
  EXPECT_NE(r.out.find("  euid: " + std::to_string(::geteuid()) + "\n"), std::string::npos);
  EXPECT_NE(r.out.find("  root: " + dir.Sub("store") + "\n"), std::string::npos);
  for (const auto& name : DriverNames()) {
    bool listed = r.out.find("  " + name + ": usable (") != std::string::npos ||
                  r.out.find("  " + name + ": not usable (") != std::string::npos;
    EXPECT_TRUE(listed) << name << " has no verdict in\n" << r.out;
  }
  // Info looks; it does not initialise the store.
  EXPECT_FALSE(PathExists(dir.Sub("store/store.json")));
}

TEST(InfoCli, JsonForPrograms) {
  TempDir dir;
  std::string root = dir.Sub("store");
  json j = InfoJson(root);
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j["host"]["euid"], ::geteuid());
  EXPECT_TRUE(j["host"]["in_user_namespace"].is_boolean());
  EXPECT_TRUE(j["host"]["kernel"].is_string());
  EXPECT_FALSE(j["host"]["kernel"].get<std::string>().empty());
  for (const char* key : {"d_type", "dev_fuse", "ficlone", "overlay_listed", "trusted_xattrs"}) {
    EXPECT_TRUE(j["host"][key].is_boolean()) << key;
  }
  EXPECT_TRUE(j["host"]["backing_fs"].is_string());

  ASSERT_TRUE(j["drivers"].is_array());
  ASSERT_EQ(j["drivers"].size(), DriverNames().size());
  std::vector<std::string> usable;
  for (size_t i = 0; i < DriverNames().size(); ++i) {
    const json& d = j["drivers"][i];
    EXPECT_EQ(d["name"], DriverNames()[i]);
    EXPECT_TRUE(d["usable"].is_boolean());
    EXPECT_TRUE(d["reason"].is_string());
    EXPECT_FALSE(d["reason"].get<std::string>().empty()) << d.dump();
    EXPECT_TRUE(d["features"].is_object());
    if (d["usable"] == true) usable.push_back(d["name"]);
  }
  EXPECT_FALSE(j["chosen"]["why"].get<std::string>().empty());
  if (usable.empty()) {
    EXPECT_TRUE(j["chosen"]["name"].is_null());
  } else {
    // Priority order: the first usable one.
    EXPECT_EQ(j["chosen"]["name"], usable.front());
  }
  EXPECT_EQ(j["store"]["root"], root);
  EXPECT_EQ(j["store"]["initialized"], false);
  EXPECT_EQ(j["store"]["layers"], 0);

  if (usable.empty()) GTEST_SKIP() << "no usable driver: store facts after first use untested";
  CommandResult created = test::RunLamina({"--root", root, "layer", "create", "--id", "one"});
  ASSERT_EQ(created.status, 0) << created.err;
  json after = InfoJson(root);
  EXPECT_EQ(after["store"]["initialized"], true);
  EXPECT_EQ(after["store"]["version"], 1);
  EXPECT_EQ(after["store"]["driver"], usable.front());
  EXPECT_EQ(after["store"]["layers"], 1);
  EXPECT_EQ(after["chosen"]["why"], "recorded in the store");
  bool trusted = ::geteuid() == 0 && after["host"]["in_user_namespace"] == false;
  EXPECT_EQ(after["store"]["xattr_namespace"], trusted ? "trusted" : "user");
  // --json before the subcommand works too.
  CommandResult global = test::RunLamina({"--root", root, "--json", "info"});
  ASSERT_EQ(global.status, 0);
  EXPECT_EQ(json::parse(global.out, nullptr, false)["store"], after["store"]);
}

TEST(InfoCli, RequestedDriver) {
  TempDir dir;
  std::string root = dir.Sub("store");
  json j = InfoJson(root, {"--driver", "vfs"});
  const json& vfs = j["drivers"][2];
  ASSERT_EQ(vfs["name"], "vfs");
  if (vfs["usable"] == true) {
    EXPECT_EQ(j["chosen"]["name"], "vfs");
    EXPECT_EQ(j["chosen"]["why"], "requested");
    EXPECT_TRUE(j["chosen"]["status"].is_object());
  } else {
    EXPECT_TRUE(j["chosen"]["name"].is_null());
    EXPECT_NE(j["chosen"]["why"].get<std::string>().find("driver vfs is not usable here"),
              std::string::npos)
        << j["chosen"]["why"];
  }

  CommandResult bogus = test::RunLamina({"--root", root, "--driver", "bogus", "info"});
  EXPECT_NE(bogus.status, 0);
  EXPECT_NE(bogus.err.find("lamina: unknown driver 'bogus'"), std::string::npos) << bogus.err;
}

}  // namespace
}  // namespace lamina
