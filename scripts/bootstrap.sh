#!/usr/bin/env bash
# From a fresh Debian 12 machine to lamina's main job: installs the
# dependencies, builds, and runs it. Run as root (or with sudo).
#
# The main job: `lamina info` (host facts and each driver's verdict), a layer
# round trip on the automatically chosen driver (a base layer applied from a
# tar of busybox, a writable layer on it, a file written through the mount,
# the change exported as an OCI layer tar), and at the end a real container
# from the built-in busybox image on that driver, which shows its hostname,
# its PID 1 and its merged root.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$LAMINA_SRC"
"$LAMINA_SRC/scripts/install-deps.sh"
"$LAMINA_SRC/scripts/build.sh" dev
LAMINA="$LAMINA_SRC/build/cli/lamina"

ROOT="$(mktemp -d /var/tmp/lamina-demo-XXXXXX)"
WORK="$(mktemp -d /var/tmp/lamina-demo-work-XXXXXX)"
cleanup() {
  # Unmount whatever the demo mounted, then remove its store.
  [ -n "${TOP:-}" ] && as_root "$LAMINA" --root "$ROOT" layer umount "$TOP" >/dev/null 2>&1 || true
  as_root rm -rf "$ROOT" "$WORK"
}
trap cleanup EXIT

step "lamina info"
as_root "$LAMINA" --root "$ROOT" info

step "a layer round trip on the chosen driver"
mkdir -p "$WORK/rootfs/bin" "$WORK/rootfs/etc"
cp /bin/busybox "$WORK/rootfs/bin/busybox"
ln -s busybox "$WORK/rootfs/bin/sh"
echo "root:x:0:0:root:/root:/bin/sh" > "$WORK/rootfs/etc/passwd"
tar -C "$WORK/rootfs" -czf "$WORK/base.tar.gz" .
BASE=$(as_root "$LAMINA" --root "$ROOT" layer apply "$WORK/base.tar.gz")
echo "base layer:      $BASE"
TOP=$(as_root "$LAMINA" --root "$ROOT" layer create --writable --parent "$BASE")
echo "writable layer:  $TOP"
MERGED=$(as_root "$LAMINA" --root "$ROOT" layer mount "$TOP")
echo "mounted at:      $MERGED"
as_root sh -c "echo 'hello from lamina' > '$MERGED/etc/motd' && rm '$MERGED/etc/passwd'"
echo "merged tree:     $(cd "$MERGED" && as_root find . -mindepth 1 | sort | tr '\n' ' ')"
as_root "$LAMINA" --root "$ROOT" layer umount "$TOP"
echo "changes:"
as_root "$LAMINA" --root "$ROOT" layer changes "$TOP" | sed 's/^/  /'
as_root "$LAMINA" --root "$ROOT" layer diff "$TOP" -o "$WORK/top.tar"
echo "exported layer tar:"
tar -tvf "$WORK/top.tar" | sed 's/^/  /'
TOP=""

step "a container from the built-in busybox image on the chosen driver"
# The script comes on stdin, so that PID 1 is a plain `sh -s`.
as_root "$LAMINA" --root "$ROOT" run --hostname lamina-demo busybox sh -s <<'EOF'
echo "hostname:        $(hostname)"
echo "PID 1:           $(tr '\0' ' ' < /proc/1/cmdline)"
echo "processes (the container's only):"
ps -o pid,user,args | sed 's/^/  /'
echo "its merged root (on /) and mounts:"
mount | head -n 6 | sed 's/^/  /'
EOF
step "done"
