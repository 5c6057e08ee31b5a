#!/bin/sh
# Checks that libkcnet exports exactly the C ABI: every defined dynamic symbol
# (nm -D --defined-only) is a kcnet_ function declared in kcnet_c.h, and every function
# kcnet_c.h declares is exported. Usage: check_exports.sh LIBKCNET.so KCNET_C_H
set -eu
lib=$1
header=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# "ADDRESS TYPE NAME[@@VERSION]". Every name must start with kcnet_, including the version
# node of libkcnet.map (kcnet_0, type A), which is not a function and is left out of the
# comparison with the header.
nm -D --defined-only "$lib" > "$tmp/nm"
awk '{ sub(/@.*/, "", $3); print $3 }' "$tmp/nm" | sort -u > "$tmp/all"
awk '$2 != "A" { sub(/@.*/, "", $3); print $3 }' "$tmp/nm" | sort -u > "$tmp/exported"
sed -n 's/.*KCNET_API[^(]*[ *]\(kcnet_[a-z0-9_]*\)(.*/\1/p' "$header" | sort -u > "$tmp/declared"

status=0
if [ ! -s "$tmp/declared" ]; then
  echo "no KCNET_API functions found in $header" >&2
  exit 1
fi
if [ ! -s "$tmp/all" ]; then
  echo "nm -D --defined-only $lib listed nothing" >&2
  exit 1
fi
others=$(grep -v '^kcnet_' "$tmp/all" || true)
if [ -n "$others" ]; then
  echo "libkcnet exports symbols without the kcnet_ prefix:" >&2
  echo "$others" | head -n 50 >&2
  status=1
fi
undeclared=$(comm -23 "$tmp/exported" "$tmp/declared")
if [ -n "$undeclared" ]; then
  echo "libkcnet exports symbols kcnet_c.h does not declare:" >&2
  echo "$undeclared" >&2
  status=1
fi
missing=$(comm -13 "$tmp/exported" "$tmp/declared")
if [ -n "$missing" ]; then
  echo "kcnet_c.h declares functions libkcnet does not export:" >&2
  echo "$missing" >&2
  status=1
fi
if [ "$status" = 0 ]; then
  echo "libkcnet exports exactly the $(wc -l < "$tmp/declared") kcnet_ functions of kcnet_c.h"
fi
exit "$status"
