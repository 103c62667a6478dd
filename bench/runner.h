#pragma once

// One `lamina bench` run: sets up every target on its own copy of one
// generated image, runs the chosen workloads on each, `runs` times over, and
// collects the report. Needs root (mounts, /proc/sys/vm/drop_caches).
//
// A run's order: for each repetition, for each target: one fresh view (a
// new container layer) for the read-only workloads and those that write new
// files (each cold one after a remount and a cache drop), then, with those
// files removed and the view mounted again before each, the workloads that
// change the image (rm -rf, chmod -R, the big file's copy-up: disjoint
// parts of it); then the whole-target workloads. Repetitions go round the targets, so a slow
// minute of a loaded machine is spread over all of them.
//
// Everything lives in a temporary directory below `dir`, removed at the end
// (every mount below it unmounted first), also when the run fails.

#include <functional>
#include <string>
#include <vector>

#include "bench/report.h"
#include "bench/workloads.h"
#include "common/result.h"

namespace lamina::bench {

struct BenchOptions {
  ImageSpec image;
  int runs = 3;
  std::string dir = "/var/tmp";
  std::vector<std::string> targets;    // empty = AllTargetNames()
  std::vector<std::string> workloads;  // empty = every workload
  std::string lamina;                  // the lamina executable, for `lamina run`
  std::string helper_dir;              // where lamina-fuse is ("" = the store's default)
  // Called with a short line before every step.
  std::function<void(const std::string&)> progress;
};

// The fuse module's parameters (files in `dir`) as "name=value" pairs in
// name order, space-separated; "" where there are none (no fuse module, or
// another kernel). Some change what every FUSE round trip costs (this
// kernel's undocumented `wake_here`, which as measured acts like waking the
// daemon or the caller on the waker's CPU, or `enable_uring`), so a report
// names the ones in force.
std::string FuseModuleParams(const std::string& dir = "/sys/module/fuse/parameters");

// Checks the options: EINVAL naming the first bad one.
Result<void> CheckOptions(const BenchOptions& options);

Result<Report> RunBench(const BenchOptions& options);

// Makes a running RunBench stop at the next step (with EINTR); safe to call
// from a signal handler.
void RequestStop();

}  // namespace lamina::bench
