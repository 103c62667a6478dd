#!/bin/sh
# Runs a test binary the way an unprivileged user runs it: the executor of
# the `rootless` ctest entries (tests/CMakeLists.txt).
#
#   as_test_user.sh TEST-BINARY [ARGS...]
#
# As root it switches to the account lamina-test (scripts/setup-test-env.sh
# makes it) with setpriv; as anyone else it runs the binary as that user.
# Either way the binary gets a fresh HOME and TMPDIR of its own (below a
# new directory in /var/tmp, also LAMINA_TEST_TMP), and no XDG directories
# of the caller's. Afterwards mounts left below that directory are detached
# and the directory is removed. Exit status: the binary's, or 77 (ctest's
# SKIP_RETURN_CODE for these entries) when there is no lamina-test account.
# Test discovery (--gtest_list_tests) runs the binary unchanged.
set -u
TEST_USER=lamina-test

for arg in "$@"; do
  [ "$arg" = "--gtest_list_tests" ] && exec "$@"
done

if [ "$(id -u)" -eq 0 ]; then
  if ! id -u "$TEST_USER" >/dev/null 2>&1; then
    echo "as_test_user.sh: no '$TEST_USER' account; scripts/setup-test-env.sh creates it" >&2
    exit 77
  fi
  run_as() {
    setpriv --reuid="$TEST_USER" --regid="$TEST_USER" --init-groups --inh-caps=-all "$@"
  }
  if ! run_as test -x "$1"; then
    echo "as_test_user.sh: $TEST_USER cannot run $1; scripts/test.sh makes the build tree" \
         "readable for it (see grant_test_user_access in scripts/lib.sh)" >&2
    exit 1
  fi
  user=$TEST_USER
else
  run_as() { "$@"; }
  user=$(id -un)
fi

base=$(mktemp -d /var/tmp/lamina-rootless-XXXXXX) || exit 1
mkdir -p "$base/home" "$base/tmp"
[ "$(id -u)" -eq 0 ] && chown -R "$user:" "$base"
chmod 0700 "$base/home" "$base/tmp"

cleanup() {
  # Deepest first; a FUSE mount of the user's own daemon goes with
  # fusermount3 when umount is not allowed.
  awk -v base="$base" '$5 == base || index($5, base "/") == 1 { print length($5), $5 }' \
      /proc/self/mountinfo | sort -rn | cut -d' ' -f2- |
    while read -r point; do
      umount -l "$point" 2>/dev/null || fusermount3 -u -z "$point" 2>/dev/null || true
    done
  rm -rf "$base"
}

run_as env -u XDG_RUNTIME_DIR -u XDG_DATA_HOME -u XDG_CONFIG_HOME -u XDG_CACHE_HOME \
  -u LAMINA_ROOT -u LAMINA_CONFIG \
  HOME="$base/home" TMPDIR="$base/tmp" LAMINA_TEST_TMP="$base/tmp" \
  USER="$user" LOGNAME="$user" "$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT HUP
status=0
wait "$child" || status=$?
# A signal interrupts the first wait; the second collects the real status.
if kill -0 "$child" 2>/dev/null; then
  status=0
  wait "$child" || status=$?
fi
cleanup
exit "$status"
