#!/usr/bin/env bash
# Builds (optimised) and runs kcnet benchmarks; each prints one JSON line per figure.
# Usage: bench/run.sh [NAME...]   e.g. bench/run.sh store_apply
# With no NAME, runs every benchmark. Set KCNET_BENCH_ARGS to pass arguments through.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
all=(store_apply unary wire catch_up initial_sync live_latency idle_streams ingest sdk_write
     sdk_sync_memory search close_latency login_flood reports console pg attachments cluster fsearch)
names=("$@")
[ ${#names[@]} -eq 0 ] && names=("${all[@]}")
"$root/deploy/install-deps.sh"
build=$(KCNET_BUILD_DIR="$root/build-bench" "$root/deploy/build.sh" Release | tail -n 1)
for name in "${names[@]}"; do
  bin="$build/bench/${name}_bench"
  if [ ! -x "$bin" ]; then
    echo "bench/run.sh: unknown benchmark '$name' (known: ${all[*]})" >&2
    exit 2
  fi
  # shellcheck disable=SC2086
  "$bin" ${KCNET_BENCH_ARGS:-}
done
