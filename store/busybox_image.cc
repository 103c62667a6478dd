// The built-in busybox image: one layer made from the host's busybox-static.

#include <archive.h>
#include <archive_entry.h>
#include <elf.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <memory>
#include <set>

#include "common/fs.h"
#include "store/image_oci.h"
#include "store/images.h"

namespace lamina::store {

namespace {

constexpr const char* kInstallHint =
    "the built-in busybox image needs Debian's busybox-static (apt-get install busybox-static)";

// ENOEXEC unless `data` is an ELF executable without a program interpreter.
Result<void> CheckStaticElf(const std::string& path, std::string_view data) {
  if (data.size() < EI_NIDENT || std::memcmp(data.data(), ELFMAG, SELFMAG) != 0) {
    return Fail(ENOEXEC, path + " is not an ELF executable; " + kInstallHint);
  }
  auto dynamic = [&](auto ehdr, auto phdr) -> Result<bool> {
    using Ehdr = decltype(ehdr);
    using Phdr = decltype(phdr);
    if (data.size() < sizeof(Ehdr)) return Fail(ENOEXEC, path + ": truncated ELF header");
    std::memcpy(&ehdr, data.data(), sizeof(Ehdr));
    if (ehdr.e_phentsize != sizeof(Phdr)) return Fail(ENOEXEC, path + ": odd ELF program headers");
    for (size_t i = 0; i < ehdr.e_phnum; ++i) {
      uint64_t offset = uint64_t{ehdr.e_phoff} + i * sizeof(Phdr);
      if (offset + sizeof(Phdr) > data.size()) return Fail(ENOEXEC, path + ": truncated ELF");
      std::memcpy(&phdr, data.data() + offset, sizeof(Phdr));
      if (phdr.p_type == PT_INTERP) return true;
    }
    return false;
  };
  bool is_dynamic = false;
  if (data[EI_CLASS] == ELFCLASS64) {
    is_dynamic = LAMINA_TRY(dynamic(Elf64_Ehdr{}, Elf64_Phdr{}));
  } else if (data[EI_CLASS] == ELFCLASS32) {
    is_dynamic = LAMINA_TRY(dynamic(Elf32_Ehdr{}, Elf32_Phdr{}));
  } else {
    return Fail(ENOEXEC, path + ": unknown ELF class");
  }
  if (is_dynamic) {
    return Fail(ENOEXEC, path + " is dynamically linked (it would not run inside the image); " +
                             kInstallHint);
  }
  return {};
}

// A relative path of an applet or directory, no "." / ".." / empty parts.
bool SafeRelative(const std::string& path) {
  if (path.empty() || path.front() == '/' || path.back() == '/') return false;
  size_t start = 0;
  while (true) {
    size_t slash = path.find('/', start);
    std::string part = path.substr(start, slash == std::string::npos ? slash : slash - start);
    if (part.empty() || part == "." || part == "..") return false;
    if (slash == std::string::npos) return true;
    start = slash + 1;
  }
}

struct ArchiveFree {
  void operator()(struct archive* a) const { archive_write_free(a); }
};
struct EntryFree {
  void operator()(struct archive_entry* e) const { archive_entry_free(e); }
};

}  // namespace

ImageConfig BusyboxConfig() {
  ImageConfig config;
  config.cmd = {"sh"};
  config.env = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin"};
  config.hostname = "lamina";
  return config;
}

Result<std::vector<std::string>> BusyboxApplets(const std::string& busybox_path) {
  if (!PathExists(busybox_path)) return Fail(ENOENT, busybox_path + " not found; " + kInstallHint);
  std::string out;
  int status = LAMINA_TRY(RunCommand({busybox_path, "--list-full"}, &out));
  if (status != 0) {
    return Fail(ENOEXEC,
                busybox_path + " --list-full exited with status " + std::to_string(status));
  }
  std::vector<std::string> applets;
  size_t start = 0;
  while (start < out.size()) {
    size_t end = out.find('\n', start);
    if (end == std::string::npos) end = out.size();
    std::string line = out.substr(start, end - start);
    start = end + 1;
    while (line.starts_with("/")) line.erase(0, 1);
    if (line.empty()) continue;
    if (!SafeRelative(line)) {
      spdlog::warn("busybox: skipping applet path {}", line);
      continue;
    }
    applets.push_back(line);
  }
  if (applets.empty()) return Fail(ENOEXEC, busybox_path + " --list-full listed no applets");
  return applets;
}

Result<Fd> BuildBusyboxLayer(const BusyboxRootfs& options) {
  const std::string& path = options.busybox_path;
  auto st = LAMINA_TRY(LstatIfExists(path));
  if (!st) return Fail(ENOENT, path + " not found; " + kInstallHint);
  std::string binary = LAMINA_TRY(ReadFile(path));
  LAMINA_CHECK(CheckStaticElf(path, binary));
  std::vector<std::string> applets = LAMINA_TRY(BusyboxApplets(path));

  int raw = ::memfd_create("lamina-busybox-layer", MFD_CLOEXEC);
  if (raw < 0) return FailErrno("memfd_create");
  Fd out(raw);

  // Entries: directories (sorted, parents first), /bin/busybox, the small
  // files, then every applet as a hard link to /bin/busybox.
  std::map<std::string, mode_t> dirs = {
      {"bin", 0755},      {"dev", 0755}, {"etc", 0755},  {"proc", 0555}, {"root", 0700},
      {"sbin", 0755},     {"sys", 0555}, {"tmp", 01777}, {"usr", 0755},  {"usr/bin", 0755},
      {"usr/sbin", 0755}, {"var", 0755}, {"home", 0755},
  };
  std::set<std::string> links;
  for (const auto& applet : applets) {
    if (applet == "bin/busybox") continue;
    links.insert(applet);
    for (size_t slash = applet.find('/'); slash != std::string::npos;
         slash = applet.find('/', slash + 1)) {
      dirs.emplace(applet.substr(0, slash), 0755);
    }
  }
  links.insert("bin/sh");
  const std::map<std::string, std::string> files = {
      {"etc/passwd",
       "root:x:0:0:root:/root:/bin/sh\n"
       "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"},
      {"etc/group", "root:x:0:\nnobody:x:65534:\n"},
      {"etc/hostname", "lamina\n"},
      {"etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"},
  };
  for (const auto& [name, content] : files) links.erase(name);

  std::unique_ptr<struct archive, ArchiveFree> a(archive_write_new());
  if (!a) return Fail(ENOMEM, "archive_write_new");
  archive_write_set_format_pax_restricted(a.get());
  archive_write_set_bytes_per_block(a.get(), 0);
  struct Sink {
    int fd;
    int error = 0;
  } sink{out.get()};
  auto write_cb = [](struct archive*, void* client, const void* buf, size_t size) -> la_ssize_t {
    auto* s = static_cast<Sink*>(client);
    auto written = oci::WriteAll(s->fd, {static_cast<const char*>(buf), size});
    if (!written) {
      s->error = written.error().code();
      return -1;
    }
    return static_cast<la_ssize_t>(size);
  };
  if (archive_write_open(a.get(), &sink, nullptr, write_cb, nullptr) != ARCHIVE_OK) {
    return Fail(EIO, std::string("busybox layer: ") + archive_error_string(a.get()));
  }
  time_t mtime = st->st_mtim.tv_sec;
  auto fail = [&](const std::string& name) {
    int code = sink.error != 0 ? sink.error : EIO;
    const char* why = archive_error_string(a.get());
    return Fail(code, "busybox layer: " + name + (why ? std::string(": ") + why : ""));
  };
  auto header = [&](const std::string& name, mode_t type, mode_t mode, int64_t size,
                    const std::string& hardlink) -> Result<void> {
    std::unique_ptr<struct archive_entry, EntryFree> e(archive_entry_new());
    archive_entry_copy_pathname(e.get(), name.c_str());
    archive_entry_set_filetype(e.get(), type);
    archive_entry_set_perm(e.get(), mode);
    archive_entry_set_uid(e.get(), 0);
    archive_entry_set_gid(e.get(), 0);
    archive_entry_set_uname(e.get(), "root");
    archive_entry_set_gname(e.get(), "root");
    archive_entry_set_mtime(e.get(), mtime, 0);
    if (!hardlink.empty()) {
      archive_entry_copy_hardlink(e.get(), hardlink.c_str());
      archive_entry_set_size(e.get(), 0);
    } else {
      archive_entry_set_size(e.get(), size);
    }
    if (archive_write_header(a.get(), e.get()) != ARCHIVE_OK) return fail(name);
    return {};
  };
  auto data = [&](const std::string& name, std::string_view bytes) -> Result<void> {
    if (!bytes.empty() && archive_write_data(a.get(), bytes.data(), bytes.size()) !=
                              static_cast<la_ssize_t>(bytes.size())) {
      return fail(name);
    }
    return {};
  };
  for (const auto& [name, mode] : dirs) {
    LAMINA_CHECK(header(name, AE_IFDIR, mode, 0, ""));
  }
  LAMINA_CHECK(header("bin/busybox", AE_IFREG, 0755, static_cast<int64_t>(binary.size()), ""));
  LAMINA_CHECK(data("bin/busybox", binary));
  for (const auto& [name, content] : files) {
    LAMINA_CHECK(header(name, AE_IFREG, 0644, static_cast<int64_t>(content.size()), ""));
    LAMINA_CHECK(data(name, content));
  }
  for (const auto& name : links) {
    if (dirs.contains(name)) continue;
    LAMINA_CHECK(header(name, AE_IFREG, 0755, 0, "bin/busybox"));
  }
  if (archive_write_close(a.get()) != ARCHIVE_OK) return fail("end");
  if (::lseek(out.get(), 0, SEEK_SET) != 0) return FailErrno("lseek busybox layer");
  return out;
}

Result<Image> ImageStore::BuildBusyboxLocked() {
  Fd layer = LAMINA_TRY(BuildBusyboxLayer());
  // The DiffID now, so that a layer already in the store is shared.
  auto hashed = LAMINA_TRY(oci::HashFd(layer.get()));
  LayerSource source;
  source.diff_id = hashed.digest;
  source.description = "busybox layer";
  source.open = [&]() -> Result<Fd> {
    if (::lseek(layer.get(), 0, SEEK_SET) != 0) return FailErrno("lseek busybox layer");
    return Dup(layer.get());
  };
  Image image;
  image.name = kBusyboxImage;
  image.config = BusyboxConfig();
  image.source = "builtin";
  CreateOptions options;
  options.replace = true;  // a record whose layers went missing is remade
  auto report = LAMINA_TRY(CreateLocked(std::move(image), {source}, options));
  return report.image;
}

}  // namespace lamina::store
