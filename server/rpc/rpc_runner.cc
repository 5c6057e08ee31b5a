#include "server/rpc/rpc_runner.h"

namespace kcnet::server {

// Placeholder until the server infrastructure work lands: no details yet.
grpc::Status ToGrpcStatus(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

}  // namespace kcnet::server
