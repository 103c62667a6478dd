#include "launcher/idmap.h"

#include <pwd.h>
#include <unistd.h>

#include <charconv>
#include <sstream>

#include "common/fs.h"

namespace lamina::launcher {

namespace {

bool ToU32(const std::string& s, uint32_t& out) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size() && !s.empty();
}

std::string Format(const std::vector<IdRange>& ranges) {
  std::string s;
  for (const auto& r : ranges) {
    if (!s.empty()) s += ",";
    s += std::to_string(r.inside) + ":" + std::to_string(r.outside) + ":" +
         std::to_string(r.count);
  }
  return s;
}

std::string HelperPath(const char* name) {
  for (const char* dir : {"/usr/bin/", "/bin/", "/usr/sbin/", "/sbin/"}) {
    std::string path = std::string(dir) + name;
    if (::access(path.c_str(), X_OK) == 0) return path;
  }
  return {};
}

Result<void> WriteProc(pid_t pid, const std::string& file, const std::string& text) {
  std::string path = "/proc/" + std::to_string(pid) + "/" + file;
  Fd fd = LAMINA_TRY(Open(path, O_WRONLY));
  if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    return FailErrno("write " + path);
  }
  return {};
}

Result<void> RunHelper(const std::string& helper, pid_t pid, const std::vector<IdRange>& ranges) {
  std::vector<std::string> argv = {helper, std::to_string(pid)};
  for (const auto& r : ranges) {
    argv.push_back(std::to_string(r.inside));
    argv.push_back(std::to_string(r.outside));
    argv.push_back(std::to_string(r.count));
  }
  std::string err;
  int status = LAMINA_TRY(RunCommand(argv, nullptr, &err));
  if (status != 0) {
    while (!err.empty() && err.back() == '\n') err.pop_back();
    return Fail(EPERM, helper + " " + Format(ranges) + " failed (status " +
                           std::to_string(status) + "): " + err);
  }
  return {};
}

}  // namespace

std::string IdMapPlan::Describe() const {
  return "uids " + Format(uids) + " gids " + Format(gids) +
         (use_helpers ? " (newuidmap/newgidmap)" : " (single id)");
}

std::vector<std::pair<uint32_t, uint32_t>> ParseSubIds(const std::string& text,
                                                       const std::string& user, uid_t uid) {
  std::vector<std::pair<uint32_t, uint32_t>> ranges;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::string name, start, count;
    if (!std::getline(fields, name, ':') || !std::getline(fields, start, ':') ||
        !std::getline(fields, count)) {
      continue;
    }
    uint32_t owner = 0, s = 0, c = 0;
    bool match = name == user || (ToU32(name, owner) && owner == uid);
    if (match && ToU32(start, s) && ToU32(count, c) && c > 0) ranges.emplace_back(s, c);
  }
  return ranges;
}

IdMapPlan PlanIdMaps() {
  uid_t uid = ::geteuid();
  gid_t gid = ::getegid();
  std::string name;
  if (struct passwd* pw = ::getpwuid(uid)) name = pw->pw_name;
  auto subuids = ParseSubIds(ReadFile("/etc/subuid").value_or(""), name, uid);
  auto subgids = ParseSubIds(ReadFile("/etc/subgid").value_or(""), name, uid);
  std::string newuidmap = HelperPath("newuidmap"), newgidmap = HelperPath("newgidmap");

  IdMapPlan plan;
  plan.uids.push_back({0, static_cast<uint32_t>(uid), 1});
  plan.gids.push_back({0, static_cast<uint32_t>(gid), 1});
  if (uid == 0) {
    // Root writes its maps itself; the extra range is root's own sub-ids.
    if (!subuids.empty()) plan.uids.push_back({1, subuids[0].first, subuids[0].second});
    if (!subgids.empty()) plan.gids.push_back({1, subgids[0].first, subgids[0].second});
    plan.use_helpers = false;
    return plan;
  }
  if (!subuids.empty() && !subgids.empty() && !newuidmap.empty() && !newgidmap.empty()) {
    // newuidmap maps only whole sub-id ranges; keep the first one (65536 ids
    // is what images need: nobody = 65534).
    plan.uids.push_back({1, subuids[0].first, subuids[0].second});
    plan.gids.push_back({1, subgids[0].first, subgids[0].second});
    plan.use_helpers = true;
  }
  plan.setgroups_allowed = plan.use_helpers;
  return plan;
}

Result<void> ApplyIdMaps(pid_t pid, const IdMapPlan& plan) {
  if (plan.use_helpers) {
    LAMINA_CHECK(RunHelper(HelperPath("newuidmap"), pid, plan.uids));
    LAMINA_CHECK(RunHelper(HelperPath("newgidmap"), pid, plan.gids));
    return {};
  }
  auto text = [](const std::vector<IdRange>& ranges) {
    std::string s;
    for (const auto& r : ranges) {
      s += std::to_string(r.inside) + " " + std::to_string(r.outside) + " " +
           std::to_string(r.count) + "\n";
    }
    return s;
  };
  // Without CAP_SETGID in the parent namespace, gid_map needs setgroups denied.
  if (::geteuid() != 0) LAMINA_CHECK(WriteProc(pid, "setgroups", "deny"));
  LAMINA_CHECK(WriteProc(pid, "uid_map", text(plan.uids)));
  LAMINA_CHECK(WriteProc(pid, "gid_map", text(plan.gids)));
  return {};
}

bool IsMapped(const std::vector<IdRange>& ranges, uint32_t id) {
  for (const auto& r : ranges) {
    if (id >= r.inside && id - r.inside < r.count) return true;
  }
  return false;
}

}  // namespace lamina::launcher
