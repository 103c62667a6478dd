#pragma once

// Shared pieces of OCI image import and export: digests, media types, the
// platform names, blob hashing and deterministic gzip.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "common/fd.h"
#include "common/result.h"

namespace lamina::store::oci {

inline constexpr std::string_view kMediaIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kMediaManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kMediaConfig = "application/vnd.oci.image.config.v1+json";
inline constexpr std::string_view kMediaLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr std::string_view kDockerManifest =
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kDockerManifestList =
    "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view kRefNameAnnotation = "org.opencontainers.image.ref.name";
inline constexpr std::string_view kContainerdNameAnnotation = "io.containerd.image.name";

// Checks "sha256:<64 lower-case hex>" and returns the hex. ENOTSUP for
// another registered algorithm (sha512), EINVAL for anything else.
Result<std::string> DigestHex(const std::string& digest);
bool IsHex64(std::string_view s);

// Layer media types lamina reads (OCI and Docker, plain, gzip and zstd,
// nondistributable variants too).
bool IsLayerMediaType(std::string_view media_type);

// The OCI/Go names of this machine: "amd64", "arm64", ... and "linux".
std::string HostArchitecture();

struct HashedSize {
  std::string digest;  // "sha256:<hex>"
  uint64_t size = 0;
};
// sha256 and size of everything from `fd`'s current offset to its end.
Result<HashedSize> HashFd(int fd);

// Compresses everything from `in_fd` (current offset to the end) with gzip
// into `out_fd`, deterministically (no timestamp or name in the header).
// Returns the digests of both sides: `uncompressed` (the DiffID) and
// `compressed` (the blob digest).
struct GzipResult {
  HashedSize uncompressed;
  HashedSize compressed;
};
Result<GzipResult> GzipFd(int in_fd, int out_fd);

// Reads `fd` from its current offset to the end in chunks, handing each to
// `chunk`; stops at the first error (its own or the callback's).
Result<void> ForEachChunk(int fd, const std::function<Result<void>(std::string_view)>& chunk);

// Writes all of `data`, retrying short writes and EINTR.
Result<void> WriteAll(int fd, std::string_view data);

}  // namespace lamina::store::oci
