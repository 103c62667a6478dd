#!/usr/bin/env bash
# Configures and builds lamina with a CMake preset (default: dev; CI uses ci).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PRESET="${1:-dev}"
cd "$LAMINA_SRC"
step "building lamina (preset $PRESET)"
cmake --preset "$PRESET" >/dev/null
cmake --build --preset "$PRESET" -j "$(nproc)"
