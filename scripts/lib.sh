# Shared by the scripts in this folder. Source it; do not run it.
set -euo pipefail

LAMINA_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "lamina: '$*' needs root and sudo is not installed; run this script as root" >&2
    exit 1
  fi
}

step() { printf '\n==> %s\n' "$*"; }

# Lets the unprivileged test account (lamina-test) run what is in DIR: the
# `rootless` ctest entries run the test binaries as that account. Every
# directory above DIR gets search permission for others where it lacks it
# (a checkout under /root, say), and DIR's tree read permission (a umask of
# 077). Says what it changed.
grant_test_user_access() {
  local dir="$1" up
  id -u lamina-test >/dev/null 2>&1 || return 0
  up="$(cd "$dir" && pwd)"
  while [ "$up" != "/" ]; do
    up="$(dirname "$up")"
    if ! setpriv --reuid=lamina-test --regid=lamina-test --init-groups test -x "$up"; then
      echo "lamina: giving others search permission on $up (rootless tests run as lamina-test)"
      as_root chmod o+x "$up"
    fi
  done
  if [ -n "$(find "$dir" ! -perm -o=r -print -quit)" ]; then
    echo "lamina: making $dir readable for lamina-test (rootless tests)"
    as_root chmod -R o+rX "$dir"
  fi
}
