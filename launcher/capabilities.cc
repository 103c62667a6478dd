#include "launcher/capabilities.h"

#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>

#include "common/fs.h"

namespace lamina::launcher {

const std::vector<int>& DefaultCapabilities() {
  static const std::vector<int> kCaps = {
      CAP_CHOWN,  CAP_DAC_OVERRIDE, CAP_FSETID,           CAP_FOWNER,     CAP_MKNOD,
      CAP_NET_RAW, CAP_SETGID,      CAP_SETUID,           CAP_SETFCAP,    CAP_SETPCAP,
      CAP_NET_BIND_SERVICE,         CAP_SYS_CHROOT,       CAP_KILL,       CAP_AUDIT_WRITE};
  return kCaps;
}

uint64_t DefaultCapabilityMask() {
  uint64_t mask = 0;
  for (int cap : DefaultCapabilities()) mask |= 1ull << cap;
  return mask;
}

int LastCapability() {
  auto text = ReadFile("/proc/sys/kernel/cap_last_cap");
  if (text) {
    int last = std::atoi(text->c_str());
    if (last > 0 && last < 64) return last;
  }
  return CAP_LAST_CAP;
}

Result<void> DropBoundingSet() {
  uint64_t keep = DefaultCapabilityMask();
  int last = LastCapability();
  for (int cap = 0; cap <= last; ++cap) {
    if (keep & (1ull << cap)) continue;
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) {
      return FailErrno("drop capability " + std::to_string(cap) + " from the bounding set");
    }
  }
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) {
    return FailErrno("clear the ambient capabilities");
  }
  return {};
}

Result<void> SetCapabilities() {
  uint64_t mask = DefaultCapabilityMask();
  struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2] = {};
  // After a change to a non-root uid the permitted set is empty; only what
  // is still permitted can be kept.
  struct __user_cap_data_struct current[2] = {};
  if (::syscall(SYS_capget, &header, current) != 0) return FailErrno("capget");
  uint64_t permitted =
      static_cast<uint64_t>(current[0].permitted) | (static_cast<uint64_t>(current[1].permitted) << 32);
  mask &= permitted;
  // Inheritable stays empty (as runtimes do since CVE-2022-24769): nothing
  // beyond the set can be regained through file capabilities.
  data[0].effective = data[0].permitted = static_cast<uint32_t>(mask);
  data[1].effective = data[1].permitted = static_cast<uint32_t>(mask >> 32);
  header = {_LINUX_CAPABILITY_VERSION_3, 0};
  if (::syscall(SYS_capset, &header, data) != 0) return FailErrno("capset");
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return FailErrno("PR_SET_NO_NEW_PRIVS");
  return {};
}

}  // namespace lamina::launcher
