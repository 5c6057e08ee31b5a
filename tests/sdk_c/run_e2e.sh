#!/bin/sh
# Runs the C ABI end-to-end test: seeds a new data directory with kcnet-admin seed-demo,
# starts kcnet-server on a free port (it prints "kcnet-server listening on HOST:PORT"),
# runs the C program sdk_c_e2e against it as the demo collaborator collab1, and stops the
# server with SIGTERM. Usage: run_e2e.sh KCNET_SERVER KCNET_ADMIN SDK_C_E2E [clock]
# With `clock`, KCNET_SERVER is the test-only kcnet-clock-server (clock_server.cc): it gets
# --clock_file=FILE, and the program gets KCNET_E2E_CLOCK_FILE=FILE, where it writes the
# server's clock offset in ms (one decimal integer, written to a temporary file and
# renamed) to move the server's time.
set -eu
server_bin=$1
admin_bin=$2
program=$3
with_clock=${4:-}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kcnet-sdk-c.XXXXXX")
server_pid=
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    i=0
    while kill -0 "$server_pid" 2>/dev/null && [ $i -lt 100 ]; do
      sleep 0.1
      i=$((i + 1))
    done
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

"$admin_bin" --data_dir="$tmp/data" seed-demo > "$tmp/seed.out"
password=$(awk '$1 == "collab1" { print $2 }' "$tmp/seed.out")
if [ -z "$password" ]; then
  echo "run_e2e: no collab1 account in the seed-demo output:" >&2
  cat "$tmp/seed.out" >&2
  exit 1
fi

# The background job opens its redirections itself: create the files first, or the first
# sed below may run before server.out exists.
: > "$tmp/server.out"
: > "$tmp/server.err"
clock_file=
if [ "$with_clock" = clock ]; then
  clock_file="$tmp/clock_offset_ms"
  echo 0 > "$clock_file"
  "$server_bin" --data_dir="$tmp/data" --listen=127.0.0.1:0 --clock_file="$clock_file" \
    > "$tmp/server.out" 2> "$tmp/server.err" &
else
  "$server_bin" --data_dir="$tmp/data" --listen=127.0.0.1:0 > "$tmp/server.out" \
    2> "$tmp/server.err" &
fi
server_pid=$!
address=
i=0
while [ $i -lt 300 ]; do
  address=$(sed -n 's/^kcnet-server listening on \(.*:[0-9][0-9]*\)$/\1/p' "$tmp/server.out")
  [ -n "$address" ] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
  sleep 0.1
  i=$((i + 1))
done
if [ -z "$address" ]; then
  echo "run_e2e: kcnet-server did not start:" >&2
  cat "$tmp/server.err" >&2
  exit 1
fi
echo "run_e2e: kcnet-server on $address"

mkdir "$tmp/tablets"
status=0
# For the account steps of sdk_c_lifecycle: the other demo accounts and kcnet-admin.
KCNET_E2E_SEED="$tmp/seed.out" KCNET_E2E_ADMIN="$admin_bin" KCNET_E2E_DATA_DIR="$tmp/data" \
  KCNET_E2E_CLOCK_FILE="$clock_file" "$program" "$address" collab1 "$password" "$tmp/tablets" || status=$?
if [ "$status" != 0 ]; then
  echo "run_e2e: sdk_c_e2e failed ($status); the server's log:" >&2
  tail -n 40 "$tmp/server.err" >&2
fi
exit "$status"
