#!/usr/bin/env bash
# Takes a base backup of a running kcnet PostgreSQL server (docs/DEPLOY.md, section 6).
#   backup.sh --conninfo CONNINFO --to DIR [--bin DIR]
# Run as the operating-system user that owns the PostgreSQL data (e.g. `sudo -u postgres`).
# pg_basebackup copies the whole cluster into DIR (which must be empty or absent) while it
# serves, with the WAL the copy needs streamed alongside, so DIR alone starts as the
# database at the end of the copy; with WAL archiving on (archive.sh), pitr.sh replays the
# archive from it to any later moment. The server must accept replication connections from
# this host (pg_hba.conf "replication"; Debian's default allows local ones).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$here/common.sh"
conninfo="" to=""
while [ $# -gt 0 ]; do
  case "$1" in
    --conninfo) conninfo="$2"; shift 2 ;;
    --to) to="$2"; shift 2 ;;
    --bin) PG_BIN="$2"; shift 2 ;;
    *) echo "backup.sh: unknown option $1 (see the comment at the top)" >&2; exit 2 ;;
  esac
done
if [ -z "$conninfo" ] || [ -z "$to" ]; then
  echo "backup.sh: --conninfo and --to are required" >&2
  exit 2
fi
if [ -e "$to" ] && [ -n "$(ls -A "$to" 2>/dev/null)" ]; then
  echo "backup.sh: --to $to is not empty: refusing to overwrite it" >&2
  exit 2
fi
bin="$(pg_find_bin)"
"$bin/pg_basebackup" -d "$conninfo" -D "$to" --wal-method=stream --checkpoint=fast \
  --label="kcnet $(date -u +%FT%TZ)"
echo "backup.sh: base backup in $to"
