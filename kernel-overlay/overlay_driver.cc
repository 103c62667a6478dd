#include "kernel-overlay/overlay_driver.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <utility>

#include "common/fs.h"
#include "common/scope_guard.h"
#include "drivers/format.h"
#include "drivers/layer_home.h"
#include "drivers/union_layers.h"
#include "kernel-overlay/overlay_mount.h"
#include "kernel-overlay/overlay_options.h"

namespace lamina::overlay {

namespace {

// <home>/l/<short> -> ../<id>/diff, for the mount(2) fallback (as Docker's
// overlay2): a lowerdir string of 26-character names fits ~140 layers into
// the kernel's 4 KiB of mount data. The link is made the first time a layer
// is mounted that way; <home>/<id>/link holds its short name.
constexpr char kLinkDir[] = "l";
constexpr size_t kShortIdLength = 26;

// A directory with nothing in it: the lower of a writable base layer, and the
// second lower of a one-layer read-only stack (the kernel wants an upper or
// at least two lowers).
constexpr char kEmptyDir[] = "empty";

bool NewApiMissing(const Error& error) {
  return error.code() == ENOSYS ||
         (error.code() == EOPNOTSUPP && error.context().starts_with("lowerdir+"));
}

class OverlayDriver final : public Driver {
 public:
  explicit OverlayDriver(const DriverConfig& config) : config_(config), home_(config.home) {
    const char* env = std::getenv("LAMINA_OVERLAY_MOUNT_API");
    auto parsed = ParseOverlayOptions(config.options, env != nullptr ? env : "");
    if (parsed) {
      options_ = *parsed;
    } else {
      options_error_ = parsed.error();
    }
  }

  std::string_view Name() const override { return "overlay"; }
  ProbeResult Probe(const HostFacts& host) override;
  void Adopt(const ProbeResult& verdict) override;
  Result<void> Create(const std::string& id, const std::string& parent,
                      const CreateOptions& options) override;
  Result<void> Remove(const std::string& id) override;
  bool Exists(const std::string& id) const override { return home_.Exists(id); }
  Result<std::string> Mount(const std::string& id, const MountOptions& options) override;
  MountScope Scope() const override {
    return userns_only_ ? MountScope::kUserNamespace : MountScope::kHost;
  }
  Result<NamespaceMount> PrepareNamespaceMount(const std::string& id,
                                               const MountOptions& options) override;
  Result<void> Unmount(const std::string& id) override;
  Result<int> MountCount(const std::string& id) const override;
  // Content calls shared with the fuse driver (drivers/union_layers.h):
  // native whiteouts, opaque and redirect xattrs read from and written to diff/.
  Result<std::vector<Change>> Changes(const std::string& id) override {
    return UnionLayerChanges(home_, id);
  }
  Result<TarStats> Diff(const std::string& id, int out_fd) override {
    return UnionLayerDiff(home_, id, out_fd);
  }
  Result<TarStats> ApplyDiff(const std::string& id, int tar_fd) override {
    return UnionLayerApplyDiff(home_, id, tar_fd, config_.xattr_ns);
  }
  Result<uint64_t> Usage(const std::string& id) override { return LayerUsage(home_, id); }
  std::vector<std::pair<std::string, std::string>> Status() const override;
  std::string DiffPath(const std::string& id) const override { return home_.DiffDir(id); }

 private:
  bool userxattr() const { return config_.xattr_ns == XattrNamespace::kUser; }
  // redirect_dir=on needs trusted xattrs: the kernel refuses it with userxattr.
  bool redirect_dir() const { return options_.redirect_dir && !userxattr(); }
  Result<void> CheckOptions() const {
    if (options_error_) return Fail(*options_error_);
    return {};
  }
  // Mounts `spec` (absolute paths) with the configured API; for the legacy
  // API `make_legacy` gives the same mount with paths relative to
  // `legacy_base` (made only when needed: it may create short links).
  // Records which API was used in used_api_.
  Result<void> MountSpec(const OverlaySpec& spec,
                         const std::function<Result<OverlaySpec>()>& make_legacy,
                         const std::string& legacy_base);
  // The mount of `id` (whose ancestry is `chain`) on its merged dir: with
  // absolute paths, or for mount(2) relative to the home (short links).
  Result<OverlaySpec> BuildSpec(const std::string& id, const std::vector<std::string>& chain,
                                const MountOptions& options, bool legacy);
  // The probe's trial: mounts `dir`/{lower1,lower2,upper,work} on
  // `dir`/merged, reads and writes through it, unmounts; the API used.
  Result<std::string> TrialMount(const std::string& dir);
  Result<std::string> EnsureShortLink(const std::string& id);
  // The short name recorded in <id>/link, or "".
  std::string ReadShortLink(const std::string& id) const;
  Result<std::string> EnsureEmptyDir(const std::string& id);

  DriverConfig config_;
  LayerHome home_;
  OverlayOptions options_;
  std::optional<Error> options_error_;
  // Set once the kernel has shown it lacks the new API (auto mode).
  bool new_api_missing_ = false;
  std::string used_api_;
  // Set by Probe for a user without root: mounts only in a user namespace of
  // our own (MountScope::kUserNamespace).
  bool userns_only_ = false;
};

Result<void> OverlayDriver::MountSpec(const OverlaySpec& spec,
                                      const std::function<Result<OverlaySpec>()>& make_legacy,
                                      const std::string& legacy_base) {
  if (options_.mount_api != MountApi::kLegacy && !new_api_missing_) {
    auto mounted = MountNewApi(spec);
    if (mounted) {
      used_api_ = "new";
      return {};
    }
    if (options_.mount_api == MountApi::kNew || !NewApiMissing(mounted.error())) {
      return Fail(mounted.error());
    }
    spdlog::info("overlay: new mount API unavailable ({}); using mount(2)",
                 mounted.error().message());
    new_api_missing_ = true;
  }
  OverlaySpec legacy = LAMINA_TRY(make_legacy());
  LAMINA_CHECK(MountLegacy(legacy, legacy_base));
  used_api_ = "legacy";
  return {};
}

std::string OverlayDriver::ReadShortLink(const std::string& id) const {
  auto text = ReadFile(home_.Dir(id) + "/link");
  if (!text) return {};
  std::string name = *text;
  while (!name.empty() && std::isspace(static_cast<unsigned char>(name.back()))) name.pop_back();
  return name.find('/') == std::string::npos ? name : std::string();
}

Result<std::string> OverlayDriver::EnsureShortLink(const std::string& id) {
  std::string link_file = home_.Dir(id) + "/link";
  if (std::string name = ReadShortLink(id);
      name.size() == kShortIdLength && PathExists(home_.home() + "/" + kLinkDir + "/" + name)) {
    return name;
  }
  LAMINA_CHECK(MakeDirs(home_.home() + "/" + kLinkDir, 0700));
  std::string name = RandomId().substr(0, kShortIdLength);
  std::string link = home_.home() + "/" + kLinkDir + "/" + name;
  if (::symlink(("../" + id + "/diff").c_str(), link.c_str()) != 0) {
    return FailErrno("symlink " + link);
  }
  auto written = WriteFileAtomic(link_file, name + "\n", 0600);
  if (!written) {
    ::unlink(link.c_str());
    return Fail(written.error());
  }
  return name;
}

Result<std::string> OverlayDriver::EnsureEmptyDir(const std::string& id) {
  std::string dir = home_.Dir(id) + "/" + kEmptyDir;
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return FailErrno("mkdir " + dir);
  return dir;
}

ProbeResult OverlayDriver::Probe(const HostFacts& host) {
  ProbeResult result;
  auto& f = result.features;
  f["backing_fs"] = host.backing_fs;
  f["d_type"] = host.d_type ? "yes" : "no";
  f["xattr_namespace"] = std::string(XattrNamespaceName(config_.xattr_ns));
  f["userxattr"] = userxattr() ? "yes" : "no";
  f["redirect_dir"] = redirect_dir() ? "on" : (userxattr() ? "nofollow (userxattr)" : "off");
  f["mount_api_option"] = std::string(MountApiName(options_.mount_api));
  auto refuse = [&](std::string reason) {
    result.usable = false;
    result.reason = std::move(reason);
    return result;
  };
  if (options_error_) return refuse("bad options: " + options_error_->message());
  if (host.backing_fs == "overlay") {
    return refuse("the store " + host.store_root +
                  " is on an overlay filesystem; overlay cannot use an overlay as its upper "
                  "layer (put the store on ext4, xfs or btrfs)");
  }
  if (!host.d_type) {
    return refuse("the store's filesystem (" + host.backing_fs +
                  ") does not report d_type; overlay needs it (xfs needs ftype=1)");
  }
  if (config_.xattr_ns == XattrNamespace::kTrusted && host.in_user_namespace) {
    return refuse("the store uses trusted.overlay.* xattrs, which need root in the initial "
                  "user namespace; this is a user namespace (a rootless store uses user.*)");
  }
  if (userxattr() && !host.user_xattrs) {
    return refuse("the store's filesystem (" + host.backing_fs +
                  ") does not take user.* xattrs, needed for userxattr");
  }

  // A real trial mount with the options real mounts use; for a user without
  // root, inside a user namespace of our own, where containers mount it.
  bool rootless = host.euid != 0 && !host.in_user_namespace;
  std::string tmpl = host.store_root + "/.overlay-probe-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) {
    return refuse("cannot make a trial directory in " + host.store_root + ": " +
                  std::strerror(errno));
  }
  std::string dir = buf.data();
  auto cleanup = Defer([&] {
    if (!rootless) (void)overlay::Unmount(dir + "/merged");
    auto removed = RemoveTree(dir);
    if (!removed) spdlog::warn("overlay probe cleanup: {}", removed.error().message());
  });
  for (const char* sub : {"lower1", "lower2", "upper", "work", "merged"}) {
    if (::mkdir((dir + "/" + sub).c_str(), 0755) != 0) {
      return refuse("trial directory in " + host.store_root + ": " + std::strerror(errno));
    }
  }
  if (!WriteFileAtomic(dir + "/lower2/probe", "lamina\n")) {
    return refuse("cannot write a trial file in " + host.store_root);
  }
  auto tried = rootless ? RunInUserNamespace([&] { return TrialMount(dir); }) : TrialMount(dir);
  if (!tried) {
    std::string why = "trial overlay mount in " + host.store_root +
                      (rootless ? " (in a user namespace of its own)" : "") +
                      " failed: " + tried.error().message();
    if (!host.overlay_listed) why += " (overlay is not in /proc/filesystems)";
    return refuse(why);
  }
  used_api_ = *tried;
  if (used_api_ == "legacy") new_api_missing_ = true;
  userns_only_ = rootless;
  f["mount_api"] = used_api_ == "new" ? "new (fsopen, lowerdir+)" : "legacy (mount(2), l/ links)";
  f["max_layers"] = used_api_ == "new" ? "500" : "about 140";
  f["mount_scope"] = rootless ? "user namespaces of its own only (containers)" : "host";
  result.usable = true;
  result.reason = "overlay mounted in " + host.store_root + " (" + host.backing_fs + ", d_type, " +
                  f["mount_api"] + ", " + (userxattr() ? "userxattr" : "trusted xattrs") + ")";
  if (rootless) {
    result.reason +=
        " in a user namespace: rootless, so containers (lamina run) mount it "
        "inside theirs; lamina layer mount needs --driver fuse";
  }
  return result;
}

void OverlayDriver::Adopt(const ProbeResult& verdict) {
  auto feature = [&](const char* key) {
    auto it = verdict.features.find(key);
    return it == verdict.features.end() ? std::string() : it->second;
  };
  used_api_ = feature("mount_api").starts_with("new") ? "new" : "legacy";
  new_api_missing_ = used_api_ == "legacy";
  userns_only_ = feature("mount_scope").starts_with("user");
}

Result<std::string> OverlayDriver::TrialMount(const std::string& dir) {
  OverlaySpec spec;
  spec.lowers = {dir + "/lower1", dir + "/lower2"};
  spec.upper = dir + "/upper";
  spec.work = dir + "/work";
  spec.target = dir + "/merged";
  spec.userxattr = userxattr();
  spec.redirect_dir = redirect_dir();
  auto make_legacy = [&]() -> Result<OverlaySpec> {
    OverlaySpec legacy = spec;
    legacy.lowers = {"lower1", "lower2"};
    legacy.upper = "upper";
    legacy.work = "work";
    return legacy;
  };
  LAMINA_CHECK(MountSpec(spec, make_legacy, dir));
  auto unmount = Defer([&] { (void)overlay::Unmount(spec.target); });
  auto content = ReadFile(dir + "/merged/probe");
  bool write_ok = WriteFileAtomic(dir + "/merged/written", "x").has_value();
  if (!content || *content != "lamina\n" || !write_ok) {
    return Fail(EIO, "mounted, but it did not read or write as expected");
  }
  unmount.Dismiss();
  auto unmounted = overlay::Unmount(spec.target);
  if (!unmounted) return Fail(unmounted.error().Wrap("trial unmount"));
  return used_api_;
}

Result<void> OverlayDriver::Create(const std::string& id, const std::string& parent,
                                   const CreateOptions& options) {
  LAMINA_CHECK(CheckOptions());
  if (id == kLinkDir) {
    return Fail(EINVAL, "layer id 'l' is reserved by the overlay driver (short links)");
  }
  return home_.CreateDirs(id, parent, options.writable);
}

Result<void> OverlayDriver::Remove(const std::string& id) {
  LAMINA_CHECK(ValidateLayerId(id));
  std::string short_link = ReadShortLink(id);
  LAMINA_CHECK(RemoveUnmountedLayer(home_, id));
  if (!short_link.empty()) {
    std::string path = home_.home() + "/" + kLinkDir + "/" + short_link;
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return FailErrno("unlink " + path);
  }
  return {};
}

Result<OverlaySpec> OverlayDriver::BuildSpec(const std::string& id,
                                             const std::vector<std::string>& chain,
                                             const MountOptions& options, bool legacy) {
  std::string merged = home_.MergedDir(id);
  bool writable = PathExists(home_.WorkDir(id)) && !options.read_only;
  OverlaySpec spec;
  spec.target = merged;
  spec.read_only = !writable;
  spec.userxattr = userxattr();
  spec.redirect_dir = redirect_dir();
  spec.label = options.mount_label;
  // Lower layers: the ancestors, or the whole chain for a read-only view.
  std::vector<std::string> lower_ids(chain.begin() + (writable ? 1 : 0), chain.end());
  for (const auto& lower : lower_ids) {
    spec.lowers.push_back(legacy ? std::string(kLinkDir) + "/" + LAMINA_TRY(EnsureShortLink(lower))
                                 : home_.DiffDir(lower));
  }
  if (spec.lowers.size() < (writable ? 1u : 2u)) {
    std::string empty = LAMINA_TRY(EnsureEmptyDir(id));
    spec.lowers.push_back(legacy ? id + "/" + kEmptyDir : empty);
  }
  if (writable) {
    spec.upper = legacy ? id + "/diff" : home_.DiffDir(id);
    spec.work = legacy ? id + "/work" : home_.WorkDir(id);
  }
  return spec;
}

Result<std::string> OverlayDriver::Mount(const std::string& id, const MountOptions& options) {
  LAMINA_CHECK(CheckOptions());
  LAMINA_CHECK(ValidateLayerId(id));
  if (userns_only_) {
    return Fail(EPERM,
                "the kernel overlay mounts for a user without root only inside a user namespace "
                "of its own: containers (lamina run) get their root mounted there; for a mount "
                "that this shell can see, use the fuse driver on the same store (--driver fuse)");
  }
  auto chain = LAMINA_TRY(home_.Chain(id));
  auto refs = LAMINA_TRY(MountRefs::Lock(home_, id));
  std::string merged = home_.MergedDir(id);
  bool mounted = LAMINA_TRY(IsMountPoint(merged));
  if (mounted) {
    // Count 0 with a live mount: a process died between mounting and
    // counting; the mount is adopted.
    LAMINA_CHECK(refs.Set(refs.count() + 1));
    return merged;
  }
  if (refs.count() > 0) {
    spdlog::warn("overlay: layer {} had a stale mount count {} (not mounted); repaired", id,
                 refs.count());
  }
  if (::mkdir(merged.c_str(), 0755) != 0 && errno != EEXIST) return FailErrno("mkdir " + merged);

  OverlaySpec spec = LAMINA_TRY(BuildSpec(id, chain, options, /*legacy=*/false));
  auto make_legacy = [&]() { return BuildSpec(id, chain, options, /*legacy=*/true); };
  auto done = MountSpec(spec, make_legacy, home_.home());
  if (!done) return Fail(done.error().Wrap("mount layer " + id));
  auto undo = Defer([&] { (void)overlay::Unmount(merged); });
  LAMINA_CHECK(refs.Set(1));
  undo.Dismiss();
  return merged;
}

Result<NamespaceMount> OverlayDriver::PrepareNamespaceMount(const std::string& id,
                                                            const MountOptions& options) {
  LAMINA_CHECK(CheckOptions());
  LAMINA_CHECK(ValidateLayerId(id));
  auto chain = LAMINA_TRY(home_.Chain(id));
  std::string merged = home_.MergedDir(id);
  if (::mkdir(merged.c_str(), 0755) != 0 && errno != EEXIST) return FailErrno("mkdir " + merged);
  NamespaceMount result;
  result.target = merged;
  // The API the probe found working (it mounted the same way).
  if (options_.mount_api == MountApi::kLegacy || new_api_missing_) {
    OverlaySpec legacy = LAMINA_TRY(BuildSpec(id, chain, options, /*legacy=*/true));
    result.mount = [legacy, base = home_.home(), id]() -> Result<void> {
      auto mounted = MountLegacy(legacy, base);
      if (!mounted) return Fail(mounted.error().Wrap("mount layer " + id));
      return {};
    };
  } else {
    OverlaySpec spec = LAMINA_TRY(BuildSpec(id, chain, options, /*legacy=*/false));
    result.mount = [spec, id]() -> Result<void> {
      auto mounted = MountNewApi(spec);
      if (!mounted) return Fail(mounted.error().Wrap("mount layer " + id));
      return {};
    };
  }
  return result;
}

Result<void> OverlayDriver::Unmount(const std::string& id) {
  return DropMountRef(home_, id, "overlay",
                      [](const std::string& merged) { return overlay::Unmount(merged); });
}

Result<int> OverlayDriver::MountCount(const std::string& id) const {
  return CheckedMountCount(home_, id, "overlay");
}

std::vector<std::pair<std::string, std::string>> OverlayDriver::Status() const {
  std::vector<std::pair<std::string, std::string>> status;
  auto fs = FilesystemType(home_.home());
  status.emplace_back("backing_fs", fs ? *fs : fs.error().message());
  status.emplace_back("xattr_namespace", std::string(XattrNamespaceName(config_.xattr_ns)));
  status.emplace_back("userxattr", userxattr() ? "yes" : "no");
  status.emplace_back("redirect_dir", redirect_dir() ? "on" : (userxattr() ? "nofollow" : "off"));
  status.emplace_back("index", userxattr() ? "kernel default" : "off");
  status.emplace_back("metacopy", "off");
  status.emplace_back("mount_api_option", std::string(MountApiName(options_.mount_api)));
  if (!used_api_.empty()) status.emplace_back("mount_api_used", used_api_);
  if (userns_only_) status.emplace_back("mount_scope", "user namespaces of its own (rootless)");
  if (options_error_) status.emplace_back("options_error", options_error_->message());
  return status;
}

}  // namespace

std::unique_ptr<Driver> MakeOverlayDriver(const DriverConfig& config) {
  return std::make_unique<OverlayDriver>(config);
}

}  // namespace lamina::overlay
