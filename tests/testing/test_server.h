// Options of a KcnetServer for tests: a data dir, a listen address (port 0 by default),
// the cheapest Argon2id parameters (passwords are hashed many times per test) and the
// per-RPC log silenced. Header-only; targets that include it link kcnet_server_app.
//
// Thread-safety: a pure function.
#ifndef KCNET_TESTS_TESTING_TEST_SERVER_H_
#define KCNET_TESTS_TESTING_TEST_SERVER_H_

#include <string>

#include "absl/strings/string_view.h"
#include "server/app/kcnet_server.h"

namespace kcnet::testing {

inline server::ServerOptions TestServerOptions(const std::string& data_dir,
                                               const std::string& listen = "127.0.0.1:0") {
  server::ServerOptions options;
  options.data_dir = data_dir;
  options.listen = listen;
  options.directory.password_ops_limit = server::kArgon2OpsLimitMin;
  options.directory.password_mem_limit = server::kArgon2MemLimitMin;
  options.log_sink = [](absl::string_view) {};
  return options;
}

}  // namespace kcnet::testing

#endif  // KCNET_TESTS_TESTING_TEST_SERVER_H_
