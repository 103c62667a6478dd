#pragma once

// The one interface every lamina storage driver implements (kernel-overlay,
// fuse, vfs). A driver owns the content of layer directories under its home
// (`<root>/layers/<id>/`: diff/, work/, merged/ and its own small files);
// the store owns `layer.json` beside them. Drivers never call the store or the
// launcher.
//
// Thread safety: a Driver object is used by one thread at a time. Between
// processes, the store's lock serialises writers; mount reference counts are
// kept on disk under a per-layer lock, so two processes may mount and unmount
// the same layer concurrently.

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "drivers/host.h"

namespace lamina {

// Which xattr namespace the union format uses: trusted.overlay.* needs
// CAP_SYS_ADMIN in the initial user namespace; rootless stores use
// user.overlay.* (kernel option `userxattr`). Recorded in store.json.
enum class XattrNamespace { kTrusted, kUser };
std::string_view XattrNamespaceName(XattrNamespace ns);  // "trusted" / "user"
Result<XattrNamespace> ParseXattrNamespace(std::string_view name);

// The verdict of Driver::Probe.
struct ProbeResult {
  bool usable = false;
  // Why it is (or is not) usable, for people: "overlay mounted in /var/lib/lamina (ext4, d_type)".
  std::string reason;
  // Facts the driver found that matter to it ("new_mount_api": "yes", ...).
  std::map<std::string, std::string> features;
};

// How a driver is set up. Plain data, passed in.
struct DriverConfig {
  // Directory holding one sub-directory per layer id. Exists.
  std::string home;
  XattrNamespace xattr_ns = XattrNamespace::kTrusted;
  // Driver-specific "key=value" options (from --storage-opt or the config file).
  std::vector<std::string> options;
  // Directory where helper binaries live (lamina-fuse); empty = beside /proc/self/exe.
  std::string helper_dir;
};

struct CreateOptions {
  // A writable (container) layer gets work/ and merged/; read-only image layers do not.
  bool writable = false;
  // The layer is a container's root: its top directory belongs to the
  // container's root (0:0 in the layer's ids), as in a root store. A
  // rootless store cannot chown it and records the owner instead where its
  // driver reads such records (fuse: override_stat).
  bool container_root = false;
};

// One range of a user namespace's id map: ids `inside` .. inside+count-1 of
// the namespace are ids `outside` .. of the caller's.
struct IdMapEntry {
  uint32_t inside = 0;
  uint32_t outside = 0;
  uint32_t count = 0;
};

struct MountOptions {
  // Mount read-only; for a layer with no upper (an image top) this is implied.
  bool read_only = false;
  // SELinux context and other label options are accepted and passed on where supported.
  std::string mount_label;
  // The id maps of the user namespace the tree is used from (a container's),
  // empty when it is used from the caller's own. The owners a layer stores
  // are the namespace's ids; a driver whose files are served by a process
  // in the caller's namespace (fuse) presents them as the caller's ids
  // through these maps, so that they show right inside. Kernel mounts ignore
  // them (the kernel maps by itself).
  std::vector<IdMapEntry> uid_map, gid_map;
};

// Where a driver's mounts can be made.
enum class MountScope {
  // In the caller's mount namespace: Mount works, and every process sees the tree.
  kHost,
  // Only in a mount namespace of a user namespace the caller makes itself
  // (the kernel overlay rootless: the kernel allows it there with userxattr,
  // not in the initial namespace). Mount fails with EPERM and advice; a
  // container's root comes from PrepareNamespaceMount, mounted inside it.
  kUserNamespace,
};

// A union mount made later by another process, inside its own mount
// namespace (a container's), which takes the mount with it when it ends: no
// reference count and nothing to unmount.
struct NamespaceMount {
  std::string target;  // where it mounts: the layer's merged path
  // Makes the mount in the calling process's mount namespace. Runs in a
  // freshly cloned child: system calls only, no logging, never throws.
  std::function<Result<void>()> mount;
};

enum class ChangeKind { kAdded, kModified, kDeleted };
struct Change {
  std::string path;  // relative to the layer root, no leading "/", e.g. "etc/passwd"
  ChangeKind kind;
  bool operator==(const Change&) const = default;
};
std::string_view ChangeKindName(ChangeKind kind);  // "A", "C", "D" as `docker diff`

// What a diff or apply did.
struct TarStats {
  uint64_t bytes = 0;    // content bytes written into the layer / into the tar
  uint64_t entries = 0;  // tar entries read / written
};

class Driver {
 public:
  virtual ~Driver() = default;

  // Short stable name: "overlay", "fuse", "vfs".
  virtual std::string_view Name() const = 0;

  // Decides whether this driver works on this host and store. Must not leave
  // anything behind (trial mounts are unmounted, trial files removed). Never
  // fails: problems are a verdict with a reason.
  virtual ProbeResult Probe(const HostFacts& host) = 0;

  // Takes a usable verdict that Probe gave on this host before (kept by the
  // store for the rest of the boot) instead of probing again, and sets up
  // what Probe would have set from its features.
  virtual void Adopt(const ProbeResult& verdict) { (void)verdict; }

  // Creates layer `id` on top of `parent` ("" for a base layer). Fails with
  // EEXIST if the id exists, ENOENT if the parent does not. On failure nothing
  // of `id` is left behind.
  virtual Result<void> Create(const std::string& id, const std::string& parent,
                              const CreateOptions& options) = 0;

  // Removes the layer's directories. EBUSY (with a clear message) if it is
  // mounted; a missing layer is not an error.
  virtual Result<void> Remove(const std::string& id) = 0;

  virtual bool Exists(const std::string& id) const = 0;

  // Mounts the union of `id` and its ancestors and returns the merged path.
  // Reference counted: each successful Mount needs one Unmount; the second
  // and later calls return the same path.
  virtual Result<std::string> Mount(const std::string& id, const MountOptions& options) = 0;

  // Where Mount can mount (known after Probe).
  virtual MountScope Scope() const { return MountScope::kHost; }

  // Prepares the union of `id` for NamespaceMount::mount in another
  // process's own mount namespace; the directories it needs exist when this
  // returns. Errors as Mount's. Drivers whose Scope is kHost need not offer
  // it (EOPNOTSUPP).
  virtual Result<NamespaceMount> PrepareNamespaceMount(const std::string& id,
                                                       const MountOptions& options) {
    (void)options;
    return Fail(EOPNOTSUPP,
                std::string(Name()) + " driver: no mounts in another namespace for " + id);
  }

  // Drops one reference; the last one unmounts. EINVAL if not mounted.
  virtual Result<void> Unmount(const std::string& id) = 0;

  // How many references the layer's mount has (0 = not mounted).
  virtual Result<int> MountCount(const std::string& id) const = 0;

  // Paths added, modified or deleted in `id` against its parent, sorted by path.
  virtual Result<std::vector<Change>> Changes(const std::string& id) = 0;

  // Writes an uncompressed OCI layer tar of `id` against its parent to
  // `out_fd`: entries sorted by path, deletions as `.wh.NAME`, opaque
  // directories as `DIR/.wh..wh..opq`, hard links as link entries.
  virtual Result<TarStats> Diff(const std::string& id, int out_fd) = 0;

  // Reads an OCI layer tar (plain, gzip or zstd) from `tar_fd` into the
  // (fresh, empty) layer `id`, turning OCI whiteouts into the driver's native
  // form. Hostile entries (escapes through "..", absolute paths, symlinks or
  // hard links) are refused with EINVAL/EXDEV and a message naming the entry;
  // on failure the caller removes the layer.
  virtual Result<TarStats> ApplyDiff(const std::string& id, int tar_fd) = 0;

  // Bytes used by the layer's own content (diff/ only).
  virtual Result<uint64_t> Usage(const std::string& id) = 0;

  // Key/value facts for `lamina info` (backing fs, options in force, ...).
  virtual std::vector<std::pair<std::string, std::string>> Status() const = 0;

  // The directory holding the layer's own content (its diff/).
  virtual std::string DiffPath(const std::string& id) const = 0;
};

}  // namespace lamina
