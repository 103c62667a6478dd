#include "tests/support/loop_fs.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/fd.h"
#include "common/fs.h"

namespace lamina::test {
namespace {

// Runs argv; on failure returns "argv[0]: exit N: <stderr>".
std::string RunOrReason(const std::vector<std::string>& argv, std::string* out = nullptr) {
  std::string captured, err;
  auto status = RunCommand(argv, &captured, &err);
  if (out != nullptr) *out = captured;
  if (!status) return argv[0] + ": " + status.error().message();
  if (*status != 0) {
    while (!err.empty() && err.back() == '\n') err.pop_back();
    return argv[0] + ": exit " + std::to_string(*status) + ": " + err;
  }
  return {};
}

bool InPath(const std::string& tool) {
  for (const char* dir : {"/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin"}) {
    if (::access((std::string(dir) + "/" + tool).c_str(), X_OK) == 0) return true;
  }
  return false;
}

}  // namespace

std::expected<std::unique_ptr<LoopFs>, std::string> LoopFs::Make(const LoopFsOptions& options) {
  if (::geteuid() != 0) return std::unexpected("a loop filesystem needs root (mount, losetup)");
  if (::access("/dev/loop-control", R_OK | W_OK) != 0) {
    return std::unexpected(std::string("no usable /dev/loop-control: ") + std::strerror(errno));
  }
  std::string mkfs = "mkfs." + options.type;
  if (!InPath(mkfs)) return std::unexpected(mkfs + " is not installed");
  if (!InPath("losetup")) return std::unexpected("losetup is not installed");

  std::unique_ptr<LoopFs> fs(new LoopFs());
  fs->type_ = options.type;
  fs->dir_ = std::make_unique<TempDir>("lamina-loopfs");
  if (fs->dir_->path().empty()) return std::unexpected("could not make a temp dir");
  fs->image_ = fs->dir_->Sub("image");
  fs->mount_point_ = fs->dir_->Sub("mnt");

  {
    auto image = Open(fs->image_, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (!image) return std::unexpected(image.error().message());
    if (::ftruncate(image->get(), static_cast<off_t>(options.size_mib << 20)) != 0) {
      return std::unexpected(std::string("truncate image: ") + std::strerror(errno));
    }
  }
  std::vector<std::string> mkfs_argv = {mkfs, "-q"};
  if (options.type == "xfs") {
    mkfs_argv.insert(mkfs_argv.end(), {"-f", "-m", "reflink=1"});
  } else if (options.type.starts_with("ext")) {
    mkfs_argv.push_back("-F");
  }
  mkfs_argv.insert(mkfs_argv.end(), options.mkfs_args.begin(), options.mkfs_args.end());
  mkfs_argv.push_back(fs->image_);
  if (auto why = RunOrReason(mkfs_argv); !why.empty()) return std::unexpected(why);

  // An explicit loop device (rather than `mount -o loop`) so that the
  // destructor knows exactly which device to detach.
  std::string device;
  if (auto why = RunOrReason({"losetup", "--find", "--show", fs->image_}, &device);
      !why.empty()) {
    return std::unexpected("no loop device: " + why);
  }
  while (!device.empty() && (device.back() == '\n' || device.back() == ' ')) device.pop_back();
  fs->device_ = device;

  if (::mkdir(fs->mount_point_.c_str(), 0755) != 0) {
    return std::unexpected(std::string("mkdir mount point: ") + std::strerror(errno));
  }
  std::vector<std::string> mount_argv = {"mount", "-t", options.type};
  if (!options.mount_options.empty()) {
    mount_argv.insert(mount_argv.end(), {"-o", options.mount_options});
  }
  mount_argv.insert(mount_argv.end(), {fs->device_, fs->mount_point_});
  if (auto why = RunOrReason(mount_argv); !why.empty()) return std::unexpected(why);
  fs->mounted_ = true;
  return fs;
}

std::string LoopFs::Release() {
  std::string problems;
  if (mounted_) {
    if (::umount2(mount_point_.c_str(), 0) != 0) {
      int first = errno;
      if (::umount2(mount_point_.c_str(), MNT_DETACH) != 0) {
        problems += "umount " + mount_point_ + ": " + std::strerror(first) + "; ";
      }
    }
    mounted_ = false;
  }
  if (!device_.empty()) {
    // The device may still be busy for a moment after a lazy unmount; the
    // autoclear flag then detaches it once the last user goes.
    std::string why = RunOrReason({"losetup", "-d", device_});
    if (!why.empty()) problems += why + "; ";
    device_.clear();
  }
  dir_.reset();  // removes the image and the mount point
  return problems;
}

LoopFs::~LoopFs() {
  std::string problems = Release();
  if (!problems.empty()) ADD_FAILURE() << "LoopFs cleanup: " << problems;
}

}  // namespace lamina::test
