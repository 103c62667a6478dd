#include "launcher/cgroups.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>

#include "common/fs.h"

namespace lamina::launcher {

namespace {

struct MountLine {
  std::string root, point, fstype, super_opts;
};

std::vector<MountLine> ReadMountInfo() {
  std::vector<MountLine> lines;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, point, opts, field;
    fields >> id >> parent >> dev >> root >> point >> opts;
    while (fields >> field && field != "-") {
    }
    MountLine m;
    m.root = root;
    m.point = point;
    fields >> m.fstype >> field >> m.super_opts;
    lines.push_back(std::move(m));
  }
  return lines;
}

bool HasOption(const std::string& opts, const std::string& name) {
  std::istringstream in(opts);
  std::string o;
  while (std::getline(in, o, ',')) {
    if (o == name) return true;
  }
  return false;
}

// The directory of cgroup path `own` within a hierarchy mounted at `point`
// whose mount shows the hierarchy from `root` on.
std::string HierarchyDir(const std::string& point, const std::string& root,
                         const std::string& own) {
  std::string rel = own;
  if (root != "/" && (rel == root || rel.starts_with(root + "/"))) rel = rel.substr(root.size());
  if (rel == "/") rel.clear();
  return point + rel;
}

Result<void> WriteValue(const std::string& path, const std::string& value) {
  Fd fd = LAMINA_TRY(Open(path, O_WRONLY));
  if (::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size())) {
    return FailErrno("write " + value + " to " + path);
  }
  return {};
}

uint64_t ReadKey(const std::string& path, const std::string& key) {
  auto text = ReadFile(path);
  if (!text) return 0;
  std::istringstream in(*text);
  std::string k;
  uint64_t v = 0;
  while (in >> k >> v) {
    if (k == key) return v;
  }
  return 0;
}

Result<void> MakeDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) return FailErrno("mkdir " + path);
  return {};
}

// Kills every task in `dir` and removes it, retrying while the kernel reaps them.
Result<void> KillAndRemove(const std::string& dir) {
  for (int attempt = 0; attempt < 200; ++attempt) {
    if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return {};
    if (errno != EBUSY) return FailErrno("rmdir " + dir);
    if (auto procs = ReadFile(dir + "/cgroup.procs")) {
      std::istringstream in(*procs);
      pid_t pid = 0;
      while (in >> pid) ::kill(pid, SIGKILL);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return Fail(EBUSY, "rmdir " + dir + ": tasks are still in it");
}

}  // namespace

std::string CgroupLayout::Describe() const {
  switch (version) {
    case CgroupVersion::kV2: return "cgroup v2 at " + v2_mount;
    case CgroupVersion::kV1: {
      std::string s = "cgroup v1 (";
      std::string sep;
      if (!v1_memory.empty()) s += std::exchange(sep, ", ") + "memory";
      if (!v1_pids.empty()) s += std::exchange(sep, ", ") + "pids";
      if (!v1_cpu.empty()) s += std::exchange(sep, ", ") + "cpu";
      return s + ")";
    }
    default: return "no cgroup controllers";
  }
}

Result<CgroupLayout> DetectCgroups() {
  CgroupLayout layout;
  std::map<std::string, std::string> own;  // controller (or "" for v2) -> path
  {
    auto text = LAMINA_TRY(ReadFile("/proc/self/cgroup"));
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      size_t a = line.find(':');
      size_t b = line.find(':', a + 1);
      if (a == std::string::npos || b == std::string::npos) continue;
      std::string controllers = line.substr(a + 1, b - a - 1);
      std::string path = line.substr(b + 1);
      if (controllers.empty()) {
        own[""] = path;
        continue;
      }
      std::istringstream names(controllers);
      std::string name;
      while (std::getline(names, name, ',')) own[name] = path;
    }
  }
  std::string v2_point, v2_root;
  MountLine memory, pids, cpu;
  for (const auto& m : ReadMountInfo()) {
    if (m.fstype == "cgroup2" && v2_point.empty()) {
      v2_point = m.point;
      v2_root = m.root;
    } else if (m.fstype == "cgroup") {
      if (HasOption(m.super_opts, "memory") && memory.point.empty()) memory = m;
      if (HasOption(m.super_opts, "pids") && pids.point.empty()) pids = m;
      if (HasOption(m.super_opts, "cpu") && cpu.point.empty()) cpu = m;
    }
  }
  // Known on every host with a cgroup2 mount; v2 counts when it holds the
  // controllers we use.
  if (!v2_point.empty()) {
    layout.v2_mount = v2_point;
    layout.own_v2 = HierarchyDir(v2_point, v2_root, own[""]);
    auto controllers = ReadFile(v2_point + "/cgroup.controllers").value_or("");
    std::set<std::string> have;
    std::istringstream in(controllers);
    std::string c;
    while (in >> c) have.insert(c);
    if (have.contains("memory") && have.contains("pids")) {
      layout.version = CgroupVersion::kV2;
      return layout;
    }
  }
  if (!memory.point.empty() || !pids.point.empty() || !cpu.point.empty()) {
    layout.version = CgroupVersion::kV1;
    layout.v1_memory = memory.point;
    layout.v1_pids = pids.point;
    layout.v1_cpu = cpu.point;
    if (!memory.point.empty()) layout.own_memory = HierarchyDir(memory.point, memory.root, own["memory"]);
    if (!pids.point.empty()) layout.own_pids = HierarchyDir(pids.point, pids.root, own["pids"]);
    if (!cpu.point.empty()) layout.own_cpu = HierarchyDir(cpu.point, cpu.root, own["cpu"]);
  }
  return layout;
}

Cgroup& Cgroup::operator=(Cgroup&& other) noexcept {
  if (this != &other) {
    (void)Destroy();
    version_ = other.version_;
    dirs_ = std::move(other.dirs_);
    memory_dir_ = std::move(other.memory_dir_);
    other.dirs_.clear();
    other.memory_dir_.clear();
  }
  return *this;
}

Result<Cgroup> Cgroup::Create(const CgroupLayout& layout, const std::string& id,
                              const Limits& limits, bool required) {
  auto made = CreateImpl(layout, id, limits, required);
  // Without limits the groups are a nicety: a host where they cannot be made
  // (a read-only cgroupfs in a container) still runs containers.
  if (!made && !limits.any()) return Cgroup();
  return made;
}

Result<Cgroup> Cgroup::CreateImpl(const CgroupLayout& layout, const std::string& id,
                                  const Limits& limits, bool required) {
  Cgroup group;
  group.version_ = layout.version;
  if (!limits.any() && !required) return group;

  auto need = [&](bool wanted, const std::string& what, const std::string& have) -> Result<void> {
    if (wanted && have.empty()) {
      return Fail(ENOTSUP, what + " needs the " +
                               (what == "--memory" ? std::string("memory")
                                : what == "--pids" ? std::string("pids")
                                                   : std::string("cpu")) +
                               " cgroup controller, which this host does not offer (" +
                               layout.Describe() + ")");
    }
    return {};
  };
  auto no_delegation = [&](const std::string& what, const Error& e) {
    if (::geteuid() != 0 && (e.code() == EACCES || e.code() == EPERM || e.code() == EROFS)) {
      return Error(e.code(), what + " needs a delegated cgroup; not available for this user (" +
                                 e.context() + ")");
    }
    return e.Wrap(what);
  };
  std::string what = limits.memory_bytes ? "--memory" : limits.pids ? "--pids"
                     : limits.cpus       ? "--cpus"
                                         : "cgroup";

  if (layout.version == CgroupVersion::kNone) {
    if (limits.any()) {
      return Fail(ENOTSUP, what + " needs cgroups, and none are mounted on this host");
    }
    return group;
  }

  if (layout.version == CgroupVersion::kV2) {
    std::string parent = ::geteuid() == 0 ? layout.v2_mount : layout.own_v2;
    std::string base = parent + "/lamina";
    std::string dir = base + "/" + id;
    // Only controllers the parent offers can be enabled below it; a limit
    // whose controller is elsewhere (on v1, or not delegated) is refused.
    std::set<std::string> offered;
    {
      std::istringstream in(ReadFile(parent + "/cgroup.controllers").value_or(""));
      std::string c;
      while (in >> c) offered.insert(c);
    }
    std::string offered_text;
    for (const auto& c : offered) offered_text += (offered_text.empty() ? "" : " ") + c;
    for (const auto& [wanted, option, controller] :
         {std::tuple{limits.memory_bytes.has_value(), "--memory", "memory"},
          std::tuple{limits.pids.has_value(), "--pids", "pids"},
          std::tuple{limits.cpus.has_value(), "--cpus", "cpu"}}) {
      if (wanted && !offered.contains(controller)) {
        return Fail(ENOTSUP, std::string(option) + " needs the " + controller +
                                 " controller on cgroup v2, which " + parent + " does not offer" +
                                 " (it has: " + (offered_text.empty() ? "none" : offered_text) +
                                 ")");
      }
    }
    std::string controllers;
    for (const char* c : {"memory", "pids", "cpu"}) {
      if (offered.contains(c)) controllers += std::string(controllers.empty() ? "+" : " +") + c;
    }
    auto made = MakeDir(base);
    if (!made) return Fail(no_delegation(what, made.error()));
    if (!controllers.empty()) {
      (void)WriteValue(parent + "/cgroup.subtree_control", controllers);
      auto enabled = WriteValue(base + "/cgroup.subtree_control", controllers);
      if (!enabled && limits.any()) return Fail(no_delegation(what, enabled.error()));
    }
    made = MakeDir(dir);
    if (!made) return Fail(no_delegation(what, made.error()));
    group.dirs_.push_back(dir);
    group.memory_dir_ = dir;
    if (limits.memory_bytes) {
      auto set = WriteValue(dir + "/memory.max", std::to_string(*limits.memory_bytes));
      if (!set) return Fail(no_delegation("--memory", set.error()));
      if (PathExists(dir + "/memory.swap.max")) (void)WriteValue(dir + "/memory.swap.max", "0");
    }
    if (limits.pids) {
      auto set = WriteValue(dir + "/pids.max", std::to_string(*limits.pids));
      if (!set) return Fail(no_delegation("--pids", set.error()));
    }
    if (limits.cpus) {
      auto quota = static_cast<uint64_t>(std::llround(*limits.cpus * 100000));
      auto set = WriteValue(dir + "/cpu.max", std::to_string(quota) + " 100000");
      if (!set) return Fail(no_delegation("--cpus", set.error()));
    }
    return group;
  }

  // v1: one group per controller hierarchy.
  LAMINA_CHECK(need(limits.memory_bytes.has_value(), "--memory", layout.own_memory));
  LAMINA_CHECK(need(limits.pids.has_value(), "--pids", layout.own_pids));
  LAMINA_CHECK(need(limits.cpus.has_value(), "--cpus", layout.own_cpu));
  auto make = [&](const std::string& own, const std::string& limit_name) -> Result<std::string> {
    std::string base = own + "/lamina";
    auto made = MakeDir(base);
    if (made) made = MakeDir(base + "/" + id);
    if (!made) return Fail(no_delegation(limit_name, made.error()));
    group.dirs_.push_back(base + "/" + id);
    return base + "/" + id;
  };
  if (!layout.own_memory.empty() && (required || limits.memory_bytes)) {
    std::string dir = LAMINA_TRY(make(layout.own_memory, "--memory"));
    group.memory_dir_ = dir;
    if (limits.memory_bytes) {
      std::string bytes = std::to_string(*limits.memory_bytes);
      auto set = WriteValue(dir + "/memory.limit_in_bytes", bytes);
      if (!set) return Fail(no_delegation("--memory", set.error()));
      // No swap beyond the limit, where swap is accounted.
      if (PathExists(dir + "/memory.memsw.limit_in_bytes")) {
        (void)WriteValue(dir + "/memory.memsw.limit_in_bytes", bytes);
      }
      (void)WriteValue(dir + "/memory.swappiness", "0");
    }
  }
  if (!layout.own_pids.empty() && (required || limits.pids)) {
    std::string dir = LAMINA_TRY(make(layout.own_pids, "--pids"));
    if (limits.pids) {
      auto set = WriteValue(dir + "/pids.max", std::to_string(*limits.pids));
      if (!set) return Fail(no_delegation("--pids", set.error()));
    }
  }
  if (!layout.own_cpu.empty() && (required || limits.cpus)) {
    std::string dir = LAMINA_TRY(make(layout.own_cpu, "--cpus"));
    if (limits.cpus) {
      auto quota = static_cast<uint64_t>(std::llround(*limits.cpus * 100000));
      auto set = WriteValue(dir + "/cpu.cfs_period_us", "100000");
      if (set) set = WriteValue(dir + "/cpu.cfs_quota_us", std::to_string(quota));
      if (!set) return Fail(no_delegation("--cpus", set.error()));
    }
  }
  return group;
}

Result<void> Cgroup::AddProcess(pid_t pid) const {
  for (const auto& dir : dirs_) {
    auto added = WriteValue(dir + "/cgroup.procs", std::to_string(pid));
    if (!added) return Fail(added.error().Wrap("put the container into its cgroup"));
  }
  return {};
}

uint64_t Cgroup::OomKills() const {
  if (memory_dir_.empty()) return 0;
  if (version_ == CgroupVersion::kV2) return ReadKey(memory_dir_ + "/memory.events", "oom_kill");
  return ReadKey(memory_dir_ + "/memory.oom_control", "oom_kill");
}

Result<void> Cgroup::Destroy() {
  Result<void> result;
  for (const auto& dir : dirs_) {
    auto removed = KillAndRemove(dir);
    if (!removed && result) result = removed;
  }
  dirs_.clear();
  memory_dir_.clear();
  return result;
}

void RemoveCgroupDirs(const std::vector<std::string>& dirs) {
  for (const auto& dir : dirs) {
    // Only groups lamina makes: ".../lamina/<id>".
    if (dir.find("/lamina/") == std::string::npos || dir.find("/../") != std::string::npos) continue;
    if (PathExists(dir)) (void)KillAndRemove(dir);
  }
}

}  // namespace lamina::launcher
