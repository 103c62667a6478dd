#include "store/image_oci.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <memory>
#include <vector>

#include "common/hash.h"

namespace lamina::store::oci {

bool IsHex64(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

Result<std::string> DigestHex(const std::string& digest) {
  size_t colon = digest.find(':');
  if (colon == std::string::npos) return Fail(EINVAL, "digest \"" + digest + "\": no algorithm");
  std::string algorithm = digest.substr(0, colon);
  std::string hex = digest.substr(colon + 1);
  if (algorithm == "sha512") {
    return Fail(ENOTSUP, "digest " + digest + ": only sha256 digests are supported");
  }
  if (algorithm != "sha256") return Fail(EINVAL, "digest \"" + digest + "\": unknown algorithm");
  if (!IsHex64(hex)) {
    return Fail(EINVAL, "digest \"" + digest + "\": not 64 lower-case hex digits");
  }
  return hex;
}

bool IsLayerMediaType(std::string_view media_type) {
  static constexpr std::string_view kKnown[] = {
      "application/vnd.oci.image.layer.v1.tar",
      "application/vnd.oci.image.layer.v1.tar+gzip",
      "application/vnd.oci.image.layer.v1.tar+zstd",
      "application/vnd.oci.image.layer.nondistributable.v1.tar",
      "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
      "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
      "application/vnd.docker.image.rootfs.diff.tar",
      "application/vnd.docker.image.rootfs.diff.tar.gzip",
      "application/vnd.docker.image.rootfs.diff.tar.zstd",
      "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
  };
  for (auto known : kKnown) {
    if (media_type == known) return true;
  }
  return false;
}

std::string HostArchitecture() {
  struct utsname u;
  if (::uname(&u) != 0) return "amd64";
  std::string m = u.machine;
  if (m == "x86_64") return "amd64";
  if (m == "aarch64" || m == "arm64") return "arm64";
  if (m.starts_with("arm")) return "arm";
  if (m == "i386" || m == "i486" || m == "i586" || m == "i686") return "386";
  return m;  // ppc64le, s390x, riscv64, mips64le... are the same in Go
}

Result<void> ForEachChunk(int fd, const std::function<Result<void>(std::string_view)>& chunk) {
  std::vector<char> buf(1 << 17);
  while (true) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return FailErrno("read");
    }
    if (n == 0) return {};
    LAMINA_CHECK(chunk({buf.data(), static_cast<size_t>(n)}));
  }
}

Result<HashedSize> HashFd(int fd) {
  Sha256 sha;
  HashedSize out;
  LAMINA_CHECK(ForEachChunk(fd, [&](std::string_view data) -> Result<void> {
    sha.Update(data.data(), data.size());
    out.size += data.size();
    return {};
  }));
  out.digest = "sha256:" + sha.HexDigest();
  return out;
}

Result<void> WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return FailErrno("write");
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

Result<GzipResult> GzipFd(int in_fd, int out_fd) {
  struct Sink {
    int fd;
    Sha256 sha;
    uint64_t size = 0;
    Error error;
    bool failed = false;
  } sink{out_fd};
  struct Free {
    void operator()(struct archive* a) const { archive_write_free(a); }
  };
  std::unique_ptr<struct archive, Free> a(archive_write_new());
  if (!a) return Fail(ENOMEM, "archive_write_new");
  auto archive_error = [&](const char* what) {
    if (sink.failed) return Fail(sink.error);
    const char* why = archive_error_string(a.get());
    return Fail(EIO, std::string("gzip: ") + what + (why ? std::string(": ") + why : ""));
  };
  if (archive_write_set_format_raw(a.get()) != ARCHIVE_OK ||
      archive_write_add_filter_gzip(a.get()) != ARCHIVE_OK ||
      // No mtime in the gzip header: equal input, equal blob.
      archive_write_set_filter_option(a.get(), "gzip", "timestamp", nullptr) != ARCHIVE_OK ||
      archive_write_set_bytes_per_block(a.get(), 0) != ARCHIVE_OK) {
    return archive_error("setup");
  }
  auto write_cb = [](struct archive*, void* client, const void* buf, size_t size) -> la_ssize_t {
    auto* s = static_cast<Sink*>(client);
    auto written = WriteAll(s->fd, {static_cast<const char*>(buf), size});
    if (!written) {
      s->error = written.error();
      s->failed = true;
      return -1;
    }
    s->sha.Update(buf, size);
    s->size += size;
    return static_cast<la_ssize_t>(size);
  };
  if (archive_write_open(a.get(), &sink, nullptr, write_cb, nullptr) != ARCHIVE_OK) {
    return archive_error("open");
  }
  struct EntryFree {
    void operator()(struct archive_entry* e) const { archive_entry_free(e); }
  };
  std::unique_ptr<struct archive_entry, EntryFree> entry(archive_entry_new());
  archive_entry_set_filetype(entry.get(), AE_IFREG);
  archive_entry_copy_pathname(entry.get(), "layer.tar");
  if (archive_write_header(a.get(), entry.get()) != ARCHIVE_OK) return archive_error("header");

  Sha256 plain;
  GzipResult result;
  LAMINA_CHECK(ForEachChunk(in_fd, [&](std::string_view data) -> Result<void> {
    plain.Update(data.data(), data.size());
    result.uncompressed.size += data.size();
    if (archive_write_data(a.get(), data.data(), data.size()) !=
        static_cast<la_ssize_t>(data.size())) {
      return archive_error("write");
    }
    return {};
  }));
  if (archive_write_close(a.get()) != ARCHIVE_OK) return archive_error("close");
  result.uncompressed.digest = "sha256:" + plain.HexDigest();
  result.compressed.digest = "sha256:" + sink.sha.HexDigest();
  result.compressed.size = sink.size;
  return result;
}

}  // namespace lamina::store::oci
