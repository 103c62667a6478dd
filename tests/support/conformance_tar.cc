#include "tests/support/conformance_tar.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/mman.h>
#include <unistd.h>

#include <memory>

namespace lamina::test {

TarItem TarFile(std::string path, std::string content, mode_t mode) {
  TarItem item;
  item.path = std::move(path);
  item.content = std::move(content);
  item.mode = mode;
  return item;
}

TarItem TarDir(std::string path, mode_t mode) {
  TarItem item;
  item.path = std::move(path);
  item.type = TarItem::Type::kDir;
  item.mode = mode;
  return item;
}

TarItem TarSymlink(std::string path, std::string target) {
  TarItem item;
  item.path = std::move(path);
  item.type = TarItem::Type::kSymlink;
  item.target = std::move(target);
  item.mode = 0777;
  return item;
}

TarItem TarHardlink(std::string path, std::string target) {
  TarItem item;
  item.path = std::move(path);
  item.type = TarItem::Type::kHardlink;
  item.target = std::move(target);
  return item;
}

TarItem TarWhiteout(const std::string& path) {
  auto slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  return TarFile(dir + ".wh." + name, "", 0644);
}

TarItem TarOpaque(const std::string& dir) { return TarFile(dir + "/.wh..wh..opq", "", 0644); }

Result<Fd> MakeTar(const std::vector<TarItem>& items) {
  int raw = ::memfd_create("lamina-test-tar", MFD_CLOEXEC);
  if (raw < 0) return FailErrno("memfd_create");
  Fd fd(raw);
  std::unique_ptr<archive, decltype(&archive_write_free)> ar(archive_write_new(),
                                                             archive_write_free);
  auto check = [&](int rc, const std::string& what) -> Result<void> {
    if (rc == ARCHIVE_OK) return {};
    return Fail(EIO, what + ": " + (archive_error_string(ar.get()) ?: "libarchive error"));
  };
  LAMINA_CHECK(check(archive_write_set_format_pax_restricted(ar.get()), "tar format"));
  LAMINA_CHECK(check(archive_write_open_fd(ar.get(), fd.get()), "open tar"));
  for (const auto& item : items) {
    std::unique_ptr<archive_entry, decltype(&archive_entry_free)> entry(archive_entry_new(),
                                                                        archive_entry_free);
    archive_entry_set_pathname(entry.get(), item.path.c_str());
    archive_entry_set_uid(entry.get(), item.uid);
    archive_entry_set_gid(entry.get(), item.gid);
    archive_entry_set_mtime(entry.get(), item.mtime, 0);
    switch (item.type) {
      case TarItem::Type::kFile:
        archive_entry_set_filetype(entry.get(), AE_IFREG);
        archive_entry_set_size(entry.get(), static_cast<la_int64_t>(item.content.size()));
        break;
      case TarItem::Type::kDir:
        archive_entry_set_filetype(entry.get(), AE_IFDIR);
        break;
      case TarItem::Type::kSymlink:
        archive_entry_set_filetype(entry.get(), AE_IFLNK);
        archive_entry_set_symlink(entry.get(), item.target.c_str());
        break;
      case TarItem::Type::kHardlink:
        archive_entry_set_filetype(entry.get(), AE_IFREG);
        archive_entry_set_hardlink(entry.get(), item.target.c_str());
        archive_entry_set_size(entry.get(), 0);
        break;
    }
    archive_entry_set_perm(entry.get(), item.mode & 07777);
    for (const auto& [name, value] : item.xattrs) {
      archive_entry_xattr_add_entry(entry.get(), name.c_str(), value.data(), value.size());
    }
    LAMINA_CHECK(check(archive_write_header(ar.get(), entry.get()), "tar header " + item.path));
    if (item.type == TarItem::Type::kFile && !item.content.empty()) {
      la_ssize_t n = archive_write_data(ar.get(), item.content.data(), item.content.size());
      if (n != static_cast<la_ssize_t>(item.content.size())) {
        return Fail(EIO, "tar data " + item.path);
      }
    }
  }
  LAMINA_CHECK(check(archive_write_close(ar.get()), "close tar"));
  if (::lseek(fd.get(), 0, SEEK_SET) != 0) return FailErrno("lseek tar");
  return fd;
}

}  // namespace lamina::test
