#include "tests/support/fuse_harness.h"

#include <fuse_lowlevel.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cstring>
#include <fstream>

#include "common/fs.h"
#include "fuse/union_fs.h"

namespace lamina::test {

Result<std::unique_ptr<FuseMount>> FuseMount::Start(const fuse::FsConfig& config) {
  std::unique_ptr<FuseMount> m(new FuseMount());
  m->mountpoint_ = config.mountpoint;
  m->fs_ = LAMINA_TRY(fuse::UnionFs::Create(config));
  std::vector<std::string> argv_s = {"lamina-fuse-test", "-o",
                                     "fsname=lamina-test,subtype=lamina-fuse"};
  if (config.debug) argv_s.push_back("-d");
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  const fuse_lowlevel_ops& ops = m->fs_->Ops();
  m->session_ = fuse_session_new(&args, &ops, sizeof(ops), m->fs_.get());
  if (m->session_ == nullptr) return Fail(EIO, "fuse_session_new");
  m->fs_->AttachSession(m->session_);
  if (fuse_session_mount(m->session_, config.mountpoint.c_str()) != 0) {
    fuse_session_destroy(m->session_);
    m->session_ = nullptr;
    return Fail(EIO, "fuse_session_mount " + config.mountpoint);
  }
  m->mounted_ = true;
  fuse_session* se = m->session_;
  bool threaded = config.threaded;
  m->loop_ = std::thread([se, threaded] {
    if (threaded) {
      fuse_loop_config* cfg = fuse_loop_cfg_create();
      fuse_loop_cfg_set_max_threads(cfg, 16);
      fuse_session_loop_mt(se, cfg);
      fuse_loop_cfg_destroy(cfg);
    } else {
      fuse_session_loop(se);
    }
  });
  return m;
}

void FuseMount::Stop() {
  if (!mounted_) return;
  mounted_ = false;
  fuse_session_exit(session_);
  // Lazy: a file left open by a failing test must not block the cleanup.
  if (::umount2(mountpoint_.c_str(), MNT_DETACH) != 0) fuse_session_unmount(session_);
  if (loop_.joinable()) loop_.join();
  fuse_session_destroy(session_);
  session_ = nullptr;
  fs_.reset();
}

FuseMount::~FuseMount() { Stop(); }

Result<std::unique_ptr<OverlayMount>> OverlayMount::Start(const std::vector<std::string>& lowers,
                                                          const std::string& upper,
                                                          const std::string& work,
                                                          const std::string& mountpoint,
                                                          const std::string& extra) {
  std::string data = "lowerdir=";
  for (size_t i = 0; i < lowers.size(); ++i) {
    if (i != 0) data += ":";
    data += lowers[i];
  }
  if (!upper.empty()) data += ",upperdir=" + upper + ",workdir=" + work;
  if (!extra.empty()) data += "," + extra;
  // With index=on the kernel refuses (EBUSY) an upper or work still in use
  // by an earlier overlay, and a mount namespace made by any process on the
  // host while that overlay was mounted (a container of a parallel test)
  // holds a copy of it until the process drops it: wait for that, bounded.
  int tries = 0;
  while (::mount("overlay", mountpoint.c_str(), "overlay", 0, data.c_str()) != 0) {
    if (errno != EBUSY || ++tries > 200) return FailErrno("mount overlay " + data);
    ::usleep(50'000);
  }
  std::unique_ptr<OverlayMount> m(new OverlayMount());
  m->mountpoint_ = mountpoint;
  return m;
}

OverlayMount::~OverlayMount() {
  // A plain unmount ends the overlay at once, so that the same upper and
  // work can be mounted again right away (index=on refuses them while a
  // lazily detached overlay lingers); lazy only when something is busy.
  if (::umount2(mountpoint_.c_str(), 0) != 0) ::umount2(mountpoint_.c_str(), MNT_DETACH);
}

fuse::FsConfig UnionConfig(std::vector<std::string> lowers, std::string upper, std::string work,
                           std::string mountpoint) {
  fuse::FsConfig c;
  c.lowers = std::move(lowers);
  c.upper = std::move(upper);
  c.work = std::move(work);
  c.mountpoint = std::move(mountpoint);
  c.timeout = 1000000;
  return c;
}

std::string FuseUnavailableReason() {
  if (::access("/dev/fuse", R_OK | W_OK) != 0) return "no usable /dev/fuse";
  if (::geteuid() != 0) return "FUSE mounts in tests need root";
  return "";
}

std::string OverlayUnavailableReason() {
  if (::geteuid() != 0) return "kernel overlay mounts need root";
  std::ifstream fs("/proc/filesystems");
  std::string line;
  while (std::getline(fs, line)) {
    if (line.find("overlay") != std::string::npos) return "";
  }
  return "no overlay in /proc/filesystems";
}

}  // namespace lamina::test
