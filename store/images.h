#pragma once

// Images: named, ordered stacks of ready layers plus the configuration a
// container starts with. Kept as <root>/images/<name>.json (written
// atomically, under the store lock). Layers are shared between images that
// have them in common (same DiffID on the same parent → same layer).
//
// Locking: image operations that change layers (Create, Remove,
// EnsureBusybox) hold <root>/images/.lock exclusively for their whole run,
// so that an import never reuses a layer that a concurrent `image rm` is
// removing, and two processes asking for busybox at once make one image.
// Record files are written under the store lock (Store::Lock). Order: the
// images lock before the store lock, never the other way round. Get and
// List take no lock (records are replaced atomically), so they may be
// called while the caller holds the store lock — except Get("busybox") on
// its first use, which builds the image.
//
// Crash safety: Create names each layer it is about to apply in
// <root>/images/.journal.json before applying it; the next process that
// takes the images lock removes the journal's layers that no image uses, so
// a killed import leaves nothing behind for long.

#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/fd.h"
#include "common/result.h"
#include "store/store.h"

namespace lamina::store {

// The parts of an OCI image config that a container run uses.
struct ImageConfig {
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::vector<std::string> env;  // "KEY=value"
  std::string working_dir;       // "" = "/"
  std::string user;              // "" = root; "uid[:gid]" or a name from /etc/passwd
  std::string hostname;          // not in OCI; lamina's default for `run`
  bool operator==(const ImageConfig&) const = default;
};

struct Image {
  std::string name;                 // "busybox", "alpine:3.19", ...: [a-z0-9][a-z0-9._:/-]*
  std::vector<std::string> layers;  // layer ids, bottom (base) first; the last is the top
  ImageConfig config;
  std::string created;          // RFC 3339
  std::string manifest_digest;  // "sha256:..." when imported from an OCI layout
  // Added: where the image came from: "builtin", "oci", "docker-archive",
  // "rootfs" (or "" in records written before this field existed).
  std::string source;
  bool operator==(const Image&) const = default;
};

// The built-in image's name.
inline constexpr const char* kBusyboxImage = "busybox";

// Image names: [a-z0-9][a-z0-9._:/-]*, at most 200 bytes, no "." or ".."
// path component; EINVAL with the rule otherwise. "name" without a tag (no
// ':' after the last '/') means "name:latest", except for the built-in
// "busybox". Returns the normalized name.
Result<std::string> NormalizeImageName(const std::string& name);
// The record's file name for a normalized name: '/' becomes "%2F" (no other
// character needs escaping), plus ".json".
std::string ImageFileName(const std::string& normalized);

// The record's JSON form (also what `lamina image inspect` starts from):
//   {"name", "layers": [...], "config": {"entrypoint", "cmd", "env",
//    "working_dir", "user", "hostname"}, "created", "manifest_digest", "source"}
nlohmann::json ImageJson(const Image& image);
// Strict about types (EINVAL with what is wrong); unknown keys ignored.
Result<Image> ParseImage(std::string_view text);

// A layer tar for ImageStore::Create: how to open it (plain, gzip, zstd...;
// read to its end by Store::ApplyLayer) and the DiffID it must have when
// known ("sha256:<hex>", from an image config), which also lets an existing
// layer be reused without reading the tar at all.
struct LayerSource {
  std::function<Result<Fd>()> open;
  std::string diff_id;      // expected; "" = unknown (then checked after apply)
  std::string description;  // for errors: "layer 2 (sha256:ab...)"
};

struct CreateOptions {
  bool replace = false;  // an existing image of that name is replaced (else EEXIST)
};

// What Create did, for the CLI to report.
struct CreateReport {
  Image image;
  std::vector<std::string> applied;  // layer ids made by this import
  std::vector<std::string> reused;   // layer ids shared with what was there
};

class ImageStore {
 public:
  explicit ImageStore(Store& store) : store_(store) {}

  Store& store() { return store_; }

  // The image `name` (normalized first); ENOENT "image <name>" when there is
  // none. Get("busybox") creates the built-in image on first use.
  Result<Image> Get(const std::string& name);
  // Every image, sorted by name. Unreadable records are skipped with a warning.
  Result<std::vector<Image>> List();
  // Writes the image record; every layer must be a ready layer (ENOENT) and
  // the layers must form one chain, bottom first (EINVAL).
  Result<void> Put(const Image& image);
  // Removes the record, then each of its layers no other image uses
  // (layers with children or in use are kept).
  Result<void> Remove(const std::string& name);

  // Creates image `image.name` (its layers field is ignored and filled in)
  // from `layers`, bottom first: a layer whose DiffID matches a ready,
  // read-only layer on the same parent is reused, any other is applied. A
  // tar whose DiffID differs from the expected one fails with EINVAL. On any
  // failure every layer applied so far is removed again and no record is
  // written. EEXIST "image <name>" when it exists and !options.replace; a
  // replaced image's layers that nothing else uses are removed afterwards.
  Result<CreateReport> Create(Image image, const std::vector<LayerSource>& layers,
                              const CreateOptions& options = {});

  // The built-in "busybox" image, made from the host's busybox-static
  // (/bin/busybox) on first use: every applet linked, /etc/passwd and
  // /etc/group, /tmp, /root. ENOENT with a clear hint when busybox-static is
  // not installed; ENOEXEC when /bin/busybox is not statically linked.
  Result<Image> EnsureBusybox();

 private:
  std::string ImagesDir() const { return store_.root() + "/images"; }
  std::string RecordPath(const std::string& normalized) const {
    return ImagesDir() + "/" + ImageFileName(normalized);
  }
  // <root>/images/.lock, exclusive; cleans up after an interrupted Create.
  Result<StoreLock> LockImages();
  // <root>/images/.journal.json: {"layers": [ids]} of the Create under way.
  std::string JournalPath() const { return ImagesDir() + "/.journal.json"; }
  Result<void> WriteJournal(const std::vector<std::string>& layers);
  // Helpers for callers holding the images lock (not the store lock).
  Result<std::optional<Image>> ReadRecord(const std::string& normalized);
  Result<void> WriteRecord(const Image& image);
  Result<void> DeleteRecord(const std::string& normalized);
  // Removes, top first, the layers of `layers` that no image record uses;
  // stops at the first one that must stay (in use, has children).
  void RemoveUnusedLayers(const std::vector<std::string>& layers);
  Result<CreateReport> CreateLocked(Image image, const std::vector<LayerSource>& layers,
                                    const CreateOptions& options);
  Result<Image> BuildBusyboxLocked();

  Store& store_;
};

// The host's busybox-static: its path (default /bin/busybox) and a tar of
// the whole busybox rootfs, for EnsureBusybox and for tests.
struct BusyboxRootfs {
  std::string busybox_path = "/bin/busybox";
};
// The rootfs layer tar (uncompressed, deterministic for one busybox binary)
// written into a fresh memfd, positioned at 0. ENOENT when busybox is
// missing, ENOEXEC when it is not a static ELF executable.
Result<Fd> BuildBusyboxLayer(const BusyboxRootfs& options = {});
// The applets `busybox --list-full` names ("usr/bin/env", ...).
Result<std::vector<std::string>> BusyboxApplets(const std::string& busybox_path = "/bin/busybox");
// The image config of the built-in busybox: cmd ["sh"], a PATH, hostname "lamina".
ImageConfig BusyboxConfig();

}  // namespace lamina::store
