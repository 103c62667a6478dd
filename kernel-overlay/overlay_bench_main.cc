// lamina-overlay-bench: drives a storage driver for bench/overlay_mount.sh.
//
//   lamina-overlay-bench stack  DRIVER HOME N             N image layers layer0..layerN-1
//                                                         (one small file each)
//   lamina-overlay-bench mount  DRIVER HOME PARENT RUNS   a container layer on PARENT, mounted
//                                                         and unmounted RUNS times; prints
//                                                         "median=S min=S" of the mounts
//   lamina-overlay-bench init   DRIVER HOME ID            an empty base layer; prints its diff/
//   lamina-overlay-bench create DRIVER HOME PARENT ID     times Create(ID, writable) and its
//                                                         first Mount: "create=S mount=S"
//   lamina-overlay-bench remove DRIVER HOME ID
// DRIVER is overlay, vfs or fuse. The overlay mount API follows
// LAMINA_OVERLAY_MOUNT_API (auto, new, legacy).

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/fs.h"
#include "drivers/select/registry.h"

namespace {

using Clock = std::chrono::steady_clock;

int Usage() {
  std::fprintf(stderr,
               "usage: lamina-overlay-bench stack DRIVER HOME N | mount DRIVER HOME PARENT RUNS |"
               " init DRIVER HOME ID | create DRIVER HOME PARENT ID | remove DRIVER HOME ID\n");
  return 2;
}

int Report(const lamina::Error& error) {
  std::fprintf(stderr, "lamina-overlay-bench: %s\n", error.message().c_str());
  return 1;
}

double Since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() < 4) return Usage();
  const std::string& cmd = args[0];
  lamina::DriverConfig config;
  config.home = args[2];
  auto made = lamina::MakeDriver(args[1], config);
  if (!made) return Report(made.error());
  lamina::Driver& driver = **made;

  if (cmd == "stack" && args.size() == 4) {
    int n = std::atoi(args[3].c_str());
    std::string parent;
    for (int i = 0; i < n; ++i) {
      std::string id = "layer" + std::to_string(i);
      if (!driver.Exists(id)) {
        if (auto c = driver.Create(id, parent, {}); !c) return Report(c.error());
        auto w = lamina::WriteFileAtomic(driver.DiffPath(id) + "/file" + std::to_string(i),
                                         std::to_string(i) + "\n");
        if (!w) return Report(w.error());
      }
      parent = id;
    }
    return 0;
  }
  if (cmd == "mount" && args.size() == 5) {
    std::string id = "bench-ctr-" + args[3];
    if (!driver.Exists(id)) {
      if (auto c = driver.Create(id, args[3], {.writable = true}); !c) return Report(c.error());
    }
    std::vector<double> times;
    for (int i = 0, runs = std::atoi(args[4].c_str()); i < runs; ++i) {
      auto start = Clock::now();
      auto merged = driver.Mount(id, {});
      double secs = Since(start);
      if (!merged) return Report(merged.error());
      times.push_back(secs);
      if (auto u = driver.Unmount(id); !u) return Report(u.error());
    }
    if (times.empty()) return Usage();
    std::sort(times.begin(), times.end());
    std::printf("median=%.6f min=%.6f\n", times[times.size() / 2], times.front());
    if (auto r = driver.Remove(id); !r) return Report(r.error());
    return 0;
  }
  if (cmd == "init" && args.size() == 4) {
    if (auto c = driver.Create(args[3], "", {}); !c) return Report(c.error());
    std::printf("%s\n", driver.DiffPath(args[3]).c_str());
    return 0;
  }
  if (cmd == "create" && args.size() == 5) {
    auto start = Clock::now();
    auto c = driver.Create(args[4], args[3], {.writable = true});
    double create_secs = Since(start);
    if (!c) return Report(c.error());
    start = Clock::now();
    auto merged = driver.Mount(args[4], {});
    double mount_secs = Since(start);
    if (!merged) return Report(merged.error());
    if (auto u = driver.Unmount(args[4]); !u) return Report(u.error());
    std::printf("create=%.4f mount=%.4f\n", create_secs, mount_secs);
    return 0;
  }
  if (cmd == "remove" && args.size() == 4) {
    if (auto r = driver.Remove(args[3]); !r) return Report(r.error());
    return 0;
  }
  return Usage();
}
