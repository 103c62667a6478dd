#pragma once

// `lamina image import`: an image into the store from
//   - an OCI image layout directory (oci-layout, index.json, blobs/sha256/),
//     or the same packed in a tar ("oci-archive");
//   - a `docker save` archive (a tar with manifest.json, legacy layout with
//     <id>/layer.tar or the newer one with blobs/sha256/);
//   - a plain rootfs tarball (plain, gzip, zstd, ...): one layer.
//
// Everything from the input is untrusted: blobs are found only by their
// digest (never by a path from a manifest of an OCI layout), every blob's
// sha256 and size are checked before anything is created, every layer's
// DiffID is checked against the image config, docker manifest paths that
// are absolute or hold ".." are refused, JSON documents are size-limited.
// On any failure nothing of the import stays in the store.

#include <string>

#include "common/result.h"
#include "store/images.h"

namespace lamina::store {

enum class ImportFormat { kAuto, kOciLayout, kDockerArchive, kRootfsTar };

// "auto", "oci", "docker", "rootfs"; EINVAL otherwise.
Result<ImportFormat> ParseImportFormat(const std::string& name);

struct ImportOptions {
  std::string path;  // a directory (OCI layout) or a file (a tar of any kind)
  ImportFormat format = ImportFormat::kAuto;
  // The image name; default: from the input (io.containerd.image.name or
  // the layout directory's name plus ref.name; RepoTags[0]; the tarball's
  // file name without its extensions).
  std::string name;
  // Which image of a layout or archive holding several: an OCI ref.name
  // ("latest"), a full name ("alpine:3.19") or a docker RepoTag.
  std::string ref;
  bool replace = false;  // replace an existing image of the same name
  // Where to unpack archives for reading; default $TMPDIR or /var/tmp.
  std::string tmp_dir;
};

// What the auto detection decides for a path (for tests and messages).
Result<ImportFormat> DetectImportFormat(const std::string& path);

Result<CreateReport> ImportImage(ImageStore& images, const ImportOptions& options);

}  // namespace lamina::store
