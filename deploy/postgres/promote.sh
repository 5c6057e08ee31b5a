#!/usr/bin/env bash
# Promotes a kcnet PostgreSQL standby to primary (docs/DEPLOY.md, section 6).
#   promote.sh --data DIR --conninfo CONNINFO [--bin DIR] [--keep-sync]
# Run as the owner of DIR, on the standby's machine, once the old primary is known to be
# down (fence it first: a primary that comes back must not take writes again).
#  1. `pg_ctl promote --wait`: the standby ends recovery and accepts writes;
#  2. clears synchronous_standby_names on the new primary (unless --keep-sync): there is no
#     standby yet, and commits would wait forever for one. Until a new standby is attached
#     (standby.sh against this server) commits are on one machine only.
# kcnet-server instances reconnect by themselves when their conninfo lists both hosts with
# target_session_attrs=read-write (libpq tries each host and keeps the one that writes).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$here/common.sh"
data="" conninfo="" keep_sync=0
while [ $# -gt 0 ]; do
  case "$1" in
    --data) data="$2"; shift 2 ;;
    --conninfo) conninfo="$2"; shift 2 ;;
    --bin) PG_BIN="$2"; shift 2 ;;
    --keep-sync) keep_sync=1; shift ;;
    *) echo "promote.sh: unknown option $1 (see the comment at the top)" >&2; exit 2 ;;
  esac
done
if [ -z "$data" ] || [ -z "$conninfo" ]; then
  echo "promote.sh: --data and --conninfo (of this standby) are required" >&2
  exit 2
fi
if [ ! -f "$data/standby.signal" ]; then
  echo "promote.sh: $data is not a standby (no standby.signal): nothing to promote" >&2
  exit 2
fi
bin="$(pg_find_bin)"
psql_bin="$bin/psql"; [ -x "$psql_bin" ] || psql_bin="$(command -v psql)"
"$bin/pg_ctl" promote --pgdata="$data" --wait --timeout=60 >/dev/null
if [ "$keep_sync" = 0 ]; then
  "$psql_bin" --no-psqlrc --quiet --set=ON_ERROR_STOP=1 --dbname="$conninfo dbname=postgres" \
    --command="ALTER SYSTEM RESET synchronous_standby_names" \
    --command="SELECT pg_reload_conf()" >/dev/null
fi
echo "promote.sh: $data is the primary now"
