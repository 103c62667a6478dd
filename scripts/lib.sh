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
