#include "tests/support/conformance_stack.h"

#include <sys/mman.h>
#include <unistd.h>

#include "drivers/select/registry.h"

namespace lamina::test {

Result<Fd> TarFd(const std::string& bytes) {
  int raw = ::memfd_create("lamina-conformance-tar", MFD_CLOEXEC);
  if (raw < 0) return FailErrno("memfd_create");
  Fd fd(raw);
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return FailErrno("write tar");
    done += static_cast<size_t>(n);
  }
  if (::lseek(fd.get(), 0, SEEK_SET) != 0) return FailErrno("lseek tar");
  return fd;
}

MountedStack::~MountedStack() {
  if (driver_ && !root_.empty()) (void)driver_->Unmount("ctr");
}

Result<MountedStack> MountedStack::Build(const std::string& name, const std::string& home,
                                         XattrNamespace ns,
                                         const std::vector<LayerContent>& layers) {
  DriverConfig config;
  config.home = home;
  config.xattr_ns = ns;
  MountedStack stack;
  stack.driver_ = LAMINA_TRY(MakeDriver(name, config));
  std::string parent;
  for (size_t i = 0; i < layers.size(); ++i) {
    std::string id = "layer" + std::to_string(i + 1);
    LAMINA_CHECK(stack.driver_->Create(id, parent, {}));
    TarBuilder tar;
    layers[i](tar);
    Fd fd = LAMINA_TRY(TarFd(tar.Finish()));
    auto applied = stack.driver_->ApplyDiff(id, fd.get());
    if (!applied) return Fail(applied.error());
    parent = id;
  }
  LAMINA_CHECK(stack.driver_->Create("ctr", parent, {.writable = true}));
  stack.root_ = LAMINA_TRY(stack.driver_->Mount("ctr", {}));
  return stack;
}

}  // namespace lamina::test
