// StreamLogInterceptorFactory: one RPC log line for each server-streaming call
// (WatchService.WatchChanges, AttachmentService.Download, the exports), as
// StorageRpcRunner writes for every unary call: the method, the caller, the status and
// the stream's lifetime as its latency. The line is written when gRPC is done with the
// call; a call that ended with no status sent (its client went away) is logged CANCELLED.
//
// The caller is named from the call's bearer token when the call arrives ("-" when it has
// none or the token is not valid); the service still decides alone whether the call may
// run. Unary calls are logged by their runner, and client and bidi streams by their
// service (they get no interceptor: see parse_error_interceptor.h).
//
// Thread-safety: thread-safe; `identify` is called from gRPC's threads.
#ifndef KCNET_SERVER_RPC_STREAM_LOG_INTERCEPTOR_H_
#define KCNET_SERVER_RPC_STREAM_LOG_INTERCEPTOR_H_

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/support/server_interceptor.h"
#include "server/rpc/logger.h"

namespace kcnet::server {

class StreamLogInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  // The username behind a token, or an error when it names no one.
  using Identify = std::function<absl::StatusOr<std::string>(absl::string_view token)>;

  // `logger` must outlive the server.
  StreamLogInterceptorFactory(Logger* logger, Identify identify)
      : logger_(logger), identify_(std::move(identify)) {}

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;

 private:
  Logger* const logger_;
  const Identify identify_;
};

}  // namespace kcnet::server

#endif  // KCNET_SERVER_RPC_STREAM_LOG_INTERCEPTOR_H_
