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
if [ "$mode" = "asan" ]; then
  export LSAN_OPTIONS="suppressions=$root/deploy/lsan.supp:print_suppressions=0"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
fi
ctest --output-on-failure -j "$(nproc)" "$@"
