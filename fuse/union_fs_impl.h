#pragma once

// The union filesystem's internals, shared by the op-family files
// (ops_entry.cc, ops_dir.cc, ops_file.cc, ops_link.cc, ops_xattr.cc) and
// copy_up.cc. Handlers are thin noexcept shells over the Do* methods here,
// which return Result and never reply themselves.

#include <dirent.h>
#include <fuse_lowlevel.h>
#include <sys/stat.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/fd.h"
#include "common/result.h"
#include "drivers/driver.h"
#include "fuse/config.h"
#include "fuse/inode_table.h"
#include "fuse/union_fs.h"

namespace lamina::fuse {

// An open regular file.
struct FileHandle {
  Node* node = nullptr;  // holds one ref
  // The backing file. A read-only handle opened on a lower file switches to
  // the upper copy once the node is copied up (as the kernel overlay does);
  // `fd` may then change, guarded by `mu`, and replaced fds are kept open
  // until release so that a read in flight never uses a recycled number.
  std::mutex mu;
  std::atomic<int> fd_num{-1};
  Fd fd;
  std::vector<Fd> retired;
  bool read_only = false;
  int flags = 0;
  uint32_t copy_ups = 0;  // node->copy_ups when `fd` was opened (guarded by mu)
  int Get() const { return fd_num.load(std::memory_order_acquire); }
};

// One entry of a merged directory listing.
struct DirEntry {
  std::string name;
  uint64_t ino = 0;
  unsigned char type = DT_UNKNOWN;
  // Its readdir offset: "." is 1, ".." 2, every other name a 63-bit hash of
  // itself (unique within the listing), so that a listing built again for
  // the next batch of a pass continues after the same name even when the
  // directory changed meanwhile (no entry repeated or skipped).
  off_t cookie = 0;
};

// A merged listing in readdir order: cookies ascending.
using Listing = std::vector<DirEntry>;

// An open directory (only with timeout=0; otherwise the kernel opens
// directories without asking, see Opendir): the listing built at offset 0,
// kept for the handle's life.
struct DirHandle {
  Node* node = nullptr;       // holds one ref
  bool kernel_cache = false;  // holds node->dir_cache_handle
  std::mutex mu;              // guards the field below
  std::shared_ptr<const Listing> listing;
};

// A node with one ref held for the scope.
class NodeRef {
 public:
  NodeRef() = default;
  NodeRef(NodeTable* table, Node* node) : table_(table), node_(node) {}
  NodeRef(NodeRef&& o) noexcept : table_(o.table_), node_(std::exchange(o.node_, nullptr)) {}
  NodeRef& operator=(NodeRef&& o) noexcept {
    if (this != &o) {
      Reset();
      table_ = o.table_;
      node_ = std::exchange(o.node_, nullptr);
    }
    return *this;
  }
  ~NodeRef() { Reset(); }
  Node* get() const { return node_; }
  Node* operator->() const { return node_; }
  explicit operator bool() const { return node_ != nullptr; }
  Node* Release() { return std::exchange(node_, nullptr); }
  void Reset() {
    if (node_ != nullptr) table_->Unref(std::exchange(node_, nullptr));
  }

 private:
  NodeTable* table_ = nullptr;
  Node* node_ = nullptr;
};

class UnionFsImpl final : public UnionFs {
 public:
  explicit UnionFsImpl(FsConfig config);
  ~UnionFsImpl() override;

  Result<void> Setup();  // Create()'s work
  const fuse_lowlevel_ops& Ops() const override;
  void AttachSession(fuse_session* session) override { session_ = session; }

  static UnionFsImpl* From(fuse_req_t req) {
    return static_cast<UnionFsImpl*>(fuse_req_userdata(req));
  }

  // ---- shared state (read-only after Open) ----
  const FsConfig& config() const { return config_; }
  NodeTable& table() { return *table_; }
  bool has_upper() const { return has_upper_; }
  bool writable() const { return has_upper_ && !config_.read_only; }
  XattrNamespace xattr_ns() const { return ns_; }
  double timeout() const { return config_.timeout; }
  const Layer& layer(int i) const { return layers_[static_cast<size_t>(i)]; }
  int layer_count() const { return static_cast<int>(layers_.size()); }

  // ---- lookup (inode_lookup.cc) ----
  // Resolves `name` in the directory node `parent`: the union's view, or
  // ENOENT when nothing is visible (whiteout, opaque, nothing there).
  // `top_st`, when given, receives the raw stat of the object the state's fd
  // refers to (st_ino 0 when that is not the object Stat would report: an
  // indexed hard link).
  Result<NodeState> Resolve(const NodeState& parent, const std::string& name,
                            struct stat* top_st = nullptr);
  // Looks `name` up and returns its node with `refs` refs added. `st`, when
  // given, receives what Stat(node) would answer if this call resolved the
  // name itself (which costs no syscall more), else st_ino 0.
  Result<Node*> LookupNode(Node* parent, const std::string& name, uint64_t refs,
                           struct stat* st = nullptr);
  // LookupNode with one ref and the node's Stat (from the lookup itself
  // where it resolved the name); on a failed Stat the ref is dropped.
  Result<std::pair<Node*, struct stat>> LookupWithStat(Node* parent, const std::string& name);
  // Whether any lower layer (below the upper) has a visible `name` under
  // `parent` (whiteouts in the upper are ignored).
  Result<bool> LowerHas(const NodeState& parent, const std::string& name);
  // stat of a node's object with the union's view applied (st_ino, nlink,
  // ownership mapping, override_stat).
  Result<struct stat> Stat(Node* node);
  // The O_PATH fd of a node's object: its own, or, for a lower non-directory
  // (NodeState::fd empty), one opened now from src_dir and src_name.
  Result<SharedFd> ObjectFd(const NodeState& s) const;
  void FixStat(const NodeState& s, bool unlinked, struct stat& st) const;
  uint64_t ComposeIno(dev_t dev, ino_t ino) const;
  void FillEntry(Node* node, const struct stat& st, fuse_entry_param& e) const;
  // How long the kernel may cache these attributes: the configured timeout,
  // but none for hard-linked files (each name is its own node, so a change
  // through one name would leave the other's cached nlink/size stale).
  double AttrTimeout(const struct stat& st) const {
    return !S_ISDIR(st.st_mode) && st.st_nlink > 1 ? 0.0 : config_.timeout;
  }

  // ---- copy-up (copy_up.cc) ----
  // Makes the node's name exist in the upper layer (parents first); data is
  // copied unless `data` is false (O_TRUNC to size 0).
  Result<void> CopyUp(Node* node, bool data = true);
  // The upper directory fd of a directory node, copying it up if needed.
  Result<SharedFd> UpperDir(Node* dir);
  // Removes a whiteout for `name` in the upper dir `dirfd`; true if one was there.
  Result<bool> RemoveWhiteout(int dirfd, const std::string& name);
  // Makes a whiteout for `name` in the upper dir `dirfd`.
  Result<void> MakeWhiteoutAt(int dirfd, const std::string& name);
  // Makes `name` in `dirfd` a 0/0 device whiteout: a link to the shared one
  // in work/work where it can, else a device of its own. 0 or the errno.
  int DeviceWhiteoutAt(int dirfd, const std::string& name);
  // A fresh temporary name in work/work.
  std::string TempName();
  int work_fd() const { return work_work_.get(); }
  int index_fd() const { return work_index_.get(); }
  std::string OriginXattr() const;
  std::string IndexName(dev_t dev, ino_t ino) const;
  // Ownership for a new object made for the request's caller; returns the
  // object's raw stat afterwards (through `fd` when it is open, >= 0).
  Result<struct stat> ChownNew(int dirfd, const std::string& name, fuse_req_t req, int fd = -1);
  // Where ownership that cannot be set is kept (fuse-overlayfs'
  // xattr_permissions: 1 = security.fuseoverlayfs.override_stat, 2 =
  // user.containers.override_stat); nullptr when off.
  const char* OverrideXattr() const {
    switch (config_.xattr_permissions) {
      case 1:
        return "security.fuseoverlayfs.override_stat";
      case 2:
        return "user.containers.override_stat";
      default:
        return nullptr;
    }
  }
  uid_t ToOuterUid(uid_t inner) const;
  gid_t ToOuterGid(gid_t inner) const;
  uid_t ToInnerUid(uid_t outer) const;
  gid_t ToInnerGid(gid_t outer) const;

  // ---- op bodies ----
  Result<struct stat> DoSetattr(Node* node, const struct stat& attr, int to_set, fuse_file_info* fi,
                                fuse_req_t req);
  // Makes `name` in the upper layer (the shared body of create, mkdir,
  // mknod, symlink). `st_out`, when given, receives the new node's Stat
  // (st_ino 0 where only Stat can tell, with override_stat).
  Result<Node*> DoMake(fuse_req_t req, Node* parent, const std::string& name, mode_t mode,
                       dev_t rdev, const char* link_target, Fd* open_fd, int open_flags,
                       struct stat* st_out = nullptr);
  Result<void> DoRemove(Node* parent, const std::string& name, bool dir);
  Result<void> DoRename(Node* parent, const std::string& name, Node* new_parent,
                        const std::string& new_name, unsigned int flags);
  Result<Node*> DoLink(Node* node, Node* new_parent, const std::string& new_name);
  // The merged listing of a directory node with "." and "..", cookies set.
  Result<std::shared_ptr<const Listing>> BuildListing(Node* dir);
  // The listing for a readdir at `off` without an open handle: built at
  // offset 0 and kept for the following batches of the pass (until its end),
  // built again where it was not kept.
  // `built_at`: the dir_changes read before the listing was built.
  Result<std::shared_ptr<const Listing>> PassListing(Node* dir, off_t off, uint64_t* built_at);
  void EndPass(Node* dir);
  // The kernel records the directory's version when it starts filling its
  // listing cache, marks the cache complete at the empty reply that ends a
  // pass, and serves it until the directory changes through the mount
  // again. So a listing in the cache is stale only if a reply built before
  // a change reached the cache after it (see kOpendirLess): one sent after
  // the change, or one sent before it that its reader had not yet put in
  // the cache. The daemon cannot see when a reply reaches the cache (within
  // the reader's system call), so it counts one sent up to kFillWindowNs
  // (or twice that) before a change as possibly still on its way.
  // NoteListingReply records each handle-less readdir reply of `dir`, built
  // at `built_at`, before it is sent; ListingChanged follows every
  // DirChanged; before the empty reply that ends a pass, CheckListingEnd
  // says whether to drop the kernel's cached listing (and attributes) of
  // `dir` after it (NotifyInvalInode): whether a reply may be stale in the
  // cache. It keeps counting the stale replies that may still be on their
  // way.
  void NoteListingReply(Node* dir, uint64_t built_at);
  static void ListingChanged(Node* dir);
  bool CheckListingEnd(Node* dir);
  static constexpr int64_t kFillWindowNs = 2'000'000'000;
  // The kernel's listing cache (FOPEN_CACHE_DIR) can keep a stale listing
  // for good when two cached readers start on an empty cache while the
  // directory changes: the second records the directory's new version, then
  // the first one's reply, built before the change, fills the cache (the
  // stress test saw a name made, then missing from every later listing, or
  // one removed that stayed). With OPENDIR, only one open handle of a
  // directory at a time may use the cache (Node::dir_cache_handle; the
  // others read through us). Without it (kOpendirLess, two requests less per
  // directory read), the kernel caches every open, so the daemon watches
  // instead: NoteListingReply and CheckListingEnd.
  static constexpr bool kOpendirLess = true;
  // Whether directories are opened without OPENDIR (the kernel offered
  // FUSE_CAP_NO_OPENDIR_SUPPORT and caching is on); set by init.
  bool no_opendir() const { return no_opendir_.load(std::memory_order_relaxed); }
  void set_no_opendir(bool on) { no_opendir_.store(on, std::memory_order_relaxed); }
  Result<std::vector<std::string>> MergedNames(const NodeState& dir);

  // Readdirplus with or without attributes. An entry with attributes saves
  // the kernel a LOOKUP when the caller then stats or opens the file (ls -l,
  // du, chmod -R), but costs us a stat of it, which for a cold lower file
  // means reading its inode: a walk that looks at names only (find, a
  // shell glob) spends most of its time on those. So, like the kernel's
  // own readdirplus_auto, we watch whether the files are used: after
  // kPlusUnusedFiles non-directory entries with attributes and no request
  // on any file (NoteFileUse), further non-directory entries go without
  // attributes (the kernel then looks up only the names it needs); the
  // first such lookup (NoteFileLookup) turns attributes on again, and the
  // next probe waits twice as many readdirplus batches as the last one.
  // Directories always get attributes (a walk descends into them).
  static constexpr size_t kPlusUnusedFiles = 32;
  static constexpr uint32_t kPlusFirstWait = 16, kPlusMaxWait = 1024;
  // At the start of a readdirplus batch of `dir` at `off`: whether files
  // get attributes; `count` whether the batch's files count as unused.
  bool PlusWithAttrs(const Node* dir, off_t off, bool* count);
  // After a batch that gave `files` non-directories attributes.
  void NotePlusAttrs(size_t files, bool count);
  // A request about a file (not a directory) that the kernel could only send
  // after seeing it: getattr, open, xattrs, readlink, setattr, unlink, ...
  void NoteFileUse() { file_uses_.fetch_add(1, std::memory_order_relaxed); }
  // A lookup found a non-directory.
  void NoteFileLookup();
  ListingStats listing_stats() const override;
  void CountPlusWithout(size_t files);

  void NotifyInvalInode(Node* node);
  // After a change of the names in `dir` (see Node::dir_changes).
  static void DirChanged(Node* dir) {
    dir->dir_changes.fetch_add(1, std::memory_order_acq_rel);
    ListingChanged(dir);
  }

 private:
  FsConfig config_;
  std::vector<Layer> layers_;
  bool has_upper_ = false;
  XattrNamespace ns_ = XattrNamespace::kUser;
  bool chr_whiteouts_ = true;  // mknod 0/0 works in the upper
  Fd work_;
  Fd work_work_;
  Fd work_index_;
  std::unique_ptr<NodeTable> table_;
  std::atomic<bool> no_opendir_{false};
  std::atomic<uint64_t> listing_drops_{0};  // CheckListingEnd's invalidations
  // Readdirplus attributes (PlusWithAttrs).
  std::atomic<uint64_t> file_uses_{0};
  std::atomic<bool> plus_light_{false};
  mutable std::mutex plus_mu_;  // a leaf lock: guards the plus_ fields below
  const Node* plus_last_dir_ = nullptr;  // of the last batch (compared only)
  uint64_t plus_uses_seen_ = 0;    // file_uses_ at the last batch
  size_t plus_unused_files_ = 0;   // files given attributes since a use
  uint32_t plus_window_ = UnionFsImpl::kPlusFirstWait / 2;
  uint32_t plus_wait_ = 0;         // batches with files before the next probe
  ListingStats plus_counters_;
  // Listings of handle-less readdir passes in progress, by node and its
  // generation (a node freed and its address reused never matches).
  // A listing is reused only while the directory's dir_changes is the one
  // read before it was built (passes of several readers of one directory
  // share the slot, so one built before a change must not serve another
  // reader's pass that started after it).
  // Bounded: the oldest goes when a pass starts and kMaxPasses are kept.
  struct Pass {
    Node* node;
    uint64_t generation;
    uint64_t changes;
    std::shared_ptr<const Listing> listing;
  };
  static constexpr size_t kMaxPasses = 64;
  std::mutex passes_mu_;  // a leaf lock: guards passes_
  std::vector<Pass> passes_;
  // Per layer: FICLONE from it to the upper failed once (copy-up).
  std::unique_ptr<std::atomic<bool>[]> no_clone_;
  std::atomic<uint64_t> temp_counter_{0};
  std::mutex whiteout_mu_;       // a leaf lock: guards shared_whiteout_
  std::string shared_whiteout_;  // its name in work/work, empty until made
  fuse_session* session_ = nullptr;
  std::string temp_prefix_;  // set in Setup, read-only afterwards
};

// An O_PATH fd of `name` in `dirfd`, not following a symlink (lookup,
// copy-up, the index).
Result<SharedFd> OpenPathAt(int dirfd, const std::string& name);

// Op tables, one per family file.
void FillEntryOps(fuse_lowlevel_ops& ops);
void FillDirOps(fuse_lowlevel_ops& ops);
void FillFileOps(fuse_lowlevel_ops& ops);
void FillLinkOps(fuse_lowlevel_ops& ops);
void FillXattrOps(fuse_lowlevel_ops& ops);

// Logs an unexpected error of an op (quiet on ENOENT and other expected codes).
void LogOpError(const char* op, fuse_ino_t ino, const Error& error);

// Replies the entry of a node just made (mkdir, mknod, symlink, link), or the
// error; with `st` its attributes when known (st_ino != 0), else from Stat.
void ReplyNewEntry(fuse_req_t req, const char* op, fuse_ino_t parent, UnionFsImpl* fs,
                   Result<Node*> node, const struct stat* st = nullptr);

// Runs `body` catching everything; replies `err` when it throws. The body
// replies itself exactly once on every path that does not throw.
template <class F>
void Guard(fuse_req_t req, const char* op, F&& body) noexcept {
  try {
    body();
  } catch (const std::bad_alloc&) {
    fuse_reply_err(req, ENOMEM);
  } catch (...) {
    LogOpError(op, 0, Error(EIO, "unexpected exception"));
    fuse_reply_err(req, EIO);
  }
}

// Replies an error for a failed Result (after logging it).
inline void ReplyError(fuse_req_t req, const char* op, fuse_ino_t ino, const Error& error) {
  LogOpError(op, ino, error);
  fuse_reply_err(req, error.code());
}

}  // namespace lamina::fuse
