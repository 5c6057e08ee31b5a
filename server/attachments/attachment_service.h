// AttachmentService (proto/kcnet/v1/attachments.proto) over gRPC: Begin and GetUpload
// run on the storage threads like every unary call; Upload (bidi) and Download (server
// stream) are reactors that authenticate from the call's bearer token and do their file
// work in their callbacks, one chunk at a time (a stream holds at most one chunk and one
// ack in memory). The logic is Attachments' (attachments.h).
//
// Upload is a bidi stream, which gets no server interceptor (see
// server/rpc/parse_error_interceptor.h), so its reactor writes its own RPC log line and
// gRPC metrics (StreamObservers); Download's come from the interceptors, as for every
// server stream.
//
// Thread-safety: thread-safe; `attachments`, `runner` and the observers must outlive the
// service.
#ifndef KCNET_SERVER_ATTACHMENTS_ATTACHMENT_SERVICE_H_
#define KCNET_SERVER_ATTACHMENTS_ATTACHMENT_SERVICE_H_

#include <memory>

#include "grpcpp/grpcpp.h"
#include "server/attachments/attachments.h"
#include "server/directory/directory.h"
#include "server/metrics/grpc_metrics.h"
#include "server/rpc/logger.h"
#include "server/rpc/rpc_runner.h"

namespace kcnet::server {

// Where an Upload stream reports its end; either may be null.
struct StreamObservers {
  Logger* logger = nullptr;
  metrics::GrpcServerMetrics* grpc_metrics = nullptr;
};

std::unique_ptr<grpc::Service> MakeAttachmentService(Attachments* attachments, Directory* directory,
                                                     RpcRunner* runner,
                                                     StreamObservers observers = {});

}  // namespace kcnet::server

#endif  // KCNET_SERVER_ATTACHMENTS_ATTACHMENT_SERVICE_H_
