#pragma once

// The layer store: one directory holding layers (content kept by a storage
// driver, metadata kept here), images and containers.
//
//   <root>/store.json            format version, driver, xattr namespace
//   <root>/lock                  flock: writers exclusive, readers shared
//   <root>/layers/<id>/          the driver's home for layer <id> (diff/, ...)
//   <root>/layers/<id>/layer.json  this store's metadata (see metadata.h)
//   <root>/layers/<id>/use.lock  flock: shared while a layer's content is
//                                read (diff, changes), exclusive while it is
//                                written (apply) or removed
//   <root>/images/, <root>/containers/
//
// Crash safety: a layer counts only when its layer.json says "ready". An
// apply writes "incomplete" before the first byte of content and "ready"
// after the last; a remove writes "incomplete" before deleting anything. At
// Open, every layer that is incomplete (or has no layer.json at all) and is
// not being worked on by a live process (use.lock free) is removed, so
// nothing a crash leaves behind is ever shown as a good layer.
//
// Concurrency: every public operation takes the store lock itself, for as
// short as it can; long content streams (apply, diff) hold only the layer's
// use.lock, so `lamina layer diff A | lamina layer apply -` on one store does
// not deadlock. A Store object is used by one thread at a time.
//
// Errors: ENOENT "layer <id>" for a missing layer, EEXIST "layer <id>" for
// a taken id, EBUSY with the reason for a layer that has children, is
// mounted or is in use; everything else as the driver or the system said.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/result.h"
#include "drivers/driver.h"
#include "drivers/host.h"
#include "drivers/select/registry.h"
#include "store/lock.h"
#include "store/metadata.h"

namespace lamina::store {

struct OpenOptions {
  std::string root;                         // the store directory; created 0700 when missing
  std::string driver;                       // requested driver; empty = the store's, else automatic
  std::vector<std::string> driver_options;  // "key=value", passed to the driver
  std::string helper_dir;                   // where lamina-fuse lives; empty = default
};

class Store {
 public:
  // Opens (and on first use initialises) the store at options.root: probes
  // the host, selects the driver (SelectDriver with the requested and the
  // recorded driver, probing only what the choice needs), writes store.json
  // on first use and removes what crashed operations left behind.
  static Result<std::unique_ptr<Store>> Open(const OpenOptions& options);

  const std::string& root() const { return root_; }
  const StoreConfig& config() const { return config_; }
  const HostFacts& host() const { return host_; }
  Driver& driver() { return *driver_; }
  // Every driver's verdict (only those the choice needed are probed; a
  // usable verdict is kept for the rest of the boot, see store.cc), and why
  // the driver in use was chosen.
  const std::vector<DriverVerdict>& verdicts() const { return verdicts_; }
  const std::string& why() const { return why_; }
  // Ids of the leftovers this Open removed.
  const std::vector<std::string>& removed_at_open() const { return removed_at_open_; }

  // Creates an empty layer on `parent` ("" = base layer) and returns its id
  // (`id`, or a random 64-hex id when empty). EINVAL for a bad id, EEXIST
  // for a taken one, ENOENT for a missing parent.
  Result<std::string> CreateLayer(const std::string& parent, bool writable,
                                  const std::string& id = {});
  Result<std::string> CreateLayer(const std::string& parent, const CreateOptions& options,
                                  const std::string& id = {});

  // Creates a read-only layer on `parent` from the layer tar (plain, gzip,
  // zstd, ...) read from `tar_fd` to its end, and returns its metadata,
  // with the size and the DiffID. On failure nothing of the layer remains.
  Result<LayerInfo> ApplyLayer(const std::string& parent, int tar_fd, const std::string& id = {});

  // Removes a layer. EBUSY when another layer is built on it, when it is
  // mounted, or when another process is reading or writing it.
  Result<void> RemoveLayer(const std::string& id);

  // Ready layers, oldest first.
  Result<std::vector<LayerInfo>> ListLayers();
  // A ready layer's metadata; ENOENT "layer <id>" otherwise.
  Result<LayerInfo> GetLayer(const std::string& id);

  // Mounts the layer's stack (reference counted by the driver) and returns
  // the merged path; Unmount drops one reference.
  Result<std::string> Mount(const std::string& id, const MountOptions& options = {});
  Result<void> Unmount(const std::string& id);
  Result<int> MountCount(const std::string& id);
  // For a driver that mounts only in user namespaces of our own
  // (driver().Scope() is MountScope::kUserNamespace: the kernel overlay
  // rootless): the layer's stack, to be mounted inside a container's own
  // namespaces (Driver::PrepareNamespaceMount).
  Result<NamespaceMount> PrepareNamespaceMount(const std::string& id,
                                               const MountOptions& options = {});

  // The layer's OCI layer tar (uncompressed) against its parent, to `out_fd`.
  Result<TarStats> Diff(const std::string& id, int out_fd);
  Result<std::vector<Change>> Changes(const std::string& id);
  Result<uint64_t> Usage(const std::string& id);

  // The store lock, for callers that need several operations to be seen as
  // one (and for tests). Never call a Store operation while holding the
  // exclusive lock from the same process: it would wait for itself.
  Result<StoreLock> Lock(LockMode mode);
  Result<StoreLock> TryLock(LockMode mode);

 private:
  Store() = default;
  std::string LayersDir() const { return root_ + "/layers"; }
  std::string LayerDir(const std::string& id) const { return LayersDir() + "/" + id; }
  std::string LayerJson(const std::string& id) const { return LayerDir(id) + "/layer.json"; }
  std::string UseLock(const std::string& id) const { return LayerDir(id) + "/use.lock"; }

  // Helpers that expect the caller to hold the store lock.
  Result<LayerInfo> ReadLayerLocked(const std::string& id) const;   // any state
  Result<LayerInfo> ReadyLayerLocked(const std::string& id) const;  // ENOENT unless ready
  Result<std::vector<LayerInfo>> AllLayersLocked() const;           // any state, readable
  Result<void> WriteLayerLocked(const LayerInfo& layer) const;
  Result<std::string> NewLayerLocked(const std::string& parent, const CreateOptions& options,
                                     const std::string& id);
  // Removes a leftover (incomplete) layer as well as it can.
  Result<void> DiscardLocked(const std::string& id);
  Result<void> RemoveLeftoversLocked();

  std::string root_;
  StoreConfig config_;
  HostFacts host_;
  std::unique_ptr<Driver> driver_;
  std::vector<DriverVerdict> verdicts_;
  std::string why_;
  std::vector<std::string> removed_at_open_;
};

// What `lamina info` shows. Gathering it creates the store directory (the
// host probe runs inside it) but never writes store.json, and it succeeds
// when no driver is usable (chosen is then empty and why says why).
struct InfoReport {
  HostFacts host;
  std::vector<DriverVerdict> verdicts;
  std::string chosen;
  std::string why;
  std::vector<std::pair<std::string, std::string>> driver_status;  // of the chosen driver
  std::string root;
  std::optional<StoreConfig> config;  // nullopt before first use
  size_t layers = 0;                  // ready layers
};
Result<InfoReport> GatherInfo(const OpenOptions& options);

// The text for a person: "layer abc: not found", "layer abc: already
// exists", the context alone for EBUSY (it carries the reason), else
// Error::message().
std::string Describe(const Error& error);

}  // namespace lamina::store
