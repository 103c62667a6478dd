#include "fuse/inode_table.h"

#include <functional>

namespace lamina::fuse {

NodeTable::NodeTable(NodeState root_state) {
  root_ = new Node(nullptr, "");
  root_->refs = 1;  // never dropped
  root_->state = std::move(root_state);
  buckets_.assign(1024, nullptr);
  LinkAllLocked(root_);
}

NodeTable::~NodeTable() {
  for (Node* node = all_; node != nullptr;) delete std::exchange(node, node->all_next);
}

size_t NodeTable::Hash(const Node* parent, std::string_view name) {
  size_t h = std::hash<std::string_view>{}(name);
  return h ^ (reinterpret_cast<uintptr_t>(parent) * 0x9e3779b97f4a7c15ull >> 7);
}

Node* NodeTable::FindLocked(const Node* parent, std::string_view name) const {
  for (Node* n = buckets_[Hash(parent, name) & (buckets_.size() - 1)]; n != nullptr;
       n = n->hash_next) {
    if (n->parent == parent && n->name == name) return n;
  }
  return nullptr;
}

void NodeTable::IndexLocked(Node* node) {
  if (indexed_ >= buckets_.size()) {
    std::vector<Node*> grown(buckets_.size() * 2, nullptr);
    for (Node* head : buckets_) {
      while (head != nullptr) {
        Node* next = head->hash_next;
        Node*& slot = grown[Hash(head->parent, head->name) & (grown.size() - 1)];
        head->hash_next = slot;
        slot = head;
        head = next;
      }
    }
    buckets_ = std::move(grown);
  }
  Node*& slot = buckets_[Hash(node->parent, node->name) & (buckets_.size() - 1)];
  node->hash_next = slot;
  slot = node;
  ++indexed_;
}

void NodeTable::UnindexLocked(Node* node) {
  Node** link = &buckets_[Hash(node->parent, node->name) & (buckets_.size() - 1)];
  while (*link != nullptr && *link != node) link = &(*link)->hash_next;
  if (*link == nullptr) return;
  *link = node->hash_next;
  node->hash_next = nullptr;
  --indexed_;
}

void NodeTable::LinkAllLocked(Node* node) {
  node->all_prev = nullptr;
  node->all_next = all_;
  if (all_ != nullptr) all_->all_prev = node;
  all_ = node;
}

void NodeTable::UnlinkAllLocked(Node* node) {
  if (node->all_prev != nullptr) {
    node->all_prev->all_next = node->all_next;
  } else {
    all_ = node->all_next;
  }
  if (node->all_next != nullptr) node->all_next->all_prev = node->all_prev;
  node->all_prev = node->all_next = nullptr;
}

Node* NodeTable::FindChild(Node* parent, const std::string& name) {
  std::lock_guard lock(mu_);
  Node* child = FindLocked(parent, name);
  if (child != nullptr) child->refs++;
  return child;
}

Node* NodeTable::InsertChild(Node* parent, const std::string& name, NodeState state,
                             uint64_t add_refs, bool* inserted) {
  auto fresh = std::make_unique<Node>(parent, name);
  fresh->state = std::move(state);
  std::lock_guard lock(mu_);
  Node* existing = FindLocked(parent, name);
  if (inserted != nullptr) *inserted = existing == nullptr;
  if (existing != nullptr) {
    existing->refs += add_refs;
    return existing;
  }
  Node* node = fresh.release();
  node->generation = next_generation_++;
  node->refs = add_refs;
  parent->refs++;  // the child's hold on its parent
  IndexLocked(node);
  LinkAllLocked(node);
  return node;
}

void NodeTable::Ref(Node* node, uint64_t n) {
  std::lock_guard lock(mu_);
  node->refs += n;
}

void NodeTable::UnrefLocked(Node* node, uint64_t n, std::vector<Node*>* dead) {
  while (node != nullptr) {
    node->refs = node->refs >= n ? node->refs - n : 0;
    if (node->refs != 0 || node == root_) return;
    Node* parent = node->parent;
    if (parent != nullptr) UnindexLocked(node);
    // Children hold a ref on their parent, so a node reaching zero has none.
    UnlinkAllLocked(node);
    dead->push_back(node);
    node = parent;
    n = 1;
  }
}

void NodeTable::Unref(Node* node, uint64_t n) {
  std::vector<Node*> dead;
  {
    std::lock_guard lock(mu_);
    UnrefLocked(node, n, &dead);
  }
  for (Node* d : dead) delete d;  // closes fds outside the lock
}

std::pair<Node*, std::string> NodeTable::ParentAndName(Node* node) {
  std::lock_guard lock(mu_);
  if (node->parent != nullptr) node->parent->refs++;
  return {node->parent, node->name};
}

void NodeTable::DetachLocked(Node* parent, const std::string& name, std::vector<Node*>* drop) {
  Node* child = FindLocked(parent, name);
  if (child == nullptr) return;
  UnindexLocked(child);
  child->unlinked = true;
  child->parent = nullptr;
  drop->push_back(parent);  // the child's hold on the parent
}

void NodeTable::Detach(Node* parent, const std::string& name) {
  std::vector<Node*> dead;
  {
    std::lock_guard lock(mu_);
    std::vector<Node*> drop;
    DetachLocked(parent, name, &drop);
    for (Node* p : drop) UnrefLocked(p, 1, &dead);
  }
  for (Node* d : dead) delete d;
}

void NodeTable::Move(Node* old_parent, const std::string& old_name, Node* new_parent,
                     const std::string& new_name) {
  std::vector<Node*> dead;
  {
    std::lock_guard lock(mu_);
    std::vector<Node*> drop;
    if (old_parent == new_parent && old_name == new_name) return;
    DetachLocked(new_parent, new_name, &drop);
    if (Node* node = FindLocked(old_parent, old_name)) {
      UnindexLocked(node);
      node->name = new_name;
      node->parent = new_parent;
      new_parent->refs++;
      drop.push_back(old_parent);
      IndexLocked(node);
    }
    for (Node* p : drop) UnrefLocked(p, 1, &dead);
  }
  for (Node* d : dead) delete d;
}

void NodeTable::Exchange(Node* parent_a, const std::string& name_a, Node* parent_b,
                         const std::string& name_b) {
  std::lock_guard lock(mu_);
  if (parent_a == parent_b && name_a == name_b) return;
  Node* a = FindLocked(parent_a, name_a);
  Node* b = FindLocked(parent_b, name_b);
  if (a != nullptr) UnindexLocked(a);
  if (b != nullptr) UnindexLocked(b);
  if (a != nullptr) {
    a->name = name_b;
    a->parent = parent_b;
    parent_b->refs++;
    parent_a->refs--;  // parent_a keeps >= 1 (its own holders); never reaches 0 here
    IndexLocked(a);
  }
  if (b != nullptr) {
    b->name = name_a;
    b->parent = parent_a;
    parent_a->refs++;
    parent_b->refs--;
    IndexLocked(b);
  }
}

std::vector<Node*> NodeTable::WithOrigin(dev_t dev, ino_t ino) {
  std::vector<Node*> all;
  {
    std::lock_guard lock(mu_);
    for (Node* node = all_; node != nullptr; node = node->all_next) {
      node->refs++;
      all.push_back(node);
    }
  }
  std::vector<Node*> out;
  for (Node* node : all) {
    NodeState s = node->Snapshot();
    if (s.origin_dev == dev && s.origin_ino == ino && !S_ISDIR(s.type)) {
      out.push_back(node);
    } else {
      Unref(node);
    }
  }
  return out;
}

}  // namespace lamina::fuse
