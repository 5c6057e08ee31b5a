#!/usr/bin/env bash
# Installs every Debian package kcnet needs to build, test and benchmark.
# Idempotent: when everything is already installed it prints nothing and exits 0.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  clang clang-format libclang-rt-14-dev
  libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libsqlite3-dev sqlite3 libsodium-dev zlib1g-dev openssl libssl-dev libcpp-httplib-dev
  googletest libgtest-dev libgmock-dev librapidcheck-dev libbenchmark-dev
  # Report exports (XLSX) and the test that reads them back with LibreOffice headless.
  libxlsxwriter-dev libreoffice-calc-nogui
  chromium  # the console's browser tests (console/tests, ctest label browser)
  unzip  # console/tests/pages.test.mjs reads a downloaded XLSX back
  # The PostgreSQL store (libpq) and its tests and benchmarks, which start their own server.
  libpq-dev postgresql
  # nginx in front (deploy/nginx/kcnet.conf, tests/deploy/nginx_test) and promtool, which
  # lints the /metrics scrape (tests/server/metrics/metrics_test).
  nginx-light prometheus
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# The console (console/) is built with Node.js and npm. A Node.js already on the machine is
# kept: it brings its own npm, which Debian's npm package would conflict with.
if ! command -v node >/dev/null 2>&1; then
  missing+=(nodejs npm)
elif ! command -v npm >/dev/null 2>&1; then
  if dpkg-query -W -f='${Status}' nodejs 2>/dev/null | grep -q "install ok installed"; then
    missing+=(npm)
  else
    echo "install-deps: this Node.js has no npm; the console will not be built" >&2
  fi
fi
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
