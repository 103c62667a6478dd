#!/bin/bash
# Times vfs layer creation (lamina-vfs-bench create) against `cp -a` of the
# same generated tree, on ext4 (a directory under $BENCH_DIR, default
# /var/tmp) and on an xfs loop filesystem made with reflink=1.
#
# Tree: $FILES files (default 50,000) in $DIRS directories (default 1,000),
# about $TOTAL_MB MB (default 800): most files 0-16 KiB, one in a hundred
# large (~800 KiB average), plus a few symlinks and hard links.
#
# Every timed run starts with `sync; echo 3 > /proc/sys/vm/drop_caches`;
# each is run $RUNS times (default 3); the medians are printed.
#
# Needs root (drop_caches, loop mount). Usage:
#   bench/vfs_create.sh [path/to/lamina-vfs-bench]
# Env: BENCH_DIR, RUNS, FILES, DIRS, TOTAL_MB, XFS_MB (loop image size, default 4096),
#      SKIP_XFS=1, SKIP_EXT4=1, NEVER_REFLINK=0 to skip the `cp -a --reflink=never` baseline.
set -euo pipefail

BENCH_BIN=${1:-$(dirname "$0")/../build/vfs/lamina-vfs-bench}
BENCH_DIR=${BENCH_DIR:-/var/tmp}
RUNS=${RUNS:-3}
FILES=${FILES:-50000}
DIRS=${DIRS:-1000}
TOTAL_MB=${TOTAL_MB:-800}
XFS_MB=${XFS_MB:-4096}
NEVER_REFLINK=${NEVER_REFLINK:-1}

[ "$(id -u)" = 0 ] || { echo "vfs_create.sh: needs root (drop_caches, loop mount)" >&2; exit 2; }
[ -x "$BENCH_BIN" ] || { echo "vfs_create.sh: no benchmark binary at $BENCH_BIN" >&2; exit 2; }
BENCH_BIN=$(readlink -f "$BENCH_BIN")

WORK=$(mktemp -d "$BENCH_DIR/lamina-vfs-bench-XXXXXX")
LOOPDEV=""
MNT=""
cleanup() {
  set +e
  if [ -n "$MNT" ] && mountpoint -q "$MNT"; then umount "$MNT" || umount -l "$MNT"; fi
  if [ -n "$LOOPDEV" ]; then losetup -d "$LOOPDEV" 2>/dev/null; fi
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# gen DIR: writes the tree into DIR (which exists).
gen() {
  python3 - "$1" "$FILES" "$DIRS" "$TOTAL_MB" <<'PY'
import os, random, sys
root, files, dirs, total_mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(42)
pool = rnd.randbytes(8 << 20)
dir_paths = []
for i in range(dirs):
    depth = rnd.randint(1, 4)
    parent = rnd.choice(dir_paths) if dir_paths and depth > 1 else ""
    p = os.path.join(parent, "d%04d" % i) if parent else "d%04d" % i
    os.makedirs(os.path.join(root, p), exist_ok=True)
    dir_paths.append(p)
large = files // 100
small = files - large
small_avg = 8 << 10
large_avg = max(0, ((total_mb << 20) - small * small_avg) // max(1, large))
made = []
for i in range(files):
    size = rnd.randint(0, 2 * small_avg) if i >= large else rnd.randint(large_avg // 2, large_avg * 3 // 2)
    off = rnd.randint(0, len(pool) - 1)
    data = (pool[off:] + pool[:off])[:size] if size > len(pool) - off else pool[off:off + size]
    while len(data) < size:
        data += pool[: size - len(data)]
    path = os.path.join(root, rnd.choice(dir_paths), "f%05d" % i)
    with open(path, "wb") as f:
        f.write(data)
    made.append(path)
extra = min(200, files // 4)
for i in range(extra):
    os.symlink(os.path.relpath(made[i], os.path.dirname(made[i + extra])),
               os.path.join(os.path.dirname(made[i + extra]), "l%03d" % i))
for i in range(extra):
    os.link(made[2 * extra + i], made[2 * extra + i] + ".hl")
PY
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }

timed() {  # prints the wall seconds of "$@"
  local start end
  start=$(date +%s.%N)
  "$@" >/dev/null
  end=$(date +%s.%N)
  echo "$start $end" | awk '{printf "%.3f\n", $2-$1}'
}

# bench_on NAME BASEDIR
bench_on() {
  local name=$1 base=$2
  local home=$base/home
  mkdir -p "$home"
  local src
  src=$("$BENCH_BIN" init "$home" base)
  echo "[$name] generating $FILES files in $DIRS dirs (~$TOTAL_MB MB) in $src ..."
  gen "$src"
  echo "[$name] tree: $(du -sm "$src" | cut -f1) MB, $(find "$src" -type f | wc -l) files"
  local cp_times=() vfs_times=() never_times=()
  for i in $(seq "$RUNS"); do
    drop_caches
    cp_times+=("$(timed cp -a "$src" "$base/cp-copy")")
    rm -rf "$base/cp-copy"
    drop_caches
    vfs_times+=("$("$BENCH_BIN" create "$home" base "layer$i")")
    "$BENCH_BIN" remove "$home" "layer$i"
    if [ "$name" = xfs-reflink ] && [ "$NEVER_REFLINK" = 1 ]; then
      drop_caches
      never_times+=("$(timed cp -a --reflink=never "$src" "$base/cp-copy")")
      rm -rf "$base/cp-copy"
    fi
    echo "[$name] run $i: cp -a ${cp_times[-1]} s, vfs create ${vfs_times[-1]} s${never_times:+, cp -a --reflink=never ${never_times[-1]} s}"
  done
  local cp_med vfs_med
  cp_med=$(printf '%s\n' "${cp_times[@]}" | median)
  vfs_med=$(printf '%s\n' "${vfs_times[@]}" | median)
  printf '%-12s cp -a median %8.3f s   vfs create median %8.3f s   cp/vfs %6.2fx\n' \
    "$name" "$cp_med" "$vfs_med" "$(echo "$cp_med $vfs_med" | awk '{print $1/$2}')" | tee -a "$WORK/summary"
  if [ ${#never_times[@]} -gt 0 ]; then
    local never_med
    never_med=$(printf '%s\n' "${never_times[@]}" | median)
    printf '%-12s cp -a --reflink=never median %8.3f s   cp-never/vfs %6.2fx\n' \
      "$name" "$never_med" "$(echo "$never_med $vfs_med" | awk '{print $1/$2}')" | tee -a "$WORK/summary"
  fi
}

echo "lamina vfs create benchmark: $(uname -r), $(nproc) CPUs, cp $(cp --version | head -1 | awk '{print $NF}')"
if [ "${SKIP_EXT4:-0}" != 1 ]; then
  mkdir -p "$WORK/ext4"
  echo "[ext4] on $(df -T "$WORK" | awk 'NR==2 {print $2}') at $WORK/ext4"
  bench_on ext4 "$WORK/ext4"
  rm -rf "$WORK/ext4"
fi
if [ "${SKIP_XFS:-0}" != 1 ]; then
  truncate -s "${XFS_MB}M" "$WORK/xfs.img"
  mkfs.xfs -q -f -m reflink=1 "$WORK/xfs.img"
  LOOPDEV=$(losetup --find --show "$WORK/xfs.img")
  MNT=$WORK/xfs
  mkdir -p "$MNT"
  mount -t xfs "$LOOPDEV" "$MNT"
  bench_on xfs-reflink "$MNT"
fi
echo "== summary =="
cat "$WORK/summary"
