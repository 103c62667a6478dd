#include "tests/support/tar_builder.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

namespace lamina::test {

struct TarBuilder::Sink {
  std::string out;
  bool frozen = false;  // stop capturing output (a truncated stream)
  bool fail = false;    // make every write fail (libarchive then stops padding)
};

namespace {

la_ssize_t Capture(struct archive*, void* client, const void* buf, size_t size) {
  auto* sink = static_cast<std::string*>(client);
  sink->append(static_cast<const char*>(buf), size);
  return static_cast<la_ssize_t>(size);
}

void AddFilter(struct archive* a, TarCompression compression) {
  switch (compression) {
    case TarCompression::kNone:
      break;
    case TarCompression::kGzip:
      archive_write_add_filter_gzip(a);
      break;
    case TarCompression::kZstd:
      archive_write_add_filter_zstd(a);
      break;
    case TarCompression::kBzip2:
      archive_write_add_filter_bzip2(a);
      break;
    case TarCompression::kXz:
      archive_write_add_filter_xz(a);
      break;
  }
}

}  // namespace

TarBuilder::TarBuilder() : sink_(std::make_unique<Sink>()) {
  archive_ = archive_write_new();
  archive_write_set_format_pax(archive_);
  // No blocking: every write reaches the sink at once (so a stream can be
  // cut right after a header) and no padding to 10 KiB is added.
  archive_write_set_bytes_per_block(archive_, 0);
  archive_write_open(
      archive_, sink_.get(), nullptr,
      [](struct archive*, void* client, const void* buf, size_t size) -> la_ssize_t {
        auto* sink = static_cast<Sink*>(client);
        if (sink->fail) return -1;
        if (!sink->frozen) sink->out.append(static_cast<const char*>(buf), size);
        return static_cast<la_ssize_t>(size);
      },
      nullptr);
}

TarBuilder::~TarBuilder() {
  // A HugeFileHeader left an entry open whose padding libarchive would write
  // on close: fail the writes instead.
  sink_->fail = sink_->frozen;
  archive_write_free(archive_);
}

TarBuilder& TarBuilder::Add(const TarEntry& e) {
  struct archive_entry* entry = archive_entry_new();
  archive_entry_copy_pathname(entry, e.path.c_str());
  mode_t type = AE_IFREG;
  switch (e.type) {
    case TarEntry::Type::kFile:
    case TarEntry::Type::kHardlink:
      type = AE_IFREG;
      break;
    case TarEntry::Type::kDir:
      type = AE_IFDIR;
      break;
    case TarEntry::Type::kSymlink:
      type = AE_IFLNK;
      break;
    case TarEntry::Type::kChar:
      type = AE_IFCHR;
      break;
    case TarEntry::Type::kBlock:
      type = AE_IFBLK;
      break;
    case TarEntry::Type::kFifo:
      type = AE_IFIFO;
      break;
  }
  archive_entry_set_filetype(entry, type);
  archive_entry_set_perm(entry, e.mode & 07777);
  archive_entry_set_uid(entry, e.uid);
  archive_entry_set_gid(entry, e.gid);
  archive_entry_set_mtime(entry, e.mtime, e.mtime_nsec);
  if (e.type == TarEntry::Type::kSymlink) archive_entry_copy_symlink(entry, e.link.c_str());
  if (e.type == TarEntry::Type::kHardlink) archive_entry_copy_hardlink(entry, e.link.c_str());
  if (e.type == TarEntry::Type::kChar || e.type == TarEntry::Type::kBlock) {
    archive_entry_set_rdevmajor(entry, e.dev_major);
    archive_entry_set_rdevminor(entry, e.dev_minor);
  }
  archive_entry_set_size(entry, e.type == TarEntry::Type::kFile
                                    ? static_cast<la_int64_t>(e.data.size())
                                    : 0);
  for (const auto& [name, value] : e.xattrs) {
    archive_entry_xattr_add_entry(entry, name.c_str(), value.data(), value.size());
  }
  EXPECT_GE(archive_write_header(archive_, entry), ARCHIVE_WARN)
      << e.path << ": " << archive_error_string(archive_);
  if (e.type == TarEntry::Type::kFile && !e.data.empty()) {
    EXPECT_EQ(archive_write_data(archive_, e.data.data(), e.data.size()),
              static_cast<la_ssize_t>(e.data.size()));
  }
  archive_entry_free(entry);
  return *this;
}

TarBuilder& TarBuilder::File(const std::string& path, const std::string& data, mode_t mode) {
  return Add({.path = path, .type = TarEntry::Type::kFile, .data = data, .mode = mode});
}
TarBuilder& TarBuilder::Dir(const std::string& path, mode_t mode) {
  return Add({.path = path, .type = TarEntry::Type::kDir, .mode = mode});
}
TarBuilder& TarBuilder::Symlink(const std::string& path, const std::string& target) {
  return Add({.path = path, .type = TarEntry::Type::kSymlink, .link = target, .mode = 0777});
}
TarBuilder& TarBuilder::Hardlink(const std::string& path, const std::string& target) {
  return Add({.path = path, .type = TarEntry::Type::kHardlink, .link = target});
}
TarBuilder& TarBuilder::Fifo(const std::string& path, mode_t mode) {
  return Add({.path = path, .type = TarEntry::Type::kFifo, .mode = mode});
}
TarBuilder& TarBuilder::CharDev(const std::string& path, unsigned major, unsigned minor) {
  return Add({.path = path,
              .type = TarEntry::Type::kChar,
              .mode = 0666,
              .dev_major = major,
              .dev_minor = minor});
}

TarBuilder& TarBuilder::HugeFileHeader(const std::string& path, uint64_t size) {
  struct archive_entry* entry = archive_entry_new();
  archive_entry_copy_pathname(entry, path.c_str());
  archive_entry_set_filetype(entry, AE_IFREG);
  archive_entry_set_perm(entry, 0644);
  archive_entry_set_size(entry, static_cast<la_int64_t>(size));
  EXPECT_GE(archive_write_header(archive_, entry), ARCHIVE_WARN);
  archive_entry_free(entry);
  sink_->frozen = true;  // the stream ends here
  return *this;
}

std::string TarBuilder::Finish(TarCompression compression) {
  if (!sink_->frozen) {
    EXPECT_EQ(archive_write_close(archive_), ARCHIVE_OK) << archive_error_string(archive_);
  }
  sink_->frozen = true;
  return Compress(sink_->out, compression);
}

std::string Compress(const std::string& data, TarCompression compression) {
  if (compression == TarCompression::kNone) return data;
  std::string out;
  struct archive* a = archive_write_new();
  archive_write_set_format_raw(a);
  AddFilter(a, compression);
  archive_write_set_bytes_per_block(a, 0);
  archive_write_open(a, &out, nullptr, Capture, nullptr);
  struct archive_entry* entry = archive_entry_new();
  archive_entry_set_filetype(entry, AE_IFREG);
  archive_entry_set_size(entry, static_cast<la_int64_t>(data.size()));
  EXPECT_EQ(archive_write_header(a, entry), ARCHIVE_OK) << archive_error_string(a);
  EXPECT_EQ(archive_write_data(a, data.data(), data.size()),
            static_cast<la_ssize_t>(data.size()));
  EXPECT_EQ(archive_write_close(a), ARCHIVE_OK) << archive_error_string(a);
  archive_entry_free(entry);
  archive_write_free(a);
  return out;
}

ChildResult RunAsUser(uid_t uid, gid_t gid, const std::function<std::string()>& body) {
  ChildResult result;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe: " << std::strerror(errno);
    return result;
  }
  pid_t pid = ::fork();
  if (pid < 0) {
    ADD_FAILURE() << "fork: " << std::strerror(errno);
    ::close(fds[0]);
    ::close(fds[1]);
    return result;
  }
  if (pid == 0) {
    ::close(fds[0]);
    if (::setresgid(gid, gid, gid) != 0 || ::setresuid(uid, uid, uid) != 0) ::_exit(2);
    std::string out = body();
    size_t done = 0;
    while (done < out.size()) {
      ssize_t n = ::write(fds[1], out.data() + done, out.size() - done);
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    ::_exit(0);
  }
  ::close(fds[1]);
  char buf[1024];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof(buf))) > 0) result.output.append(buf, n);
  ::close(fds[0]);
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) {
    ADD_FAILURE() << "waitpid: " << std::strerror(errno);
    return result;
  }
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

void WriteTarFile(const std::string& path, const std::string& data) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << path << ": " << std::strerror(errno);
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    ASSERT_GT(n, 0) << path << ": " << std::strerror(errno);
    done += static_cast<size_t>(n);
  }
  ::close(fd);
}

}  // namespace lamina::test
