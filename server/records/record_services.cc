#include "server/records/record_services.h"

namespace kcnet::server {

std::vector<std::unique_ptr<grpc::Service>> MakeRecordServices(const RecordServiceDeps& deps) {
  // Filled in by the record services work.
  return {};
}

}  // namespace kcnet::server
