#include "bench/runner.h"

#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <memory>

#include "bench/process.h"
#include "common/fs.h"
#include "common/scope_guard.h"
#include "drivers/host.h"

namespace lamina::bench {

namespace {

std::atomic<bool> stop_requested{false};

Result<void> CheckStop() {
  if (stop_requested.load()) return Fail(EINTR, "interrupted");
  return {};
}

struct Slot {
  std::unique_ptr<Target> target;
  TargetInfo info;
  std::vector<uint64_t> rss;
};

// The warm workload's cold twin, which leaves the caches warm for it.
std::string ColdTwin(const std::string& name) {
  if (name == "walk-warm") return "walk-cold";
  if (name == "lsR-warm") return "lsR-cold";
  return {};
}

class Runner {
 public:
  Runner(const BenchOptions& options, Report& report) : options_(options), report_(report) {}

  Result<void> Run(const std::vector<std::string>& workloads, std::vector<Slot>& slots) {
    for (const auto& w : workloads) {
      switch (WorkloadScope(w)) {
        case Scope::kShared:
          shared_.push_back(w);
          break;
        case Scope::kFresh:
          fresh_.push_back(w);
          break;
        case Scope::kWholeTarget:
          whole_.push_back(w);
          break;
      }
    }
    for (auto& s : slots) {
      if (!s.info.usable) continue;
      for (const auto& w : workloads) total_ += s.target->NotApplicable(w).empty() ? 1 : 0;
    }
    total_ *= options_.runs;
    for (int run = 0; run < options_.runs; ++run) {
      for (auto& slot : slots) {
        if (!slot.info.usable) continue;
        run_ = run;
        // A view that cannot be closed leaves the target in a state nobody
        // knows: it takes no further part, and says why.
        Result<void> done = RunViews(slot);
        if (done) done = RunWhole(slot);
        if (!done) {
          if (done.error().code() == EINTR) return done;
          slot.info.usable = false;
          slot.info.reason = "stopped after a failure: " + done.error().message();
        }
      }
    }
    return {};
  }

 private:
  void Progress(const Slot& slot, const std::string& workload) {
    ++step_;
    if (!options_.progress) return;
    options_.progress("[" + std::to_string(step_) + "/" + std::to_string(total_) + "] run " +
                      std::to_string(run_ + 1) + "/" + std::to_string(options_.runs) + " " +
                      slot.info.name + ": " + workload);
  }

  // Marks a workload n/a on the target; true when it is.
  bool NotApplicable(Slot& slot, const std::string& w) {
    std::string why = slot.target->NotApplicable(w);
    if (why.empty()) return false;
    report_.At(w, slot.info.name).na = why;
    return true;
  }

  void Record(Slot& slot, const std::string& w, Result<Measurement> m) {
    Cell& cell = report_.At(w, slot.info.name);
    if (!m) {
      cell.error = m.error().message();
      return;
    }
    cell.seconds.push_back(m->seconds);
    // Extras are kept per run here and replaced by their medians at the end.
    for (const auto& [key, value] : m->extra) extras_[w][slot.info.name][key].push_back(value);
  }

  // The shared workloads, then the ones that change the image, on one view:
  // the files the shared ones wrote are removed and the view is mounted
  // again before each of the latter (they touch disjoint parts of the
  // image: the first tenth of the directories, the second, the big file).
  Result<void> RunViews(Slot& slot) {
    std::vector<std::string> todo;
    for (const auto* group : {&shared_, &fresh_}) {
      for (const auto& w : *group) {
        if (!NotApplicable(slot, w)) todo.push_back(w);
      }
    }
    if (todo.empty()) return {};
    auto opened = slot.target->Open();
    if (!opened) {
      for (const auto& w : todo) Record(slot, w, Fail(opened.error()));
      step_ += static_cast<int>(todo.size());
      return {};
    }
    std::string root = *opened;
    bool fresh = true;  // nothing has run on this mount yet
    bool cleaned = false;
    std::string last;
    for (const auto& w : todo) {
      LAMINA_CHECK(CheckStop());
      Progress(slot, w);
      Result<Measurement> m = Measurement{};
      if (WorkloadScope(w) == Scope::kFresh && !fresh) {
        Result<void> ready = cleaned ? Result<void>() : RemoveWorkloadFiles(root);
        cleaned = true;
        if (ready) ready = slot.target->Remount();
        if (!ready) m = Fail(ready.error());
      }
      if (m) m = Prepare(slot, w, root, fresh, last);
      if (m) m = RunWorkload(w, root, env_);
      fresh = false;
      last = w;
      if (m && w == "lsR-cold") {
        if (auto pid = slot.target->Daemon()) {
          if (auto kib = ResidentKiB(*pid)) slot.rss.push_back(*kib);
        }
      }
      Record(slot, w, std::move(m));
    }
    auto closed = slot.target->Close(last);
    if (!closed) return Fail(closed.error().Wrap(slot.info.name + ": close"));
    return {};
  }

  // Gets the caches into the state the workload wants.
  Result<Measurement> Prepare(Slot& slot, const std::string& w, const std::string& root, bool fresh,
                              const std::string& last) {
    if (IsCold(w)) {
      if (!fresh) LAMINA_CHECK(slot.target->Remount());
      LAMINA_CHECK(DropCaches());
    } else if (std::string twin = ColdTwin(w); !twin.empty() && last != twin) {
      Measurement primed = LAMINA_TRY(RunWorkload(twin, root, env_));
      (void)primed;
    }
    return Measurement{};
  }

  Result<void> RunWhole(Slot& slot) {
    for (const auto& w : whole_) {
      if (NotApplicable(slot, w)) continue;
      LAMINA_CHECK(CheckStop());
      Progress(slot, w);
      Result<double> seconds = w == "layer-create" ? slot.target->LayerCreate()
                               : w == "mount-100"  ? slot.target->MountStack()
                                                   : slot.target->RunContainer();
      if (seconds) {
        Record(slot, w, Measurement{*seconds, {}});
      } else {
        Record(slot, w, Fail(seconds.error()));
      }
    }
    return {};
  }

 public:
  BenchEnv env_;
  // extras_[workload][target][key]: one value per run.
  std::map<std::string, std::map<std::string, std::map<std::string, std::vector<double>>>> extras_;

 private:
  const BenchOptions& options_;
  Report& report_;
  std::vector<std::string> shared_, fresh_, whole_;
  int run_ = 0, step_ = 0, total_ = 0;
};

std::string ImageText(const ImageSpec& spec) {
  return std::to_string(spec.files) + " files in " + std::to_string(spec.dirs) + " dirs + one " +
         std::to_string(spec.big_mb) + " MiB file";
}

}  // namespace

void RequestStop() { stop_requested.store(true); }

Result<void> CheckOptions(const BenchOptions& options) {
  const ImageSpec& s = options.image;
  if (s.files < 1) return Fail(EINVAL, "--files must be at least 1");
  if (s.dirs < 2) return Fail(EINVAL, "--dirs must be at least 2");
  if (s.big_mb < 1) return Fail(EINVAL, "--big-mb must be at least 1");
  if (s.create < 1) return Fail(EINVAL, "--create must be at least 1");
  if (options.runs < 1) return Fail(EINVAL, "--runs must be at least 1");
  for (const auto& t : options.targets) {
    const auto& all = AllTargetNames();
    if (std::find(all.begin(), all.end(), t) == all.end()) {
      return Fail(EINVAL, "unknown target " + t + " (overlay, fuse, vfs, fuse-overlayfs, plain)");
    }
  }
  for (const auto& w : options.workloads) {
    const auto& all = AllWorkloads();
    if (std::none_of(all.begin(), all.end(), [&](const WorkloadInfo& i) { return i.name == w; })) {
      return Fail(EINVAL, "unknown workload " + w);
    }
  }
  return {};
}

std::string FuseModuleParams(const std::string& dir) {
  auto names = ListDir(dir);
  if (!names) return "";
  std::string out;
  for (const std::string& name : *names) {
    auto value = ReadFile(dir + "/" + name);
    if (!value) continue;  // write-only or gone: nothing to report
    while (!value->empty() && (value->back() == '\n' || value->back() == ' ')) value->pop_back();
    if (!out.empty()) out += ' ';
    out += name + "=" + *value;
  }
  return out;
}

namespace {

// Raises the open-file limit, soft and hard, to the system's ceiling
// (fs.nr_open), as podman does for itself before it starts a mount_program:
// the FUSE daemons inherit it. (lamina-fuse keeps an fd per inode it knows,
// so an `ls -lR` of 50,000 files needs more than the usual 1024 or 20000.)
// Returns the limit in force.
uint64_t RaiseOpenFileLimit() {
  struct rlimit lim {};
  ::getrlimit(RLIMIT_NOFILE, &lim);
  auto text = ReadFile("/proc/sys/fs/nr_open");
  rlim_t ceiling = text ? std::strtoull(text->c_str(), nullptr, 10) : 0;
  if (ceiling > lim.rlim_max) {
    struct rlimit raised = {ceiling, ceiling};
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) return ceiling;
  }
  lim.rlim_cur = lim.rlim_max;
  (void)::setrlimit(RLIMIT_NOFILE, &lim);
  return lim.rlim_cur;
}

}  // namespace

Result<Report> RunBench(const BenchOptions& options) {
  LAMINA_CHECK(CheckOptions(options));
  if (::geteuid() != 0) {
    return Fail(EPERM, "lamina bench needs root (mounts of every driver, drop_caches)");
  }
  uint64_t nofile = RaiseOpenFileLimit();
  LAMINA_CHECK(MakeDirs(options.dir));
  std::string tmpl = options.dir + "/lamina-bench-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) return FailErrno("mkdtemp " + tmpl);
  std::string work = tmpl;

  Report report;
  Runner runner(options, report);
  BenchEnv& env = runner.env_;
  env.work_dir = work;
  env.image = options.image;
  env.lamina = options.lamina;
  env.helper_dir = options.helper_dir;
  env.untar_path = work + "/untar.tar";
  env.log = work + "/children.log";

  std::vector<Slot> slots;
  // Targets go first (their destructors unmount), then whatever is left.
  auto cleanup = Defer([&] {
    slots.clear();
    UnmountBelow(work);
    (void)RemoveTree(work);
  });

  struct utsname uts;
  report.setup["kernel"] = ::uname(&uts) == 0 ? uts.release : "?";
  report.setup["backing_fs"] = FilesystemType(work).value_or("?") + " (" + options.dir + ")";
  report.setup["cpus"] = std::to_string(::sysconf(_SC_NPROCESSORS_ONLN));
  report.setup["image"] = ImageText(options.image);
  report.setup["files"] = std::to_string(options.image.files);
  report.setup["dirs"] = std::to_string(options.image.dirs);
  report.setup["big_mb"] = std::to_string(options.image.big_mb);
  report.setup["create"] = std::to_string(options.image.create);
  report.setup["runs"] = std::to_string(options.runs);
  report.setup["open_file_limit"] = std::to_string(nofile);
  if (std::string params = FuseModuleParams(); !params.empty()) {
    report.setup["fuse_params"] = params;
  }

  std::vector<std::string> workloads = options.workloads;
  if (workloads.empty()) {
    for (const auto& w : AllWorkloads()) workloads.push_back(w.name);
  }
  // In the order of AllWorkloads, whatever order they were asked for in.
  for (const auto& w : AllWorkloads()) {
    if (std::find(workloads.begin(), workloads.end(), w.name) != workloads.end()) {
      report.workloads.push_back(w);
    }
  }
  workloads.clear();
  for (const auto& w : report.workloads) workloads.push_back(w.name);

  std::vector<std::string> targets = options.targets.empty() ? AllTargetNames() : options.targets;
  for (const auto& name : targets) {
    LAMINA_CHECK(CheckStop());
    if (options.progress) options.progress("setting up " + name);
    Slot slot;
    slot.info.name = name;
    slot.target = LAMINA_TRY(MakeTarget(name, env));
    auto what = slot.target->Setup();
    slot.info.usable = what.has_value();
    slot.info.reason = what ? *what : what.error().message();
    slots.push_back(std::move(slot));
  }
  for (const auto& s : slots) report.targets.push_back(s.info);

  if (std::find(workloads.begin(), workloads.end(), "untar") != workloads.end()) {
    LAMINA_CHECK(MakeUntarArchive(env));
  }
  LAMINA_CHECK(runner.Run(workloads, slots));
  report.targets.clear();
  for (const auto& s : slots) report.targets.push_back(s.info);

  for (const auto& s : slots) {
    if (!s.rss.empty()) {
      std::vector<double> values(s.rss.begin(), s.rss.end());
      report.rss_kib[s.info.name] = static_cast<uint64_t>(Summarize(values).median);
    }
  }
  for (const auto& [w, by_target] : runner.extras_) {
    for (const auto& [t, by_key] : by_target) {
      for (const auto& [key, values] : by_key) {
        report.At(w, t).extra[key] = Summarize(values).median;
      }
    }
  }
  return report;
}

}  // namespace lamina::bench
