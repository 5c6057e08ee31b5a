# Shared by deploy/postgres/*.sh: finds the PostgreSQL server binaries.
# PG_BIN (or --bin) wins; then the newest /usr/lib/postgresql/<version>/bin; then $PATH.
pg_find_bin() {
  if [ -n "${PG_BIN:-}" ]; then printf '%s' "$PG_BIN"; return; fi
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n -r); do
    if [ -x "$dir/pg_ctl" ]; then printf '%s' "$dir"; return; fi
  done
  dir="$(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/pg_ctl)")"
  if [ -x "$dir/pg_ctl" ]; then printf '%s' "$dir"; return; fi
  echo "no PostgreSQL binaries (pg_ctl) found: install Debian's postgresql or pass --bin DIR" >&2
  exit 1
}
