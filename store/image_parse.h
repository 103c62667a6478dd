#pragma once

// The parsers of untrusted image documents: OCI index.json, image indexes,
// image manifests, image configs and a docker archive's manifest.json. Pure
// functions of their input (no files, no store), so that they can be unit
// tested and fuzzed (tests/fuzz/image_parse_fuzz.cc).
//
// Every parser is strict about the types of the fields it reads and fails
// with EINVAL naming `what` and the field; unknown fields are ignored.
// Nothing here throws, whatever the input.

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/result.h"
#include "store/images.h"

namespace lamina::store::oci {

// JSON text into a document; EINVAL "<what>: not valid JSON".
Result<nlohmann::json> ParseJson(const std::string& text, const std::string& what);

// An OCI content descriptor.
struct Descriptor {
  std::string media_type;  // "" when absent
  std::string digest;      // checked by DigestHex
  uint64_t size = 0;
  std::map<std::string, std::string> annotations;  // string values only
  std::string os, architecture, variant;           // from "platform"
};

// An object with a "digest" (sha256, see DigestHex) and a non-negative
// integer "size"; "mediaType" a string when present; annotations and
// platform fields that are not strings are ignored.
Result<Descriptor> ParseDescriptor(const nlohmann::json& j, const std::string& what);

// The "manifests" of an index (a layout's index.json or a nested image
// index): EINVAL when there is no such array, when an entry is not a
// descriptor, or (for `non_empty`) when it lists nothing.
Result<std::vector<Descriptor>> ParseIndex(const nlohmann::json& index, const std::string& what,
                                           bool non_empty);

// Picks this host's manifest in an image index (linux, this architecture);
// ENOTSUP naming the platforms it has when there is none.
Result<Descriptor> PickPlatform(const nlohmann::json& index, const std::string& what);

// An image manifest: its config descriptor and its layers, bottom first.
// EINVAL for an index given as a manifest, no config, no layers array;
// ENOTSUP for a layer media type lamina does not read (IsLayerMediaType).
struct Manifest {
  Descriptor config;
  std::vector<Descriptor> layers;
};
Result<Manifest> ParseManifest(const nlohmann::json& manifest, const std::string& what);

// An OCI (or Docker) image config: what a run needs and the DiffIDs.
// ENOTSUP for an os other than linux; EINVAL without rootfs.type "layers"
// or with a DiffID that is not a sha256 digest.
struct ParsedConfig {
  ImageConfig config;
  std::string created;
  std::vector<std::string> diff_ids;
};
Result<ParsedConfig> ParseImageConfig(const nlohmann::json& j, const std::string& what);

// One image of a `docker save` manifest.json. Paths are as written: the
// caller checks them (absolute, "..") before opening anything.
struct DockerEntry {
  std::string config;                  // "Config"
  std::vector<std::string> repo_tags;  // "RepoTags"
  std::vector<std::string> layers;     // "Layers", bottom first
};
// A non-empty array of objects with string "Config", string arrays
// "RepoTags" and "Layers" (absent or null: empty).
Result<std::vector<DockerEntry>> ParseDockerManifest(const nlohmann::json& manifest,
                                                     const std::string& what);

}  // namespace lamina::store::oci
