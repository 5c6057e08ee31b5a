#!/usr/bin/env bash
# Installs dependencies, builds, and runs the whole ctest suite.
# Usage: deploy/test.sh [Release|asan|tsan] [extra ctest args...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mode=${1:-Release}
[ $# -gt 0 ] && shift
"$root/deploy/install-deps.sh"
build=$("$root/deploy/build.sh" "$mode" | tail -n 1)
cd "$build"
ctest --output-on-failure -j "$(nproc)" "$@"
