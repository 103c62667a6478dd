// The report of `lamina bench` (statistics, JSON, table, SVG) and fio's
// JSON, parsed from canned text and from a real tiny fio run.

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "bench/fio.h"
#include "bench/process.h"
#include "bench/report.h"
#include "bench/runner.h"
#include "common/fs.h"
#include "tests/support/test_util.h"

namespace lamina::bench {
namespace {

using nlohmann::json;

TEST(BenchStats, MedianMinMax) {
  Stats odd = Summarize({3, 1, 2});
  EXPECT_DOUBLE_EQ(odd.median, 2);
  EXPECT_DOUBLE_EQ(odd.min, 1);
  EXPECT_DOUBLE_EQ(odd.max, 3);
  Stats even = Summarize({4, 1, 3, 2});
  EXPECT_DOUBLE_EQ(even.median, 2.5);
  EXPECT_DOUBLE_EQ(even.min, 1);
  EXPECT_DOUBLE_EQ(even.max, 4);
  Stats one = Summarize({7});
  EXPECT_DOUBLE_EQ(one.median, 7);
  Stats none = Summarize({});
  EXPECT_DOUBLE_EQ(none.median, 0);
}

TEST(BenchStats, GeoMean) {
  EXPECT_NEAR(*GeoMean({1, 4}), 2, 1e-12);
  EXPECT_NEAR(*GeoMean({2, 2, 2}), 2, 1e-12);
  EXPECT_FALSE(GeoMean({}).has_value());
  EXPECT_FALSE(GeoMean({1, 0}).has_value());
}

// Two targets measured, one n/a cell, one failed cell, one unusable target.
Report SampleReport() {
  Report r;
  r.setup["kernel"] = "6.1.0";
  r.setup["runs"] = "3";
  r.targets = {{"overlay", true, "kernel"},
               {"fuse", true, "lamina-fuse"},
               {"fuse-overlayfs", true, "baseline"},
               {"vfs", false, "no space"}};
  r.workloads = {{"walk-cold", "meta", "find"},
                 {"create", "meta", "create"},
                 {"read-big", "data", "read"},
                 {"append-big", "copy-up", "append"},
                 {"layer-create", "layer", "create layer"}};
  r.At("walk-cold", "overlay").seconds = {1.0, 1.2, 0.8};
  r.At("walk-cold", "fuse").seconds = {2.0, 2.0, 2.0};
  r.At("walk-cold", "fuse-overlayfs").seconds = {8.0, 8.0, 8.0};
  r.At("create", "overlay").seconds = {0.5, 0.5, 0.5};
  r.At("create", "fuse").seconds = {0.5, 0.5, 0.5};
  r.At("create", "fuse-overlayfs").seconds = {2.0, 2.0, 2.0};
  r.At("read-big", "overlay").seconds = {1, 1, 1};
  r.At("read-big", "overlay").extra["mib_per_s"] = 512;
  r.At("read-big", "fuse").seconds = {2, 2, 2};
  r.At("read-big", "fuse-overlayfs").error = "read big: Input/output error";
  r.At("append-big", "overlay").seconds = {1, 1, 1};
  r.At("append-big", "fuse").seconds = {0.5, 0.5, 0.5};
  r.At("layer-create", "overlay").seconds = {0.01};
  r.At("layer-create", "fuse-overlayfs").na = "no layer store";
  r.rss_kib = {{"fuse", 10240}, {"fuse-overlayfs", 20480}};
  return r;
}

TEST(BenchReport, GroupGeoMeanOverCommonWorkloads) {
  Report r = SampleReport();
  EXPECT_NEAR(*r.GroupGeoMean("meta", "fuse"), 1.0, 1e-12);            // sqrt(2 * 0.5)
  EXPECT_NEAR(*r.GroupGeoMean("meta", "fuse-overlayfs"), 4.0, 1e-12);  // sqrt(8 * 2)
  EXPECT_FALSE(r.GroupGeoMean("meta", "vfs").has_value());
  EXPECT_FALSE(r.Median("read-big", "fuse-overlayfs").has_value());
}

TEST(BenchReport, JsonSchema) {
  json j = ToJson(SampleReport());
  EXPECT_EQ(j["schema"], "lamina-bench/1");
  EXPECT_EQ(j["setup"]["kernel"], "6.1.0");
  ASSERT_EQ(j["targets"].size(), 4u);
  EXPECT_EQ(j["targets"][3]["name"], "vfs");
  EXPECT_EQ(j["targets"][3]["usable"], false);
  EXPECT_EQ(j["targets"][3]["reason"], "no space");
  ASSERT_EQ(j["workloads"].size(), 5u);
  EXPECT_EQ(j["workloads"][0]["group"], "meta");
  bool saw_walk = false, saw_na = false, saw_error = false;
  for (const auto& r : j["results"]) {
    ASSERT_TRUE(r["workload"].is_string());
    ASSERT_TRUE(r["target"].is_string());
    if (r["workload"] == "walk-cold" && r["target"] == "overlay") {
      saw_walk = true;
      EXPECT_EQ(r["runs"].size(), 3u);
      EXPECT_DOUBLE_EQ(r["median"].get<double>(), 1.0);
      EXPECT_DOUBLE_EQ(r["min"].get<double>(), 0.8);
      EXPECT_DOUBLE_EQ(r["max"].get<double>(), 1.2);
    }
    if (r["workload"] == "read-big" && r["target"] == "overlay") {
      EXPECT_DOUBLE_EQ(r["extra"]["mib_per_s"].get<double>(), 512);
    }
    if (r["workload"] == "layer-create" && r["target"] == "fuse-overlayfs") {
      saw_na = true;
      EXPECT_EQ(r["na"], "no layer store");
      EXPECT_FALSE(r.contains("median"));
    }
    if (r["workload"] == "read-big" && r["target"] == "fuse-overlayfs") {
      saw_error = true;
      EXPECT_EQ(r["error"], "read big: Input/output error");
      EXPECT_FALSE(r.contains("median"));
    }
  }
  EXPECT_TRUE(saw_walk && saw_na && saw_error);
  EXPECT_EQ(j["rss_kib"]["fuse"], 10240);
  EXPECT_NEAR(j["summary"]["geomean_meta"]["fuse"].get<double>(), 1.0, 1e-12);
  const json& f = j["summary"]["lamina_fuse"];
  EXPECT_NEAR(f["meta_speedup_vs_fuse_overlayfs"].get<double>(), 4.0, 1e-12);
  EXPECT_NEAR(f["read_big_throughput_vs_overlay"].get<double>(), 0.5, 1e-12);
  EXPECT_NEAR(f["copyup_time_vs_overlay"].get<double>(), 0.5, 1e-12);
  EXPECT_NEAR(f["rss_vs_fuse_overlayfs"].get<double>(), 0.5, 1e-12);
}

TEST(BenchReport, TableShowsMediansSpreadNaAndFailures) {
  std::string t = FormatTable(SampleReport());
  EXPECT_NE(t.find("walk-cold"), std::string::npos) << t;
  EXPECT_NE(t.find("1.000 ±20%"), std::string::npos) << t;  // (1.2 - 0.8) / 2 of 1.0
  EXPECT_NE(t.find("n/a"), std::string::npos) << t;
  EXPECT_NE(t.find("failed"), std::string::npos) << t;
  EXPECT_NE(t.find("vfs: not used: no space"), std::string::npos) << t;
  EXPECT_NE(t.find("read-big on fuse-overlayfs failed: read big"), std::string::npos) << t;
  EXPECT_NE(t.find("geomean meta"), std::string::npos) << t;
  EXPECT_NE(t.find("speedup over fuse-overlayfs: 4.00x"), std::string::npos) << t;
  EXPECT_NE(t.find("fuse 10.0 MiB"), std::string::npos) << t;
}

// The table names the fuse module's parameters a run had (they change
// what a FUSE round trip costs), read from a directory like
// /sys/module/fuse/parameters.
TEST(BenchReport, FuseModuleParamsAreReadAndShown) {
  test::TempDir params;
  test::WriteFile(params.Sub("wake_here"), "N\n");
  test::WriteFile(params.Sub("enable_uring"), "Y\n");
  test::WriteFile(params.Sub("max_user_bgreq"), "7866\n");
  std::string read = FuseModuleParams(params.path());
  EXPECT_EQ(read, "enable_uring=Y max_user_bgreq=7866 wake_here=N");
  EXPECT_EQ(FuseModuleParams(params.Sub("missing")), "");
  Report r = SampleReport();
  r.setup["fuse_params"] = read;
  std::string t = FormatTable(r);
  EXPECT_NE(t.find("# fuse_params: enable_uring=Y max_user_bgreq=7866 wake_here=N\n"),
            std::string::npos)
      << t;
}

TEST(BenchReport, SvgIsWellFormed) {
  if (!OnPath("xmllint")) GTEST_SKIP() << "xmllint (libxml2-utils) is not installed";
  std::string svg = RenderSvg(SampleReport());
  EXPECT_NE(svg.find("<svg"), std::string::npos);
  // One bar per measured (workload, non-reference target) pair with a
  // reference value: walk-cold 2, create 2, read-big 1, append-big 1.
  size_t bars = 0;
  for (size_t at = svg.find("<title>"); at != std::string::npos; at = svg.find("<title>", at + 1)) {
    ++bars;
  }
  EXPECT_EQ(bars, 6u);
  test::TempDir dir;
  std::string path = dir.Sub("chart.svg");
  test::WriteFile(path, svg);
  test::CommandResult r = test::Run({"xmllint", "--noout", path});
  EXPECT_EQ(r.status, 0) << r.err;
}

TEST(BenchFio, JobFilesAreCompiledIn) {
  for (const char* job : {"seq-write", "seq-read", "rand-read", "rand-write"}) {
    auto it = FioJobs().find(job);
    ASSERT_NE(it, FioJobs().end()) << job;
    EXPECT_NE(it->second.find("${FIO_DIR}"), std::string::npos) << job;
  }
}

TEST(BenchFio, ParsesJsonAndRefusesJunk) {
  const char* text = R"(fio: some warning
{"fio version": "fio-3.33", "jobs": [{"jobname": "seq-read", "error": 0, "job_runtime": 250,
  "read": {"io_bytes": 4194304, "bw_bytes": 16777216, "iops": 16.0, "runtime": 250},
  "write": {"io_bytes": 0, "bw_bytes": 0, "iops": 0, "runtime": 0}}]})";
  auto r = ParseFioJson(text);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_DOUBLE_EQ(r->seconds, 0.25);
  EXPECT_EQ(r->bytes, 4194304u);
  EXPECT_DOUBLE_EQ(r->bytes_per_s, 16777216);
  EXPECT_DOUBLE_EQ(r->iops, 16);

  EXPECT_EQ(ParseFioJson("no json here").error().code(), EINVAL);
  EXPECT_EQ(ParseFioJson("{\"jobs\": []}").error().code(), EINVAL);
  EXPECT_EQ(ParseFioJson("{\"jobs\": [{\"error\": 5, \"jobname\": \"x\"}]}").error().code(), 5);
}

TEST(BenchFio, RealTinyRuns) {
  if (!OnPath("fio")) GTEST_SKIP() << "fio is not installed";
  test::TempDir dir;
  FioRun run;
  run.dir = dir.path();
  run.scratch = dir.path();
  run.size = 2 << 20;
  run.io_size = 256 << 10;
  for (const char* job : {"seq-write", "seq-read", "rand-read", "rand-write"}) {
    run.job = job;
    auto r = RunFio(run);
    ASSERT_TRUE(r) << job << ": " << r.error().message();
    EXPECT_GT(r->seconds, 0) << job;
    EXPECT_EQ(r->bytes, std::string(job).starts_with("seq") ? run.size : run.io_size) << job;
    EXPECT_GT(r->iops, 0) << job;
  }
  EXPECT_EQ(RunFio({.job = "nope", .dir = dir.path(), .scratch = dir.path()}).error().code(),
            EINVAL);
}

}  // namespace
}  // namespace lamina::bench
