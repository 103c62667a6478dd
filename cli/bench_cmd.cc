// `lamina bench`: the same workloads on every driver and on the
// fuse-overlayfs and plain-directory baselines, over one generated image
// (bench/runner.h); a table on stdout, optionally JSON and an SVG chart.

#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "bench/report.h"
#include "bench/runner.h"
#include "cli/common.h"
#include "common/fs.h"

namespace lamina::cli {

namespace {

struct BenchArgs {
  bench::BenchOptions options;
  bool quick = false;
  std::string targets;
  std::string workloads;
  std::string json_path;
  std::string svg_path;
};

std::vector<std::string> SplitList(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

void OnSignal(int) { bench::RequestStop(); }

// The progress line: rewritten in place on a terminal, one line per step
// otherwise.
void ShowProgress(const std::string& line) {
  static const bool tty = ::isatty(STDERR_FILENO) == 1;
  if (tty) {
    std::cerr << "\r\033[K" << line << std::flush;
  } else {
    std::cerr << "lamina bench: " << line << "\n";
  }
}

void EndProgress() {
  if (::isatty(STDERR_FILENO) == 1) std::cerr << "\r\033[K" << std::flush;
}

void WriteOrThrow(const std::string& path, const std::string& text) {
  auto written = WriteFileAtomic(path, text);
  if (!written) throw CommandError(written.error().message());
}

}  // namespace

void AddBenchCommand(CLI::App& app, GlobalOptions& global) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* cmd = app.add_subcommand(
      "bench",
      "measure every driver, fuse-overlayfs and a plain directory on one generated image "
      "(needs root)");
  bench::ImageSpec& image = args->options.image;
  cmd->add_option("--files", image.files, "small files in the image")->capture_default_str();
  cmd->add_option("--dirs", image.dirs, "directories they are spread over")->capture_default_str();
  cmd->add_option("--big-mb", image.big_mb, "MiB of the big file (also the fio file size)")
      ->capture_default_str();
  cmd->add_option("--create", image.create, "files the create workload makes")
      ->capture_default_str();
  cmd->add_option("--runs", args->options.runs, "repetitions; the median is shown")
      ->capture_default_str();
  cmd->add_flag("--quick", args->quick,
                "a smoke run of about a minute: 2000 files, 100 dirs, 32 MiB, 1000 creates, 1 run");
  cmd->add_option("--dir", args->options.dir, "where the image and stores are made (removed after)")
      ->capture_default_str();
  cmd->add_option("--targets", args->targets,
                  "comma-separated subset of overlay,fuse,vfs,fuse-overlayfs,plain");
  cmd->add_option("--workloads", args->workloads, "comma-separated subset of the workloads");
  cmd->add_flag(
      "--list",
      [](int64_t) {
        std::vector<std::vector<std::string>> rows = {{"WORKLOAD", "GROUP", "WHAT"}};
        for (const auto& w : bench::AllWorkloads())
          rows.push_back({w.name, w.group, w.description});
        PrintColumns(rows);
        throw CLI::Success();
      },
      "list the workloads and exit");
  cmd->add_option("--json", args->json_path, "write the results as JSON to FILE");
  cmd->add_option("--svg", args->svg_path, "write a chart (ratios to overlay) as SVG to FILE");
  cmd->callback([&global, args] {
    (void)global;
    bench::BenchOptions options = args->options;
    if (args->quick) {
      options.image.files = 2000;
      options.image.dirs = 100;
      options.image.big_mb = 32;
      options.image.create = 1000;
      options.runs = 1;
    }
    options.targets = SplitList(args->targets);
    options.workloads = SplitList(args->workloads);
    OrThrow(bench::CheckOptions(options), 2, [](const Error& e) { return e.message(); });
    char self[4096];
    ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) options.lamina.assign(self, static_cast<size_t>(n));
    options.progress = ShowProgress;

    struct sigaction sa {};
    sa.sa_handler = OnSignal;
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);
    auto report = bench::RunBench(options);
    EndProgress();
    if (!report) throw CommandError("bench: " + report.error().message());
    std::cout << bench::FormatTable(*report) << std::flush;
    if (!args->json_path.empty()) {
      WriteOrThrow(args->json_path, bench::ToJson(*report).dump(2) + "\n");
    }
    if (!args->svg_path.empty()) WriteOrThrow(args->svg_path, bench::RenderSvg(*report));
  });
}

}  // namespace lamina::cli
