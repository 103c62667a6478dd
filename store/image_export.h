#pragma once

// `lamina image export`: an image of the store as an OCI image layout
// (image-spec v1.0 "image layout"): oci-layout, index.json, blobs/sha256/.
// Each layer is the store's diff of that layer (Store::Diff), gzip
// compressed without a timestamp, so exporting the same layers twice gives
// the same blobs. The config carries rootfs.diff_ids and the image config;
// index.json names the manifest with org.opencontainers.image.ref.name (and
// io.containerd.image.name for the full name). skopeo (oci:DIR:REF) and
// umoci (--image DIR:REF) read it.

#include <string>

#include "common/result.h"
#include "store/images.h"

namespace lamina::store {

struct ExportOptions {
  // ref.name in index.json; default: the name's tag ("latest" for a name
  // without one).
  std::string ref;
};

struct ExportReport {
  std::string name;             // the image's normalized name
  std::string ref;              // ref.name written
  std::string manifest_digest;  // "sha256:..."
  uint64_t bytes = 0;           // compressed bytes of layer blobs written
};

// Writes image `name` into `dir`: a new directory (created), an empty one,
// or an existing OCI layout (blobs are added, an index entry of the same
// ref.name replaced). EEXIST for a non-empty directory that is no OCI
// layout. A failed export leaves no partial blob under its final name.
Result<ExportReport> ExportImage(ImageStore& images, const std::string& name,
                                 const std::string& dir, const ExportOptions& options = {});

}  // namespace lamina::store
