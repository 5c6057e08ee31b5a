// The record services: facilities, visits, support requests and their review. Every write
// goes through the sync core's merge (ServerStore::Apply) with the rules library as its
// validator, so unary clients and syncing tablets see one truth and one set of rules.
//
// Thread-safety: the services are thread-safe; the dependencies must outlive them.
#ifndef KCNET_SERVER_RECORDS_RECORD_SERVICES_H_
#define KCNET_SERVER_RECORDS_RECORD_SERVICES_H_

#include <memory>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/codegen/service_type.h"
#include "server/directory/directory.h"
#include "server/records/mutation_guard.h"
#include "server/rpc/rpc_runner.h"
#include "sync/hlc.h"
#include "sync/server_store.h"

namespace kcnet::server {

struct RecordServiceDeps {
  Directory* directory = nullptr;
  sync::ServerStore* store = nullptr;
  RpcRunner* runner = nullptr;
  sync::Clock* clock = sync::SystemClock();
  // Checks every write after the rules (the plans' draw on approval); null: none.
  MutationGuard* guard = nullptr;
};

// FacilityService, VisitService and SupportRequestService, to register on a builder.
std::vector<std::unique_ptr<grpc::Service>> MakeRecordServices(const RecordServiceDeps& deps);

}  // namespace kcnet::server

#endif  // KCNET_SERVER_RECORDS_RECORD_SERVICES_H_
