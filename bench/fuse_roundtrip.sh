#!/bin/bash
# The cost of one FUSE round trip: N lgetxattr calls on one file (the daemon
# answers them without touching the disk), through lamina-fuse and
# fuse-overlayfs, and the same through the kernel overlay as the floor.
# Nearly every metadata workload of `lamina bench` is a chain of such round
# trips (docs/benchmarks.md), so this is what bounds its ratio to the
# kernel overlay.
#
# Each daemon is measured as it starts (the scheduler places its threads),
# then with its threads and the caller pinned to one CPU and to two different
# CPUs, which shows what a cross-CPU wake-up costs on the host. The fuse
# module's parameters in force are printed first (wake_here, where the kernel
# has it, changes the answer: see docs/benchmarks.md).
#
# Needs root and a C compiler. Usage:
#   bench/fuse_roundtrip.sh
# Env: LAMINA_FUSE (default build-ci/fuse/lamina-fuse), N (20000 calls),
#      RUNS (3), LAMINA_OPTS (extra -o options for lamina-fuse, e.g. threaded=0).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
LAMINA_FUSE=$(readlink -f "${LAMINA_FUSE:-$HERE/../build-ci/fuse/lamina-fuse}")
N=${N:-20000}
RUNS=${RUNS:-3}

[ "$(id -u)" = 0 ] || { echo "fuse_roundtrip.sh: needs root" >&2; exit 2; }
[ -x "$LAMINA_FUSE" ] || { echo "fuse_roundtrip.sh: no lamina-fuse at $LAMINA_FUSE" >&2; exit 2; }

TOP=$(mktemp -d /var/tmp/lamina-roundtrip-XXXXXX)
cleanup() {
  set +e
  mountpoint -q "$TOP/mnt" && { umount "$TOP/mnt" 2>/dev/null || umount -l "$TOP/mnt"; }
  rm -rf "$TOP"
}
trap cleanup EXIT INT TERM

cat > "$TOP/rt.c" <<'EOF'
#include <stdio.h>
#include <stdlib.h>
#include <sys/xattr.h>
#include <time.h>
int main(int argc, char** argv) {
  int n = atoi(argv[2]);
  char v[64];
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (int i = 0; i < n; i++) lgetxattr(argv[1], "security.selinux", v, sizeof v);
  clock_gettime(CLOCK_MONOTONIC, &b);
  printf("%.1f", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / 1e3 / n);
  return 0;
}
EOF
cc -O2 -o "$TOP/rt" "$TOP/rt.c"
mkdir -p "$TOP/lower" "$TOP/mnt"
echo x > "$TOP/lower/f"

if [ -d /sys/module/fuse/parameters ]; then
  echo -n "# fuse module:"
  for p in /sys/module/fuse/parameters/*; do echo -n " $(basename "$p")=$(cat "$p" 2>/dev/null)"; done
  echo
fi

SEQ=0
mount_driver() {  # driver
  SEQ=$((SEQ + 1))
  mkdir -p "$TOP/upper$SEQ" "$TOP/work$SEQ"
  local opts="lowerdir=$TOP/lower,upperdir=$TOP/upper$SEQ,workdir=$TOP/work$SEQ"
  case $1 in
    overlay) mount -t overlay overlay -o "$opts" "$TOP/mnt" ;;
    lamina-fuse) "$LAMINA_FUSE" -o "$opts${LAMINA_OPTS:+,$LAMINA_OPTS}" "$TOP/mnt" ;;
    fuse-overlayfs) fuse-overlayfs -o "$opts" "$TOP/mnt" 2>/dev/null ;;
  esac
}

# The daemon's pid, for pinning its threads ("" for the kernel overlay).
daemon_pid() {
  awk -v m="$TOP/mnt" '$2 == m { print $3 }' /proc/mounts | grep -q '^fuse' || return 0
  case $1 in
    lamina-fuse) pgrep -n -f "lamina-fuse .*$TOP/mnt" || true ;;
    fuse-overlayfs) pgrep -n -f "fuse-overlayfs .*$TOP/mnt" || true ;;
  esac
}

pin() {  # pid cpu-list
  [ -n "$1" ] || return 0
  for t in /proc/"$1"/task/*; do taskset -p -c "$2" "$(basename "$t")" > /dev/null; done
}

measure() {  # label [taskset cpu for the caller]
  local out=()
  for ((r = 0; r < RUNS; r++)); do
    if [ -n "${2:-}" ]; then
      out+=("$(taskset -c "$2" "$TOP/rt" "$TOP/mnt/f" "$N")")
    else
      out+=("$("$TOP/rt" "$TOP/mnt/f" "$N")")
    fi
  done
  printf '%-16s %-28s %s us\n' "$DRIVER" "$1" "${out[*]}"
}

CPUS=$(nproc)
for DRIVER in overlay lamina-fuse fuse-overlayfs; do
  if [ "$DRIVER" = fuse-overlayfs ] && ! command -v fuse-overlayfs > /dev/null; then
    echo "fuse-overlayfs: not installed"
    continue
  fi
  mount_driver "$DRIVER"
  "$TOP/rt" "$TOP/mnt/f" 1000 > /dev/null  # the daemon starts its threads
  pid=$(daemon_pid "$DRIVER")
  measure "as started"
  if [ -n "$pid" ] && [ "$CPUS" -ge 2 ]; then
    pin "$pid" 0
    measure "daemon+caller on CPU 0" 0
    measure "daemon CPU 0, caller CPU 1" 1
    pin "$pid" "0-$((CPUS - 1))"
  fi
  umount "$TOP/mnt"
done
