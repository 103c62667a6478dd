// Directory ops: mkdir, rmdir, opendir, readdir/readdirplus, releasedir,
// fsyncdir; the merged listing; the shared create path (DoMake) and
// removal (DoRemove).

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <unordered_set>

#include "common/fs.h"
#include "common/hash.h"
#include "common/path.h"
#include "common/scope_guard.h"
#include "drivers/format.h"
#include "fuse/union_fs_impl.h"

namespace lamina::fuse {

namespace {

unsigned char ModeToDtype(mode_t mode) { return static_cast<unsigned char>((mode & S_IFMT) >> 12); }

// The caller's umask, for the creations of one request, in this thread only
// (FUSE_CAP_DONT_MASK leaves the umask to us). The backing filesystem then
// treats it as for a local create: ignored under a default ACL, applied
// otherwise. Each loop thread gets a umask of its own by unshare(CLONE_FS)
// once; where that fails, Mode() applies the umask itself (default ACLs then
// see a masked mode, as without DONT_MASK).
class CallerUmask {
 public:
  explicit CallerUmask(fuse_req_t req) : umask_(fuse_req_ctx(req)->umask & 0777) {
    static thread_local const bool own_fs = ::unshare(CLONE_FS) == 0;
    if (own_fs) {
      previous_ = ::umask(umask_);
      set_ = true;
    }
  }
  ~CallerUmask() {
    if (set_) ::umask(previous_);
  }
  CallerUmask(const CallerUmask&) = delete;
  CallerUmask& operator=(const CallerUmask&) = delete;

  // The mode to pass to the creating syscall.
  mode_t Mode(mode_t mode) const { return set_ ? mode : mode & ~umask_; }

 private:
  mode_t umask_;
  mode_t previous_ = 0;
  bool set_ = false;
};

}  // namespace

// The merged listing of a directory (without "." and ".."), in layer order,
// each name once, whiteouts and format entries hidden.
static Result<std::vector<DirEntry>> ListMerged(UnionFsImpl& fs, const NodeState& dir,
                                                bool with_ino) {
  std::vector<DirEntry> out;
  std::unordered_set<std::string> seen;
  std::string origin_xattr = fs.OriginXattr();
  for (const DirLayer& dl : dir.stack()) {
    const Layer& layer = fs.layer(dl.layer);
    int fd = ::openat(dl.fd->get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return FailErrno("open directory");
    DIR* d = ::fdopendir(fd);
    if (d == nullptr) {
      int saved = errno;
      ::close(fd);
      return Fail(saved, "fdopendir");
    }
    auto close_dir = std::unique_ptr<DIR, int (*)(DIR*)>(d, ::closedir);
    std::vector<std::string> hidden_below;
    for (;;) {
      errno = 0;
      struct dirent* ent = ::readdir(d);
      if (ent == nullptr) {
        if (errno != 0) return FailErrno("readdir");
        break;
      }
      std::string_view name(ent->d_name);
      if (name == "." || name == "..") continue;
      if (name.starts_with(kWhiteoutPrefix)) {
        if (IsWhiteoutName(name)) hidden_below.emplace_back(WhiteoutTarget(name));
        continue;
      }
      std::string n(name);
      if (seen.contains(n)) continue;
      unsigned char type = ent->d_type;
      if (type == DT_CHR || type == DT_UNKNOWN) {
        struct stat st;
        if (::fstatat(dl.fd->get(), n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        if (IsWhiteoutStat(st)) {
          seen.insert(std::move(n));
          continue;
        }
        type = ModeToDtype(st.st_mode);
      }
      uint64_t ino = 0;
      if (with_ino) {
        dev_t dev = layer.dev;
        ino_t raw = ent->d_ino;
        if (layer.upper) {
          char value[128];
          std::string path = ProcFdPath(dl.fd->get()) + "/" + n;
          ssize_t len = ::lgetxattr(path.c_str(), origin_xattr.c_str(), value, sizeof(value) - 1);
          if (len > 0) {
            value[len] = '\0';
            unsigned long long d_dev = 0, d_ino = 0;
            if (std::sscanf(value, "%llu:%llu", &d_dev, &d_ino) == 2) {
              dev = static_cast<dev_t>(d_dev);
              raw = static_cast<ino_t>(d_ino);
            }
          }
        }
        ino = fs.ComposeIno(dev, raw);
      }
      seen.insert(n);
      out.push_back({std::move(n), ino, type});
    }
    for (auto& h : hidden_below) seen.insert(std::move(h));
  }
  return out;
}

Result<std::vector<std::string>> UnionFsImpl::MergedNames(const NodeState& dir) {
  auto entries = LAMINA_TRY(ListMerged(*this, dir, false));
  std::vector<std::string> names;
  names.reserve(entries.size());
  for (auto& e : entries) names.push_back(std::move(e.name));
  return names;
}

Result<std::shared_ptr<const Listing>> UnionFsImpl::BuildListing(Node* dir) {
  NodeState s = dir->Snapshot();
  auto merged = LAMINA_TRY(ListMerged(*this, s, true));
  uint64_t parent_ino = s.ino;
  auto [parent, unused] = table_->ParentAndName(dir);
  if (parent != nullptr) {
    parent_ino = parent->Snapshot().ino;
    table_->Unref(parent);
  }
  auto listing = std::make_shared<Listing>();
  listing->reserve(merged.size() + 2);
  listing->push_back({".", s.ino, DT_DIR, 1});
  listing->push_back({"..", parent_ino, DT_DIR, 2});
  for (auto& e : merged) {
    e.cookie = static_cast<off_t>((Xxh3(e.name) >> 1) | 4);  // > 2, < 2^63
    listing->push_back(std::move(e));
  }
  std::sort(listing->begin() + 2, listing->end(), [](const DirEntry& a, const DirEntry& b) {
    return a.cookie != b.cookie ? a.cookie < b.cookie : a.name < b.name;
  });
  for (size_t i = 3; i < listing->size(); ++i) {  // a collision takes the next free value
    if ((*listing)[i].cookie <= (*listing)[i - 1].cookie) {
      (*listing)[i].cookie = (*listing)[i - 1].cookie + 1;
    }
  }
  return std::shared_ptr<const Listing>(std::move(listing));
}

bool UnionFsImpl::PlusWithAttrs(const Node* dir, off_t off, bool* count) {
  *count = false;
  if (plus_light_.load(std::memory_order_relaxed)) return false;
  std::lock_guard lock(plus_mu_);
  // A directory read again from its start (rm -r reads each one twice
  // before it removes anything) says nothing new about its files.
  bool reread = dir == plus_last_dir_ && off == 0;
  plus_last_dir_ = dir;
  uint64_t uses = file_uses_.load(std::memory_order_relaxed);
  if (uses != plus_uses_seen_) {
    plus_uses_seen_ = uses;
    plus_unused_files_ = 0;
  } else if (!reread && plus_wait_ == 0 && plus_unused_files_ >= kPlusUnusedFiles) {
    plus_light_.store(true, std::memory_order_relaxed);
    plus_unused_files_ = 0;
    ++plus_counters_.attrs_turned_off;
    return false;
  }
  *count = !reread;
  return true;
}

void UnionFsImpl::NotePlusAttrs(size_t files, bool count) {
  if (files == 0) return;
  std::lock_guard lock(plus_mu_);
  plus_counters_.files_with_attrs += files;
  if (!count) return;
  plus_unused_files_ += files;
  if (plus_wait_ > 0) --plus_wait_;
}

void UnionFsImpl::CountPlusWithout(size_t files) {
  if (files == 0) return;
  std::lock_guard lock(plus_mu_);
  plus_counters_.files_without_attrs += files;
}

void UnionFsImpl::NoteFileLookup() {
  NoteFileUse();
  if (!plus_light_.load(std::memory_order_relaxed)) return;
  std::lock_guard lock(plus_mu_);
  if (!plus_light_.load(std::memory_order_relaxed)) return;
  plus_light_.store(false, std::memory_order_relaxed);
  plus_window_ = std::min(plus_window_ * 2, kPlusMaxWait);
  plus_wait_ = plus_window_;
  plus_unused_files_ = 0;
  plus_uses_seen_ = file_uses_.load(std::memory_order_relaxed);
}

UnionFs::ListingStats UnionFsImpl::listing_stats() const {
  std::lock_guard lock(plus_mu_);
  ListingStats stats = plus_counters_;
  stats.caches_dropped = listing_drops_.load(std::memory_order_relaxed);
  return stats;
}

Result<std::shared_ptr<const Listing>> UnionFsImpl::PassListing(Node* dir, off_t off,
                                                                 uint64_t* built_at) {
  // Read before the build: a change that lands during it makes the listing
  // stale at once.
  uint64_t changes = dir->dir_changes.load(std::memory_order_acquire);
  *built_at = changes;
  if (off != 0) {
    std::lock_guard lock(passes_mu_);
    for (const auto& p : passes_) {
      if (p.node == dir && p.generation == dir->generation && p.changes == changes) {
        return p.listing;
      }
    }
  }
  auto listing = LAMINA_TRY(BuildListing(dir));
  std::shared_ptr<const Listing> replaced;  // freed outside the lock
  std::lock_guard lock(passes_mu_);
  for (auto it = passes_.begin(); it != passes_.end(); ++it) {
    if (it->node == dir && it->generation == dir->generation) {
      replaced = std::move(it->listing);
      passes_.erase(it);
      break;
    }
  }
  if (passes_.size() >= kMaxPasses) passes_.erase(passes_.begin());
  passes_.push_back({dir, dir->generation, changes, listing});
  return listing;
}

namespace {

int64_t SteadyNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The lowest dir_changes replied within the last one or two windows, the
// replies that may still be on their way to the kernel's cache.
uint64_t OnTheWay(const Node::ListingFill& f, int64_t now) {
  uint64_t out = UINT64_MAX;
  if (now - f.window_ns < 2 * UnionFsImpl::kFillWindowNs) out = f.recent;
  if (now - f.window_ns < UnionFsImpl::kFillWindowNs) out = std::min(out, f.before);
  return out;
}

}  // namespace

void UnionFsImpl::NoteListingReply(Node* dir, uint64_t built_at) {
  int64_t now = SteadyNs();
  std::lock_guard lock(dir->mu);
  if (!dir->fill) dir->fill = std::make_unique<Node::ListingFill>();
  Node::ListingFill& f = *dir->fill;
  if (now - f.window_ns >= kFillWindowNs) {
    f.before = now - f.window_ns < 2 * kFillWindowNs ? f.recent : UINT64_MAX;
    f.recent = UINT64_MAX;
    f.window_ns = now;
  }
  f.recent = std::min(f.recent, built_at);
  // Read after the update: a change that ListingChanged did not see this
  // reply for is seen here.
  if (built_at < dir->dir_changes.load(std::memory_order_acquire)) {
    f.suspect = std::min(f.suspect, built_at);  // built before a change
  }
}

void UnionFsImpl::ListingChanged(Node* dir) {
  std::lock_guard lock(dir->mu);
  if (!dir->fill) return;
  Node::ListingFill& f = *dir->fill;
  f.suspect = std::min(f.suspect, OnTheWay(f, SteadyNs()));
}

bool UnionFsImpl::CheckListingEnd(Node* dir) {
  {
    std::lock_guard lock(dir->mu);
    if (!dir->fill || dir->fill->suspect == UINT64_MAX) return false;
    // Stale replies still on their way can land after this drop.
    Node::ListingFill& f = *dir->fill;
    uint64_t on_the_way = OnTheWay(f, SteadyNs());
    f.suspect =
        on_the_way < dir->dir_changes.load(std::memory_order_acquire) ? on_the_way : UINT64_MAX;
  }
  listing_drops_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void UnionFsImpl::EndPass(Node* dir) {
  std::shared_ptr<const Listing> done;  // freed outside the lock
  std::lock_guard lock(passes_mu_);
  for (auto it = passes_.begin(); it != passes_.end(); ++it) {
    if (it->node == dir && it->generation == dir->generation) {
      done = std::move(it->listing);
      passes_.erase(it);
      break;
    }
  }
}

Result<Node*> UnionFsImpl::DoMake(fuse_req_t req, Node* parent, const std::string& name,
                                  mode_t mode, dev_t rdev, const char* link_target, Fd* open_fd,
                                  int open_flags, struct stat* st_out) {
  auto changed = Defer([&] { DirChanged(parent); });
  if (st_out != nullptr) st_out->st_ino = 0;
  if (!writable()) return Fail(EROFS);
  if (name.size() > NAME_MAX) return Fail(ENAMETOOLONG);
  if (name.starts_with(kWhiteoutPrefix)) return Fail(EINVAL, "reserved name " + name);
  // A 0/0 device is a whiteout: the kernel overlay refuses to make one.
  if (S_ISCHR(mode) && rdev == makedev(0, 0)) return Fail(EPERM);
  if (Node* existing = table_->FindChild(parent, name)) {
    table_->Unref(existing);
    return Fail(EEXIST);
  }
  SharedFd pdir = LAMINA_TRY(UpperDir(parent));
  NodeState pstate = parent->Snapshot();
  int dirfd = pdir->get();
  mode_t type = mode & S_IFMT;
  // A whiteout of `name` here: a 0/0 device makes the create fail with
  // EEXIST and is then replaced. .wh.NAME files are looked for only where
  // they matter: where lamina makes them itself (no mknod), and under a new
  // directory, which must hide a lower one (made opaque).
  bool hides_lower = type == S_IFDIR && pstate.has_lower && LAMINA_TRY(LowerHas(pstate, name));
  bool over_whiteout = false;
  if (hides_lower || !chr_whiteouts_) over_whiteout = LAMINA_TRY(RemoveWhiteout(dirfd, name));
  auto restore_whiteout = [&] {
    if (over_whiteout) (void)MakeWhiteoutAt(dirfd, name);
  };
  CallerUmask caller_umask(req);
  mode_t perm = caller_umask.Mode(mode & 07777);
  Fd fd;
  if (type == S_IFDIR && (hides_lower || over_whiteout)) {
    // Made in work/ and renamed in, so that the lower content never shows.
    std::string tmp = TempName();
    if (::mkdirat(work_fd(), tmp.c_str(), perm) != 0) {
      int saved = errno;
      restore_whiteout();
      return Fail(saved);
    }
    std::string tpath = ProcFdPath(work_fd()) + "/" + tmp;
    std::string opaque = OpaqueXattr(ns_);
    if (::setxattr(tpath.c_str(), opaque.c_str(), "y", 1, 0) != 0 ||
        ::renameat2(work_fd(), tmp.c_str(), dirfd, name.c_str(), RENAME_NOREPLACE) != 0) {
      int saved = errno;
      ::unlinkat(work_fd(), tmp.c_str(), AT_REMOVEDIR);
      restore_whiteout();
      return Fail(saved);
    }
  } else {
    auto make = [&]() -> int {  // 0 or the errno
      switch (type) {
        case S_IFDIR:
          return ::mkdirat(dirfd, name.c_str(), perm) == 0 ? 0 : errno;
        case S_IFLNK:
          return ::symlinkat(link_target, dirfd, name.c_str()) == 0 ? 0 : errno;
        case S_IFREG:
          if (open_fd != nullptr) {
            int flags = (open_flags & ~(O_NOFOLLOW | O_CREAT | O_EXCL | O_NOCTTY)) | O_CREAT |
                        O_EXCL | O_NOFOLLOW | O_CLOEXEC;
            int raw = ::openat(dirfd, name.c_str(), flags, perm);
            if (raw < 0) return errno;
            fd = Fd(raw);
            return 0;
          }
          [[fallthrough]];
        default:
          return ::mknodat(dirfd, name.c_str(), type | perm, rdev) == 0 ? 0 : errno;
      }
    };
    int err = make();
    struct stat wst;
    if (err == EEXIST && !over_whiteout &&
        ::fstatat(dirfd, name.c_str(), &wst, AT_SYMLINK_NOFOLLOW) == 0 && IsWhiteoutStat(wst)) {
      if (::unlinkat(dirfd, name.c_str(), 0) != 0) return FailErrno("remove whiteout " + name);
      over_whiteout = true;
      err = make();
    }
    if (err != 0) {
      restore_whiteout();
      return Fail(err);
    }
  }
  struct stat st = LAMINA_TRY(ChownNew(dirfd, name, req, fd.get()));
  int opath = ::openat(dirfd, name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (opath < 0) return FailErrno();
  NodeState s;
  s.type = type;
  s.layer = 0;
  s.upper = true;
  s.fd = std::make_shared<const Fd>(opath);
  s.src_dir = pdir;
  s.src_name = name;
  s.origin_dev = st.st_dev;
  s.origin_ino = st.st_ino;
  s.ino = ComposeIno(st.st_dev, st.st_ino);
  if (type == S_IFDIR) {
    DirInfo& dir = s.EditDir();
    dir.stack.push_back({0, s.fd});
    dir.lower_path = JoinPath(pstate.lower_path(), name);
  }
  if (st_out != nullptr && OverrideXattr() == nullptr) {
    FixStat(s, false, st);
    *st_out = st;
  }
  if (open_fd != nullptr) *open_fd = std::move(fd);
  return table_->InsertChild(parent, name, std::move(s), 1);
}

Result<void> UnionFsImpl::DoRemove(Node* parent, const std::string& name, bool dir) {
  if (!writable()) return Fail(EROFS);
  auto changed = Defer([&] { DirChanged(parent); });
  NodeRef node(table_.get(), LAMINA_TRY(LookupNode(parent, name, 1)));
  NodeState s = node->Snapshot();
  if (dir && !S_ISDIR(s.type)) return Fail(ENOTDIR);
  if (!dir && S_ISDIR(s.type)) return Fail(EISDIR);
  if (dir) {
    auto names = LAMINA_TRY(MergedNames(s));
    if (!names.empty()) return Fail(ENOTEMPTY);
  }
  if (!dir && !s.upper && s.lower_nlink > 1) {
    // Keep the link count of the other names right: the inode goes up once.
    LAMINA_CHECK(CopyUp(node.get()));
    s = node->Snapshot();
  }
  SharedFd pdir = LAMINA_TRY(UpperDir(parent));
  int dirfd = pdir->get();
  // A copy-up of this node (an open for writing, which the kernel does not
  // serialise with the unlink) either finished before, and the upper copy
  // goes, or finds the node unlinked afterwards and does not bring the name
  // back.
  std::lock_guard copy_lock(node->copy_mu);
  s = node->Snapshot();
  NodeState pstate = parent->Snapshot();
  bool lower = s.upper ? LAMINA_TRY(LowerHas(pstate, name)) : true;
  if (!s.upper) {
    LAMINA_CHECK(MakeWhiteoutAt(dirfd, name));
  } else if (dir) {
    // Move the (whiteout-only) upper dir out of the way, then clean it up.
    std::string tmp = TempName();
    if (lower && chr_whiteouts_ && DeviceWhiteoutAt(work_fd(), tmp) == 0) {
      if (::renameat2(work_fd(), tmp.c_str(), dirfd, name.c_str(), RENAME_EXCHANGE) != 0) {
        int saved = errno;
        ::unlinkat(work_fd(), tmp.c_str(), 0);
        return Fail(saved);
      }
    } else {
      if (::renameat(dirfd, name.c_str(), work_fd(), tmp.c_str()) != 0) return FailErrno();
      if (lower) LAMINA_CHECK(MakeWhiteoutAt(dirfd, name));
    }
    (void)RemoveTreeAt(work_fd(), tmp);
  } else if (lower) {
    std::string tmp = TempName();
    if (chr_whiteouts_ && DeviceWhiteoutAt(work_fd(), tmp) == 0) {
      if (::renameat(work_fd(), tmp.c_str(), dirfd, name.c_str()) != 0) {
        int saved = errno;
        ::unlinkat(work_fd(), tmp.c_str(), 0);
        return Fail(saved);
      }
    } else {
      if (::unlinkat(dirfd, name.c_str(), 0) != 0) return FailErrno();
      LAMINA_CHECK(MakeWhiteoutAt(dirfd, name));
    }
  } else {
    if (::unlinkat(dirfd, name.c_str(), 0) != 0) return FailErrno();
  }
  table_->Detach(parent, name);
  return {};
}

void ReplyNewEntry(fuse_req_t req, const char* op, fuse_ino_t parent, UnionFsImpl* fs,
                   Result<Node*> node, const struct stat* known) {
  if (!node) {
    ReplyError(req, op, parent, node.error());
    return;
  }
  Result<struct stat> st = known != nullptr && known->st_ino != 0 ? *known : fs->Stat(*node);
  if (!st) {
    fs->table().Unref(*node);
    ReplyError(req, op, parent, st.error());
    return;
  }
  fuse_entry_param e;
  fs->FillEntry(*node, *st, e);
  // An interrupted request: the kernel never counts this lookup.
  if (fuse_reply_entry(req, &e) != 0) fs->table().Unref(*node);
}

namespace {

void Mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) noexcept {
  Guard(req, "mkdir", [&] {
    UnionFsImpl* fs = UnionFsImpl::From(req);
    struct stat st;
    auto node = fs->DoMake(req, fs->table().FromId(parent), name, S_IFDIR | (mode & 07777), 0,
                           nullptr, nullptr, 0, &st);
    ReplyNewEntry(req, "mkdir", parent, fs, std::move(node), &st);
  });
}

void Rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) noexcept {
  Guard(req, "rmdir", [&] {
    UnionFsImpl* fs = UnionFsImpl::From(req);
    auto r = fs->DoRemove(fs->table().FromId(parent), name, true);
    if (!r) {
      ReplyError(req, "rmdir", parent, r.error());
      return;
    }
    fuse_reply_err(req, 0);
  });
}

void Opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  Guard(req, "opendir", [&] {
    UnionFsImpl* fs = UnionFsImpl::From(req);
    if (fs->no_opendir()) {
      // The kernel then opens directories itself, caches their listings
      // (FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR by default) and sends no
      // OPENDIR or RELEASEDIR again: two requests less per directory read.
      fuse_reply_err(req, ENOSYS);
      return;
    }
    Node* node = fs->table().FromId(ino);
    auto handle = std::make_unique<DirHandle>();
    fs->table().Ref(node);
    handle->node = node;
    fi->fh = reinterpret_cast<uint64_t>(handle.release());
    if (fs->timeout() > 0) {
      // No handle drops the cached pages; one at a time fills and reads them.
      fi->keep_cache = 1;
      bool expected = false;
      if (node->dir_cache_handle.compare_exchange_strong(expected, true)) {
        reinterpret_cast<DirHandle*>(fi->fh)->kernel_cache = true;
        fi->cache_readdir = 1;
      }
    }
    if (fuse_reply_open(req, fi) != 0) {
      auto* h = reinterpret_cast<DirHandle*>(fi->fh);
      if (h->kernel_cache) h->node->dir_cache_handle.store(false);
      fs->table().Unref(h->node);
      delete h;
    }
  });
}

void DoReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi,
               bool plus) {
  UnionFsImpl* fs = UnionFsImpl::From(req);
  auto* handle = reinterpret_cast<DirHandle*>(fi->fh);
  Node* dir = handle != nullptr ? handle->node : fs->table().FromId(ino);
  Result<std::shared_ptr<const Listing>> listing = std::shared_ptr<const Listing>();
  uint64_t built_at = 0;
  if (handle != nullptr) {
    std::lock_guard lock(handle->mu);
    if (!handle->listing || off == 0) {
      auto built = fs->BuildListing(dir);
      if (built) handle->listing = *built;
      listing = std::move(built);
    } else {
      listing = handle->listing;
    }
  } else {
    listing = fs->PassListing(dir, off, &built_at);
  }
  if (!listing) {
    ReplyError(req, plus ? "readdirplus" : "readdir", ino, listing.error());
    return;
  }
  const Listing& entries = **listing;
  auto first = std::upper_bound(entries.begin(), entries.end(), off,
                                [](off_t o, const DirEntry& e) { return o < e.cookie; });
  std::vector<char> buf(size);
  size_t pos = 0;
  std::vector<Node*> looked_up;  // readdirplus: one lookup ref each
  bool count_attrs = false;
  bool attrs = plus && fs->PlusWithAttrs(dir, off, &count_attrs);
  size_t files_with = 0, files_without = 0;
  for (auto it = first; it != entries.end(); ++it) {
    const DirEntry& ent = *it;
    size_t used;
    if (!plus) {
      struct stat st {};
      st.st_ino = ent.ino;
      st.st_mode = static_cast<mode_t>(ent.type) << 12;
      used =
          fuse_add_direntry(req, buf.data() + pos, size - pos, ent.name.c_str(), &st, ent.cookie);
      if (used > size - pos) break;
    } else {
      fuse_entry_param e{};
      Node* node = nullptr;
      // Without attributes (nodeid 0) the kernel keeps only the name, as
      // from a plain readdir.
      bool bare = ent.name == "." || ent.name == ".." ||
                  (!attrs && ent.type != DT_DIR && ent.type != DT_UNKNOWN);
      if (bare) {
        e.attr.st_ino = ent.ino;
        e.attr.st_mode = static_cast<mode_t>(ent.type) << 12;
      } else {
        auto found = fs->LookupWithStat(dir, ent.name);
        if (!found) continue;  // gone meanwhile
        node = found->first;
        fs->FillEntry(node, found->second, e);
      }
      used = fuse_add_direntry_plus(req, buf.data() + pos, size - pos, ent.name.c_str(), &e,
                                    ent.cookie);
      if (used > size - pos) {
        if (node != nullptr) fs->table().Unref(node);
        break;
      }
      if (node != nullptr) looked_up.push_back(node);
      if (ent.type != DT_DIR && ent.name != "." && ent.name != "..") {
        ++(bare ? files_without : files_with);
      }
    }
    pos += used;
  }
  if (plus) {
    fs->NotePlusAttrs(files_with, count_attrs);
    fs->CountPlusWithout(files_without);
  }
  bool drop_cache = false;
  if (handle == nullptr) {
    fs->NoteListingReply(dir, built_at);
    if (pos == 0) {  // the end of the pass
      fs->EndPass(dir);
      drop_cache = fs->CheckListingEnd(dir);
    }
  }
  // An interrupted request: the kernel never counts these lookups.
  if (fuse_reply_buf(req, buf.data(), pos) != 0) {
    for (Node* node : looked_up) fs->table().Unref(node);
  }
  // After the reply, which may be what fills the cache.
  if (drop_cache) fs->NotifyInvalInode(dir);
}

void Readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) noexcept {
  Guard(req, "readdir", [&] { DoReaddir(req, ino, size, off, fi, false); });
}

void Readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                 fuse_file_info* fi) noexcept {
  Guard(req, "readdirplus", [&] { DoReaddir(req, ino, size, off, fi, true); });
}

void Releasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) noexcept {
  (void)ino;
  UnionFsImpl* fs = UnionFsImpl::From(req);
  auto* handle = reinterpret_cast<DirHandle*>(fi->fh);
  if (handle == nullptr) {  // opened by the kernel alone (kOpendirLess)
    fuse_reply_err(req, 0);
    return;
  }
  if (handle->kernel_cache) handle->node->dir_cache_handle.store(false);
  fs->table().Unref(handle->node);
  delete handle;
  fuse_reply_err(req, 0);
}

void Fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) noexcept {
  (void)fi;
  Guard(req, "fsyncdir", [&] {
    UnionFsImpl* fs = UnionFsImpl::From(req);
    NodeState s = fs->table().FromId(ino)->Snapshot();
    if (!fs->config().fsync || !s.upper) {
      fuse_reply_err(req, 0);
      return;
    }
    int fd = ::openat(s.fd->get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
      fuse_reply_err(req, errno);
      return;
    }
    int r = datasync != 0 ? ::fdatasync(fd) : ::fsync(fd);
    int saved = errno;
    ::close(fd);
    fuse_reply_err(req, r == 0 ? 0 : saved);
  });
}

}  // namespace

void FillDirOps(fuse_lowlevel_ops& ops) {
  ops.mkdir = Mkdir;
  ops.rmdir = Rmdir;
  ops.opendir = Opendir;
  ops.readdir = Readdir;
  ops.readdirplus = Readdirplus;
  ops.releasedir = Releasedir;
  ops.fsyncdir = Fsyncdir;
}

}  // namespace lamina::fuse
