#include "store/tar_feed.h"

#include <archive.h>
#include <sys/socket.h>

#include <vector>

#include "common/hash.h"

namespace lamina::store {

Result<std::unique_ptr<TarFeed>> TarFeed::Start(int in_fd) {
  // A socket pair rather than a pipe: send(MSG_NOSIGNAL) reports a reader
  // that went away as EPIPE instead of killing the process with SIGPIPE.
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return FailErrno("socketpair for the layer tar");
  }
  std::unique_ptr<TarFeed> feed(new TarFeed());
  feed->read_end_.Reset(fds[0]);
  feed->write_end_.Reset(fds[1]);
  ::shutdown(fds[0], SHUT_WR);
  feed->thread_ = std::thread([raw = feed.get(), in_fd] { raw->Run(in_fd); });
  return feed;
}

TarFeed::~TarFeed() { (void)Abort(); }

Result<void> TarFeed::Abort() {
  cancel_ = true;
  read_end_.Reset();
  if (thread_.joinable()) thread_.join();
  if (failed_) return Fail(error_);
  return {};
}

void TarFeed::Run(int in_fd) {
  Sha256 sha;
  bool reader_gone = false;
  auto fail = [&](int code, std::string context) {
    failed_ = true;
    error_ = Error(code, std::move(context));
  };
  struct archive* a = archive_read_new();
  archive_read_support_filter_all(a);
  archive_read_support_format_raw(a);
  archive_read_support_format_empty(a);
  if (archive_read_open_fd(a, in_fd, 128 * 1024) != ARCHIVE_OK) {
    int code = archive_errno(a) > 0 ? archive_errno(a) : EINVAL;
    fail(code, std::string("read the layer tar: ") + archive_error_string(a));
  } else {
    struct archive_entry* entry = nullptr;
    int rc = archive_read_next_header(a, &entry);
    if (rc != ARCHIVE_OK && rc != ARCHIVE_EOF) {
      int code = archive_errno(a) > 0 ? archive_errno(a) : EINVAL;
      fail(code, std::string("read the layer tar: ") + archive_error_string(a));
    }
    std::vector<char> buf(128 * 1024);
    while (rc == ARCHIVE_OK && !failed_ && !cancel_) {
      la_ssize_t n = archive_read_data(a, buf.data(), buf.size());
      if (n == 0) break;
      if (n < 0) {
        int code = archive_errno(a) > 0 ? archive_errno(a) : EIO;
        fail(code, std::string("decompress the layer tar: ") + archive_error_string(a));
        break;
      }
      sha.Update(buf.data(), static_cast<size_t>(n));
      const char* p = buf.data();
      size_t left = static_cast<size_t>(n);
      while (left > 0 && !reader_gone) {
        ssize_t sent = ::send(write_end_.get(), p, left, MSG_NOSIGNAL);
        if (sent < 0) {
          if (errno == EINTR) continue;
          // The driver stopped reading: it is done with the tar (or failed).
          // Keep reading for the digest; the caller decides.
          reader_gone = true;
          break;
        }
        p += sent;
        left -= static_cast<size_t>(sent);
      }
    }
  }
  archive_read_free(a);
  write_end_.Reset();
  if (!failed_) digest_ = "sha256:" + sha.HexDigest();
}

Result<std::string> TarFeed::Finish() {
  read_end_.Reset();
  if (thread_.joinable()) thread_.join();
  if (failed_) return Fail(error_);
  return digest_;
}

}  // namespace lamina::store
