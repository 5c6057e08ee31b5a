#!/usr/bin/env bash
# Runs one libFuzzer target as a ctest test (label `fuzz`):
#   1. replays every input in REGRESSIONS (crashes found and fixed before);
#   2. fuzzes for $KCNET_FUZZ_SECONDS (default 60) from a temporary copy of CORPUS, so the
#      repository is never modified. A crash's input is kept in ARTIFACTS.
# Usage: run_fuzzer.sh FUZZER CORPUS REGRESSIONS ARTIFACTS
set -euo pipefail
fuzzer=$(realpath "$1") corpus=$2 regressions=$3 artifacts=$(realpath -m "$4")
seconds=${KCNET_FUZZ_SECONDS:-60}
here=$(cd "$(dirname "$0")" && pwd)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$here/../../deploy/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

work=$(mktemp -d "${TMPDIR:-/tmp}/kcnet-fuzz-XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$artifacts"
[ -d "$corpus" ] && cp -r "$corpus/." "$work/corpus/"

shopt -s nullglob
cases=("$regressions"/*)
if [ ${#cases[@]} -gt 0 ]; then
  echo "== replaying ${#cases[@]} regression input(s)"
  "$fuzzer" -runs=1 "${cases[@]}"
fi

echo "== fuzzing for ${seconds}s from $(ls "$work/corpus" | wc -l) seed(s)"
cd "$work"
"$fuzzer" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=3072 -print_final_stats=1 \
  -artifact_prefix="$artifacts/" "$work/corpus"
