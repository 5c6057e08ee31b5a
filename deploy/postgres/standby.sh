#!/usr/bin/env bash
# Makes a synchronous standby of a running kcnet PostgreSQL primary (docs/DEPLOY.md, section 6).
#   standby.sh --primary CONNINFO --data DIR --name NAME [--bin DIR] [--async]
# Run as the operating-system user that owns the PostgreSQL data (e.g. `sudo -u postgres`).
#  1. copies the primary into DIR with pg_basebackup (streaming the WAL it needs, a physical
#     replication slot NAME so the primary keeps WAL the standby has not received, and the
#     standby.signal + primary_conninfo that make it follow the primary, as NAME);
#  2. tells the primary to wait for NAME on every commit (synchronous_standby_names =
#     'FIRST 1 (NAME)'; with --async the standby follows without being waited for).
# It does not start the standby: start DIR as you start any cluster (pg_ctl, systemd).
# The primary must accept replication connections from this host (pg_hba.conf "replication")
# and have wal_level=replica (PostgreSQL's default) and max_wal_senders > 0.
# After this, a commit the primary acknowledges is on both machines: if the primary is lost,
# promote the standby (promote.sh) and lose nothing acknowledged. The price: while the
# standby is down, commits on the primary wait (see DEPLOY.md for what to do then).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$here/common.sh"
primary="" data="" name="" sync=1
while [ $# -gt 0 ]; do
  case "$1" in
    --primary) primary="$2"; shift 2 ;;
    --data) data="$2"; shift 2 ;;
    --name) name="$2"; shift 2 ;;
    --bin) PG_BIN="$2"; shift 2 ;;
    --async) sync=0; shift ;;
    *) echo "standby.sh: unknown option $1 (see the comment at the top)" >&2; exit 2 ;;
  esac
done
if [ -z "$primary" ] || [ -z "$data" ] || [ -z "$name" ]; then
  echo "standby.sh: --primary, --data and --name are required" >&2
  exit 2
fi
case "$name" in
  *[!a-z0-9_]*) echo "standby.sh: --name must be lower-case letters, digits and _ (it names a replication slot): $name" >&2; exit 2 ;;
esac
if [ -e "$data" ] && [ -n "$(ls -A "$data" 2>/dev/null)" ]; then
  echo "standby.sh: --data $data is not empty: refusing to overwrite it" >&2
  exit 2
fi
bin="$(pg_find_bin)"
psql_bin="$bin/psql"; [ -x "$psql_bin" ] || psql_bin="$(command -v psql)"
# application_name is what synchronous_standby_names matches.
"$bin/pg_basebackup" --pgdata="$data" --dbname="$primary application_name=$name" \
  --wal-method=stream --write-recovery-conf --create-slot --slot="$name" \
  --checkpoint=fast --no-password
chmod 700 "$data"
if [ "$sync" = 1 ]; then
  "$psql_bin" --no-psqlrc --quiet --set=ON_ERROR_STOP=1 --dbname="$primary dbname=postgres" \
    --command="ALTER SYSTEM SET synchronous_standby_names = 'FIRST 1 ($name)'" \
    --command="SELECT pg_reload_conf()" >/dev/null
fi
echo "standby.sh: $data follows the primary as '$name'$([ "$sync" = 1 ] && echo ', synchronously'); start it now"
