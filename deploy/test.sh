#!/usr/bin/env bash
# Installs dependencies, builds, and runs the ctest suite.
# Usage: deploy/test.sh [Release|asan|tsan|fuzz|fuzz-all] [extra ctest args...]
#   Release   the whole suite (gcc)
#   asan      the whole suite under gcc's AddressSanitizer + UndefinedBehaviorSanitizer
#   tsan      unit and integration tests under ThreadSanitizer (deploy/tsan.supp)
#   fuzz      the libFuzzer targets (ctest -L fuzz; $KCNET_FUZZ_SECONDS each, default 60)
#   fuzz-all  the clang fuzz build of everything: unit, integration and fuzz tests under
#             clang's ASan+UBSan (what CI runs besides Release)
# Extra arguments replace the default label selection of tsan, fuzz and fuzz-all.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mode=${1:-Release}
[ $# -gt 0 ] && shift
"$root/deploy/install-deps.sh"
build=$("$root/deploy/build.sh" "$mode" | tail -n 1)
cd "$build"
case "$mode" in
  asan|fuzz|fuzz-all)
    export ASAN_OPTIONS="detect_leaks=1"
    export LSAN_OPTIONS="suppressions=$root/deploy/lsan.supp:print_suppressions=0"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
    ;;
  tsan)
    export TSAN_OPTIONS="suppressions=$root/deploy/tsan.supp:second_deadlock_stack=1:history_size=4"
    ;;
esac
if [ $# -eq 0 ]; then
  case "$mode" in
    tsan) set -- -L 'unit|integration' ;;
    fuzz) set -- -L fuzz ;;
    fuzz-all) set -- -L 'unit|integration|fuzz' ;;
  esac
fi
ctest --output-on-failure -j "$(nproc)" "$@"
