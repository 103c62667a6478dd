#!/usr/bin/env bash
# Container start-to-finish time: `lamina run busybox true` on each usable
# driver (N runs, median), beside `crun run` of the same busybox rootfs.
#
#   bench/run_start.sh [LAMINA_BINARY] [RUNS]
#
# Run as root. Each driver gets its own store in a temporary directory; the
# first run (which builds the busybox image) is not counted.
set -euo pipefail

LAMINA=${1:-$(dirname "$0")/../build-ci/cli/lamina}
RUNS=${2:-10}
WORK=$(mktemp -d /var/tmp/lamina-bench-run-XXXXXX)
cleanup() {
  for d in "$WORK"/store-*; do
    [ -d "$d" ] && "$LAMINA" --root "$d" ps >/dev/null 2>&1 || true
  done
  grep -o " $WORK[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# Times one command RUNS times; prints the median in milliseconds.
time_runs() {
  local t
  for _ in $(seq "$RUNS"); do
    local start end
    start=$(now)
    "$@" >/dev/null
    end=$(now)
    echo "($end - $start) * 1000" | bc -l
  done | median | xargs printf '%.1f'
}

printf '%-22s %10s\n' "runtime" "median ms"
for driver in overlay vfs fuse; do
  root="$WORK/store-$driver"
  if ! "$LAMINA" --root "$root" --driver "$driver" run busybox true >/dev/null 2>"$WORK/err"; then
    printf '%-22s %10s  (%s)\n' "lamina $driver" "-" "$(tail -1 "$WORK/err")"
    continue
  fi
  printf '%-22s %10s\n' "lamina $driver" "$(time_runs "$LAMINA" --root "$root" --driver "$driver" run busybox true)"
  # What opening the store (host probe, driver selection) alone costs: as
  # every run after the first of a boot opens it (the driver's verdict
  # kept), and with the driver probed again (its trial mount), as every run
  # did before the verdict was kept.
  printf '%-22s %10s\n' "  of which store open" "$(time_runs "$LAMINA" --root "$root" --driver "$driver" layer ls)"
  printf '%-22s %10s\n' "  store open, probing" \
    "$(time_runs sh -c 'rm -f "$1"/probe-*.json; exec "$2" --root "$1" --driver "$3" layer ls' sh "$root" "$LAMINA" "$driver")"
done

if command -v crun >/dev/null; then
  # The same busybox tree as a plain rootfs, with crun's default spec
  # (cgroups off: on a hybrid cgroup host crun's systemd/cgroupfs managers
  # want the unified hierarchy).
  bundle="$WORK/bundle"
  mkdir -p "$bundle"
  root="$WORK/store-vfs"
  [ -d "$root" ] || root="$WORK/store-overlay"
  layer=$("$LAMINA" --root "$root" layer create --parent "$("$LAMINA" --root "$root" layer ls --json |
      python3 -c 'import json,sys; print([l["id"] for l in json.load(sys.stdin) if not l["writable"]][-1])')" --writable)
  merged=$("$LAMINA" --root "$root" layer mount "$layer")
  cp -a "$merged" "$bundle/rootfs"
  "$LAMINA" --root "$root" layer umount "$layer"
  "$LAMINA" --root "$root" layer rm "$layer"
  (cd "$bundle" && crun spec && sed -i 's/"terminal": true/"terminal": false/; s/"sh"/"true"/' config.json)
  # crun refuses a hybrid host ("cgroups in hybrid mode not supported") even
  # with cgroups disabled; in a mount namespace without the (empty) unified
  # hierarchy it runs. The wrapper's own cost is measured and shown beside it.
  n=0
  crun_once() {
    n=$((n + 1))
    unshare -m sh -c "umount /sys/fs/cgroup/unified 2>/dev/null; exec crun --cgroup-manager=disabled run --bundle '$bundle' bench-$$-$n"
  }
  wrapper_once() { unshare -m sh -c "umount /sys/fs/cgroup/unified 2>/dev/null; exec true"; }
  if crun_once >/dev/null 2>"$WORK/err"; then
    printf '%-22s %10s\n' "crun (no cgroups)" "$(time_runs crun_once)"
    printf '%-22s %10s\n' "  of which unshare+sh" "$(time_runs wrapper_once)"
  else
    printf '%-22s %10s  (%s)\n' "crun" "-" "$(tail -1 "$WORK/err")"
  fi
fi
