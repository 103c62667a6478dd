#pragma once

// Images: named, ordered stacks of ready layers plus the configuration a
// container starts with. Kept as <root>/images/<name>.json (written
// atomically, under the store lock). Layers are shared between images that
// have them in common (same DiffID → same layer).

#include <string>
#include <vector>

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
};

struct Image {
  std::string name;                 // "busybox", "alpine:3.19", ...: [a-z0-9][a-z0-9._:/-]*
  std::vector<std::string> layers;  // layer ids, bottom (base) first; the last is the top
  ImageConfig config;
  std::string created;              // RFC 3339
  std::string manifest_digest;      // "sha256:..." when imported from an OCI layout
};

// Image names are validated (EINVAL with the rule) and mapped to a safe file
// name; "name" without a tag means "name:latest" except for built-ins.
class ImageStore {
 public:
  explicit ImageStore(Store& store) : store_(store) {}

  Result<Image> Get(const std::string& name);
  Result<std::vector<Image>> List();
  // Writes the image record; every layer must be a ready layer (ENOENT).
  Result<void> Put(const Image& image);
  // Removes the record, then each of its layers no other image uses
  // (layers with children or in use are kept).
  Result<void> Remove(const std::string& name);

  // The built-in "busybox" image, made from the host's busybox-static
  // (/bin/busybox) on first use: every applet linked, /etc/passwd and
  // /etc/group, /tmp, /root. ENOENT with a clear hint when busybox-static is
  // not installed.
  Result<Image> EnsureBusybox();

 private:
  Store& store_;
};

}  // namespace lamina::store
