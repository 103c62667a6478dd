#include "launcher/spec.h"

#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "common/path.h"

namespace lamina::launcher {

namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool ParseUnsigned(std::string_view text, uint64_t& out) {
  if (text.empty()) return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}

// Reads a small file below the root (nullopt when it does not exist).
std::optional<std::string> ReadInRoot(int rootfs_fd, const std::string& path) {
  auto fd = OpenInRoot(rootfs_fd, path, O_RDONLY);
  if (!fd) return std::nullopt;
  std::string data;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd->get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    data.append(buf, static_cast<size_t>(n));
    if (data.size() > (4u << 20)) break;
  }
  return data;
}

std::vector<std::vector<std::string>> ColonRecords(const std::string& text) {
  std::vector<std::vector<std::string>> records;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> fields;
    size_t start = 0;
    for (;;) {
      size_t colon = line.find(':', start);
      fields.push_back(line.substr(start, colon - start));
      if (colon == std::string::npos) break;
      start = colon + 1;
    }
    records.push_back(std::move(fields));
  }
  return records;
}

}  // namespace

Result<uint64_t> ParseMemory(std::string_view text) {
  std::string s = Lower(text);
  auto bad = [&] {
    return Fail(EINVAL, "bad memory size '" + std::string(text) +
                            "' (a number of bytes, or with k, m, g or t: 64m, 1g)");
  };
  for (const char* suffix : {"ib", "b"}) {
    std::string_view sv(suffix);
    if (s.size() > sv.size() && s.ends_with(sv) &&
        !std::isdigit(static_cast<unsigned char>(s[s.size() - sv.size() - 1])) ) {
      s.resize(s.size() - sv.size());
      break;
    }
  }
  if (s.ends_with("b")) s.pop_back();  // "1024b"
  uint64_t multiplier = 1;
  if (!s.empty()) {
    switch (s.back()) {
      case 'k': multiplier = 1ull << 10; break;
      case 'm': multiplier = 1ull << 20; break;
      case 'g': multiplier = 1ull << 30; break;
      case 't': multiplier = 1ull << 40; break;
      default: break;
    }
    if (multiplier != 1) s.pop_back();
  }
  uint64_t value = 0;
  if (!ParseUnsigned(s, value) || value == 0) return bad();
  if (value > UINT64_MAX / multiplier) return bad();
  return value * multiplier;
}

Result<double> ParseCpus(std::string_view text) {
  std::string s(text);
  char* end = nullptr;
  errno = 0;
  double value = s.empty() ? 0 : std::strtod(s.c_str(), &end);
  if (s.empty() || errno != 0 || end != s.c_str() + s.size() || !std::isfinite(value) ||
      value <= 0 || value > 1024) {
    return Fail(EINVAL, "bad --cpus '" + s + "' (a number of CPUs > 0, e.g. 0.5 or 2)");
  }
  return value;
}

Result<Volume> ParseVolume(std::string_view text) {
  std::string s(text);
  auto bad = [&](const std::string& why) {
    return Fail(EINVAL, "bad --volume '" + s + "': " + why + " (HOST:CONTAINER[:ro])");
  };
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    size_t colon = s.find(':', start);
    parts.push_back(s.substr(start, colon - start));
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  if (parts.size() < 2 || parts.size() > 3) return bad("expected two or three parts");
  Volume v;
  v.host = parts[0];
  v.container = parts[1];
  if (parts.size() == 3) {
    if (parts[2] == "ro") {
      v.read_only = true;
    } else if (parts[2] != "rw") {
      return bad("unknown mode '" + parts[2] + "'");
    }
  }
  if (v.host.empty() || v.host[0] != '/') return bad("the host path must be absolute");
  if (v.container.empty() || v.container[0] != '/') {
    return bad("the container path must be absolute");
  }
  auto clean = CleanRelativePath(v.container);
  if (!clean) return bad("the container path climbs out with '..'");
  if (clean->empty()) return bad("cannot mount over the container's root");
  v.container = "/" + *clean;
  return v;
}

Result<NetMode> ParseNet(std::string_view text) {
  if (text == "none" || text.empty()) return NetMode::kNone;
  if (text == "host") return NetMode::kHost;
  return Fail(EINVAL, "bad --net '" + std::string(text) + "' (none or host)");
}

std::string FormatBytes(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  size_t unit = 0;
  uint64_t whole = bytes;
  while (whole >= 1024 && whole % 1024 == 0 && unit + 1 < std::size(kUnits)) {
    whole /= 1024;
    ++unit;
  }
  if (whole < 1024 * 10 || unit + 1 >= std::size(kUnits)) {
    return std::to_string(whole) + " " + kUnits[unit];
  }
  double value = static_cast<double>(bytes);
  unit = 0;
  while (value >= 1024 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f %s", value, kUnits[unit]);
  return buf;
}

Result<ResolvedUser> ResolveUser(int rootfs_fd, std::string_view spec) {
  ResolvedUser user;
  std::string text(spec);
  if (text.empty()) text = "0";
  std::string user_part = text, group_part;
  if (size_t colon = text.find(':'); colon != std::string::npos) {
    user_part = text.substr(0, colon);
    group_part = text.substr(colon + 1);
  }
  auto passwd = ColonRecords(ReadInRoot(rootfs_fd, "/etc/passwd").value_or(""));
  auto group = ColonRecords(ReadInRoot(rootfs_fd, "/etc/group").value_or(""));

  uint64_t number = 0;
  std::string name;
  bool found = false;
  if (ParseUnsigned(user_part, number)) {
    if (number > 0xfffffffeull) return Fail(EINVAL, "bad user id '" + user_part + "'");
    user.uid = static_cast<uid_t>(number);
    user.gid = static_cast<gid_t>(number == 0 ? 0 : number);
    for (const auto& r : passwd) {
      uint64_t id = 0;
      if (r.size() >= 7 && ParseUnsigned(r[2], id) && id == number) {
        name = r[0];
        uint64_t g = 0;
        if (ParseUnsigned(r[3], g)) user.gid = static_cast<gid_t>(g);
        user.home = r[5].empty() ? "/" : r[5];
        found = true;
        break;
      }
    }
  } else {
    for (const auto& r : passwd) {
      uint64_t id = 0, g = 0;
      if (r.size() >= 7 && r[0] == user_part && ParseUnsigned(r[2], id) &&
          ParseUnsigned(r[3], g)) {
        name = r[0];
        user.uid = static_cast<uid_t>(id);
        user.gid = static_cast<gid_t>(g);
        user.home = r[5].empty() ? "/" : r[5];
        found = true;
        break;
      }
    }
    if (!found) {
      return Fail(ENOENT, "user '" + user_part + "' not found in the container's /etc/passwd");
    }
  }
  if (!group_part.empty()) {
    if (ParseUnsigned(group_part, number)) {
      if (number > 0xfffffffeull) return Fail(EINVAL, "bad group id '" + group_part + "'");
      user.gid = static_cast<gid_t>(number);
    } else {
      bool group_found = false;
      for (const auto& r : group) {
        uint64_t g = 0;
        if (r.size() >= 3 && r[0] == group_part && ParseUnsigned(r[2], g)) {
          user.gid = static_cast<gid_t>(g);
          group_found = true;
          break;
        }
      }
      if (!group_found) {
        return Fail(ENOENT, "group '" + group_part + "' not found in the container's /etc/group");
      }
    }
  } else if (!name.empty()) {
    // Supplementary groups listing the user by name (only without an explicit group).
    for (const auto& r : group) {
      uint64_t g = 0;
      if (r.size() < 4 || !ParseUnsigned(r[2], g)) continue;
      std::istringstream members(r[3]);
      std::string m;
      while (std::getline(members, m, ',')) {
        if (m == name && static_cast<gid_t>(g) != user.gid) {
          user.groups.push_back(static_cast<gid_t>(g));
        }
      }
    }
  }
  return user;
}

std::vector<std::string> MergeEnv(const std::vector<std::string>& base,
                                  const std::vector<std::string>& overrides,
                                  const std::string& home) {
  std::vector<std::string> env;
  auto key_of = [](const std::string& kv) { return kv.substr(0, kv.find('=')); };
  auto set = [&](const std::string& kv) {
    std::string key = key_of(kv);
    for (auto& existing : env) {
      if (key_of(existing) == key) {
        existing = kv;
        return;
      }
    }
    env.push_back(kv);
  };
  for (const auto& kv : base) set(kv);
  for (const auto& kv : overrides) {
    if (kv.find('=') == std::string::npos) {
      const char* value = std::getenv(kv.c_str());
      if (value != nullptr) set(kv + "=" + value);
      continue;
    }
    set(kv);
  }
  auto has = [&](const std::string& key) {
    for (const auto& kv : env) {
      if (key_of(kv) == key) return true;
    }
    return false;
  };
  if (!has("PATH")) env.push_back("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  if (!has("HOME")) env.push_back("HOME=" + home);
  return env;
}

}  // namespace lamina::launcher
