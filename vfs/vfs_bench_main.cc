// lamina-vfs-bench: drives the vfs driver for bench/vfs_create.sh.
//
//   lamina-vfs-bench init   HOME ID          make an empty base layer, print its diff path
//   lamina-vfs-bench create HOME PARENT ID   time Create(ID, PARENT); prints seconds
//   lamina-vfs-bench remove HOME ID          remove a layer
//   lamina-vfs-bench copy   SRC DST          time a bare CopyTree (DST must exist, empty),
//                                            with the per-method file counts
// Options go in LAMINA_VFS_OPTIONS ("workers=N").

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "vfs/tree_copy.h"
#include "vfs/vfs_driver.h"

namespace {

int Usage() {
  std::fprintf(stderr,
               "usage: lamina-vfs-bench init HOME ID | create HOME PARENT ID | remove HOME ID | "
               "copy SRC DST\n");
  return 2;
}

int Report(const lamina::Error& error) {
  std::fprintf(stderr, "lamina-vfs-bench: %s\n", error.message().c_str());
  return 1;
}

std::vector<std::string> Options() {
  std::vector<std::string> out;
  if (const char* env = std::getenv("LAMINA_VFS_OPTIONS"); env != nullptr && *env) {
    std::string all = env;
    size_t pos = 0;
    while (pos <= all.size()) {
      size_t comma = all.find(',', pos);
      if (comma == std::string::npos) comma = all.size();
      if (comma > pos) out.push_back(all.substr(pos, comma - pos));
      pos = comma + 1;
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) return Usage();
  const std::string& cmd = args[0];
  using Clock = std::chrono::steady_clock;

  if (cmd == "copy" && args.size() == 3) {
    lamina::vfs::TreeCopyOptions options;
    auto start = Clock::now();
    auto stats = lamina::vfs::CopyTree(args[1], args[2], options);
    double secs = std::chrono::duration<double>(Clock::now() - start).count();
    if (!stats) return Report(stats.error());
    std::printf("%.3f files=%llu ficlone=%llu copy_file_range=%llu read_write=%llu\n", secs,
                static_cast<unsigned long long>(stats->files),
                static_cast<unsigned long long>(stats->cloned),
                static_cast<unsigned long long>(stats->copy_file_range),
                static_cast<unsigned long long>(stats->read_write));
    return 0;
  }
  if (args.size() < 3) return Usage();
  lamina::DriverConfig config;
  config.home = args[1];
  config.options = Options();
  auto driver = lamina::vfs::MakeVfsDriver(config);

  if (cmd == "init" && args.size() == 3) {
    if (auto made = driver->Create(args[2], "", {}); !made) return Report(made.error());
    std::printf("%s\n", driver->DiffPath(args[2]).c_str());
    return 0;
  }
  if (cmd == "create" && args.size() == 4) {
    auto start = Clock::now();
    auto made = driver->Create(args[3], args[2], {});
    double secs = std::chrono::duration<double>(Clock::now() - start).count();
    if (!made) return Report(made.error());
    std::printf("%.3f\n", secs);
    return 0;
  }
  if (cmd == "remove" && args.size() == 3) {
    if (auto removed = driver->Remove(args[2]); !removed) return Report(removed.error());
    return 0;
  }
  return Usage();
}
