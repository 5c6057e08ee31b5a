#!/usr/bin/env bash
# Fills deploy/nginx/kcnet.conf's placeholders and prints the result (docs/DEPLOY.md).
#   render.sh --cert PEM --key PEM --grpc HOST:PORT [--grpc HOST:PORT ...]
#             [--http HOST:PORT ...] [--listen 443] [--stream-timeout 4h]
#             [--log-dir /var/log/nginx] > /etc/nginx/conf.d/kcnet.conf
# An upstream may carry nginx's server parameters after a space: --grpc "10.0.0.2:50051 backup".
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
listen=443 cert="" key="" timeout=4h log_dir=/var/log/nginx
grpc=() http=()
while [ $# -gt 0 ]; do
  case "$1" in
    --listen) listen="$2" ;;
    --cert) cert="$2" ;;
    --key) key="$2" ;;
    --grpc) grpc+=("$2") ;;
    --http) http+=("$2") ;;
    --stream-timeout) timeout="$2" ;;
    --log-dir) log_dir="$2" ;;
    *) echo "render.sh: unknown option $1 (see the comment at the top)" >&2; exit 2 ;;
  esac
  shift 2
done
if [ -z "$cert" ] || [ -z "$key" ] || [ ${#grpc[@]} -eq 0 ]; then
  echo "render.sh: --cert, --key and at least one --grpc are required" >&2
  exit 2
fi
lines() {
  local out="" server
  for server in "$@"; do out+="server ${server} max_fails=1 fail_timeout=10s;\\n    "; done
  printf '%s' "${out%\\n    }"
}
grpc_lines="$(lines "${grpc[@]}")"
# Without --http the console is not served: the location answers 502.
if [ ${#http[@]} -eq 0 ]; then http_lines="server 127.0.0.1:9 down;"; else http_lines="$(lines "${http[@]}")"; fi
sed -e "s|@LISTEN@|${listen}|g" -e "s|@TLS_CERT@|${cert}|g" -e "s|@TLS_KEY@|${key}|g" \
    -e "s|@STREAM_TIMEOUT@|${timeout}|g" -e "s|@LOG_DIR@|${log_dir}|g" \
    -e "s|@GRPC_UPSTREAMS@|${grpc_lines}|" -e "s|@HTTP_UPSTREAMS@|${http_lines}|" \
    "$here/kcnet.conf"
