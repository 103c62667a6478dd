#include "fuse/union_fs.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>

#include "common/fs.h"
#include "drivers/format.h"
#include "fuse/union_fs_impl.h"

namespace lamina::fuse {

namespace {

constexpr char kProbeXattrSuffix[] = "overlay.lamina-probe";

void Init(void* userdata, fuse_conn_info* conn) {
  auto* fs = static_cast<UnionFsImpl*>(userdata);
  const FsConfig& config = fs->config();
  auto want = [conn](unsigned cap) {
    if ((conn->capable & cap) != 0) conn->want |= cap;
  };
  want(FUSE_CAP_SPLICE_WRITE);
  want(FUSE_CAP_SPLICE_MOVE);
  want(FUSE_CAP_SPLICE_READ);
  want(FUSE_CAP_READDIRPLUS);
  want(FUSE_CAP_PARALLEL_DIROPS);
  want(FUSE_CAP_ASYNC_READ);
  want(FUSE_CAP_CACHE_SYMLINKS);
  // The kernel caches ACLs (negative answers too, so `ls -l` asks for
  // system.posix_acl_access once per file, not on every listing) and
  // enforces them in its permission checks, as on the kernel overlay.
  // Without xattrs the kernel could not read them, so not then.
  if (!config.noacl && !config.noxattrs) want(FUSE_CAP_POSIX_ACL);
  // The umask reaches us unapplied; DoMake creates with the caller's umask
  // so that the backing filesystem ignores it under a default ACL.
  want(FUSE_CAP_DONT_MASK);
  // Our own operations never change content behind the kernel's back, and
  // where they do (hard link copy-up) we invalidate explicitly.
  want(FUSE_CAP_EXPLICIT_INVAL_DATA);
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
  fs->set_no_opendir(UnionFsImpl::kOpendirLess && fs->timeout() > 0 &&
                     (conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT) != 0);
  if (config.writeback) want(FUSE_CAP_WRITEBACK_CACHE);
  conn->want &= ~static_cast<unsigned>(FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS);
  conn->max_write = 1u << 20;
  conn->max_readahead = 1u << 20;
}

}  // namespace

void LogOpError(const char* op, fuse_ino_t ino, const Error& error) {
  switch (error.code()) {
    case ENOENT:
    case EEXIST:
    case ENOTEMPTY:
    case ENODATA:
    case ENAMETOOLONG:
    case EROFS:
    case ENOTSUP:
    case EPERM:
    case EACCES:
    case EXDEV:
    case EISDIR:
    case ENOTDIR:
    case EINVAL:
    case ERANGE:
    case ENOSPC:
    case EDQUOT:
    case ELOOP:
    case EBADF:
      spdlog::debug("{} ino {}: {}", op, ino, error.message());
      return;
    default:
      spdlog::warn("{} ino {}: {}", op, ino, error.message());
  }
}

UnionFsImpl::UnionFsImpl(FsConfig config) : config_(std::move(config)) {}
UnionFsImpl::~UnionFsImpl() = default;

Result<std::unique_ptr<UnionFs>> UnionFs::Create(const FsConfig& config) {
  auto fs = std::make_unique<UnionFsImpl>(config);
  LAMINA_CHECK(fs->Setup());
  return std::unique_ptr<UnionFs>(std::move(fs));
}

Result<void> UnionFsImpl::Setup() {
  if (config_.lowers.empty() && config_.upper.empty()) {
    return Fail(EINVAL, "no layers: need a lowerdir or an upperdir");
  }
  if (!config_.upper.empty() && config_.work.empty()) {
    return Fail(EINVAL, "upperdir " + config_.upper + " needs a workdir");
  }
  if (config_.volatile_mode) config_.fsync = false;
  temp_prefix_ = "#lamina-" + std::to_string(::getpid()) + "-";
  has_upper_ = !config_.upper.empty();
  std::vector<std::string> paths;
  if (has_upper_) paths.push_back(config_.upper);
  paths.insert(paths.end(), config_.lowers.begin(), config_.lowers.end());
  std::vector<dev_t> devs;
  for (size_t i = 0; i < paths.size(); ++i) {
    Layer layer;
    layer.path = paths[i];
    layer.upper = has_upper_ && i == 0;
    auto fd = OpenDirPath(paths[i]);
    if (!fd) return Fail(fd.error().Wrap(layer.upper ? "upperdir" : "lowerdir"));
    layer.fd = std::move(*fd);
    struct stat st;
    if (::fstat(layer.fd.get(), &st) != 0) return FailErrno("stat layer " + paths[i]);
    layer.dev = st.st_dev;
    size_t idx = 0;
    while (idx < devs.size() && devs[idx] != st.st_dev) ++idx;
    if (idx == devs.size()) devs.push_back(st.st_dev);
    layer.fs_index = static_cast<uint32_t>(idx);
    layers_.push_back(std::move(layer));
  }

  no_clone_ = std::make_unique<std::atomic<bool>[]>(layers_.size());
  if (has_upper_) {
    auto work = OpenDirPath(config_.work);
    if (!work) return Fail(work.error().Wrap("workdir"));
    work_ = std::move(*work);
    struct stat wst;
    if (::fstat(work_.get(), &wst) != 0) return FailErrno("stat workdir " + config_.work);
    if (wst.st_dev != layers_[0].dev) {
      return Fail(EXDEV, "workdir " + config_.work + " and upperdir " + config_.upper +
                             " are on different filesystems");
    }
    for (const char* sub : {"work", "index"}) {
      if (::mkdirat(work_.get(), sub, 0700) != 0 && errno != EEXIST) {
        return FailErrno("create " + config_.work + "/" + sub);
      }
    }
    work_work_ = LAMINA_TRY(OpenAt(work_.get(), "work", O_PATH | O_DIRECTORY | O_NOFOLLOW));
    work_index_ = LAMINA_TRY(OpenAt(work_.get(), "index", O_PATH | O_DIRECTORY | O_NOFOLLOW));
    // Leftovers of interrupted copy-ups and renames.
    {
      Fd list = LAMINA_TRY(OpenAt(work_work_.get(), ".", O_RDONLY | O_DIRECTORY));
      auto names = LAMINA_TRY(ListDir(list.get()));
      for (const auto& name : names) {
        auto removed = RemoveTreeAt(work_work_.get(), name);
        if (!removed) return Fail(removed.error().Wrap("clean workdir " + config_.work));
      }
    }
    // Which xattr namespace the union format can use here.
    {
      Fd real = LAMINA_TRY(OpenAt(work_work_.get(), ".", O_RDONLY | O_DIRECTORY));
      std::string probe = std::string("trusted.") + kProbeXattrSuffix;
      if (::fsetxattr(real.get(), probe.c_str(), "y", 1, 0) == 0) {
        ns_ = XattrNamespace::kTrusted;
        ::fremovexattr(real.get(), probe.c_str());
      } else {
        ns_ = XattrNamespace::kUser;
      }
    }
    // Whether whiteouts can be 0/0 devices.
    {
      std::string probe = TempName();
      if (::mknodat(work_work_.get(), probe.c_str(), S_IFCHR | 0, makedev(0, 0)) == 0) {
        chr_whiteouts_ = true;
        ::unlinkat(work_work_.get(), probe.c_str(), 0);
      } else {
        chr_whiteouts_ = false;
      }
    }
  }

  // The root: every layer root, top first, down to the first opaque one.
  NodeState root;
  root.type = S_IFDIR;
  root.layer = 0;
  root.upper = has_upper_;
  DirInfo& dir = root.EditDir();
  for (int i = 0; i < layer_count(); ++i) {
    auto fd = std::make_shared<const Fd>(LAMINA_TRY(Dup(layers_[static_cast<size_t>(i)].fd.get())));
    if (i == 0) root.fd = fd;
    dir.stack.push_back({i, fd});
  }
  root.has_lower = dir.stack.size() > 1;
  struct stat st;
  if (::fstat(layers_.front().fd.get(), &st) != 0) return FailErrno("stat root");
  root.origin_dev = st.st_dev;
  root.origin_ino = st.st_ino;
  root.ino = ComposeIno(st.st_dev, st.st_ino);
  root.src_dir = root.fd;
  root.src_name = ".";
  table_ = std::make_unique<NodeTable>(std::move(root));
  spdlog::debug("lamina-fuse: {} layers, upper {}, xattr namespace {}, {} whiteouts",
                layers_.size(), has_upper_ ? config_.upper : "none", XattrNamespaceName(ns_),
                chr_whiteouts_ ? "device" : "file");
  return {};
}

const fuse_lowlevel_ops& UnionFsImpl::Ops() const {
  static const fuse_lowlevel_ops ops = [] {
    fuse_lowlevel_ops o{};
    o.init = Init;
    FillEntryOps(o);
    FillDirOps(o);
    FillFileOps(o);
    FillLinkOps(o);
    FillXattrOps(o);
    return o;
  }();
  return ops;
}

std::string UnionFsImpl::TempName() {
  return temp_prefix_ + std::to_string(temp_counter_.fetch_add(1));
}

std::string UnionFsImpl::OriginXattr() const { return OverlayXattrPrefix(ns_) + "lamina.origin"; }

std::string UnionFsImpl::IndexName(dev_t dev, ino_t ino) const {
  return std::to_string(static_cast<uint64_t>(dev)) + "-" + std::to_string(ino);
}

uint64_t UnionFsImpl::ComposeIno(dev_t dev, ino_t ino) const {
  uint64_t fs_index = 0;
  for (const auto& l : layers_) {
    if (l.dev == dev) {
      fs_index = l.fs_index;
      break;
    }
  }
  uint64_t value = static_cast<uint64_t>(ino);
  if (fs_index != 0) value ^= fs_index << 48;
  if (config_.ino32) {
    value = (value ^ (value >> 32)) & 0xffffffffu;
    if (value == 0) value = 1;
  }
  return value;
}

static uint32_t MapId(const std::vector<IdMapRange>& map, uint32_t id, bool to_outer) {
  if (map.empty()) return id;
  for (const auto& r : map) {
    uint32_t from = to_outer ? r.inner : r.outer;
    uint32_t to = to_outer ? r.outer : r.inner;
    if (id >= from && id - from < r.count) return to + (id - from);
  }
  return 65534;  // the overflow id
}

uid_t UnionFsImpl::ToOuterUid(uid_t inner) const { return MapId(config_.uid_map, inner, true); }
gid_t UnionFsImpl::ToOuterGid(gid_t inner) const { return MapId(config_.gid_map, inner, true); }
uid_t UnionFsImpl::ToInnerUid(uid_t outer) const { return MapId(config_.uid_map, outer, false); }
gid_t UnionFsImpl::ToInnerGid(gid_t outer) const { return MapId(config_.gid_map, outer, false); }

void UnionFsImpl::NotifyInvalInode(Node* node) {
  if (session_ == nullptr) return;
  fuse_lowlevel_notify_inval_inode(session_, table_->IdOf(node), 0, 0);
}

}  // namespace lamina::fuse
