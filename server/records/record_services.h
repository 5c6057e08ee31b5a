// The record services: facilities, visits, support requests and their review. Every write
// goes through the sync core's merge (ServerStore::Apply) with the rules library as its
// validator, so unary clients and syncing tablets see one truth and one set of rules.
//
// Thread-safety: the services are thread-safe; the dependencies must outlive them.
#ifndef KCNET_SERVER_RECORDS_RECORD_SERVICES_H_
#define KCNET_SERVER_RECORDS_RECORD_SERVICES_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/codegen/service_type.h"
#include "server/directory/directory.h"
#include "server/records/mutation_guard.h"
#include "server/rpc/rpc_runner.h"
#include "sync/hlc.h"
#include "sync/server_store.h"

namespace kcnet::server {

// The index behind ListFacilities' `query` (the seam; the server's is the reports
// follower's r_fsearch, server/reports). Search() answers the ids of the facilities of
// `communes` whose folded words hold every one of `words` (sync::SearchWords of the
// query), the last one possibly as a prefix, in the index's order (names beginning with
// the query first), at most `limit` after `after` (a previous answer's `next`), and
// `next` (empty: no more). It must see every write committed before the call; when it
// cannot (an index still counting a long backlog) it answers UNAVAILABLE and the service
// scans the records instead.
//
// Thread-safety: implementations are thread-safe.
class FacilitySearch {
 public:
  struct Page {
    std::vector<std::string> ids;
    std::string next;
  };
  virtual ~FacilitySearch() = default;
  virtual absl::StatusOr<Page> Search(const std::vector<int64_t>& communes,
                                      const std::vector<std::string>& words,
                                      absl::string_view after, int limit) = 0;
};

struct RecordServiceDeps {
  Directory* directory = nullptr;
  sync::ServerStore* store = nullptr;
  RpcRunner* runner = nullptr;
  sync::Clock* clock = sync::SystemClock();
  // Checks every write after the rules (the plans' draw on approval); null: none.
  MutationGuard* guard = nullptr;
  // ListFacilities' search through an index; null: a scan of the records (at most
  // RecordAccess::kMaxFilteredScan per call).
  FacilitySearch* search = nullptr;
};

// FacilityService, VisitService and SupportRequestService, to register on a builder.
std::vector<std::unique_ptr<grpc::Service>> MakeRecordServices(const RecordServiceDeps& deps);

}  // namespace kcnet::server

#endif  // KCNET_SERVER_RECORDS_RECORD_SERVICES_H_
