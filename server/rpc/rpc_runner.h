// RpcRunner: the one way kcnet's unary RPC handlers run. A handler returns at once
// (callback API); the runner authenticates the caller from the "authorization: Bearer"
// metadata, runs the body on a storage thread (SQLite work never blocks gRPC's threads),
// converts the absl::Status to a grpc::Status once (with google.rpc.BadRequest field
// violations for INVALID_ARGUMENT / FAILED_PRECONDITION whose message starts with
// "field: reason"), finishes the reactor, and writes one log line per RPC with the method,
// the caller, the status and the latency.
//
// Thread-safety: thread-safe.
#ifndef KCNET_SERVER_RPC_RPC_RUNNER_H_
#define KCNET_SERVER_RPC_RPC_RUNNER_H_

#include <functional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "grpcpp/grpcpp.h"
#include "server/directory/directory.h"

namespace kcnet::server {

class RpcRunner {
 public:
  // The body: `caller` is the authenticated principal (nullptr for public methods).
  using Body = std::function<absl::Status(const Principal* caller)>;

  virtual ~RpcRunner() = default;

  // Runs `body` for an authenticated caller; UNAUTHENTICATED without a valid token.
  virtual grpc::ServerUnaryReactor* Run(grpc::CallbackServerContext* context, const char* method,
                                        Body body) = 0;
  // Runs `body` without authentication (AuthService.Login only).
  virtual grpc::ServerUnaryReactor* RunPublic(grpc::CallbackServerContext* context,
                                              const char* method, Body body) = 0;
  // Runs a sign-in for `username` without authentication. A runner may keep sign-ins
  // (slow password hashing) apart from other calls and limit them per username and per
  // peer, answering RESOURCE_EXHAUSTED with a retry delay; the default runs RunPublic().
  virtual grpc::ServerUnaryReactor* RunSignIn(grpc::CallbackServerContext* context,
                                              const char* method, absl::string_view username,
                                              Body body) {
    return RunPublic(context, method, std::move(body));
  }
};

// Converts a Status to a grpc::Status with BadRequest details where it applies, and a
// google.rpc.RetryInfo detail when the status carries a retry delay (rate_limiter.h).
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace kcnet::server

#endif  // KCNET_SERVER_RPC_RPC_RUNNER_H_
