#!/usr/bin/env bash
# Installs everything lamina needs to build, test and benchmark, from Debian's
# packages. Safe to run any number of times: when every package is present it
# does nothing (no network needed).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PACKAGES=(
  # build
  build-essential cmake ninja-build pkg-config git
  # libraries
  libfuse3-dev libxxhash-dev libspdlog-dev libfmt-dev libgtest-dev libgmock-dev
  libarchive-dev nlohmann-json3-dev libcli11-dev libssl-dev libzstd-dev
  # run time: FUSE, id maps for rootless, the busybox image, xattr/ACL tools
  fuse3 uidmap busybox-static attr acl
  # tests and benchmarks: loop filesystems, tar formats, baselines
  xfsprogs e2fsprogs util-linux tar gzip zstd fio fuse-overlayfs crun skopeo umoci
  # fuzzing (libFuzzer with clang; clang 14 cannot compile libstdc++'s
  # std::expected, clang 16 can: see tests/fuzz/CMakeLists.txt)
  clang-16 libclang-rt-16-dev
  # procps for pgrep/pkill in tests, kmod for modprobe
  procps kmod
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "lamina: all ${#PACKAGES[@]} packages are installed"
  exit 0
fi

step "installing ${#missing[@]} packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
as_root apt-get update -qq
as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
