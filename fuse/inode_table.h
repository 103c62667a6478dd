#pragma once

// The inode table of the union: one Node per object the kernel has looked up
// (one per name: hard links looked up under two names are two nodes that
// report the same st_ino), plus the layer description the nodes refer to.
//
// Locking (lock order, outermost first):
//   1. Node::copy_mu   held across the I/O of one copy-up of that node, and
//                      by DoRemove from its whiteout decision to the detach;
//                      a node's parent is copied up completely before the
//                      child's copy_mu is taken, so there is no nesting.
//   2. Node::mu        guards the node's layer state (NodeState); held only
//                      to read or swap that state, never across I/O.
//   3. NodeTable::mu_  guards the tree (parent, name, children, refs,
//                      unlinked) and the origin index; a leaf lock: held only
//                      for map and counter operations, never across I/O or
//                      fuse_reply_*, never while taking another lock.

#include <fuse_lowlevel.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/fd.h"

namespace lamina::fuse {

using SharedFd = std::shared_ptr<const Fd>;

// One layer directory of the union. layers_[0] is the upper when there is one.
struct Layer {
  std::string path;
  Fd fd;  // O_PATH | O_DIRECTORY
  dev_t dev = 0;
  uint32_t fs_index = 0;  // index of this layer's filesystem (for st_ino)
  bool upper = false;
};

// One directory contributing to a merged directory.
struct DirLayer {
  int layer = 0;
  SharedFd fd;  // O_PATH of the directory in that layer
};

// What only a directory's state has. Shared between the states copied from
// one another (NodeState snapshots) and never changed once shared: a change
// makes a new one (NodeState::EditDir).
struct DirInfo {
  // Every contributing directory, top first (the first is the object itself).
  std::vector<DirLayer> stack;
  // The path of its lower content, from the layer roots ("" for the root,
  // "a/b" otherwise); follows redirects.
  std::string lower_path;
};

// A mutex of 4 bytes where std::mutex takes 40: every Node has two, and a
// big image has hundreds of thousands of nodes. A futex word (C++20
// atomic wait): 0 free, 1 held, 2 held with waiters.
class SmallMutex {
 public:
  void lock() noexcept {
    uint32_t c = 0;
    if (state_.compare_exchange_strong(c, 1, std::memory_order_acquire)) return;
    if (c != 2) c = state_.exchange(2, std::memory_order_acquire);
    while (c != 0) {
      state_.wait(2, std::memory_order_relaxed);
      c = state_.exchange(2, std::memory_order_acquire);
    }
  }
  bool try_lock() noexcept {
    uint32_t c = 0;
    return state_.compare_exchange_strong(c, 1, std::memory_order_acquire);
  }
  void unlock() noexcept {
    if (state_.exchange(0, std::memory_order_release) == 2) state_.notify_one();
  }

 private:
  std::atomic<uint32_t> state_{0};
};

// The layer state of a node; replaced as a whole by copy-up and rename.
struct NodeState {
  mode_t type = 0;           // S_IFMT bits
  int layer = 0;             // layer of the topmost object
  bool upper = false;        // the name exists in the upper layer
  bool has_lower = false;    // dirs: some of the stack is in a lower layer
  bool indexed = false;      // a hard-linked lower file with an entry in
                             // work/index (kernel index=on)
  uint32_t lower_nlink = 1;  // st_nlink of the lower origin (hard links)
  SharedFd fd;               // O_PATH of the object (the index file for an
                             // indexed lower hard link); empty for a file,
                             // symlink or special file in a lower layer, which
                             // src_dir and src_name name for good (lower layers
                             // do not change): an fd per known lower file would
                             // run into the open-file limit on big images
                             // (UnionFsImpl::ObjectFd opens it when needed)
  // Where the (lower) object lives, for copy-up: O_PATH of its directory
  // and its name there.
  SharedFd src_dir;
  std::string src_name;
  // Directories only (null for everything else).
  std::shared_ptr<const DirInfo> dir;
  // Identity: the origin (lower st_dev, st_ino) the object came from, or its
  // own when it never was copied up.
  dev_t origin_dev = 0;
  ino_t origin_ino = 0;
  uint64_t ino = 0;  // st_ino reported

  const std::vector<DirLayer>& stack() const { return dir ? dir->stack : kNoDirInfo.stack; }
  const std::string& lower_path() const { return dir ? dir->lower_path : kNoDirInfo.lower_path; }
  // The directory part to change: a copy of the shared one, which this
  // state alone holds from now on.
  DirInfo& EditDir() {
    auto fresh = dir ? std::make_shared<DirInfo>(*dir) : std::make_shared<DirInfo>();
    DirInfo& ref = *fresh;
    dir = std::move(fresh);
    return ref;
  }

 private:
  static inline const DirInfo kNoDirInfo{};
};

// Sizes matter here: a node per object the kernel knows, so an `ls -lR` of a
// 50,000-file image makes 50,000 of them (the daemon's resident memory is
// one of the benchmark targets, docs/benchmarks.md). The children of a
// directory and the list of all nodes are intrusive (NodeTable), not maps.
struct Node {
  Node(Node* parent_node, std::string node_name)
      : parent(parent_node), name(std::move(node_name)) {}

  // Guarded by NodeTable::mu_.
  Node* parent;       // holds one ref on the parent; nullptr for the root and unlinked nodes
  std::string name;   // current name in parent
  uint64_t refs = 0;  // kernel lookups + children + open handles + temporary holds
  Node* hash_next = nullptr;  // NodeTable's (parent, name) index
  Node* all_prev = nullptr;   // NodeTable's list of every live node
  Node* all_next = nullptr;
  bool unlinked = false;

  // What the node's object has in xattrs, learnt by getxattr/listxattr:
  // kXattrsUnknown, kXattrsNone (getxattr can answer ENODATA without asking
  // the backing filesystem) or kXattrsSome. Only ever kXattrsNone for an
  // object in a lower layer, which nothing changes; copy-up resets it. Set
  // and reset under `mu` (read without it).
  static constexpr uint8_t kXattrsUnknown = 0, kXattrsNone = 1, kXattrsSome = 2;
  std::atomic<uint8_t> xattrs{kXattrsUnknown};

  // Directories: an open handle that lets the kernel cache the listing
  // exists (at most one, see UnionFsImpl::kOpendirLess).
  std::atomic<bool> dir_cache_handle{false};

  // Set once the node's file was seen with more than one link: another node
  // (another kernel inode) may then change its data, so the kernel's page
  // cache of this one is never kept across opens, even after the other
  // names are gone again.
  std::atomic<bool> multi_link{false};

  // Bumped after each copy-up of this node (read without locks by open
  // files to notice that they still read the lower copy).
  std::atomic<uint32_t> copy_ups{0};

  uint64_t generation = 0;  // immutable

  // Directories: bumped after each change of the names in it made through
  // the mount (create, remove, rename, link), so that a listing built before
  // a change is not reused after it.
  std::atomic<uint64_t> dir_changes{0};

  // Directories the kernel lists without OPENDIR, once one was (guarded by
  // mu): which of the listings replied may be stale in the kernel's cache
  // (see UnionFsImpl::NoteListingReply). A pointer, so that files pay 8
  // bytes.
  struct ListingFill {
    uint64_t suspect = UINT64_MAX;  // lowest dir_changes of a listing that may be
                                    // stale in the cache
    uint64_t recent = UINT64_MAX;   // lowest dir_changes replied since window_ns
    uint64_t before = UINT64_MAX;   // ... in the window before that
    int64_t window_ns = 0;          // steady clock
  };
  std::unique_ptr<ListingFill> fill;

  SmallMutex copy_mu;
  mutable SmallMutex mu;
  NodeState state;  // guarded by mu

  NodeState Snapshot() const {
    std::lock_guard lock(mu);
    return state;
  }
};

// The tree of nodes. Node ids given to the kernel are the Node addresses
// (FUSE_ROOT_ID for the root).
class NodeTable {
 public:
  explicit NodeTable(NodeState root_state);
  ~NodeTable();
  NodeTable(const NodeTable&) = delete;
  NodeTable& operator=(const NodeTable&) = delete;

  Node* root() const { return root_; }
  Node* FromId(fuse_ino_t ino) const {
    return ino == FUSE_ROOT_ID ? root_ : reinterpret_cast<Node*>(ino);
  }
  fuse_ino_t IdOf(const Node* node) const {
    return node == root_ ? FUSE_ROOT_ID : reinterpret_cast<fuse_ino_t>(node);
  }

  // The child `name` of `parent` if the table has it, with one ref added.
  Node* FindChild(Node* parent, const std::string& name);
  // Inserts (or, when a node raced in, reuses) the child `name` of `parent`
  // with `state`; returns it with `add_refs` refs added. An existing node's
  // state is left alone; `*inserted` (when given) says which happened.
  Node* InsertChild(Node* parent, const std::string& name, NodeState state, uint64_t add_refs,
                    bool* inserted = nullptr);

  void Ref(Node* node, uint64_t n = 1);
  // Drops refs; the last one frees the node (and drops its ref on the parent).
  void Unref(Node* node, uint64_t n = 1);

  // Parent (with one ref added, or nullptr) and name of a node.
  std::pair<Node*, std::string> ParentAndName(Node* node);

  // Detaches `name` from `parent` (after an unlink or a rename over it): the
  // node stays alive for its holders but is no longer found by name.
  void Detach(Node* parent, const std::string& name);
  // Moves the child `old_name` of `old_parent` to `new_name` in `new_parent`,
  // detaching whatever was there.
  void Move(Node* old_parent, const std::string& old_name, Node* new_parent,
            const std::string& new_name);
  // Swaps two children (RENAME_EXCHANGE).
  void Exchange(Node* parent_a, const std::string& name_a, Node* parent_b,
                const std::string& name_b);

  bool IsUnlinked(Node* node) {
    std::lock_guard lock(mu_);
    return node->unlinked;
  }

  // Every node whose origin is (dev, ino), each with one ref added.
  std::vector<Node*> WithOrigin(dev_t dev, ino_t ino);

 private:
  void DetachLocked(Node* parent, const std::string& name, std::vector<Node*>* drop);
  void UnrefLocked(Node* node, uint64_t n, std::vector<Node*>* dead);

  // The (parent, name) index of attached children: chains through
  // Node::hash_next, a power-of-two bucket count, grown at one node per
  // bucket. A node is in it exactly while its parent is set.
  static size_t Hash(const Node* parent, std::string_view name);
  Node* FindLocked(const Node* parent, std::string_view name) const;
  void IndexLocked(Node* node);
  void UnindexLocked(Node* node);
  void LinkAllLocked(Node* node);
  void UnlinkAllLocked(Node* node);

  std::mutex mu_;
  Node* root_;
  uint64_t next_generation_ = 1;
  std::vector<Node*> buckets_;
  size_t indexed_ = 0;
  // All live nodes (for WithOrigin and final cleanup), through Node::all_next.
  Node* all_ = nullptr;
};

}  // namespace lamina::fuse
