#pragma once

// The results of one `lamina bench` run and the three ways they are shown:
// a table for the terminal, JSON for programs, and an SVG chart of every
// target's time as a ratio to a reference target (the kernel overlay).
//
// Every measured value is a time in seconds (lower is better); workloads
// that move data also keep their throughput as an extra ("mb_per_s").

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace lamina::bench {

// Median, min and max of a set of runs. The median of an even count is the
// mean of the two middle values. Summarize of no values is all zeros.
struct Stats {
  double median = 0;
  double min = 0;
  double max = 0;
};
Stats Summarize(std::vector<double> values);

// Geometric mean of positive values; nullopt when there are none (or any is
// not positive).
std::optional<double> GeoMean(const std::vector<double>& values);

// One workload on one target.
struct Cell {
  std::vector<double> seconds;          // one per run that succeeded
  std::map<std::string, double> extra;  // medians of extra figures ("mb_per_s")
  std::string na;                       // why the workload does not apply, when it does not
  std::string error;                    // the last failure, when a run failed
  bool Measured() const { return !seconds.empty(); }
};

struct WorkloadInfo {
  std::string name;         // "walk-cold"
  std::string group;        // "meta", "data", "copy-up", "layer"
  std::string description;  // one line for people
};

struct TargetInfo {
  std::string name;    // "overlay", "fuse", "vfs", "fuse-overlayfs", "plain"
  bool usable = true;  // false: every cell is empty and `reason` says why
  std::string reason;  // what it is, or why it could not be used
};

struct Report {
  // What was run, for the JSON and the table header.
  std::map<std::string, std::string> setup;  // "kernel", "files", "dirs", "big_mb", "runs", ...
  std::vector<TargetInfo> targets;
  std::vector<WorkloadInfo> workloads;
  // cells[workload][target]
  std::map<std::string, std::map<std::string, Cell>> cells;
  // Daemon resident memory (VmRSS, KiB) after `ls -lR` of the whole image,
  // per FUSE target, median over the runs.
  std::map<std::string, uint64_t> rss_kib;

  Cell& At(const std::string& workload, const std::string& target) {
    return cells[workload][target];
  }
  const Cell* Find(const std::string& workload, const std::string& target) const;
  // The median of a measured cell.
  std::optional<double> Median(const std::string& workload, const std::string& target) const;
  // Geometric mean of the medians of every workload of `group` measured on
  // both `target` and `other` ("" = on `target` alone).
  std::optional<double> GroupGeoMean(const std::string& group, const std::string& target,
                                     const std::string& other = {}) const;
};

// The JSON document (schema "lamina-bench/1"):
//   {"schema": "lamina-bench/1", "setup": {...},
//    "targets": [{"name", "usable", "reason"}],
//    "workloads": [{"name", "group", "description"}],
//    "results": [{"workload", "target", "runs": [s...], "median", "min", "max",
//                 "extra": {...}} | {"workload", "target", "na": reason}
//                | {..., "error": message}],
//    "rss_kib": {target: KiB},
//    "summary": {"geomean_meta": {target: s}, "ratio_to_overlay": {target: x}}}
nlohmann::json ToJson(const Report& report);

// The table: one row per workload, one column per target, medians in seconds
// with the spread ((max-min)/2 as a percentage of the median) when there
// were several runs; then geometric means, daemon memory and the issue-6
// ratios of lamina-fuse.
std::string FormatTable(const Report& report);

// A horizontal bar chart: for every workload one bar per target, its median
// time divided by `reference`'s on a log scale (1x in the middle, faster to
// the left). Workloads the reference did not measure are left out.
std::string RenderSvg(const Report& report, const std::string& reference = "overlay");

}  // namespace lamina::bench
