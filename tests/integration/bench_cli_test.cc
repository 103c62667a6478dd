// `lamina bench` end to end on a tiny image: every target gets a row, the
// JSON and SVG are written, and nothing (mounts, daemons, directories) is
// left behind.

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "common/fs.h"
#include "tests/support/test_util.h"

namespace lamina {
namespace {

using nlohmann::json;

bool MountedBelow(const std::string& dir) {
  auto info = ReadFile("/proc/self/mountinfo");
  return info && info->find(" " + dir + "/") != std::string::npos;
}

TEST(BenchCli, TinyRunHasEveryTargetAndCleansUp) {
  if (!test::IsRoot()) GTEST_SKIP() << "lamina bench needs root";
  test::TempDir dir;
  std::string work = dir.Sub("work");
  // A subset that touches every kind of step (shared view, cold and warm,
  // fio, fresh views, a whole-target workload) and stays bounded.
  const std::vector<std::string> workloads = {
      "walk-cold", "walk-warm",     "lsR-cold", "read-small", "read-big",   "create",
      "untar",     "fio-seq-write", "rm-rf",    "chmod-R",    "append-big", "layer-create"};
  std::string list;
  for (const auto& w : workloads) list += (list.empty() ? "" : ",") + w;
  test::CommandResult r =
      test::RunLamina({"bench", "--files", "200", "--dirs", "10", "--big-mb", "4", "--create", "50",
                       "--runs", "1", "--dir", work, "--workloads", list, "--json",
                       dir.Sub("out.json"), "--svg", dir.Sub("out.svg")});
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("walk-cold"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("lamina bench: [1/"), std::string::npos) << r.err;

  json j = json::parse(test::ReadFileOrDie(dir.Sub("out.json")));
  EXPECT_EQ(j["schema"], "lamina-bench/1");
  std::set<std::string> targets;
  std::set<std::string> usable;
  for (const auto& t : j["targets"]) {
    targets.insert(t["name"]);
    if (t["usable"]) usable.insert(t["name"]);
  }
  EXPECT_EQ(targets, (std::set<std::string>{"overlay", "fuse", "vfs", "fuse-overlayfs", "plain"}));
  // The kernel overlay, lamina-fuse and the plain directory work here.
  for (const char* t : {"overlay", "fuse", "plain"}) EXPECT_TRUE(usable.count(t)) << t;
  ASSERT_EQ(j["workloads"].size(), workloads.size());

  // Every usable target has a cell for every workload: measured or n/a.
  std::set<std::pair<std::string, std::string>> cells;
  for (const auto& c : j["results"]) {
    std::string w = c["workload"], t = c["target"];
    cells.insert({w, t});
    EXPECT_FALSE(c.contains("error")) << w << " on " << t << ": " << c["error"];
    if (!c.contains("na")) {
      EXPECT_EQ(c["runs"].size(), 1u) << w << " on " << t;
      EXPECT_GT(c["median"].get<double>(), 0) << w << " on " << t;
    }
  }
  for (const auto& t : usable) {
    for (const auto& w : workloads) EXPECT_TRUE(cells.count({w, t})) << w << " on " << t;
  }
  for (const char* w : {"layer-create"}) {
    bool na = false;
    for (const auto& c : j["results"]) {
      if (c["workload"] == w && c["target"] == "plain") na = c.contains("na");
    }
    EXPECT_TRUE(na) << w << " should be n/a on plain";
  }
  if (usable.count("fuse-overlayfs")) {
    EXPECT_TRUE(j["rss_kib"].contains("fuse-overlayfs"));
  }
  EXPECT_TRUE(j["rss_kib"].contains("fuse"));

  std::string svg = test::ReadFileOrDie(dir.Sub("out.svg"));
  EXPECT_NE(svg.find("</svg>"), std::string::npos);

  // Nothing left: no mounts, no daemons, an empty work directory.
  EXPECT_FALSE(MountedBelow(work));
  auto left = ListDir(work);
  ASSERT_TRUE(left) << left.error().message();
  EXPECT_TRUE(left->empty()) << (*left)[0];
}

TEST(BenchCli, RefusesBadOptions) {
  test::CommandResult r = test::RunLamina({"bench", "--dirs", "1"});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("--dirs must be at least 2"), std::string::npos) << r.err;
  r = test::RunLamina({"bench", "--targets", "zfs"});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("unknown target zfs"), std::string::npos) << r.err;
  r = test::RunLamina({"bench", "--list"});
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("append-big"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace lamina
