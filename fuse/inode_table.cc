#include "fuse/inode_table.h"

namespace lamina::fuse {

NodeTable::NodeTable(NodeState root_state) {
  root_ = new Node(nullptr, "");
  root_->refs = 1;  // never dropped
  root_->state = std::move(root_state);
  all_[root_] = true;
}

NodeTable::~NodeTable() {
  for (auto& [node, unused] : all_) delete node;
}

Node* NodeTable::FindChild(Node* parent, const std::string& name) {
  std::lock_guard lock(mu_);
  auto it = parent->children.find(name);
  if (it == parent->children.end()) return nullptr;
  it->second->refs++;
  return it->second;
}

Node* NodeTable::InsertChild(Node* parent, const std::string& name, NodeState state,
                             uint64_t add_refs, bool* inserted) {
  auto fresh = std::make_unique<Node>(parent, name);
  fresh->state = std::move(state);
  std::lock_guard lock(mu_);
  auto it = parent->children.find(name);
  if (inserted != nullptr) *inserted = it == parent->children.end();
  if (it != parent->children.end()) {
    it->second->refs += add_refs;
    return it->second;
  }
  Node* node = fresh.release();
  node->generation = next_generation_++;
  node->refs = add_refs;
  parent->refs++;  // the child's hold on its parent
  parent->children.emplace(name, node);
  all_[node] = true;
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
    if (parent != nullptr) {
      auto it = parent->children.find(node->name);
      if (it != parent->children.end() && it->second == node) parent->children.erase(it);
    }
    // Children hold a ref on their parent, so a node reaching zero has none.
    all_.erase(node);
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
  auto it = parent->children.find(name);
  if (it == parent->children.end()) return;
  Node* child = it->second;
  parent->children.erase(it);
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
    auto it = old_parent->children.find(old_name);
    if (it != old_parent->children.end()) {
      Node* node = it->second;
      old_parent->children.erase(it);
      node->name = new_name;
      node->parent = new_parent;
      new_parent->refs++;
      drop.push_back(old_parent);
      new_parent->children.emplace(new_name, node);
    }
    for (Node* p : drop) UnrefLocked(p, 1, &dead);
  }
  for (Node* d : dead) delete d;
}

void NodeTable::Exchange(Node* parent_a, const std::string& name_a, Node* parent_b,
                         const std::string& name_b) {
  std::lock_guard lock(mu_);
  auto ia = parent_a->children.find(name_a);
  auto ib = parent_b->children.find(name_b);
  Node* a = ia != parent_a->children.end() ? ia->second : nullptr;
  Node* b = ib != parent_b->children.end() ? ib->second : nullptr;
  if (a != nullptr) parent_a->children.erase(ia);
  if (b != nullptr) parent_b->children.erase(parent_b->children.find(name_b));
  if (a != nullptr) {
    a->name = name_b;
    a->parent = parent_b;
    parent_b->children.emplace(name_b, a);
    parent_b->refs++;
    parent_a->refs--;  // parent_a keeps >= 1 (its own holders); never reaches 0 here
  }
  if (b != nullptr) {
    b->name = name_a;
    b->parent = parent_a;
    parent_a->children.emplace(name_a, b);
    parent_a->refs++;
    parent_b->refs--;
  }
}

std::vector<Node*> NodeTable::WithOrigin(dev_t dev, ino_t ino) {
  std::vector<Node*> all;
  {
    std::lock_guard lock(mu_);
    all.reserve(all_.size());
    for (auto& [node, unused] : all_) {
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
