#!/usr/bin/env bash
# Prepares a machine for lamina's tests (needs root; safe to run twice):
# - the unprivileged account `lamina-test` used by the rootless tests, with
#   /etc/subuid and /etc/subgid ranges for newuidmap/newgidmap;
# - /dev/fuse usable by that account, and user_allow_other in /etc/fuse.conf;
# - the loop driver, for tests on small xfs/ext4 images;
# - unprivileged user namespaces allowed.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TEST_USER=lamina-test

if ! id -u "$TEST_USER" >/dev/null 2>&1; then
  step "creating the test account $TEST_USER"
  as_root useradd --create-home --shell /bin/bash --comment "lamina rootless tests" "$TEST_USER"
fi
for file in /etc/subuid /etc/subgid; do
  as_root touch "$file"
  if ! grep -q "^$TEST_USER:" "$file"; then
    # A range far from other accounts' usual 100000+65536*n ranges.
    echo "$TEST_USER:1000000:65536" | as_root tee -a "$file" >/dev/null
  fi
done

if [ -e /dev/fuse ]; then
  as_root chmod 0666 /dev/fuse
else
  as_root mknod -m 0666 /dev/fuse c 10 229 || echo "lamina: warning: no /dev/fuse; FUSE tests will skip" >&2
fi
if [ -f /etc/fuse.conf ] && ! grep -q '^user_allow_other' /etc/fuse.conf; then
  echo user_allow_other | as_root tee -a /etc/fuse.conf >/dev/null
fi

as_root modprobe loop 2>/dev/null || true
as_root modprobe overlay 2>/dev/null || true
as_root modprobe fuse 2>/dev/null || true

for knob in /proc/sys/kernel/unprivileged_userns_clone /proc/sys/user/max_user_namespaces; do
  if [ -f "$knob" ] && [ "$(cat "$knob")" = "0" ]; then
    case "$knob" in
      *max_user_namespaces) echo 15000 | as_root tee "$knob" >/dev/null ;;
      *) echo 1 | as_root tee "$knob" >/dev/null ;;
    esac
  fi
done
echo "lamina: test environment ready (account $TEST_USER, /dev/fuse, loop, user namespaces)"
