#!/usr/bin/env bash
# kcnet in one command on a fresh Debian 12 machine: installs the build dependencies,
# builds kcnet, seeds a demo data directory (once), prints the demo accounts and what to
# try, then runs kcnet-server on 127.0.0.1:50051 in the foreground (Ctrl-C stops it).
#
# Usage: deploy/quickstart.sh
#   KCNET_DATA_DIR  the data directory (default ./kcnet-demo-data); seeded only when new
#   KCNET_LISTEN    where to listen (default 127.0.0.1:50051)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data_dir=${KCNET_DATA_DIR:-./kcnet-demo-data}
listen=${KCNET_LISTEN:-127.0.0.1:50051}

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
for bin in "$server_bin" "$admin_bin"; do
  [ -x "$bin" ] || { echo "quickstart: $bin was not built" >&2; exit 1; }
done

if [ ! -d "$data_dir" ] || [ -z "$(ls -A "$data_dir")" ]; then
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

cat <<EXAMPLES

== What to try (server reflection is on, so no .proto files are needed)
These use grpcurl (https://github.com/fullstorydev/grpcurl), which Debian does not
package; any gRPC client works the same way (grpc_cli, Postman, evans, your own code).
In another terminal:

  # sign in and keep the token
  grpcurl -plaintext -d '{"username":"collab1","password":"demo-collab1-pass"}' \\
    $listen kcnet.v1.AuthService/Login
  TOKEN=...   # the "token" field of the answer

  # who am I, my org units, the facilities I may see
  grpcurl -plaintext -H "authorization: Bearer \$TOKEN" $listen kcnet.v1.AuthService/WhoAmI
  grpcurl -plaintext -H "authorization: Bearer \$TOKEN" -d '{}' \\
    $listen kcnet.v1.OrgUnitService/ListOrgUnits
  grpcurl -plaintext -H "authorization: Bearer \$TOKEN" -d '{}' \\
    $listen kcnet.v1.FacilityService/ListFacilities

  # everything the server offers
  grpcurl -plaintext $listen list
  grpcurl -plaintext $listen grpc.health.v1.Health/Check

  # a support request's whole life cycle (C = collab1's token, D = coord1's, P = officer1's;
  # FACILITY = an id from ListFacilities, REQ = the id CreateSupportRequest returns)
  grpcurl -plaintext -H "authorization: Bearer \$C" -d '{"support_request":{"facility_id":"'\$FACILITY'","category":"SUPPORT_CATEGORY_MACHINERY_TECHNOLOGY","description":"Máy sấy","requested_amount_vnd":80000000,"proposed_funding":"FUNDING_SOURCE_LOCAL"}}' \
    $listen kcnet.v1.SupportRequestService/CreateSupportRequest
  grpcurl -plaintext -H "authorization: Bearer \$C" -d '{"id":"'\$REQ'"}' $listen kcnet.v1.SupportRequestService/SubmitSupportRequest
  grpcurl -plaintext -H "authorization: Bearer \$D" -d '{"id":"'\$REQ'","note":"ok"}' $listen kcnet.v1.SupportRequestService/EndorseSupportRequest
  grpcurl -plaintext -H "authorization: Bearer \$P" -d '{"id":"'\$REQ'","approved_amount_vnd":60000000,"funding":"FUNDING_SOURCE_NATIONAL"}' $listen kcnet.v1.SupportRequestService/ApproveSupportRequest
  grpcurl -plaintext -H "authorization: Bearer \$P" -d '{"id":"'\$REQ'"}' $listen kcnet.v1.SupportRequestService/StartSupportRequest
  grpcurl -plaintext -H "authorization: Bearer \$P" -d '{"id":"'\$REQ'"}' $listen kcnet.v1.SupportRequestService/CompleteSupportRequest
  grpcurl -plaintext -H "authorization: Bearer \$D" -d '{"request_id":"'\$REQ'"}' $listen kcnet.v1.SupportRequestService/ListRequestEvents

docs/API.md says who may call what. Sign in as admin1 to manage users, as coord1 to see
the whole district 901.

== Starting kcnet-server on $listen (Ctrl-C to stop)
EXAMPLES

exec "$server_bin" --data_dir="$data_dir" --listen="$listen"
