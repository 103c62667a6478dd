#!/bin/bash
# lamina-fuse side by side with fuse-overlayfs and the kernel overlay, on the
# same generated layers, for the issue 6 targets (docs/benchmarks.md).
#
# Every workload gets a fresh upper/work and a fresh mount of each driver;
# "cold" ones run after `sync; echo 3 > /proc/sys/vm/drop_caches`. Times are
# the median of $RUNS runs, in seconds (MB/s for read-big).
#
# With COUNT=1 the FUSE daemons run under -d instead and the script prints
# how many requests of each opcode every workload sent (deterministic, unlike
# wall times on a loaded machine); one run each, no kernel overlay.
#
# Needs root. Usage:
#   bench/fuse_perf.sh
# Env: LAMINA_FUSE (default build-ci/fuse/lamina-fuse), BENCH_DIR (/var/tmp),
#      DIRS (100), FILES (100 per dir), CREATE (10000), BIG_MB (0: no big-file
#      workloads; 512 for the targets), RUNS (3), DRIVERS ("lamina
#      fuse-overlayfs overlay"), WORKLOADS (default: all), LAMINA_OPTS (extra
#      -o options for lamina-fuse), COUNT=1.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
LAMINA_FUSE=$(readlink -f "${LAMINA_FUSE:-$HERE/../build-ci/fuse/lamina-fuse}")
BENCH_DIR=${BENCH_DIR:-/var/tmp}
DIRS=${DIRS:-100}
FILES=${FILES:-100}
CREATE=${CREATE:-10000}
BIG_MB=${BIG_MB:-0}
RUNS=${RUNS:-3}
COUNT=${COUNT:-0}
DRIVERS=${DRIVERS:-"lamina fuse-overlayfs overlay"}
RM_DIRS=$(((DIRS + 9) / 10))
META="walk-cold walk-warm lsR-cold lsR-warm create untar rm-rf chmod-R"
DEFAULT_WORKLOADS=$META
[ "$BIG_MB" -gt 0 ] && DEFAULT_WORKLOADS="$META read-big copyup-big"
WORKLOADS=${WORKLOADS:-$DEFAULT_WORKLOADS}
if [ "$COUNT" = 1 ]; then
  DRIVERS=$(echo "$DRIVERS" | tr ' ' '\n' | grep -v '^overlay$' | tr '\n' ' ')
  RUNS=1
fi

[ "$(id -u)" = 0 ] || { echo "fuse_perf.sh: needs root" >&2; exit 2; }
[ -x "$LAMINA_FUSE" ] || { echo "fuse_perf.sh: no lamina-fuse at $LAMINA_FUSE" >&2; exit 2; }

TOP=$(mktemp -d "$BENCH_DIR/lamina-fuse-perf-XXXXXX")
DAEMON_PID=
cleanup() {
  set +e
  awk -v w="$TOP" '$5 == w || index($5, w "/") == 1 { print length($5), $5 }' /proc/self/mountinfo |
    sort -rn | while read -r _ m; do umount "$m" 2>/dev/null || umount -l "$m"; done
  [ -n "$DAEMON_PID" ] && wait "$DAEMON_PID" 2>/dev/null
  [ -n "${LOOPDEV:-}" ] && losetup -d "$LOOPDEV"
  rm -rf "$TOP"
}
trap cleanup EXIT INT TERM

# Everything lives on a fresh ext4 of its own (a loop device), so that one
# run's history (ext4 scanning recently deleted inodes after a big rm) does
# not slow the next one; uppers are never deleted during the run.
WORK=$TOP/fs
mkdir -p "$WORK"
FS_MB=$((2048 + 4 * BIG_MB * (RUNS + 1)))
truncate -s "${FS_MB}M" "$TOP/fs.img"
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$TOP/fs.img"
LOOPDEV=$(losetup -f --show "$TOP/fs.img")
mount "$LOOPDEV" "$WORK"

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
now() { date +%s.%N; }

# ---- the layers ----
LOWER=$WORK/lower
echo "# generating $DIRS dirs x $FILES files${BIG_MB:+, big file $BIG_MB MiB} in $WORK" >&2
mkdir -p "$LOWER"
for ((d = 0; d < DIRS; d++)); do
  mkdir "$LOWER/d$d"
  (cd "$LOWER/d$d" && for ((f = 0; f < FILES; f++)); do printf 'file %d of dir %d\n' $f $d > "f$f"; done)
done
if [ "$BIG_MB" -gt 0 ]; then
  dd if=/dev/urandom of="$LOWER/big" bs=1M count="$BIG_MB" status=none
fi
# A 5 MB archive: 40 dirs x 25 files of 5 KiB.
mkdir -p "$WORK/tarsrc/t"
for ((d = 0; d < 40; d++)); do
  mkdir "$WORK/tarsrc/t/$d"
  for ((f = 0; f < 25; f++)); do head -c 5120 /dev/urandom > "$WORK/tarsrc/t/$d/$f"; done
done
tar -C "$WORK/tarsrc" -cf "$WORK/untar.tar" t
rm -rf "$WORK/tarsrc"

# ---- mounts ----
MNT=$WORK/mnt
mkdir -p "$MNT"
LOG=$WORK/daemon.log

SEQ=0
mount_driver() {  # driver
  SEQ=$((SEQ + 1))
  UPPER=$WORK/upper$SEQ
  mkdir -p "$UPPER" "$WORK/work$SEQ"
  local opts="lowerdir=$LOWER,upperdir=$UPPER,workdir=$WORK/work$SEQ"
  local debug=()
  [ "$COUNT" = 1 ] && debug=(-d)
  DAEMON_PID=
  case $1 in
    overlay) mount -t overlay overlay -o "$opts" "$MNT"; return ;;
    lamina) "$LAMINA_FUSE" -f "${debug[@]}" -o "$opts${LAMINA_OPTS:+,$LAMINA_OPTS}" "$MNT" 2>>"$LOG" & ;;
    fuse-overlayfs) fuse-overlayfs -f "${debug[@]}" -o "$opts" "$MNT" 2>>"$LOG" & ;;
    *) echo "unknown driver $1" >&2; exit 2 ;;
  esac
  DAEMON_PID=$!
  for ((i = 0; i < 500; i++)); do
    mountpoint -q "$MNT" && return
    kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$LOG" >&2; exit 1; }
    sleep 0.01
  done
  echo "fuse_perf.sh: $1 did not mount" >&2
  exit 1
}

unmount_driver() {
  umount "$MNT" 2>/dev/null || umount -l "$MNT"
  if [ -n "$DAEMON_PID" ]; then wait "$DAEMON_PID" 2>/dev/null || true; fi
  DAEMON_PID=
}

rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$DAEMON_PID/status"; }
# CPU time of the daemon's threads so far, in ms (0 for the kernel overlay).
cpu_ms() {
  if [ -z "$DAEMON_PID" ]; then echo 0; return; fi
  cat /proc/"$DAEMON_PID"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f", s / 1e6 }'
}

# ---- workloads: prepare (untimed), then run (timed) ----
prepare() {
  case $1 in
    *-cold | read-big) drop_caches ;;
    walk-warm) find "$MNT" > /dev/null ;;
    lsR-warm) ls -lR "$MNT" > /dev/null ;;
    rm-rf | chmod-R) ;;
  esac
}
run() {
  case $1 in
    walk-cold | walk-warm) find "$MNT" > /dev/null ;;
    lsR-cold | lsR-warm) ls -lR "$MNT" > /dev/null ;;
    create) mkdir "$MNT/new" && (cd "$MNT/new" && seq -f 'n%g' 1 "$CREATE" | xargs touch) ;;
    untar) tar -C "$MNT" -xf "$WORK/untar.tar" ;;
    rm-rf) for ((d = 0; d < RM_DIRS; d++)); do rm -rf "$MNT/d$d"; done ;;
    chmod-R) for ((d = RM_DIRS; d < 2 * RM_DIRS; d++)); do chmod -R g+w "$MNT/d$d"; done ;;
    read-big) dd if="$MNT/big" of=/dev/null bs=1M status=none ;;
    copyup-big) printf x >> "$MNT/big" ;;
  esac
}

# Request counts of one daemon log, "OPCODE:N ..." sorted by count.
count_ops() {
  grep -ao 'opcode: [A-Z_]*' "$LOG" | awk '{ n[$2]++ } END { for (o in n) print n[o], o }' |
    sort -rn | awk '{ printf "%s:%s ", $2, $1 } END { print "" }'
}

declare -A RESULT MIN CPU
RSS_LINE=""
for w in $WORKLOADS; do
  for drv in $DRIVERS; do
    if [ "$drv" = fuse-overlayfs ] && ! command -v fuse-overlayfs > /dev/null; then continue; fi
    times=()
    cpus=()
    for ((r = 0; r < RUNS; r++)); do
      mount_driver "$drv"
      prepare "$w"
      [ "$COUNT" = 1 ] && : > "$LOG"
      c0=$(cpu_ms)
      t0=$(now)
      run "$w"
      t1=$(now)
      c1=$(cpu_ms)
      cpus+=($((c1 - c0)))
      if [ "$COUNT" = 1 ]; then
        sync
        printf '%-12s %-15s %s\n' "$w" "$drv" "$(count_ops)"
      fi
      if [ "$w" = lsR-cold ] && [ -n "$DAEMON_PID" ] && [ "$r" = 0 ]; then
        RSS_LINE+="$drv $(rss_kib) KiB; "
      fi
      unmount_driver
      # The big file's copy-up is half a GiB per run: the only upper removed.
      [ "$w" = copyup-big ] && rm -rf "$UPPER"
      if [ "$w" = read-big ]; then
        times+=("$(echo "$BIG_MB / ($t1 - $t0)" | bc -l)")
      else
        times+=("$(echo "$t1 - $t0" | bc -l)")
      fi
    done
    RESULT[$w,$drv]=$(printf '%s\n' "${times[@]}" | median)
    MIN[$w,$drv]=$(printf '%s\n' "${times[@]}" | sort -n | head -1)
    CPU[$w,$drv]=$(printf '%s\n' "${cpus[@]}" | median)
  done
done
[ "$COUNT" = 1 ] && exit 0

echo
echo "# $(uname -r), $DIRS dirs x $FILES files, create $CREATE, rm-rf/chmod-R of $RM_DIRS dirs, median of $RUNS"
printf '%-12s' workload
for drv in $DRIVERS; do printf ' %14s' "$drv"; done
echo
for w in $WORKLOADS; do
  printf '%-12s' "$w"
  for drv in $DRIVERS; do printf ' %14.3f' "${RESULT[$w,$drv]:-0}"; done
  printf '   min:'
  for drv in $DRIVERS; do printf ' %.3f' "${MIN[$w,$drv]:-0}"; done
  printf '   daemon cpu ms:'
  for drv in $DRIVERS; do printf ' %s' "${CPU[$w,$drv]:-0}"; done
  echo
done
# Geometric mean of the metadata workloads, and ratios.
printf '%-12s' geomean-meta
for drv in $DRIVERS; do
  g=$(for w in $META; do v=${RESULT[$w,$drv]:-}; [ -n "$v" ] && echo "$v"; done |
      awk '{ s += log($1); n++ } END { if (n) printf "%.3f", exp(s / n); else print 0 }')
  RESULT[geo,$drv]=$g
  printf ' %14.3f' "$g"
done
echo
[ -n "$RSS_LINE" ] && echo "daemon RSS after ls -lR (cold): $RSS_LINE"
if [ -n "${RESULT[geo,lamina]:-}" ]; then
  for drv in $DRIVERS; do
    [ "$drv" = lamina ] && continue
    echo "lamina geomean vs $drv: $(echo "${RESULT[geo,$drv]} / ${RESULT[geo,lamina]}" | bc -l | cut -c1-5)x faster"
  done
fi
