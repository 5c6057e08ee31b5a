#!/usr/bin/env bash
# kcnet in one command on a fresh Debian 12 machine: installs the build dependencies,
# builds kcnet, seeds a demo data directory (once), makes a local certificate authority
# and a TLS certificate for the server (once, with openssl), prints the demo accounts and
# a walk through the `kcnet` field tool, then runs kcnet-server with TLS on
# 127.0.0.1:50051 in the foreground (Ctrl-C stops it).
#
# Usage: deploy/quickstart.sh
#   KCNET_DATA_DIR  the data directory (default ./kcnet-demo-data); seeded only when new;
#                   the certificates live in its tls/ folder (delete it to make new ones)
#   KCNET_LISTEN    where to listen (default 127.0.0.1:50051); the certificate names
#                   localhost, this machine's name and addresses, and the KCNET_LISTEN host
#   KCNET_HTTP_LISTEN  where the console's HTTP bridge listens (default 127.0.0.1:8443),
#                   with the same certificate; it serves the console when it was built
#                   (BUILD/console/dist, console/dist, or KCNET_CONSOLE_DIR), and its
#                   Connect API (docs/CONSOLE.md) in any case
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data_dir=${KCNET_DATA_DIR:-./kcnet-demo-data}
listen=${KCNET_LISTEN:-127.0.0.1:50051}
http_listen=${KCNET_HTTP_LISTEN:-127.0.0.1:8443}
say() { printf '\n== %s\n' "$*" >&2; }

say "Installing build dependencies (Debian packages; asks for sudo when not root)"
"$root/deploy/install-deps.sh"

say "Building kcnet (Release)"
build_log=$(mktemp)
trap 'rm -f "$build_log"' EXIT
# build.sh prints the build directory as its last line.
"$root/deploy/build.sh" Release | tee "$build_log" >&2
build_dir=$(tail -n 1 "$build_log")
server_bin="$build_dir/server/app/kcnet-server"
admin_bin="$build_dir/server/admin/kcnet-admin"
kcnet_bin="$build_dir/client_sdk/cli/kcnet"
for bin in "$server_bin" "$admin_bin" "$kcnet_bin"; do
  [ -x "$bin" ] || { echo "quickstart: $bin was not built" >&2; exit 1; }
done

mkdir -p "$data_dir"
data_dir=$(cd "$data_dir" && pwd)
if [ -z "$(ls -A "$data_dir")" ]; then
  say "Seeding the demo data directory $data_dir"
  "$admin_bin" seed-demo --data_dir="$data_dir"
else
  say "Using the existing data directory $data_dir (not seeded again)"
  cat <<'ACCOUNTS'
If this script seeded it, the demo accounts are (unless their passwords were changed):
  USERNAME   PASSWORD               ROLE                   ORG UNIT
  admin1     demo-admin1-pass       administrator          90
  officer1   demo-officer1-pass     province_officer       90
  coord1     demo-coord1-pass       district_coordinator   901
  collab1    demo-collab1-pass      commune_collaborator   90101
  collab2    demo-collab2-pass      commune_collaborator   90201
ACCOUNTS
fi

# A local certificate authority and a server certificate it signs, made once: kcnet-server
# serves TLS, and clients trust it through ca.pem (kcnet --ca_file, grpcurl -cacert).
tls_dir="$data_dir/tls"
ca_pem="$tls_dir/ca.pem"
if [ ! -s "$ca_pem" ] || [ ! -s "$tls_dir/server.pem" ] || [ ! -s "$tls_dir/server.key" ]; then
  say "Making a local certificate authority and a server certificate in $tls_dir (openssl)"
  mkdir -p "$tls_dir"
  chmod 700 "$tls_dir"
  san="DNS:localhost,IP:127.0.0.1,IP:::1"
  add_san() { case ",$san," in *",$1,"*) ;; *) san="$san,$1" ;; esac; }
  machine=$(hostname 2>/dev/null || true)
  [ -n "$machine" ] && add_san "DNS:$machine"
  for ip in $(hostname -I 2>/dev/null || true); do add_san "IP:$ip"; done
  host=${listen%:*}
  host=${host#[}
  host=${host%]}
  case "$host" in
    "" | 0.0.0.0 | ::) ;;
    *:* | [0-9]*.[0-9]*.[0-9]*.[0-9]*) add_san "IP:$host" ;;
    *) add_san "DNS:$host" ;;
  esac
  (
    cd "$tls_dir"
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=kcnet quickstart CA" \
      -keyout ca.key -out ca.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kcnet-server" \
      -keyout server.key -out server.csr 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san" >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
      -extfile server.ext -out server.pem 2>/dev/null
    rm -f server.csr server.ext
    chmod 644 ca.pem server.pem
  )
  echo "  $ca_pem: the authority to trust; the certificate names $san" >&2
else
  say "Using the existing certificates in $tls_dir"
fi

cat <<EXAMPLES

== What to try: the kcnet field tool (built beside the server)
In another terminal: two tablets of the demo province, each a store of its own. The
password is asked for without echo (or give --password-file=FILE); the demo passwords
are in the table above.

  kcnet=$kcnet_bin
  ca=$ca_pem

  # collab1, commune collaborator of 90101, signs in once while online and downloads
  \$kcnet --store=collab1.db --server=$listen --ca_file=\$ca login collab1
  \$kcnet --store=collab1.db sync

  # offline from here on: register a facility, record a visit, draft and submit a request
  F=\$(\$kcnet --store=collab1.db facility add --name="Cơ sở bánh đa Tư" \\
        --owner="Nguyễn Văn Tư" --products="Bánh đa" --workers=8 | sed -n 's/^registered facility //p')
  \$kcnet --store=collab1.db visit record --facility=\$F --purpose=survey \\
        --notes="Cần máy tráng bánh" --needs=machinery
  R=\$(\$kcnet --store=collab1.db request draft --facility=\$F --category=machinery \\
        --amount=80.000.000 --description="Máy tráng bánh đa" | sed -n 's/^drafted request //p')
  \$kcnet --store=collab1.db request submit \$R
  \$kcnet --store=collab1.db status           # 4 changes wait for the next sync
  \$kcnet --store=collab1.db sync             # ...and go up

  # coord1, district coordinator of 901, reviews the commune's requests and endorses
  \$kcnet --store=coord1.db --server=$listen --ca_file=\$ca login coord1
  \$kcnet --store=coord1.db sync
  \$kcnet --store=coord1.db whoami           # the communes by name and official code
  \$kcnet --store=coord1.db facility list --commune=90101   # a commune by its code
  \$kcnet --store=coord1.db request review
  \$kcnet --store=coord1.db request endorse \$R --note="Đề nghị Sở Công Thương hỗ trợ"
  \$kcnet --store=coord1.db sync

  # back on collab1's tablet: the request's life so far
  \$kcnet --store=collab1.db sync
  \$kcnet --store=collab1.db request show \$R

  # officer1 (province) may then approve, start and complete it the same way:
  #   request approve \$R --amount=60.000.000 --funding=national; request start \$R; ...
  # and \`\$kcnet demo\` runs the whole scenario, with a conflicting edit, on its own server.

Aside: any gRPC client works too (server reflection is on: no .proto files needed), e.g.
grpcurl (https://github.com/fullstorydev/grpcurl, not packaged by Debian):
  grpcurl -cacert $ca_pem $listen list
  grpcurl -cacert $ca_pem -d '{"username":"collab1","password":"demo-collab1-pass"}' \\
    $listen kcnet.v1.AuthService/Login
docs/API.md says who may call what.

EXAMPLES

# The console's files, when the console was built.
console_dir=${KCNET_CONSOLE_DIR:-}
if [ -z "$console_dir" ]; then
  for candidate in "$build_dir/console/dist" "$root/console/dist"; do
    if [ -f "$candidate/index.html" ]; then
      console_dir=$candidate
      break
    fi
  done
fi
http_host=${http_listen%:*}
case "$http_host" in "" | 0.0.0.0 | "[::]") http_host=localhost ;; esac
console_url="https://$http_host:${http_listen##*:}/"
console_flags=(--http_listen="$http_listen")
if [ -n "$console_dir" ]; then
  console_flags+=(--console_dir="$console_dir")
  cat <<CONSOLE
== The console (bảng điều khiển): $console_url
Sign in with a demo account above (officer1, coord1 or admin1). The browser must trust
$ca_pem (import it as an authority), or accept the warning once.
CONSOLE
else
  cat <<CONSOLE
== The console was not built, so only its API is served on $console_url (docs/CONSOLE.md):
  curl --cacert $ca_pem -H 'Content-Type: application/json' \\
    -d '{"username":"officer1","password":"demo-officer1-pass"}' \\
    ${console_url}kcnet.v1.AuthService/Login
CONSOLE
fi

say "Starting kcnet-server on $listen with TLS, console bridge on $http_listen (Ctrl-C to stop)"
exec "$server_bin" --data_dir="$data_dir" --listen="$listen" \
  --tls_cert="$tls_dir/server.pem" --tls_key="$tls_dir/server.key" "${console_flags[@]}"
