// AttachmentService (proto/kcnet/v1/attachments.proto) over gRPC: Begin and GetUpload
// run on the storage threads like every unary call; Upload (bidi) and Download (server
// stream) are reactors that authenticate from the call's bearer token and do their file
// work in their callbacks, one chunk at a time (a stream holds at most one chunk and one
// ack in memory). The logic is Attachments' (attachments.h).
//
// Thread-safety: thread-safe; `attachments` and `runner` must outlive the service.
#ifndef KCNET_SERVER_ATTACHMENTS_ATTACHMENT_SERVICE_H_
#define KCNET_SERVER_ATTACHMENTS_ATTACHMENT_SERVICE_H_

#include <memory>

#include "grpcpp/grpcpp.h"
#include "server/attachments/attachments.h"
#include "server/directory/directory.h"
#include "server/rpc/rpc_runner.h"

namespace kcnet::server {

std::unique_ptr<grpc::Service> MakeAttachmentService(Attachments* attachments, Directory* directory,
                                                     RpcRunner* runner);

}  // namespace kcnet::server

#endif  // KCNET_SERVER_ATTACHMENTS_ATTACHMENT_SERVICE_H_
