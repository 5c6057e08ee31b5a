#!/usr/bin/env bash
# Turns on WAL archiving on a kcnet PostgreSQL server (docs/DEPLOY.md, section 6, "Backups").
#   archive.sh --conninfo CONNINFO --archive DIR [--bin DIR]
# Run as the operating-system user that owns the PostgreSQL data (e.g. `sudo -u postgres`).
# Sets archive_mode = on and an archive_command that copies each finished WAL segment into
# DIR (never over a segment already there), and makes DIR. archive_mode takes effect at the
# next restart of PostgreSQL: restart it after this script. With a base backup (backup.sh)
# and the archived segments, pitr.sh restores the database as it was at any later time.
# DIR should be on another machine's disk (NFS, or rsync it off): an archive on the
# database's own disk dies with it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$here/common.sh"
conninfo="" archive=""
while [ $# -gt 0 ]; do
  case "$1" in
    --conninfo) conninfo="$2"; shift 2 ;;
    --archive) archive="$2"; shift 2 ;;
    --bin) PG_BIN="$2"; shift 2 ;;
    *) echo "archive.sh: unknown option $1 (see the comment at the top)" >&2; exit 2 ;;
  esac
done
if [ -z "$conninfo" ] || [ -z "$archive" ]; then
  echo "archive.sh: --conninfo and --archive are required" >&2
  exit 2
fi
case "$archive" in
  /*) ;;
  *) echo "archive.sh: --archive must be an absolute path: $archive" >&2; exit 2 ;;
esac
case "$archive" in
  *"'"*|*" "*) echo "archive.sh: --archive must not contain quotes or spaces: $archive" >&2; exit 2 ;;
esac
bin="$(pg_find_bin)"
mkdir -p "$archive"
"$bin/psql" -X -q -v ON_ERROR_STOP=1 -d "$conninfo" \
  -c "ALTER SYSTEM SET archive_mode = 'on'" \
  -c "ALTER SYSTEM SET archive_command = 'test ! -f $archive/%f && cp %p $archive/%f'"
echo "archive.sh: WAL archiving into $archive is set; restart PostgreSQL for archive_mode to take effect"
