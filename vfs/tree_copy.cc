#include "vfs/tree_copy.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <new>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "common/fd.h"
#include "common/scope_guard.h"

namespace lamina::vfs {
namespace {

struct FileItem {
  std::string rel;
  struct stat st;
};

class TreeCopier {
 public:
  TreeCopier(std::string src, std::string dst, const TreeCopyOptions& options)
      : src_(std::move(src)), dst_(std::move(dst)), options_(options) {}

  Result<TreeCopyStats> Run() {
    src_fd_ = LAMINA_TRY(OpenDirPath(src_));
    dst_fd_ = LAMINA_TRY(OpenDirPath(dst_));
    struct stat root_st;
    if (::fstat(src_fd_.get(), &root_st) != 0) return FailErrno("stat " + src_);

    unsigned workers = options_.workers;
    if (workers == 0) workers = std::clamp(std::thread::hardware_concurrency(), 1u, 8u);
    std::vector<std::thread> pool;
    auto join = Defer([&] {
      {
        std::lock_guard lock(mu_);
        closed_ = true;
      }
      not_empty_.notify_all();
      for (auto& t : pool) t.join();
    });
    try {
      for (unsigned i = 0; i < workers; ++i) pool.emplace_back([this] { Worker(); });
    } catch (const std::exception&) {
      return Fail(EAGAIN, "start copy threads");
    }

    auto walked = Walk("");
    if (!walked) Record(walked.error());
    join.Dismiss();
    {
      std::lock_guard lock(mu_);
      closed_ = true;
    }
    not_empty_.notify_all();
    for (auto& t : pool) t.join();
    if (failed_) return Fail(*first_error_);

    for (const auto& [rel, first] : links_) {
      if (::linkat(dst_fd_.get(), first.c_str(), dst_fd_.get(), rel.c_str(), 0) != 0) {
        return FailErrno("link " + dst_ + "/" + rel + " to " + first);
      }
      ++stats_.hard_links;
    }
    // Reverse pre-order: every directory after everything below it.
    for (auto it = dirs_.rbegin(); it != dirs_.rend(); ++it) {
      LAMINA_CHECK(Meta(it->rel, it->st));
    }
    LAMINA_CHECK(CopyMetadata(src_, root_st, dst_fd_.get(), ".", options_.metadata));
    TreeCopyStats stats = stats_;
    stats.files = files_;
    stats.bytes = bytes_;
    stats.cloned = cloned_;
    stats.copy_file_range = copy_file_range_;
    stats.read_write = read_write_;
    return stats;
  }

 private:
  std::string SrcPath(const std::string& rel) const {
    return rel.empty() ? src_ : src_ + "/" + rel;
  }

  Result<void> Meta(const std::string& rel, const struct stat& st) {
    auto done = CopyMetadata(SrcPath(rel), st, dst_fd_.get(), rel, options_.metadata);
    if (!done) return Fail(done.error().Wrap("copy metadata of " + SrcPath(rel)));
    return {};
  }

  // Reads directory `rel` of the source (entries and their lstat) and closes it.
  Result<std::vector<std::pair<std::string, struct stat>>> ReadDir(const std::string& rel) {
    std::string path = rel.empty() ? "." : rel;
    auto opened = OpenAt(src_fd_.get(), path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (!opened) return Fail(Error(opened.error().code(), "open directory " + SrcPath(rel)));
    Fd fd = std::move(*opened);
    DIR* dir = ::fdopendir(fd.get());
    if (dir == nullptr) return FailErrno("opendir " + SrcPath(rel));
    fd.Release();
    auto close_dir = Defer([&] { ::closedir(dir); });
    std::vector<std::pair<std::string, struct stat>> entries;
    for (;;) {
      errno = 0;
      struct dirent* ent = ::readdir(dir);
      if (ent == nullptr) {
        if (errno != 0) return FailErrno("readdir " + SrcPath(rel));
        break;
      }
      std::string_view name = ent->d_name;
      if (name == "." || name == "..") continue;
      struct stat st;
      if (::fstatat(::dirfd(dir), ent->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        return FailErrno("stat " +
                         SrcPath(rel.empty() ? std::string(name) : rel + "/" + ent->d_name));
      }
      entries.emplace_back(std::string(name), st);
    }
    return entries;
  }

  Result<void> Walk(const std::string& rel) {
    auto entries = LAMINA_TRY(ReadDir(rel));
    for (auto& [name, st] : entries) {
      if (failed_) return {};
      std::string child = rel.empty() ? name : rel + "/" + name;
      if (child.size() >= PATH_MAX) return Fail(ENAMETOOLONG, SrcPath(child));
      if (S_ISDIR(st.st_mode)) {
        if (::mkdirat(dst_fd_.get(), child.c_str(), 0700) != 0) {
          return FailErrno("mkdir " + dst_ + "/" + child);
        }
        ++stats_.directories;
        dirs_.push_back({child, st});
        LAMINA_CHECK(Walk(child));
        continue;
      }
      if (st.st_nlink > 1) {
        auto [it, fresh] = inodes_.try_emplace({st.st_dev, st.st_ino}, child);
        if (!fresh) {
          links_.emplace_back(child, it->second);
          continue;
        }
      }
      if (S_ISREG(st.st_mode)) {
        Push(FileItem{child, st});
      } else {
        LAMINA_CHECK(MakeSpecial(child, st));
        ++stats_.others;
      }
    }
    return {};
  }

  Result<void> MakeSpecial(const std::string& rel, const struct stat& st) {
    const char* dst = rel.c_str();
    if (S_ISLNK(st.st_mode)) {
      std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
      ssize_t n = ::readlinkat(src_fd_.get(), dst, target.data(), target.size());
      if (n < 0) return FailErrno("readlink " + SrcPath(rel));
      if (static_cast<size_t>(n) >= target.size())
        return Fail(EAGAIN, "symlink changed: " + SrcPath(rel));
      target.resize(static_cast<size_t>(n));
      if (::symlinkat(target.c_str(), dst_fd_.get(), dst) != 0) {
        return FailErrno("symlink " + dst_ + "/" + rel);
      }
    } else if (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode) || S_ISCHR(st.st_mode) ||
               S_ISBLK(st.st_mode)) {
      if (::mknodat(dst_fd_.get(), dst, (st.st_mode & S_IFMT) | 0600, st.st_rdev) != 0) {
        int err = errno;
        if ((err == EPERM || err == EACCES) && (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))) {
          return Fail(err, "device node " + SrcPath(rel) +
                               ": mknod is not permitted here (no CAP_MKNOD, e.g. rootless); "
                               "the vfs driver cannot copy it");
        }
        errno = err;
        return FailErrno("mknod " + dst_ + "/" + rel);
      }
    } else {
      return Fail(EINVAL, "unknown file type: " + SrcPath(rel));
    }
    return Meta(rel, st);
  }

  // Queues a file for the workers; when the queue is full the walking
  // thread copies one itself rather than wait.
  void Push(FileItem item) {
    std::unique_lock lock(mu_);
    if (queue_.size() >= kQueueLimit) {
      lock.unlock();
      CopyOne(item);
      return;
    }
    queue_.push_back(std::move(item));
    lock.unlock();
    not_empty_.notify_one();
  }

  void Worker() {
    for (;;) {
      std::unique_lock lock(mu_);
      not_empty_.wait(lock, [&] { return closed_ || !queue_.empty(); });
      if (queue_.empty()) return;
      FileItem item = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      CopyOne(item);
    }
  }

  void CopyOne(const FileItem& item) {
    if (failed_) return;
    try {
      auto done = CopyFile(item);
      if (!done) Record(done.error());
    } catch (const std::bad_alloc&) {
      Record(Error(ENOMEM, "copy " + SrcPath(item.rel)));
    }
  }

  Result<void> CopyFile(const FileItem& item) {
    const std::string& rel = item.rel;
    auto src = OpenAt(src_fd_.get(), rel, O_RDONLY | O_NOFOLLOW | O_NOATIME);
    if (!src && src.error().code() == EPERM)
      src = OpenAt(src_fd_.get(), rel, O_RDONLY | O_NOFOLLOW);
    if (!src) return Fail(Error(src.error().code(), "open " + SrcPath(rel)));
    {
      // Created with its final permission bits (the umask permitting), so
      // that CopyMetadataFd usually has no chmod to do.
      auto dst = OpenAt(dst_fd_.get(), rel, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW,
                        item.st.st_mode & 0777);
      if (!dst) return Fail(Error(dst.error().code(), "create " + dst_ + "/" + rel));
      auto method = CopyFileData(src->get(), dst->get(), static_cast<uint64_t>(item.st.st_size));
      if (!method) return Fail(method.error().Wrap("copy " + SrcPath(rel)));
      switch (*method) {
        case CopyMethod::kClone:
          ++cloned_;
          break;
        case CopyMethod::kCopyFileRange:
          ++copy_file_range_;
          break;
        case CopyMethod::kReadWrite:
          ++read_write_;
          break;
      }
      auto meta = CopyMetadataFd(src->get(), item.st, dst->get(), options_.metadata);
      if (!meta) return Fail(meta.error().Wrap("copy metadata of " + SrcPath(rel)));
    }
    ++files_;
    bytes_ += static_cast<uint64_t>(item.st.st_size);
    return {};
  }

  void Record(const Error& error) {
    std::lock_guard lock(mu_);
    if (!first_error_) first_error_ = error;
    failed_ = true;
  }

  static constexpr size_t kQueueLimit = 4096;

  const std::string src_;
  const std::string dst_;
  const TreeCopyOptions& options_;
  Fd src_fd_;
  Fd dst_fd_;

  // Walking thread only.
  struct DirItem {
    std::string rel;
    struct stat st;
  };
  std::vector<DirItem> dirs_;
  std::map<std::pair<dev_t, ino_t>, std::string> inodes_;   // first path of each inode
  std::vector<std::pair<std::string, std::string>> links_;  // (path, first path)
  TreeCopyStats stats_;

  // Shared with the workers.
  std::mutex mu_;  // guards queue_, closed_, first_error_
  std::condition_variable not_empty_;
  std::deque<FileItem> queue_;
  bool closed_ = false;
  std::optional<Error> first_error_;
  std::atomic<bool> failed_ = false;
  std::atomic<uint64_t> files_ = 0, bytes_ = 0, cloned_ = 0, copy_file_range_ = 0, read_write_ = 0;
};

}  // namespace

Result<TreeCopyStats> CopyTree(const std::string& src, const std::string& dst,
                               const TreeCopyOptions& options) {
  TreeCopier copier(src, dst, options);
  return copier.Run();
}

}  // namespace lamina::vfs
