// Layer lookup: how one name resolves through the layers (overlayfs rules),
// and the stat the union reports for a node.

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <charconv>
#include <cstring>

#include "common/fs.h"
#include "common/path.h"
#include "drivers/format.h"
#include "fuse/union_fs_impl.h"

namespace lamina::fuse {

namespace {

// What the union format says about one directory.
struct DirMarks {
  bool opaque = false;
  std::optional<std::string> redirect;
};

bool HasWhiteoutFile(int dirfd, const std::string& name) {
  std::string marker = std::string(kWhiteoutPrefix) + name;
  struct stat st;
  return ::fstatat(dirfd, marker.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
}

DirMarks ReadDirMarks(int dir_opath) {
  DirMarks marks;
  std::string path = ProcFdPath(dir_opath);
  char names[4096];
  ssize_t n = ::listxattr(path.c_str(), names, sizeof(names));
  if (n > 0) {
    for (ssize_t i = 0; i < n;) {
      std::string_view xname(names + i);
      i += static_cast<ssize_t>(xname.size()) + 1;
      bool is_opaque = xname == "trusted.overlay.opaque" || xname == "user.overlay.opaque" ||
                       xname == kFuseOverlayfsOpaqueXattr;
      bool is_redirect = xname == "trusted.overlay.redirect" || xname == "user.overlay.redirect";
      if (!is_opaque && !is_redirect) continue;
      char value[4096];
      ssize_t len = ::getxattr(path.c_str(), std::string(xname).c_str(), value, sizeof(value));
      if (len <= 0) continue;
      if (is_opaque && value[0] == 'y') marks.opaque = true;
      if (is_redirect) marks.redirect = std::string(value, static_cast<size_t>(len));
    }
  } else if (n < 0 && errno == ERANGE) {
    // Too many xattrs to list in one go: ask for the ones we know.
    char value[4096];
    for (const char* x :
         {"trusted.overlay.opaque", "user.overlay.opaque", "user.fuseoverlayfs.opaque"}) {
      if (::getxattr(path.c_str(), x, value, sizeof(value)) == 1 && value[0] == 'y') {
        marks.opaque = true;
      }
    }
    for (const char* x : {"trusted.overlay.redirect", "user.overlay.redirect"}) {
      ssize_t len = ::getxattr(path.c_str(), x, value, sizeof(value));
      if (len > 0) marks.redirect = std::string(value, static_cast<size_t>(len));
    }
  }
  if (!marks.opaque) {
    struct stat st;
    if (::fstatat(dir_opath, std::string(kOpaqueWhiteout).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
      marks.opaque = true;
    }
  }
  return marks;
}

bool ParseOrigin(std::string_view value, dev_t* dev, ino_t* ino) {
  auto colon = value.find(':');
  if (colon == std::string_view::npos) return false;
  uint64_t d = 0, i = 0;
  auto r1 = std::from_chars(value.data(), value.data() + colon, d);
  auto r2 = std::from_chars(value.data() + colon + 1, value.data() + value.size(), i);
  if (r1.ec != std::errc() || r2.ec != std::errc()) return false;
  *dev = static_cast<dev_t>(d);
  *ino = static_cast<ino_t>(i);
  return true;
}

}  // namespace

Result<NodeState> UnionFsImpl::Resolve(const NodeState& parent, const std::string& name,
                                       struct stat* top_st) {
  if (name.size() > NAME_MAX) return Fail(ENAMETOOLONG);
  if (name.starts_with(kWhiteoutPrefix)) return Fail(ENOENT);
  NodeState out;
  DirInfo dir;  // out.dir, for a directory
  bool found = false;
  std::optional<std::string> redirect;  // lower path for the layers below
  int next_layer = 0;                   // first layer a redirect applies to

  auto add_dir = [&](int layer, SharedFd fd) -> bool {  // false: stop descending
    dir.stack.push_back({layer, fd});
    DirMarks marks = ReadDirMarks(fd->get());
    if (marks.redirect) {
      const std::string& r = *marks.redirect;
      std::string base =
          r.starts_with("/") ? r.substr(1) : JoinPath(SplitParent(dir.lower_path).first, r);
      redirect = base;
      dir.lower_path = base;
      next_layer = layer + 1;
    }
    return !marks.opaque;
  };

  // An upper object is opened (O_PATH) and then stat'ed through the fd, so
  // that the stat (the one the reply needs) is of the object the fd holds.
  // A lower one is stat'ed by its name, and opened only when it is a
  // directory: lower layers do not change, and a lower file keeps no fd
  // (NodeState::fd), so one syscall for the object that is there.
  struct stat st;
  const std::vector<DirLayer>& pstack = parent.stack();
  for (const DirLayer& dl : pstack) {
    bool upper = layers_[static_cast<size_t>(dl.layer)].upper;
    SharedFd fd;
    int err = 0;
    if (upper) {
      auto opened = OpenPathAt(dl.fd->get(), name);
      if (!opened) {
        err = opened.error().code();
      } else {
        fd = std::move(*opened);
        if (::fstatat(fd->get(), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) err = errno;
      }
    } else if (::fstatat(dl.fd->get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      err = errno;
    }
    if (err != 0) {
      if (err != ENOENT) return Fail(err, "lookup " + name);
      // A .wh.NAME in the bottom directory would hide nothing.
      if (&dl != &pstack.back() && HasWhiteoutFile(dl.fd->get(), name)) break;
      continue;
    }
    if (IsWhiteoutStat(st)) break;
    if (S_ISDIR(st.st_mode) && !fd) fd = LAMINA_TRY(OpenPathAt(dl.fd->get(), name));
    if (!found) {
      found = true;
      if (top_st != nullptr) *top_st = st;
      out.type = st.st_mode & S_IFMT;
      out.layer = dl.layer;
      out.upper = upper;
      out.fd = std::move(fd);
      out.src_dir = dl.fd;
      out.src_name = name;
      out.origin_dev = st.st_dev;
      out.origin_ino = st.st_ino;
      out.lower_nlink = static_cast<uint32_t>(st.st_nlink);
      if (!S_ISDIR(st.st_mode)) break;
      dir.lower_path = JoinPath(parent.lower_path(), name);
      if (!add_dir(dl.layer, out.fd) || redirect) break;
      continue;
    }
    if (!S_ISDIR(st.st_mode)) break;
    if (!add_dir(dl.layer, std::move(fd)) || redirect) break;
  }
  if (!found) return Fail(ENOENT);

  // Below a redirect, lower content comes from the redirect path.
  while (redirect && next_layer < layer_count()) {
    std::string path = *redirect;
    redirect.reset();
    for (int i = next_layer; i < layer_count(); ++i) {
      const Layer& l = layers_[static_cast<size_t>(i)];
      if (l.upper) continue;
      auto fd = path.empty()
                    ? Dup(l.fd.get())
                    : OpenAt2(l.fd.get(), path, O_PATH | O_NOFOLLOW, 0,
                              RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
      if (!fd) {
        if (fd.error().code() == ENOENT || fd.error().code() == ENOTDIR) continue;
        return Fail(fd.error());
      }
      if (::fstat(fd->get(), &st) != 0) return FailErrno();
      if (!S_ISDIR(st.st_mode)) break;
      next_layer = i + 1;
      if (!add_dir(i, std::make_shared<const Fd>(std::move(*fd)))) break;
      if (redirect) break;  // a redirect in a lower layer: follow it
    }
  }
  for (const DirLayer& dl : dir.stack) {
    if (!layers_[static_cast<size_t>(dl.layer)].upper) out.has_lower = true;
  }
  if (S_ISDIR(out.type)) out.dir = std::make_shared<const DirInfo>(std::move(dir));

  // Identity.
  if (out.upper) {
    char value[128];
    std::string path = AtPath(out.src_dir->get(), name);
    ssize_t n = ::lgetxattr(path.c_str(), OriginXattr().c_str(), value, sizeof(value));
    dev_t dev;
    ino_t ino;
    if (n > 0 && ParseOrigin(std::string_view(value, static_cast<size_t>(n)), &dev, &ino)) {
      out.origin_dev = dev;
      out.origin_ino = ino;
      if (!S_ISDIR(out.type) && out.lower_nlink > 1) {
        struct stat ist;
        std::string index = IndexName(dev, ino);
        if (::fstatat(index_fd(), index.c_str(), &ist, AT_SYMLINK_NOFOLLOW) == 0) {
          out.indexed = true;
        }
      }
    }
  } else if (!S_ISDIR(out.type) && out.lower_nlink > 1 && has_upper_) {
    // A lower hard link whose inode was copied up under another name.
    std::string index = IndexName(out.origin_dev, out.origin_ino);
    auto fd = OpenPathAt(index_fd(), index);
    if (fd) {
      out.fd = *fd;
      out.indexed = true;
    }
  }
  if (!out.upper && !out.indexed && !S_ISDIR(out.type)) out.fd.reset();
  // The reply's stat is the indexed file's (Stat reads it), not the lower name's.
  if (out.indexed && top_st != nullptr) top_st->st_ino = 0;
  out.ino = ComposeIno(out.origin_dev, out.origin_ino);
  return out;
}

Result<bool> UnionFsImpl::LowerHas(const NodeState& parent, const std::string& name) {
  const std::vector<DirLayer>& pstack = parent.stack();
  for (const DirLayer& dl : pstack) {
    if (layers_[static_cast<size_t>(dl.layer)].upper) continue;
    struct stat st;
    if (::fstatat(dl.fd->get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno != ENOENT) return FailErrno();
      if (&dl != &pstack.back() && HasWhiteoutFile(dl.fd->get(), name)) return false;
      continue;
    }
    return !IsWhiteoutStat(st);
  }
  return false;
}

Result<Node*> UnionFsImpl::LookupNode(Node* parent, const std::string& name, uint64_t refs,
                                      struct stat* st) {
  if (st != nullptr) st->st_ino = 0;
  if (name.size() > NAME_MAX) return Fail(ENAMETOOLONG);
  if (Node* existing = table_->FindChild(parent, name)) {
    if (refs != 1) {
      if (refs > 1)
        table_->Ref(existing, refs - 1);
      else
        table_->Unref(existing);
    }
    return existing;
  }
  NodeState pstate = parent->Snapshot();
  if (!S_ISDIR(pstate.type)) return Fail(ENOTDIR);
  struct stat top;
  top.st_ino = 0;
  NodeState state = LAMINA_TRY(Resolve(pstate, name, st != nullptr ? &top : nullptr));
  // Stat() would stat the same object again; only override_stat (an xattr
  // Stat reads) needs it.
  bool reuse = st != nullptr && top.st_ino != 0 && OverrideXattr() == nullptr;
  if (reuse) FixStat(state, false, top);
  bool inserted = false;
  Node* node = table_->InsertChild(parent, name, std::move(state), refs, &inserted);
  if (reuse && inserted) *st = top;  // else another lookup's node won the race
  return node;
}

Result<std::pair<Node*, struct stat>> UnionFsImpl::LookupWithStat(Node* parent,
                                                                  const std::string& name) {
  struct stat st;
  Node* node = LAMINA_TRY(LookupNode(parent, name, 1, &st));
  if (st.st_ino == 0) {
    auto fresh = Stat(node);
    if (!fresh) {
      table_->Unref(node);
      return Fail(fresh.error());
    }
    st = *fresh;
  }
  return std::pair{node, st};
}

void UnionFsImpl::FixStat(const NodeState& s, bool unlinked, struct stat& st) const {
  st.st_ino = s.ino;
  // As the kernel overlay: a merged directory reports 1 rather than counting.
  if (S_ISDIR(s.type) && (config_.static_nlink || s.stack().size() > 1)) st.st_nlink = 1;
  if (unlinked && !s.upper && !S_ISDIR(s.type)) st.st_nlink = 0;
  st.st_uid = ToInnerUid(st.st_uid);
  st.st_gid = ToInnerGid(st.st_gid);
  if (config_.squash_to_root) {
    st.st_uid = 0;
    st.st_gid = 0;
  }
  if (config_.squash_to_uid >= 0) st.st_uid = static_cast<uid_t>(config_.squash_to_uid);
  if (config_.squash_to_gid >= 0) st.st_gid = static_cast<gid_t>(config_.squash_to_gid);
}

Result<SharedFd> OpenPathAt(int dirfd, const std::string& name) {
  int fd = ::openat(dirfd, name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return FailErrno("open " + name);
  return std::make_shared<const Fd>(fd);
}

Result<SharedFd> UnionFsImpl::ObjectFd(const NodeState& s) const {
  if (s.fd) return s.fd;
  return OpenPathAt(s.src_dir->get(), s.src_name);
}

Result<struct stat> UnionFsImpl::Stat(Node* node) {
  NodeState s = node->Snapshot();
  struct stat st;
  int r = s.fd ? ::fstatat(s.fd->get(), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)
               : ::fstatat(s.src_dir->get(), s.src_name.c_str(), &st, AT_SYMLINK_NOFOLLOW);
  if (r != 0) return FailErrno();
  if (s.indexed) {
    // One link is the index entry; lower names not yet copied up still count.
    char value[32];
    std::string index = ProcFdPath(index_fd()) + "/" + IndexName(s.origin_dev, s.origin_ino);
    ssize_t n = ::lgetxattr(index.c_str(), (OverlayXattrPrefix(ns_) + "lamina.lower").c_str(),
                            value, sizeof(value));
    uint64_t pending = 0;
    if (n > 0) std::from_chars(value, value + n, pending);
    st.st_nlink = st.st_nlink > 0 ? st.st_nlink - 1 + pending : 0;
  }
  if (const char* xname = OverrideXattr()) {
    std::string path = AtPath(s.src_dir->get(), s.src_name);
    char value[128];
    ssize_t n = ::lgetxattr(path.c_str(), xname, value, sizeof(value) - 1);
    if (n > 0) {
      value[n] = '\0';
      unsigned uid, gid, mode;
      if (std::sscanf(value, "%u:%u:%o", &uid, &gid, &mode) == 3) {
        st.st_uid = uid;
        st.st_gid = gid;
        st.st_mode = (st.st_mode & S_IFMT) | (mode & 07777);
      }
    }
  }
  FixStat(s, table_->IsUnlinked(node), st);
  if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) node->multi_link.store(true);
  return st;
}

void UnionFsImpl::FillEntry(Node* node, const struct stat& st, fuse_entry_param& e) const {
  e = fuse_entry_param{};
  e.ino = table_->IdOf(node);
  e.generation = node->generation;
  e.attr = st;
  e.attr_timeout = AttrTimeout(st);
  e.entry_timeout = config_.timeout;
  if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) node->multi_link.store(true);
}

}  // namespace lamina::fuse
