#!/usr/bin/env bash
# Restores a kcnet PostgreSQL database to a moment, from a base backup and the WAL archive
# (docs/DEPLOY.md, section 6, "Backups").
#   pitr.sh --base DIR --archive DIR --data NEWDIR [--target-time TIME] [--bin DIR]
# Run as the operating-system user that will own the restored data (e.g. `sudo -u postgres`).
# Copies the base backup (backup.sh) into NEWDIR (empty or absent) and sets it to replay the
# archived WAL up to TIME (a timestamp with its zone, e.g. '2026-12-06 07:30:00+07'; without
# --target-time, to the end of the archive), then to end recovery and accept writes. It does
# not start it: start NEWDIR as any cluster (pg_ctl, systemd); it replays, then opens.
# Then, with every kcnet-server stopped, run
#   kcnet-admin new-incarnation --restored --store=postgres:CONNINFO
# so that tablets hand back what the restore lost, and start the instances on it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$here/common.sh"
base="" archive="" data="" target=""
while [ $# -gt 0 ]; do
  case "$1" in
    --base) base="$2"; shift 2 ;;
    --archive) archive="$2"; shift 2 ;;
    --data) data="$2"; shift 2 ;;
    --target-time) target="$2"; shift 2 ;;
    --bin) PG_BIN="$2"; shift 2 ;;
    *) echo "pitr.sh: unknown option $1 (see the comment at the top)" >&2; exit 2 ;;
  esac
done
if [ -z "$base" ] || [ -z "$archive" ] || [ -z "$data" ]; then
  echo "pitr.sh: --base, --archive and --data are required" >&2
  exit 2
fi
if [ ! -f "$base/backup_label" ]; then
  echo "pitr.sh: --base $base is not a base backup (no backup_label)" >&2
  exit 2
fi
if [ -e "$data" ] && [ -n "$(ls -A "$data" 2>/dev/null)" ]; then
  echo "pitr.sh: --data $data is not empty: refusing to overwrite it" >&2
  exit 2
fi
case "$archive$target" in
  *"'"*) echo "pitr.sh: --archive and --target-time must not contain quotes" >&2; exit 2 ;;
esac
mkdir -p "$data"
chmod 700 "$data"
cp -a "$base/." "$data/"
# The restored server must not archive into the archive it replays, nor wait for a standby.
{
  echo "restore_command = 'cp $archive/%f %p'"
  echo "archive_mode = 'off'"
  echo "synchronous_standby_names = ''"
  if [ -n "$target" ]; then
    echo "recovery_target_time = '$target'"
    echo "recovery_target_action = 'promote'"
  fi
} >> "$data/postgresql.auto.conf"
rm -f "$data/standby.signal"
touch "$data/recovery.signal"
echo "pitr.sh: $data replays $archive${target:+ up to $target} when started"
