#!/usr/bin/env bash
# Configures and builds kcnet into build/ (or $KCNET_BUILD_DIR) and prints that directory.
# Usage: deploy/build.sh [Release|Debug|asan|tsan]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mode=${1:-Release}
build=${KCNET_BUILD_DIR:-$root/build}
args=(-G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo)
case "$mode" in
  Release) build=${KCNET_BUILD_DIR:-$root/build} ;;
  Debug) args=(-G Ninja -DCMAKE_BUILD_TYPE=Debug); build=${KCNET_BUILD_DIR:-$root/build-debug} ;;
  asan) args+=(-DKCNET_SANITIZE=address); build=${KCNET_BUILD_DIR:-$root/build-asan} ;;
  tsan) args+=(-DKCNET_SANITIZE=thread); build=${KCNET_BUILD_DIR:-$root/build-tsan} ;;
  *) echo "build.sh: unknown mode '$mode' (Release, Debug, asan, tsan)" >&2; exit 2 ;;
esac
[ "${CI:-}" = "true" ] && args+=(-DKCNET_WERROR=ON)
# Progress and errors go to stderr; stdout carries only the build directory (callers
# capture it).
cmake -S "$root" -B "$build" "${args[@]}" >/dev/null
cmake --build "$build" -j "$(nproc)" >&2
echo "$build"
