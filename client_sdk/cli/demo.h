// `kcnet demo`: the field scenario end to end against a real kcnet-server.
//
// It seeds a data directory in a temp dir with `kcnet-admin seed-demo` (plus a second
// collaborator for commune 90101), starts `kcnet-server --listen=127.0.0.1:0`, then drives
// kcnet::sdk::Client stores, one per device:
//   1. two collaborator tablets of the same commune sign in and download their commune;
//   2. offline, each registers a facility, records a visit, drafts and submits a request
//      (a sync attempt while offline fails and keeps everything);
//   3. they reconnect and sync; each sees the other's records;
//   4. the district coordinator endorses one request and returns the other;
//   5. the province officer approves the endorsed one; the tablets see the decisions;
//   6. both tablets edit the same facility offline; after sync they converge, the tablet
//      whose edit lost gets a conflict report;
//   7. every store syncs once more and a fresh store downloads everything from the server
//      (the sync verifies each commune's checksum against the server's checkpoint); each
//      device's Checkpoints() must equal the fresh store's, commune by commune.
// Each step is printed on stdout; the last line is `converged`. Any failure returns an
// error naming the step (the tool exits 1); the server's log is kept (--keep=yes keeps the
// whole temp dir).
//
// kcnet-server and kcnet-admin are --server_bin / --admin_bin, else found beside the kcnet
// binary, else in the build tree kcnet was built in, else on $PATH.
//
// Thread-safety: RunDemo() is a program; call it from one thread.
#ifndef KCNET_CLIENT_SDK_CLI_DEMO_H_
#define KCNET_CLIENT_SDK_CLI_DEMO_H_

#include <string>

#include "absl/status/status.h"
#include "client_sdk/cli/args.h"

namespace kcnet::cli {

absl::Status RunDemo(const Args& args, const std::string& self_path);

}  // namespace kcnet::cli

#endif  // KCNET_CLIENT_SDK_CLI_DEMO_H_
