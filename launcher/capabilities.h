#pragma once

// The container's privileges: the OCI/Docker default capability set and
// nothing more (bounding set dropped to it, ambient set cleared), and
// no_new_privs. Called in the container's process just before execve.

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"

namespace lamina::launcher {

// CAP_CHOWN, DAC_OVERRIDE, FSETID, FOWNER, MKNOD, NET_RAW, SETGID, SETUID,
// SETFCAP, SETPCAP, NET_BIND_SERVICE, SYS_CHROOT, KILL, AUDIT_WRITE.
const std::vector<int>& DefaultCapabilities();
// Bit mask of DefaultCapabilities() (bit n = capability n).
uint64_t DefaultCapabilityMask();

// Drops every capability outside the default set from the bounding set
// (PR_CAPBSET_DROP), clears the ambient set. Needs CAP_SETPCAP (the
// container's process still has it here).
Result<void> DropBoundingSet();

// Sets permitted and effective to the default set (inheritable empty) (call after
// the uid change for root, or before it: a change to a non-zero uid clears
// them as usual), then no_new_privs.
Result<void> SetCapabilities();

// The highest capability the kernel knows (/proc/sys/kernel/cap_last_cap).
int LastCapability();

}  // namespace lamina::launcher
