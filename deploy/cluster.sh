#!/usr/bin/env bash
# kcnet as a cluster on one machine, for trying it out (docs/DEPLOY.md, "Trying the cluster"):
# a PostgreSQL primary and a synchronous standby (deploy/postgres/standby.sh), three
# kcnet-server instances on PostgreSQL, nginx in front with TLS (deploy/nginx/kcnet.conf,
# a self-signed certificate made with openssl), the demo accounts and a few demo records.
# Everything lives in one run directory; nothing is installed and no system service is used.
#
#   deploy/cluster.sh [start]         starts it all and prints what to try
#   deploy/cluster.sh stop            stops it all (the run directory stays; rm -rf it after)
#   deploy/cluster.sh status          what runs
#   deploy/cluster.sh kill N          kill -9 instance N (1-3): nginx sends calls to the others
#   deploy/cluster.sh restart N       starts instance N again
#   deploy/cluster.sh fail-primary    kill -9 the primary, then promote the standby
#                                     (deploy/postgres/promote.sh): the instances reconnect
#
# Environment:
#   KCNET_CLUSTER_DIR   the run directory (default /tmp/kcnet-cluster)
#   KCNET_BUILD         the build directory holding the binaries (default ./build)
#   KCNET_CLUSTER_PORT  nginx's HTTPS port (default 8443); the others follow it:
#                       PostgreSQL PORT+1000 and +1001, gRPC PORT+100+N, HTTP PORT+200+N
#   PG_BIN              the PostgreSQL binaries (default: the newest /usr/lib/postgresql/*/bin)
# When run as root, PostgreSQL runs as the user nobody (it refuses to run as root), as the
# tests do. Needs Debian's postgresql, nginx (nginx-light) and openssl.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$root/deploy/postgres/common.sh"
run="${KCNET_CLUSTER_DIR:-/tmp/kcnet-cluster}"
build="${KCNET_BUILD:-$root/build}"
port="${KCNET_CLUSTER_PORT:-8443}"
pg_primary_port=$((port + 1000))
pg_standby_port=$((port + 1001))
grpc_port() { echo $((port + 100 + $1)); }
http_port() { echo $((port + 200 + $1)); }
server_bin="$build/server/app/kcnet-server"
admin_bin="$build/server/admin/kcnet-admin"
kcnet_bin="$build/client_sdk/cli/kcnet"
say() { printf '== %s\n' "$*" >&2; }
die() { printf 'cluster.sh: %s\n' "$*" >&2; exit 1; }

# PostgreSQL refuses to run as root: as root, its commands run as nobody.
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups -- "$@"
  else
    "$@"
  fi
}

conninfo() {  # what every instance is given: both servers, "the one that takes writes"
  printf 'host=127.0.0.1,127.0.0.1 port=%s,%s user=kcnet dbname=kcnet connect_timeout=2 target_session_attrs=read-write' \
    "$pg_primary_port" "$pg_standby_port"
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_port() {  # PORT SECONDS
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

start_instance() {  # N
  local n="$1" dir="$run/instance$1"
  if alive "$dir/pid"; then say "instance $n already runs (pid $(cat "$dir/pid"))"; return; fi
  nohup "$server_bin" --data_dir="$dir/data" --store="postgres:$(conninfo)" \
    --listen="127.0.0.1:$(grpc_port "$n")" --http_listen="127.0.0.1:$(http_port "$n")" \
    --trusted_proxies=127.0.0.1 >>"$dir/server.log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
  wait_port "$(grpc_port "$n")" 60 || die "instance $n did not start: see $dir/server.log"
  say "instance $n: gRPC 127.0.0.1:$(grpc_port "$n"), HTTP 127.0.0.1:$(http_port "$n"), pid $(cat "$dir/pid")"
}

start() {
  for bin in "$server_bin" "$admin_bin" "$kcnet_bin"; do
    [ -x "$bin" ] || die "$bin is missing: build kcnet-server, kcnet-admin and kcnet first (KCNET_BUILD=$build)"
  done
  [ -x /usr/sbin/nginx ] || die "nginx is not installed (apt-get install nginx-light)"
  command -v openssl >/dev/null || die "openssl is not installed"
  if [ -e "$run" ]; then die "$run exists: '$0 stop' and remove it (rm -rf $run), or set KCNET_CLUSTER_DIR"; fi
  local bin; bin="$(pg_find_bin)"
  mkdir -p "$run/pg" "$run/tls" "$run/nginx/logs"
  # The PostgreSQL part of the run directory belongs to the server's user; the scripts are
  # copied there so that user can read them whatever the source tree's permissions.
  cp -r "$root/deploy/postgres" "$run/pg/scripts"
  [ "$(id -u)" = 0 ] && chown -R nobody "$run/pg" && chmod 755 "$run"

  say "PostgreSQL primary on 127.0.0.1:$pg_primary_port ($bin)"
  as_pg "$bin/initdb" -D "$run/pg/primary" -U kcnet --auth=trust -E UTF8 --no-locale \
    >"$run/pg/initdb.log" 2>&1 || die "initdb failed: see $run/pg/initdb.log"
  as_pg "$bin/pg_ctl" -D "$run/pg/primary" -l "$run/pg/primary.log" -w \
    -o "-p $pg_primary_port -k $run/pg -c listen_addresses=127.0.0.1 -c max_connections=200" \
    start >/dev/null || die "the primary did not start: see $run/pg/primary.log"
  as_pg "$bin/psql" --no-psqlrc --quiet -h 127.0.0.1 -p "$pg_primary_port" -U kcnet \
    -d postgres -c "CREATE DATABASE kcnet" >/dev/null

  say "PostgreSQL synchronous standby on 127.0.0.1:$pg_standby_port (standby.sh)"
  as_pg "$run/pg/scripts/standby.sh" --bin "$bin" \
    --primary "host=127.0.0.1 port=$pg_primary_port user=kcnet" \
    --data "$run/pg/standby" --name standby1 >"$run/pg/standby-setup.log" 2>&1 ||
    die "standby.sh failed: see $run/pg/standby-setup.log"
  as_pg "$bin/pg_ctl" -D "$run/pg/standby" -l "$run/pg/standby.log" -w \
    -o "-p $pg_standby_port -k $run/pg -c listen_addresses=127.0.0.1 -c max_connections=200" \
    start >/dev/null || die "the standby did not start: see $run/pg/standby.log"

  say "A self-signed TLS certificate for localhost and 127.0.0.1 (openssl)"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$run/tls/key.pem" -out "$run/tls/cert.pem" >/dev/null 2>&1 || die "openssl failed"
  chmod 600 "$run/tls/key.pem"

  # The directory (accounts, sign-in tokens, device credentials), the records, the plans and
  # the attachments (sessions and the photos' bytes) are in PostgreSQL, shared by the three
  # instances; report summaries are derived SQLite files per instance (docs/POSTGRES.md):
  # the instances start from copies of one data directory. seed-demo puts the demo accounts, facilities and plan into the
  # database.
  say "Demo accounts (kcnet-admin seed-demo); tablets collab1 and collab2 signed in on instance 1"
  mkdir -p "$run/instance1"
  "$admin_bin" seed-demo --data_dir="$run/instance1/data" --store="postgres:$(conninfo)" >"$run/seed.txt"
  start_instance 1
  for user in collab1 collab2; do
    echo "demo-$user-pass" >"$run/$user.password"
    "$kcnet_bin" --store="$run/$user.db" --server="127.0.0.1:$(grpc_port 1)" --insecure login "$user" \
      --password-file="$run/$user.password" >/dev/null
  done
  stop_instance 1
  say "Instances 2 and 3 copy instance 1's data directory"
  for n in 2 3; do
    mkdir -p "$run/instance$n"
    cp -r "$run/instance1/data" "$run/instance$n/data"
  done
  for n in 1 2 3; do start_instance "$n"; done

  say "nginx on https://localhost:$port (deploy/nginx/render.sh)"
  local render=(--listen "$port" --cert "$run/tls/cert.pem" --key "$run/tls/key.pem"
    --log-dir "$run/nginx/logs")
  for n in 1 2 3; do render+=(--grpc "127.0.0.1:$(grpc_port "$n")" --http "127.0.0.1:$(http_port "$n")"); done
  bash "$root/deploy/nginx/render.sh" "${render[@]}" >"$run/nginx/kcnet.conf"
  {
    echo "daemon off;"
    echo "worker_processes 1;"
    echo "pid $run/nginx/nginx.pid;"
    echo "error_log $run/nginx/logs/error.log info;"
    [ "$(id -u)" = 0 ] && echo "user root;"
    echo "events { worker_connections 1024; }"
    echo "http {"
    echo "  access_log off;"
    for temp in client_body proxy fastcgi uwsgi scgi; do echo "  ${temp}_temp_path $run/nginx/$temp;"; done
    echo "  include $run/nginx/kcnet.conf;"
    echo "}"
  } >"$run/nginx/nginx.conf"
  nohup /usr/sbin/nginx -p "$run/nginx" -c "$run/nginx/nginx.conf" >"$run/nginx/stderr.log" 2>&1 </dev/null &
  echo $! >"$run/nginx/pid"
  wait_port "$port" 20 || die "nginx did not start: see $run/nginx/logs/error.log"

  say "Demo records synced through nginx (the kcnet CLI as collab1)"
  local k=("$kcnet_bin" --store="$run/collab1.db")
  "${k[@]}" facility add --name="Cơ sở mây tre đan An Bình (cụm)" \
    --owner="Nguyễn Văn Hòa" --products="Giỏ, khay mây tre" --workers=12 --lat=20.101 \
    --lng=105.501 --kind=household-business --sector=handicraft >/dev/null
  "${k[@]}" facility add --name="Xưởng gốm Phú Lộc (cụm)" --owner="Trần Văn Minh" \
    --products="Gốm sứ" --workers=20 --lat=20.121 --lng=105.522 --kind=household-business \
    --sector=handicraft >/dev/null
  "${k[@]}" --server="localhost:$port" --ca_file="$run/tls/cert.pem" sync >/dev/null
  "$kcnet_bin" --store="$run/collab2.db" --server="localhost:$port" --ca_file="$run/tls/cert.pem" \
    sync >/dev/null
  status
  cat <<EOF

Thử / Try: two tablets (the kcnet CLI) signed in already, talking to nginx over TLS:
  K1="$kcnet_bin --store=$run/collab1.db"     # collab1, xã An Bình Demo (90101)
  K2="$kcnet_bin --store=$run/collab2.db"     # collab2, xã Tân Hòa Demo (90201)
  \$K1 facility list ; \$K2 facility add --name="Cơ sở thử" --owner="Chủ cơ sở" --workers=3 \\
     --lat=20.2 --lng=105.4 --kind=household-business --sector=handicraft ; \$K2 sync
  (each call may land on any instance: nginx's access log names it, $run/nginx/logs/)
  Until the directory is on PostgreSQL, a NEW sign-in through nginx is known to one
  instance only (the others refuse its token): sign new tablets in on instance 1
  (--server=127.0.0.1:$(grpc_port 1) --insecure) before the copies are made, as above.
Console (trình duyệt / browser): https://localhost:$port/ (accept the self-signed certificate);
  until the directory is on PostgreSQL its sign-in holds on one instance only: to stay on
  one, use http://127.0.0.1:$(http_port 1)/ . Accounts: $(awk 'NF>=2 && $2 ~ /^demo-/ {printf "%s/%s ", $1, $2}' "$run/seed.txt")
Kill an instance (nginx sends calls to the others; devices reconnect):
  $0 kill 2        then   $0 restart 2
Lose the primary and promote the standby (the instances reconnect by themselves):
  $0 fail-primary
Logs: $run/instance*/server.log, $run/pg/*.log, $run/nginx/logs/
Stop / Dừng:  $0 stop        (then rm -rf $run)
EOF
}

status() {
  local n
  for n in 1 2 3; do
    if alive "$run/instance$n/pid"; then echo "instance $n: up, pid $(cat "$run/instance$n/pid"), gRPC 127.0.0.1:$(grpc_port "$n")"
    else echo "instance $n: down"; fi
  done
  local bin; bin="$(pg_find_bin)"
  for role in primary standby; do
    if [ -f "$run/pg/$role/postmaster.pid" ] && kill -0 "$(head -1 "$run/pg/$role/postmaster.pid")" 2>/dev/null; then
      local state="primary"
      [ -f "$run/pg/$role/standby.signal" ] && state="standby"
      echo "postgres $role: up ($state), port $(sed -n 4p "$run/pg/$role/postmaster.pid")"
    else
      echo "postgres $role: down"
    fi
  done
  if alive "$run/nginx/pid"; then echo "nginx: up, https://localhost:$port"; else echo "nginx: down"; fi
}

stop() {
  [ -d "$run" ] || die "$run does not exist: nothing to stop"
  local n pid
  for pid_file in "$run/nginx/pid" "$run"/instance*/pid; do
    if alive "$pid_file"; then
      pid="$(cat "$pid_file")"
      kill -TERM "$pid"
      for ((n = 0; n < 100; n++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -f "$pid_file"
  done
  local bin; bin="$(pg_find_bin)"
  for role in standby primary; do
    if [ -f "$run/pg/$role/postmaster.pid" ]; then
      as_pg "$bin/pg_ctl" -D "$run/pg/$role" -m fast -w stop >/dev/null 2>&1 || true
    fi
  done
  say "stopped; the run directory $run stays (rm -rf $run to remove it)"
}

stop_instance() {  # N: SIGTERM, waits, SIGKILL after 10 s
  local pid_file="$run/instance$1/pid" pid n
  if alive "$pid_file"; then
    pid="$(cat "$pid_file")"
    kill -TERM "$pid"
    for ((n = 0; n < 100; n++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$pid_file"
}

kill_instance() {
  local n="${1:-}"
  case "$n" in 1|2|3) ;; *) die "kill/restart take an instance number 1, 2 or 3" ;; esac
  alive "$run/instance$n/pid" || die "instance $n is not running"
  kill -KILL "$(cat "$run/instance$n/pid")"
  rm -f "$run/instance$n/pid"
  say "instance $n killed (SIGKILL); '$0 restart $n' starts it again"
}

fail_primary() {
  local pid_file="$run/pg/primary/postmaster.pid"
  [ -f "$run/pg/standby/standby.signal" ] || die "the standby was promoted already"
  [ -f "$pid_file" ] && kill -KILL "$(head -1 "$pid_file")" 2>/dev/null || true
  say "primary killed (SIGKILL); promoting the standby (promote.sh)"
  as_pg "$run/pg/scripts/promote.sh" --bin "$(pg_find_bin)" --data "$run/pg/standby" \
    --conninfo "host=127.0.0.1 port=$pg_standby_port user=kcnet"
  say "the standby is the primary; the instances' next writes go to it (no standby now)"
}

if [ "${1:-start}" != start ] && [ ! -d "$run" ]; then
  die "$run does not exist: start the cluster first (or set KCNET_CLUSTER_DIR)"
fi
case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  kill) kill_instance "${2:-}" ;;
  restart)
    case "${2:-}" in 1|2|3) start_instance "$2" ;; *) die "restart takes 1, 2 or 3" ;; esac ;;
  fail-primary) fail_primary ;;
  *) die "unknown command $1: start, stop, status, kill N, restart N or fail-primary" ;;
esac
