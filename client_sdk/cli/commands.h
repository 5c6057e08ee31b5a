// The commands of the `kcnet` field tool, built on kcnet::sdk::Client alone: sign in once
// while online, then register facilities, record visits and work on support requests
// offline against the local store; `kcnet sync` uploads and downloads.
//
//   kcnet [--store=FILE] [--device=ID] [--server=HOST:PORT] COMMAND [ARGS] [--flags]
//
// The store defaults to ./kcnet-store.db. The device id (--device, or else
// "<hostname>-<random>") and the server address are remembered beside the store in
// STORE.settings, so later commands need neither. Results go to stdout; errors are one line
// on stderr ("kcnet: facility add: --name is required") and the exit code is 1 (2 for a
// wrong command line).
//
// Thread-safety: RunKcnet() is the program; call it from one thread at a time.
#ifndef KCNET_CLIENT_SDK_CLI_COMMANDS_H_
#define KCNET_CLIENT_SDK_CLI_COMMANDS_H_

#include <string>
#include <vector>

namespace kcnet::cli {

// Runs the tool with `argv` (without the program name) and returns its exit code.
// `self_path` is the kcnet binary's own path (`kcnet demo` finds kcnet-server beside it).
int RunKcnet(const std::vector<std::string>& argv, const std::string& self_path);

}  // namespace kcnet::cli

#endif  // KCNET_CLIENT_SDK_CLI_COMMANDS_H_
