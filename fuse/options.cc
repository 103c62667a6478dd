#include "fuse/options.h"

#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>

#include "common/path.h"

namespace lamina::fuse {
namespace {

// ---- escapes ---------------------------------------------------------------

// Removes backslash escapes and unescaped double quotes.
std::string Unescape(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '\\' && i + 1 < raw.size()) {
      out += raw[++i];
    } else if (raw[i] != '"') {
      out += raw[i];
    }
  }
  return out;
}

// Splits an -o group on unescaped, unquoted commas; items keep their escapes.
std::vector<std::string> SplitGroup(std::string_view group) {
  std::vector<std::string> items;
  std::string cur;
  bool quoted = false;
  for (size_t i = 0; i < group.size(); ++i) {
    char c = group[i];
    if (c == '\\' && i + 1 < group.size()) {
      cur += c;
      cur += group[++i];
    } else if (c == '"') {
      quoted = !quoted;
      cur += c;
    } else if (c == ',' && !quoted) {
      items.push_back(std::move(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  items.push_back(std::move(cur));
  return items;
}

// ---- values ----------------------------------------------------------------

std::unexpected<Error> Bad(std::string_view option, std::string_view why) {
  return Fail(EINVAL, "option " + std::string(option) + ": " + std::string(why));
}

Result<int64_t> ParseInt(std::string_view option, std::string_view value, int64_t min,
                         int64_t max) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
  if (value.empty() || ec != std::errc() || end != value.data() + value.size()) {
    return Bad(option, "'" + std::string(value) + "' is not a number");
  }
  if (v < min || v > max) {
    return Bad(option, std::string(value) + " is out of range (" + std::to_string(min) + ".." +
                           std::to_string(max) + ")");
  }
  return v;
}

Result<bool> ParseZeroOne(std::string_view option, std::string_view value) {
  if (value == "0") return false;
  if (value == "1") return true;
  return Bad(option, "'" + std::string(value) + "' must be 0 or 1");
}

Result<double> ParseSeconds(std::string_view option, const std::string& value) {
  if (value.empty()) return Bad(option, "needs a number of seconds");
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(value.c_str(), &end);
  if (end != value.c_str() + value.size() || errno == ERANGE || !std::isfinite(v)) {
    return Bad(option, "'" + value + "' is not a number of seconds");
  }
  if (v < 0) return Bad(option, "'" + value + "' is negative");
  return v;
}

// ---- kernel flags ------------------------------------------------------------

// Mount flags libfuse (3.14) passes on to the kernel or fusermount3, in the
// canonical order they are kept in FsConfig::kernel_mount_options. Flags in
// one group replace each other.
struct KernelFlag {
  std::string_view name;
  int group;
};
constexpr std::array<KernelFlag, 16> kKernelFlags = {{
    {"suid", 0},
    {"nosuid", 0},
    {"dev", 1},
    {"nodev", 1},
    {"exec", 2},
    {"noexec", 2},
    {"async", 3},
    {"sync", 3},
    {"dirsync", 4},
    {"atime", 5},
    {"noatime", 5},
    {"allow_root", 6},
    {"auto_unmount", 7},
    {"max_read=", 8},
    {"blkdev", 9},
    {"blksize=", 10},
}};

std::optional<KernelFlag> FindKernelFlag(std::string_view item) {
  for (const auto& f : kKernelFlags) {
    if (f.name.ends_with('=') ? item.starts_with(f.name) : item == f.name) return f;
  }
  return std::nullopt;
}

void AddKernelFlag(FsConfig* config, const std::string& item) {
  auto flag = FindKernelFlag(item);
  auto& opts = config->kernel_mount_options;
  std::erase_if(opts, [&](const std::string& o) {
    auto f = FindKernelFlag(o);
    return f && flag && f->group == flag->group;
  });
  opts.push_back(item);
  auto rank = [](const std::string& o) {
    for (size_t i = 0; i < kKernelFlags.size(); ++i) {
      const auto& name = kKernelFlags[i].name;
      if (name.ends_with('=') ? o.starts_with(name) : o == name) return i;
    }
    return kKernelFlags.size();
  };
  std::stable_sort(opts.begin(), opts.end(),
                   [&](const std::string& a, const std::string& b) { return rank(a) < rank(b); });
}

// Accepted and ignored: they change nothing for lamina-fuse. fstab and
// mount(8) bookkeeping; atime variants libfuse cannot pass on (noatime is
// the default already); libfuse/fuse2 tuning that does not apply; kernel
// overlayfs options whose behaviour lamina-fuse has anyway.
constexpr std::array<std::string_view, 37> kNoOps = {
    "defaults",   "auto",        "noauto",      "user",         "nouser",      "users",
    "owner",      "group",       "nofail",      "_netdev",      "diratime",    "nodiratime",
    "relatime",   "norelatime",  "strictatime", "nostrictatime", "lazytime",   "nolazytime",
    "symfollow",  "nosymfollow", "iversion",    "noiversion",   "mand",        "nomand",
    "silent",     "loud",        "kernel_cache", "splice_read", "splice_write", "splice_move",
    "max_write",  "nonempty",    "big_writes",  "userxattr",    "clone_fd",    "auto_cache",
    "no_remote_lock"};
constexpr std::array<std::string_view, 12> kNoOpPrefixes = {
    "x-",        "comment=",   "user=",         "max_write=", "index=", "metacopy=",
    "nfs_export=", "fscontext=", "defcontext=", "rootcontext=", "uuid=", "helper="};

// ---- one option ------------------------------------------------------------

Result<void> ParseItem(const std::string& raw, CommandLine* cl) {
  FsConfig& c = cl->config;
  size_t eq = raw.find('=');
  std::string name = Unescape(raw.substr(0, eq));
  bool has_value = eq != std::string::npos;
  std::string raw_value = has_value ? raw.substr(eq + 1) : std::string();
  std::string value = Unescape(raw_value);

  auto flag = [&](bool* target) -> Result<void> {
    if (has_value) return Bad(name, "takes no value");
    *target = true;
    return {};
  };
  auto needs_value = [&]() -> Result<void> {
    if (!has_value) return Bad(name, "needs a value (" + name + "=...)");
    return {};
  };
  auto path = [&](std::string* target) -> Result<void> {
    LAMINA_CHECK(needs_value());
    if (value.empty()) return Bad(name, "names no directory");
    *target = value;
    return {};
  };

  if (name == "lowerdir") {
    LAMINA_CHECK(needs_value());
    auto lowers = SplitLowerDirs(raw_value);
    if (lowers.empty()) return Bad(name, "names no directory");
    c.lowers = std::move(lowers);
    return {};
  }
  if (name == "upperdir") return path(&c.upper);
  if (name == "workdir") return path(&c.work);
  if (name == "uidmapping" || name == "gidmapping") {
    LAMINA_CHECK(needs_value());
    auto ranges = LAMINA_TRY(ParseIdMapping(name, value));
    (name == "uidmapping" ? c.uid_map : c.gid_map) = std::move(ranges);
    return {};
  }
  if (name == "squash_to_root") return flag(&c.squash_to_root);
  if (name == "squash_to_uid" || name == "squash_to_gid") {
    LAMINA_CHECK(needs_value());
    int64_t id = LAMINA_TRY(ParseInt(name, value, 0, int64_t{UINT32_MAX} - 1));
    (name == "squash_to_uid" ? c.squash_to_uid : c.squash_to_gid) = id;
    return {};
  }
  if (name == "xattr_permissions") {
    LAMINA_CHECK(needs_value());
    c.xattr_permissions = static_cast<int>(LAMINA_TRY(ParseInt(name, value, 0, 2)));
    return {};
  }
  if (name == "static_nlink") return flag(&c.static_nlink);
  if (name == "noacl") return flag(&c.noacl);
  if (name == "noxattrs") {
    if (!has_value) {
      c.noxattrs = true;
      return {};
    }
    c.noxattrs = LAMINA_TRY(ParseZeroOne(name, value));
    return {};
  }
  if (name == "timeout") {
    LAMINA_CHECK(needs_value());
    c.timeout = LAMINA_TRY(ParseSeconds(name, value));
    return {};
  }
  if (name == "threaded" || name == "fsync" || name == "writeback" || name == "fast_ino") {
    LAMINA_CHECK(needs_value());
    bool on = LAMINA_TRY(ParseZeroOne(name, value));
    if (name == "threaded") c.threaded = on;
    if (name == "fsync") c.fsync = on;
    if (name == "writeback") c.writeback = on;
    if (name == "fast_ino") cl->fast_ino = on ? 1 : 0;
    return {};
  }
  if (name == "volatile") return flag(&c.volatile_mode);
  if (name == "ino32_t") return flag(&c.ino32);
  if (name == "redirect_dir") {
    LAMINA_CHECK(needs_value());
    // Kernel meanings: on = create and follow redirects; follow = follow
    // only; nofollow/off = neither. Creating them is what the flag controls.
    if (value != "on" && value != "off" && value != "follow" && value != "nofollow") {
      return Bad(name, "'" + value + "' is not one of on, off, follow, nofollow");
    }
    c.redirect_dir = value == "on";
    cl->redirect_dir_mode = value;
    return {};
  }
  if (name == "xino") {
    LAMINA_CHECK(needs_value());
    if (value != "on" && value != "off" && value != "auto") {
      return Bad(name, "'" + value + "' is not one of on, off, auto");
    }
    c.xino = value != "off";
    cl->xino_mode = value;
    return {};
  }
  if (name == "context") {
    LAMINA_CHECK(needs_value());
    c.context = value;
    return {};
  }
  if (name == "plugins") {
    if (!value.empty()) return Bad(name, "fuse-overlayfs plugins are not supported by lamina-fuse");
    return {};
  }
  if (name == "debug") {
    if (has_value) return Bad(name, "takes no value");
    c.debug = true;
    c.foreground = true;
    return {};
  }
  if (name == "ro" || name == "rw") {
    if (has_value) return Bad(name, "takes no value");
    c.read_only = name == "ro";
    return {};
  }
  if (name == "allow_other") return flag(&c.allow_other);
  if (name == "default_permissions") return flag(&c.default_permissions);
  if (name == "fsname" || name == "subtype") {
    LAMINA_CHECK(needs_value());
    if (value.empty()) return Bad(name, "must not be empty");
    (name == "fsname" ? c.fsname : c.subtype) = value;
    return {};
  }
  if (name == "max_threads" || name == "max_idle_threads") {
    LAMINA_CHECK(needs_value());
    int v = static_cast<int>(LAMINA_TRY(ParseInt(name, value, -1, 100000)));
    (name == "max_threads" ? cl->max_threads : cl->max_idle_threads) = v;
    return {};
  }
  if (name == "clone_fd") {
    if (has_value) return Bad(name, "takes no value");
    cl->clone_fd = true;
    return {};
  }

  std::string item = has_value ? name + "=" + value : name;
  if (auto kf = FindKernelFlag(item)) {
    if (kf->name.ends_with('=')) {
      LAMINA_CHECK(ParseInt(name, value, 1, INT32_MAX));
    } else if (has_value) {
      return Bad(name, "takes no value");
    }
    AddKernelFlag(&c, item);
    return {};
  }
  for (auto prefix : kNoOpPrefixes) {
    if (item.starts_with(prefix)) return {};
  }
  if (std::find(kNoOps.begin(), kNoOps.end(), name) != kNoOps.end()) {
    if (has_value) return Bad(name, "takes no value");
    return {};
  }
  return Fail(EINVAL, "unknown option '" + item + "'");
}

}  // namespace

// ---- public ------------------------------------------------------------------

std::vector<std::string> SplitLowerDirs(std::string_view value) {
  std::vector<std::string> dirs;
  std::string cur;
  auto flush = [&] {
    std::string dir = Unescape(cur);
    if (!dir.empty()) dirs.push_back(std::move(dir));
    cur.clear();
  };
  for (size_t i = 0; i < value.size(); ++i) {
    if (value[i] == '\\' && i + 1 < value.size()) {
      cur += value[i];
      cur += value[++i];
    } else if (value[i] == ':') {
      flush();
    } else {
      cur += value[i];
    }
  }
  flush();
  return dirs;
}

Result<std::vector<IdMapRange>> ParseIdMapping(std::string_view option, std::string_view value) {
  std::vector<uint32_t> numbers;
  size_t start = 0;
  while (start <= value.size()) {
    size_t end = value.find(':', start);
    if (end == std::string_view::npos) end = value.size();
    std::string_view item = value.substr(start, end - start);
    if (!item.empty()) {
      auto n = ParseInt(option, item, 0, UINT32_MAX);
      if (!n) return Bad(option, "bad mapping '" + std::string(value) + "': '" +
                                     std::string(item) + "' is not an id");
      numbers.push_back(static_cast<uint32_t>(*n));
    }
    start = end + 1;
  }
  if (numbers.empty() || numbers.size() % 3 != 0) {
    return Bad(option, "bad mapping '" + std::string(value) +
                           "': expected inner:outer:count triples joined by ':'");
  }
  std::vector<IdMapRange> ranges;
  for (size_t i = 0; i < numbers.size(); i += 3) {
    IdMapRange r{numbers[i], numbers[i + 1], numbers[i + 2]};
    if (r.count == 0) return Bad(option, "bad mapping '" + std::string(value) + "': count 0");
    if (uint64_t{r.inner} + r.count > (uint64_t{1} << 32) ||
        uint64_t{r.outer} + r.count > (uint64_t{1} << 32)) {
      return Bad(option, "bad mapping '" + std::string(value) + "': range past 2^32");
    }
    for (const auto& o : ranges) {
      bool inner_overlap = r.inner < uint64_t{o.inner} + o.count &&
                           o.inner < uint64_t{r.inner} + r.count;
      bool outer_overlap = r.outer < uint64_t{o.outer} + o.count &&
                           o.outer < uint64_t{r.outer} + r.count;
      if (inner_overlap || outer_overlap) {
        return Bad(option, "bad mapping '" + std::string(value) + "': ranges overlap");
      }
    }
    ranges.push_back(r);
  }
  return ranges;
}

Result<void> ParseOptionGroup(std::string_view group, CommandLine* cl) {
  for (const auto& item : SplitGroup(group)) {
    if (item.empty()) continue;  // ",," and a trailing "," as fuse-overlayfs
    LAMINA_CHECK(ParseItem(item, cl));
  }
  return {};
}

Result<CommandLine> ParseCommandLine(const std::vector<std::string>& args, const ParseEnv& env) {
  CommandLine cl;
  FsConfig& c = cl.config;
  // fuse-overlayfs's defaults: root mounts are shared and allow set-id
  // programs (containers need both); every mount checks permissions in the
  // kernel and does not update atime.
  c.default_permissions = true;
  if (env.euid == 0) {
    c.allow_other = true;
    AddKernelFlag(&c, "suid");
  }
  AddKernelFlag(&c, "noatime");

  std::vector<std::string> positional;
  bool options_done = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (options_done || a.empty() || a[0] != '-' || a == "-") {
      positional.push_back(a);
      continue;
    }
    if (a == "--") {
      options_done = true;
    } else if (a == "-o") {
      if (i + 1 >= args.size()) return Fail(EINVAL, "option -o needs an argument");
      LAMINA_CHECK(ParseOptionGroup(args[++i], &cl));
    } else if (a.starts_with("-o")) {
      LAMINA_CHECK(ParseOptionGroup(std::string_view(a).substr(2), &cl));
    } else if (a == "-f") {
      c.foreground = true;
    } else if (a == "-d" || a == "--debug") {
      c.debug = true;
      c.foreground = true;
    } else if (a == "-s") {
      c.threaded = false;
    } else if (a == "-h" || a == "--help") {
      cl.show_help = true;
    } else if (a == "-V" || a == "--version") {
      cl.show_version = true;
    } else {
      return Fail(EINVAL, "unknown option '" + a + "' (see --help)");
    }
  }
  if (cl.show_help || cl.show_version) return cl;

  if (positional.empty()) return Fail(EINVAL, "no mount point given (see --help)");
  if (positional.size() > 2) {
    return Fail(EINVAL, "too many arguments: '" + positional[2] +
                            "' (expected [SOURCE] MOUNTPOINT)");
  }
  if (positional.size() == 2) cl.source = positional[0];
  c.mountpoint = positional.back();
  if (c.mountpoint.empty()) return Fail(EINVAL, "empty mount point");

  if (c.lowers.empty()) {
    return Fail(EINVAL, "option lowerdir= is required (upperdir= alone is refused, as "
                        "fuse-overlayfs does)");
  }
  if (!c.upper.empty() && c.work.empty()) {
    return Fail(EINVAL, "option upperdir= needs workdir= as well");
  }
  if (c.upper.empty()) c.read_only = true;
  if (c.volatile_mode) c.fsync = false;
  if (c.fsname.empty() && !cl.source.empty()) c.fsname = cl.source;
  return cl;
}

Result<void> ResolvePaths(FsConfig* config, const std::string& cwd) {
  auto absolute = [&](const std::string& p) { return p.starts_with('/') ? p : JoinPath(cwd, p); };
  auto resolve_dir = [&](const std::string& option, std::string* p) -> Result<void> {
    char buf[PATH_MAX];
    if (::realpath(absolute(*p).c_str(), buf) == nullptr) {
      return FailErrno("option " + option + "=" + *p);
    }
    struct stat st;
    if (::stat(buf, &st) != 0) return FailErrno("option " + option + "=" + *p);
    if (!S_ISDIR(st.st_mode)) return Fail(ENOTDIR, "option " + option + "=" + *p);
    *p = buf;
    return {};
  };
  for (auto& lower : config->lowers) LAMINA_CHECK(resolve_dir("lowerdir", &lower));
  if (!config->upper.empty()) LAMINA_CHECK(resolve_dir("upperdir", &config->upper));
  if (!config->work.empty()) LAMINA_CHECK(resolve_dir("workdir", &config->work));

  std::string mnt = absolute(config->mountpoint);
  while (mnt.size() > 1 && mnt.back() == '/') mnt.pop_back();
  auto [dir, base] = SplitParent(mnt);
  if (dir.empty()) dir = "/";
  if (base.empty() || base == "." || base == "..") {
    char buf[PATH_MAX];
    if (::realpath(mnt.c_str(), buf) == nullptr) {
      return FailErrno("mount point " + config->mountpoint);
    }
    config->mountpoint = buf;
    return {};
  }
  char buf[PATH_MAX];
  if (::realpath(dir.c_str(), buf) == nullptr) {
    return FailErrno("mount point " + config->mountpoint);
  }
  config->mountpoint = JoinPath(buf, base);
  return {};
}

std::string EscapePath(std::string_view path) {
  std::string out;
  for (char ch : path) {
    if (ch == '\\' || ch == ',' || ch == ':' || ch == '"') out += '\\';
    out += ch;
  }
  return out;
}

std::string FormatIdMapping(const std::vector<IdMapRange>& ranges) {
  std::string out;
  for (const auto& r : ranges) {
    if (!out.empty()) out += ':';
    out += std::to_string(r.inner) + ":" + std::to_string(r.outer) + ":" + std::to_string(r.count);
  }
  return out;
}

std::string FormatOptions(const FsConfig& c) {
  const FsConfig defaults;
  std::vector<std::string> items;
  std::string lowers;
  for (const auto& l : c.lowers) {
    if (!lowers.empty()) lowers += ':';
    lowers += EscapePath(l);
  }
  items.push_back("lowerdir=" + lowers);
  if (!c.upper.empty()) items.push_back("upperdir=" + EscapePath(c.upper));
  if (!c.work.empty()) items.push_back("workdir=" + EscapePath(c.work));
  if (!c.uid_map.empty()) items.push_back("uidmapping=" + FormatIdMapping(c.uid_map));
  if (!c.gid_map.empty()) items.push_back("gidmapping=" + FormatIdMapping(c.gid_map));
  if (c.squash_to_root) items.push_back("squash_to_root");
  if (c.squash_to_uid >= 0) items.push_back("squash_to_uid=" + std::to_string(c.squash_to_uid));
  if (c.squash_to_gid >= 0) items.push_back("squash_to_gid=" + std::to_string(c.squash_to_gid));
  if (c.xattr_permissions != 0) {
    items.push_back("xattr_permissions=" + std::to_string(c.xattr_permissions));
  }
  if (c.static_nlink) items.push_back("static_nlink");
  if (c.noacl) items.push_back("noacl");
  if (c.noxattrs) items.push_back("noxattrs");
  if (c.timeout != defaults.timeout) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.17g", c.timeout);
    items.push_back(std::string("timeout=") + buf);
  }
  if (!c.threaded) items.push_back("threaded=0");
  if (!c.fsync) items.push_back("fsync=0");
  if (c.volatile_mode) items.push_back("volatile");
  if (c.writeback) items.push_back("writeback=1");
  if (c.ino32) items.push_back("ino32_t");
  if (!c.redirect_dir) items.push_back("redirect_dir=off");
  if (!c.xino) items.push_back("xino=off");
  if (c.read_only && !c.upper.empty()) items.push_back("ro");
  if (!c.context.empty()) items.push_back("context=" + EscapePath(c.context));
  if (c.allow_other) items.push_back("allow_other");
  if (c.default_permissions) items.push_back("default_permissions");
  if (!c.fsname.empty()) items.push_back("fsname=" + EscapePath(c.fsname));
  if (!c.subtype.empty()) items.push_back("subtype=" + EscapePath(c.subtype));
  for (const auto& k : c.kernel_mount_options) items.push_back(k);

  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += ',';
    out += item;
  }
  return out;
}

std::vector<std::string> SessionArgs(const FsConfig& c, const std::string& argv0) {
  // libfuse reads these with its own option parser, where "\" escapes the
  // next character and "," separates options.
  auto esc = [](const std::string& v) {
    std::string out;
    for (char ch : v) {
      if (ch == '\\' || ch == ',') out += '\\';
      out += ch;
    }
    return out;
  };
  std::string opts = "fsname=" + esc(c.fsname.empty() ? "lamina-fuse" : c.fsname);
  opts += ",subtype=" + esc(c.subtype.empty() ? "lamina-fuse" : c.subtype);
  if (c.allow_other) opts += ",allow_other";
  if (c.default_permissions) opts += ",default_permissions";
  if (c.read_only) opts += ",ro";
  for (const auto& k : c.kernel_mount_options) opts += "," + k;
  std::vector<std::string> args = {argv0, "-o", opts};
  if (c.debug) args.push_back("-d");
  return args;
}

std::string UsageText(std::string_view argv0) {
  std::string name(argv0);
  return "usage: " + name +
         " [SOURCE] MOUNTPOINT -o lowerdir=L1[:L2...][,upperdir=U,workdir=W][,OPTIONS]\n"
         "\n"
         "A union (overlay) filesystem in userspace, a drop-in for fuse-overlayfs.\n"
         "\n"
         "    -h   --help            print this help\n"
         "    -V   --version         print version\n"
         "    -d   --debug, -o debug enable debug output (implies -f)\n"
         "    -f                     stay in the foreground\n"
         "    -s                     single-threaded (as -o threaded=0)\n"
         "\n"
         "  -o options (separated by ',', '\\' escapes ',' and ':' in paths):\n"
         "    lowerdir=DIR[:DIR...]  read-only layers, top first (only lowers: a read-only mount)\n"
         "    upperdir=DIR           the writable layer\n"
         "    workdir=DIR            scratch dir on the upper's filesystem (needed with upperdir)\n"
         "    uidmapping=IN:OUT:N[:IN:OUT:N...], gidmapping=...  id mappings\n"
         "    squash_to_root, squash_to_uid=N, squash_to_gid=N\n"
         "    xattr_permissions=0|1|2, static_nlink, noacl, noxattrs, ino32_t\n"
         "    timeout=SECONDS, threaded=0|1, fsync=0|1, volatile, writeback=0|1\n"
         "    redirect_dir=on|off|follow|nofollow, xino=on|off|auto, context=CTX\n"
         "    allow_other, default_permissions, fsname=NAME, subtype=NAME, ro, rw\n"
         "    and the usual mount options (noatime, nosuid, nodev, noexec, ...)\n"
         "\n"
         "Unmount with: fusermount3 -u MOUNTPOINT (or umount MOUNTPOINT as root)\n";
}

}  // namespace lamina::fuse
