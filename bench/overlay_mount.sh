#!/bin/bash
# Kernel-overlay driver benchmarks (issue 3):
#  1. mount time of a container layer over stacks of 1, 10, 100 and 500 image
#     layers, with the new mount API (fsopen/fsconfig lowerdir+) and, where it
#     fits in mount(2)'s 4 KiB of options (about 140 layers), the legacy API;
#  2. creating a container layer (Create + first Mount) on a 50,000-file
#     image layer: overlay against vfs (which copies the tree).
#
# Each mount figure is the median of $RUNS mount/unmount cycles (default 20);
# each create figure the median of $CREATE_RUNS runs (default 3), each after
# `sync; echo 3 > /proc/sys/vm/drop_caches`.
#
# Needs root (mounts, drop_caches). Usage:
#   bench/overlay_mount.sh [path/to/lamina-overlay-bench]
# Env: BENCH_DIR (default /var/tmp), RUNS, CREATE_RUNS, FILES (50000), DIRS (1000),
#      LAYERS ("1 10 100 500"), SKIP_CREATE=1, SKIP_VFS=1.
set -euo pipefail

BIN=${1:-$(dirname "$0")/../build/kernel-overlay/lamina-overlay-bench}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
RUNS=${RUNS:-20}
CREATE_RUNS=${CREATE_RUNS:-3}
FILES=${FILES:-50000}
DIRS=${DIRS:-1000}
LAYERS=${LAYERS:-"1 10 100 500"}

[ "$(id -u)" = 0 ] || { echo "overlay_mount.sh: needs root (mounts, drop_caches)" >&2; exit 2; }
[ -x "$BIN" ] || { echo "overlay_mount.sh: no benchmark binary at $BIN (ninja lamina-overlay-bench)" >&2; exit 2; }
BIN=$(readlink -f "$BIN")

WORK=$(mktemp -d "$BENCH_DIR/lamina-overlay-bench-XXXXXX")
cleanup() {
  set +e
  # Deepest mounts first.
  awk -v w="$WORK" '$5 == w || index($5, w "/") == 1 { print length($5), $5 }' /proc/self/mountinfo |
    sort -rn | while read -r _ m; do umount "$m" 2>/dev/null || umount -l "$m"; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

echo "# lamina overlay benchmark, $(uname -r), store on $(stat -f -c %T "$WORK") ($WORK)"
echo
echo "## Mount time of a container layer over N image layers (median of $RUNS, seconds)"
printf '%-8s %-14s %-14s\n' layers new-api legacy-mount2
mkdir -p "$WORK/mount/layers"
for n in $LAYERS; do
  "$BIN" stack overlay "$WORK/mount/layers" "$n"
  top="layer$((n - 1))"
  new=$(LAMINA_OVERLAY_MOUNT_API=new "$BIN" mount overlay "$WORK/mount/layers" "$top" "$RUNS" |
        sed 's/median=\([^ ]*\).*/\1/')
  if legacy_out=$(LAMINA_OVERLAY_MOUNT_API=legacy "$BIN" mount overlay "$WORK/mount/layers" "$top" "$RUNS" 2>&1); then
    legacy=$(sed 's/median=\([^ ]*\).*/\1/' <<<"$legacy_out")
  else
    legacy="refused (E2BIG)"
  fi
  printf '%-8s %-14s %-14s\n' "$n" "$new" "$legacy"
done

[ "${SKIP_CREATE:-0}" = 1 ] && exit 0

echo
echo "## Container layer on a $FILES-file image layer (median of $CREATE_RUNS, seconds, caches dropped)"
mkdir -p "$WORK/ovl" "$WORK/vfs"
base_ovl=$("$BIN" init overlay "$WORK/ovl" base)
# The tree: $FILES files spread over $DIRS directories up to 4 deep, sizes
# 0-4 KiB (a few 256 KiB), fixed seed so every run sees the same tree.
python3 - "$base_ovl" "$FILES" "$DIRS" <<'PY'
import os, random, sys
root, files, dirs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(3)
blob = bytes(rng.getrandbits(8) for _ in range(1 << 18))
made = [""]
for i in range(dirs):
    parent = rng.choice(made) if len(made) < 2 or rng.random() < 0.7 else ""
    if parent.count("/") >= 3:
        parent = ""
    d = os.path.join(parent, "dir%d" % i)
    os.mkdir(os.path.join(root, d))
    made.append(d)
for i in range(files):
    size = (1 << 18) if i % 500 == 0 else rng.randint(0, 4096)
    with open(os.path.join(root, rng.choice(made), "f%d" % i), "wb") as f:
        f.write(blob[:size])
PY
echo "tree: $(du -sh "$base_ovl" | cut -f1), $(find "$base_ovl" -type f | wc -l) files"
printf '%-8s %-10s %-10s %-10s\n' driver create mount total
run_create() {  # driver home
  local times=()
  for i in $(seq "$CREATE_RUNS"); do
    drop_caches
    times+=("$("$BIN" create "$1" "$2" base "ctr$i")")
    "$BIN" remove "$1" "$2" "ctr$i"
  done
  local c m
  c=$(printf '%s\n' "${times[@]}" | sed 's/create=\([^ ]*\).*/\1/' | median)
  m=$(printf '%s\n' "${times[@]}" | sed 's/.*mount=\([^ ]*\).*/\1/' | median)
  printf '%-8s %-10s %-10s %-10s\n' "$1" "$c" "$m" "$(awk -v a="$c" -v b="$m" 'BEGIN { printf "%.4f", a + b }')"
}
run_create overlay "$WORK/ovl"
if [ "${SKIP_VFS:-0}" != 1 ]; then
  base_vfs=$("$BIN" init vfs "$WORK/vfs" base)
  cp -a "$base_ovl/." "$base_vfs/"
  run_create vfs "$WORK/vfs"
fi
