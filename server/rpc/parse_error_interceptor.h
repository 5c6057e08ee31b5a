// ParseErrorInterceptorFactory: turns gRPC's answer to a request that cannot be parsed into
// a clear INVALID_ARGUMENT.
//
// When protobuf refuses a request (most often a `string` field holding invalid UTF-8, which
// proto3 forbids), gRPC 1.51's callback API never calls the handler and answers
// UNIMPLEMENTED with no message (grpcpp/impl/codegen/server_callback_handlers.h), which
// tells the client the method does not exist. Our handlers never answer an empty
// UNIMPLEMENTED, so on a method that kcnet defines it can only mean that: this interceptor
// rewrites it. Calls to methods that do not exist keep their UNIMPLEMENTED. Client and
// bidi streams (SyncService.Sync) get no interceptor: their messages are parsed by the
// reactor's reads, never answered with that UNIMPLEMENTED.
//
// Thread-safety: thread-safe (stateless).
#ifndef KCNET_SERVER_RPC_PARSE_ERROR_INTERCEPTOR_H_
#define KCNET_SERVER_RPC_PARSE_ERROR_INTERCEPTOR_H_

#include "grpcpp/support/server_interceptor.h"

namespace kcnet::server {

class ParseErrorInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;
};

}  // namespace kcnet::server

#endif  // KCNET_SERVER_RPC_PARSE_ERROR_INTERCEPTOR_H_
