#include "store/store.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/fs.h"
#include "common/path.h"
#include "common/scope_guard.h"
#include "drivers/layer_home.h"
#include "store/tar_feed.h"

namespace lamina::store {

namespace {

// Makes the root (0700) and its sub-directories.
Result<void> PrepareRoot(const std::string& root) {
  if (root.empty()) return Fail(EINVAL, "no store root given");
  auto [parent, base] = SplitParent(root);
  if (!parent.empty()) LAMINA_CHECK(MakeDirs(parent, 0755));
  if (::mkdir(root.c_str(), 0700) != 0 && errno != EEXIST) return FailErrno("create store " + root);
  struct stat st;
  if (::stat(root.c_str(), &st) != 0) return FailErrno("store " + root);
  if (!S_ISDIR(st.st_mode)) return Fail(ENOTDIR, "store " + root);
  for (const char* sub : {"layers", "images", "containers"}) {
    std::string dir = root + "/" + sub;
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return FailErrno("create " + dir);
  }
  return {};
}

// store.json, or nullopt before first use.
Result<std::optional<StoreConfig>> ReadConfig(const std::string& root) {
  std::string path = root + "/store.json";
  auto text = ReadFile(path);
  if (!text) {
    if (text.error().code() == ENOENT) return std::nullopt;
    return Fail(text.error());
  }
  auto config = ParseStoreConfig(*text);
  if (!config) return Fail(config.error().Wrap(root));
  return *config;
}

XattrNamespace DefaultXattrNamespace(const HostFacts& host) {
  return host.euid == 0 && !host.in_user_namespace ? XattrNamespace::kTrusted
                                                   : XattrNamespace::kUser;
}

DriverConfig MakeDriverConfig(const OpenOptions& options, XattrNamespace ns) {
  DriverConfig config;
  config.home = options.root + "/layers";
  config.xattr_ns = ns;
  config.options = options.driver_options;
  config.helper_dir = options.helper_dir;
  return config;
}

std::string LockPath(const std::string& root) { return root + "/lock"; }

Result<LayerInfo> ReadLayerFile(const std::string& layers_dir, const std::string& id) {
  LAMINA_CHECK(ValidateLayerId(id));
  auto text = ReadFile(layers_dir + "/" + id + "/layer.json");
  if (!text) {
    if (text.error().code() == ENOENT) return Fail(ENOENT, "layer " + id);
    return Fail(text.error());
  }
  auto layer = ParseLayerInfo(*text);
  if (!layer) return Fail(layer.error().Wrap("layer " + id));
  if (layer->id != id) return Fail(EINVAL, "layer " + id + ": layer.json names " + layer->id);
  return *layer;
}

// Every layer with a readable layer.json, any state. Unreadable metadata is
// logged and skipped: it is never shown as a good layer.
Result<std::vector<LayerInfo>> ReadAllLayers(const std::string& layers_dir) {
  std::vector<LayerInfo> layers;
  for (const auto& name : LAMINA_TRY(ListDir(layers_dir))) {
    if (!ValidateLayerId(name)) continue;
    auto layer = ReadLayerFile(layers_dir, name);
    if (layer) {
      layers.push_back(std::move(*layer));
    } else if (layer.error().code() != ENOENT) {
      spdlog::warn("skipping layer {}: {}", name, layer.error().message());
    }
  }
  return layers;
}

std::vector<DriverVerdict> ProbeEveryDriver(const HostFacts& host, const DriverConfig& config) {
  std::vector<DriverVerdict> verdicts;
  for (const auto& name : DriverNames()) {
    auto driver = MakeDriver(name, config);
    if (!driver) {
      verdicts.push_back({name, {false, driver.error().message(), {}}});
    } else {
      verdicts.push_back({name, (*driver)->Probe(host)});
    }
  }
  return verdicts;
}

// Whether a directory in the layer home without layer.json is a layer a
// crash left half-made (a driver's layer has diff/ and parent; a crash right
// after mkdir leaves it empty) rather than something a driver keeps there
// for itself (the overlay driver's l/ of short links).
Result<bool> LooksLikeLayer(const std::string& dir) {
  auto names = LAMINA_TRY(ListDir(dir));
  if (names.empty()) return true;
  for (const auto& name : names) {
    if (name == "diff" || name == "parent") return true;
  }
  return false;
}

// A usable verdict is kept in <root>/probe-<driver>.json for the rest of
// the boot, keyed by all it depends on (boot, host facts, the store's
// driver settings, this binary), so that later Opens make no trial mounts;
// an unusable one is probed again every time. `lamina info` always probes.
std::string ProbeKey(const Driver& driver, const HostFacts& host, const DriverConfig& config) {
  std::string key = std::string(driver.Name());
  key += "|boot=" + ReadFile("/proc/sys/kernel/random/boot_id").value_or("?");
  for (const auto& [name, value] : host.Describe()) key += "|" + name + "=" + value;
  key += "|xattrs=" + std::string(XattrNamespaceName(config.xattr_ns));
  for (const auto& option : config.options) key += "|option=" + option;
  key += "|helpers=" + config.helper_dir;
  struct stat exe;
  if (::stat("/proc/self/exe", &exe) == 0) {
    key += "|exe=" + std::to_string(exe.st_ino) + "@" + std::to_string(exe.st_mtim.tv_sec) + "." +
           std::to_string(exe.st_mtim.tv_nsec);
  }
  return key;
}

ProbeResult CachedProbe(const std::string& root, Driver& driver, const HostFacts& host,
                        const DriverConfig& config) {
  std::string path = root + "/probe-" + std::string(driver.Name()) + ".json";
  std::string key = ProbeKey(driver, host, config);
  if (auto text = ReadFile(path)) {
    auto j = nlohmann::json::parse(*text, nullptr, false);
    auto is_string = [&](const char* name) { return j.contains(name) && j[name].is_string(); };
    if (j.is_object() && is_string("key") && j["key"] == key && j.contains("usable") &&
        j["usable"] == true) {
      ProbeResult cached;
      cached.usable = true;
      if (is_string("reason")) cached.reason = j["reason"].get<std::string>();
      if (j.contains("features") && j["features"].is_object()) {
        for (const auto& [name, value] : j["features"].items()) {
          if (value.is_string()) cached.features[name] = value.get<std::string>();
        }
      }
      driver.Adopt(cached);
      return cached;
    }
  }
  ProbeResult result = driver.Probe(host);
  if (result.usable) {
    nlohmann::json j = {
        {"key", key}, {"usable", true}, {"reason", result.reason}, {"features", result.features}};
    auto written = WriteFileAtomic(path, j.dump(2) + "\n", 0600);
    if (!written) spdlog::debug("probe cache {}: {}", path, written.error().message());
  } else {
    ::unlink(path.c_str());
  }
  return result;
}

SelectOptions OpenSelectOptions(const std::string& root, const DriverConfig& config) {
  SelectOptions options;
  options.probe_all = false;
  options.probe = [root, config](Driver& driver, const HostFacts& host) {
    return CachedProbe(root, driver, host, config);
  };
  return options;
}

bool IsWouldBlock(const Error& e) { return e.code() == EWOULDBLOCK || e.code() == EAGAIN; }

}  // namespace

Result<std::unique_ptr<Store>> Store::Open(const OpenOptions& options) {
  LAMINA_CHECK(PrepareRoot(options.root));
  std::unique_ptr<Store> store(new Store());
  store->root_ = options.root;
  auto host = ProbeHost(options.root, options.root + "/probe-host.txt");
  if (!host) return Fail(host.error().Wrap("probe the host for store " + options.root));
  store->host_ = std::move(*host);

  auto adopt = [&](Selection selection) {
    store->driver_ = std::move(selection.driver);
    store->verdicts_ = std::move(selection.verdicts);
    store->why_ = std::move(selection.why);
  };
  auto recorded = LAMINA_TRY(ReadConfig(options.root));
  if (!recorded) {
    // First use: one process chooses and records the driver.
    auto lock = LAMINA_TRY(StoreLock::Acquire(LockPath(options.root), LockMode::kExclusive));
    recorded = LAMINA_TRY(ReadConfig(options.root));
    if (!recorded) {
      StoreConfig config;
      config.xattr_ns = DefaultXattrNamespace(store->host_);
      DriverConfig driver_config = MakeDriverConfig(options, config.xattr_ns);
      adopt(LAMINA_TRY(SelectDriver(store->host_, driver_config, options.driver, "",
                                    OpenSelectOptions(options.root, driver_config))));
      config.driver = std::string(store->driver_->Name());
      LAMINA_CHECK(WriteFileAtomic(options.root + "/store.json", FormatStoreConfig(config), 0644));
      store->config_ = config;
    }
  }
  if (!store->driver_) {
    store->config_ = *recorded;
    DriverConfig driver_config = MakeDriverConfig(options, recorded->xattr_ns);
    adopt(LAMINA_TRY(SelectDriver(store->host_, driver_config, options.driver, recorded->driver,
                                  OpenSelectOptions(options.root, driver_config))));
  }

  // Leftovers of crashed operations. Only when no one else holds the lock: a
  // writer at work holds it, and it is not worth waiting for; the next Open
  // cleans up.
  auto lock = StoreLock::TryAcquire(LockPath(options.root), LockMode::kExclusive);
  if (lock) {
    auto cleaned = store->RemoveLeftoversLocked();
    if (!cleaned) spdlog::warn("store {}: cleanup: {}", options.root, cleaned.error().message());
  } else if (!IsWouldBlock(lock.error())) {
    return Fail(lock.error());
  }
  return store;
}

Result<StoreLock> Store::Lock(LockMode mode) { return StoreLock::Acquire(LockPath(root_), mode); }
Result<StoreLock> Store::TryLock(LockMode mode) {
  return StoreLock::TryAcquire(LockPath(root_), mode);
}

Result<void> Store::RemoveLeftoversLocked() {
  for (const auto& name : LAMINA_TRY(ListDir(LayersDir()))) {
    if (!ValidateLayerId(name)) continue;  // not a layer (temporary or driver-private)
    auto st = LAMINA_TRY(LstatIfExists(LayerDir(name)));
    if (!st || !S_ISDIR(st->st_mode)) continue;
    auto layer = ReadLayerLocked(name);
    if (layer && layer->state == LayerState::kReady) continue;
    if (!layer && layer.error().code() != ENOENT) {
      spdlog::warn("layer {}: {}", name, layer.error().message());
      continue;
    }
    if (!layer && !LAMINA_TRY(LooksLikeLayer(LayerDir(name)))) continue;
    // An apply at work in another process holds use.lock.
    auto use = StoreLock::TryAcquire(UseLock(name), LockMode::kExclusive);
    if (!use) {
      if (IsWouldBlock(use.error())) continue;
      return Fail(use.error());
    }
    auto discarded = DiscardLocked(name);
    if (!discarded) {
      spdlog::warn("could not remove the half-made layer {}: {}", name,
                   discarded.error().message());
      continue;
    }
    spdlog::info("removed the half-made layer {}", name);
    removed_at_open_.push_back(name);
  }
  return {};
}

Result<void> Store::DiscardLocked(const std::string& id) {
  auto removed = driver_->Remove(id);
  std::string dir = LayerDir(id);
  if (!PathExists(dir)) return {};
  if (!removed && removed.error().code() == EBUSY) return Fail(removed.error());
  // The driver left the directory (its own Remove may not know our files, or
  // the layer was never whole): remove it unless something is mounted there.
  for (const char* sub : {"/merged", ""}) {
    if (LAMINA_TRY(IsMountPoint(dir + sub))) {
      return Fail(EBUSY, "layer " + id + ": " + dir + sub + " is mounted");
    }
  }
  return RemoveTree(dir);
}

Result<LayerInfo> Store::ReadLayerLocked(const std::string& id) const {
  return ReadLayerFile(LayersDir(), id);
}

Result<LayerInfo> Store::ReadyLayerLocked(const std::string& id) const {
  auto layer = LAMINA_TRY(ReadLayerLocked(id));
  if (layer.state != LayerState::kReady) return Fail(ENOENT, "layer " + id);
  return layer;
}

Result<std::vector<LayerInfo>> Store::AllLayersLocked() const { return ReadAllLayers(LayersDir()); }

Result<void> Store::WriteLayerLocked(const LayerInfo& layer) const {
  return WriteFileAtomic(LayerJson(layer.id), FormatLayerInfo(layer), 0644);
}

Result<std::string> Store::NewLayerLocked(const std::string& parent,
                                          const CreateOptions& options, const std::string& id) {
  std::string new_id = id.empty() ? RandomId() : id;
  LAMINA_CHECK(ValidateLayerId(new_id));
  if (!parent.empty()) {
    LAMINA_CHECK(ValidateLayerId(parent));
    auto found = ReadyLayerLocked(parent);
    if (!found) {
      if (found.error().code() == ENOENT) return Fail(ENOENT, "parent layer " + parent);
      return Fail(found.error());
    }
  }
  if (PathExists(LayerDir(new_id))) return Fail(EEXIST, "layer " + new_id);
  auto created = driver_->Create(new_id, parent, options);
  if (!created) return Fail(created.error().Wrap("create layer " + new_id));
  return new_id;
}

Result<std::string> Store::CreateLayer(const std::string& parent, bool writable,
                                       const std::string& id) {
  CreateOptions options;
  options.writable = writable;
  return CreateLayer(parent, options, id);
}

Result<std::string> Store::CreateLayer(const std::string& parent, const CreateOptions& options,
                                       const std::string& id) {
  auto lock = LAMINA_TRY(Lock(LockMode::kExclusive));
  std::string new_id = LAMINA_TRY(NewLayerLocked(parent, options, id));
  auto undo = Defer([&] { (void)DiscardLocked(new_id); });
  LayerInfo layer;
  layer.id = new_id;
  layer.parent = parent;
  layer.created = NowRfc3339();
  layer.writable = options.writable;
  layer.size = LAMINA_TRY(driver_->Usage(new_id));
  layer.state = LayerState::kReady;
  LAMINA_CHECK(WriteLayerLocked(layer));
  undo.Dismiss();
  return new_id;
}

Result<LayerInfo> Store::ApplyLayer(const std::string& parent, int tar_fd, const std::string& id) {
  LayerInfo layer;
  std::optional<StoreLock> use;
  {
    // Under the store lock: the layer appears, marked incomplete, with its
    // use.lock held so that no Open takes it for a leftover while we write.
    auto lock = LAMINA_TRY(Lock(LockMode::kExclusive));
    layer.id = LAMINA_TRY(NewLayerLocked(parent, CreateOptions{}, id));
    auto undo = Defer([&] { (void)DiscardLocked(layer.id); });
    use = LAMINA_TRY(StoreLock::Acquire(UseLock(layer.id), LockMode::kExclusive));
    layer.parent = parent;
    layer.created = NowRfc3339();
    layer.state = LayerState::kIncomplete;
    LAMINA_CHECK(WriteLayerLocked(layer));
    undo.Dismiss();
  }
  auto discard = [&](const Error& error) -> std::unexpected<Error> {
    if (auto lock = Lock(LockMode::kExclusive)) {
      auto discarded = DiscardLocked(layer.id);
      if (!discarded) {
        spdlog::warn("layer {}: {}", layer.id, discarded.error().message());
      }
    }
    return Fail(error.Wrap("apply layer " + layer.id));
  };

  // The content, holding only use.lock.
  auto feed = TarFeed::Start(tar_fd);
  if (!feed) return discard(feed.error());
  auto stats = driver_->ApplyDiff(layer.id, (*feed)->fd());
  if (!stats) {
    auto input = (*feed)->Abort();
    return discard(input ? stats.error() : input.error());
  }
  auto digest = (*feed)->Finish();
  if (!digest) return discard(digest.error());

  auto finish = [&]() -> Result<void> {
    auto lock = LAMINA_TRY(Lock(LockMode::kExclusive));
    layer.size = LAMINA_TRY(driver_->Usage(layer.id));
    layer.diff_id = *digest;
    layer.state = LayerState::kReady;
    LAMINA_CHECK(WriteLayerLocked(layer));
    use.reset();  // before the store lock goes: a ready layer's use.lock is free
    return {};
  };
  if (auto done = finish(); !done) return discard(done.error());
  return layer;
}

Result<void> Store::RemoveLayer(const std::string& id) {
  auto lock = LAMINA_TRY(Lock(LockMode::kExclusive));
  LAMINA_CHECK(ValidateLayerId(id));
  auto layer = ReadLayerLocked(id);
  if (!layer && (layer.error().code() != ENOENT || !PathExists(LayerDir(id)))) {
    return Fail(layer.error());
  }
  for (const auto& other : LAMINA_TRY(AllLayersLocked())) {
    if (other.parent == id) {
      return Fail(EBUSY,
                  "layer " + id + " is the parent of layer " + other.id + "; remove that first");
    }
  }
  auto mounts = driver_->MountCount(id);
  if (!mounts && mounts.error().code() != ENOTSUP && mounts.error().code() != ENOENT) {
    return Fail(mounts.error().Wrap("layer " + id));
  }
  if (mounts && *mounts > 0) {
    return Fail(EBUSY, "layer " + id + " is mounted (" + std::to_string(*mounts) +
                           (*mounts == 1 ? " reference" : " references") + "); unmount it first");
  }
  auto use = StoreLock::TryAcquire(UseLock(id), LockMode::kExclusive);
  if (!use) {
    if (IsWouldBlock(use.error())) {
      return Fail(EBUSY, "layer " + id + " is in use by another lamina process");
    }
    return Fail(use.error());
  }
  // Not a good layer any more from here on, even if we crash half-way.
  if (layer && layer->state == LayerState::kReady) {
    LayerInfo going = *layer;
    going.state = LayerState::kIncomplete;
    LAMINA_CHECK(WriteLayerLocked(going));
  }
  auto removed = DiscardLocked(id);
  if (!removed) {
    if (layer && layer->state == LayerState::kReady && PathExists(LayerDir(id))) {
      (void)WriteLayerLocked(*layer);  // it is still whole: keep it listed
    }
    return Fail(removed.error().Wrap("remove layer " + id));
  }
  return {};
}

Result<std::vector<LayerInfo>> Store::ListLayers() {
  auto lock = LAMINA_TRY(Lock(LockMode::kShared));
  auto all = LAMINA_TRY(AllLayersLocked());
  std::vector<LayerInfo> ready;
  for (auto& layer : all) {
    if (layer.state == LayerState::kReady) ready.push_back(std::move(layer));
  }
  std::sort(ready.begin(), ready.end(), [](const LayerInfo& a, const LayerInfo& b) {
    return std::tie(a.created, a.id) < std::tie(b.created, b.id);
  });
  return ready;
}

Result<LayerInfo> Store::GetLayer(const std::string& id) {
  auto lock = LAMINA_TRY(Lock(LockMode::kShared));
  return ReadyLayerLocked(id);
}

Result<std::string> Store::Mount(const std::string& id, const MountOptions& options) {
  auto lock = LAMINA_TRY(Lock(LockMode::kExclusive));
  LAMINA_TRY(ReadyLayerLocked(id));
  auto path = driver_->Mount(id, options);
  if (!path) return Fail(path.error().Wrap("mount layer " + id));
  return *path;
}

Result<NamespaceMount> Store::PrepareNamespaceMount(const std::string& id,
                                                    const MountOptions& options) {
  auto lock = LAMINA_TRY(Lock(LockMode::kExclusive));
  LAMINA_TRY(ReadyLayerLocked(id));
  auto mount = driver_->PrepareNamespaceMount(id, options);
  if (!mount) return Fail(mount.error().Wrap("mount layer " + id));
  return std::move(*mount);
}

Result<void> Store::Unmount(const std::string& id) {
  auto lock = LAMINA_TRY(Lock(LockMode::kExclusive));
  LAMINA_TRY(ReadyLayerLocked(id));
  auto count = driver_->MountCount(id);
  if (count && *count == 0) return Fail(EINVAL, "layer " + id + " is not mounted");
  auto done = driver_->Unmount(id);
  if (!done) return Fail(done.error().Wrap("unmount layer " + id));
  return {};
}

Result<int> Store::MountCount(const std::string& id) {
  auto lock = LAMINA_TRY(Lock(LockMode::kShared));
  LAMINA_TRY(ReadyLayerLocked(id));
  return driver_->MountCount(id);
}

Result<TarStats> Store::Diff(const std::string& id, int out_fd) {
  std::optional<StoreLock> use;
  {
    auto lock = LAMINA_TRY(Lock(LockMode::kShared));
    LAMINA_TRY(ReadyLayerLocked(id));
    // A ready layer's use.lock is held exclusively only by RemoveLayer, under
    // the store lock we share now: this never waits.
    use = LAMINA_TRY(StoreLock::Acquire(UseLock(id), LockMode::kShared));
  }
  auto stats = driver_->Diff(id, out_fd);
  if (!stats) return Fail(stats.error().Wrap("diff layer " + id));
  return *stats;
}

Result<std::vector<Change>> Store::Changes(const std::string& id) {
  std::optional<StoreLock> use;
  {
    auto lock = LAMINA_TRY(Lock(LockMode::kShared));
    LAMINA_TRY(ReadyLayerLocked(id));
    use = LAMINA_TRY(StoreLock::Acquire(UseLock(id), LockMode::kShared));
  }
  auto changes = driver_->Changes(id);
  if (!changes) return Fail(changes.error().Wrap("changes of layer " + id));
  return *changes;
}

Result<uint64_t> Store::Usage(const std::string& id) {
  auto lock = LAMINA_TRY(Lock(LockMode::kShared));
  LAMINA_TRY(ReadyLayerLocked(id));
  return driver_->Usage(id);
}

Result<InfoReport> GatherInfo(const OpenOptions& options) {
  LAMINA_CHECK(PrepareRoot(options.root));
  InfoReport report;
  report.root = options.root;
  auto host = ProbeHost(options.root, options.root + "/probe-host.txt");
  if (!host) return Fail(host.error().Wrap("probe the host for store " + options.root));
  report.host = std::move(*host);
  report.config = LAMINA_TRY(ReadConfig(options.root));
  XattrNamespace ns = report.config ? report.config->xattr_ns : DefaultXattrNamespace(report.host);
  DriverConfig config = MakeDriverConfig(options, ns);
  auto selection =
      SelectDriver(report.host, config, options.driver, report.config ? report.config->driver : "");
  if (selection) {
    report.chosen = std::string(selection->driver->Name());
    report.why = selection->why;
    report.verdicts = std::move(selection->verdicts);
    report.driver_status = selection->driver->Status();
  } else if (selection.error().code() == EINVAL) {
    return Fail(selection.error());  // an unknown driver name: a usage mistake
  } else {
    report.why = Describe(selection.error());
    report.verdicts = ProbeEveryDriver(report.host, config);
  }
  auto lock = LAMINA_TRY(StoreLock::Acquire(LockPath(options.root), LockMode::kShared));
  for (const auto& layer : LAMINA_TRY(ReadAllLayers(options.root + "/layers"))) {
    if (layer.state == LayerState::kReady) ++report.layers;
  }
  return report;
}

std::string Describe(const Error& error) {
  const std::string& context = error.context();
  if (context.empty()) return error.message();
  bool about_layer = context.starts_with("layer ") || context.starts_with("parent layer ");
  bool one_phrase = context.find(": ") == std::string::npos;
  switch (error.code()) {
    case ENOENT:
      if (about_layer && one_phrase) return context + ": not found";
      break;
    case EEXIST:
      if (about_layer && one_phrase) return context + ": already exists";
      break;
    case EBUSY:
    case EINVAL:
    case ENODEV:
    case EXDEV:
      return context;
    default:
      break;
  }
  return error.message();
}

}  // namespace lamina::store
