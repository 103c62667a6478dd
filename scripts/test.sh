#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs dependencies, prepares
# the test environment (test account, /dev/fuse, loop devices), builds with
# -Werror and runs every test with ctest. Run as root (or with sudo).
# The last lines printed are ctest's summary.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$LAMINA_SRC"
"$LAMINA_SRC/scripts/install-deps.sh"
"$LAMINA_SRC/scripts/setup-test-env.sh"
"$LAMINA_SRC/scripts/build.sh" ci
# The fuzz targets: clang, and only the sources of the parsers they fuzz.
"$LAMINA_SRC/scripts/build.sh" fuzz
# The `rootless` entries run the conformance and integration binaries as
# lamina-test (tests/support/as_test_user.sh): it must reach the build tree.
grant_test_user_access "$LAMINA_SRC/build-ci"
# A bounded run of each fuzz target over its seed corpus (tests/fuzz).
step "running the fuzz targets"
fuzz_status=0
ctest --preset fuzz -j "$(nproc)" "$@" || fuzz_status=$?
if [ "$fuzz_status" -ne 0 ]; then
  echo "lamina: the fuzz runs failed (above); the test suite runs anyway, and the exit status says so" >&2
fi
step "running the test suite"
# Tests run as root; the `rootless` entries run the same binaries as lamina-test.
# Nothing is printed after ctest's summary.
status=0
ctest --preset ci -j "$(nproc)" "$@" || status=$?
[ "$status" -ne 0 ] || status=$fuzz_status
exit "$status"
