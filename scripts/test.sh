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
# The `rootless` entries run the conformance and integration binaries as
# lamina-test (tests/support/as_test_user.sh): it must reach the build tree.
grant_test_user_access "$LAMINA_SRC/build-ci"
step "running the test suite"
# Tests run as root; the `rootless` entries run the same binaries as lamina-test.
exec ctest --preset ci -j "$(nproc)" "$@"
