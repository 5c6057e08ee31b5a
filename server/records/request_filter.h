// The review queue's request filter (ListSupportRequestsRequest: scope, status, facility,
// category, funding, author, communes, age) as a store query plus an in-memory `keep`,
// shared by ListSupportRequests, CountSupportRequests and the record exports, so that the
// queue, its count and an export of requests see the same set. Also the checks of the
// facility and visit filter shared by the map's points and the record exports.
//
// Thread-safety: a free function; RecordAccess is thread-safe.
#ifndef KCNET_SERVER_RECORDS_REQUEST_FILTER_H_
#define KCNET_SERVER_RECORDS_REQUEST_FILTER_H_

#include <functional>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kcnet/v1/services.pb.h"
#include "server/records/record_access.h"
#include "sync/server_store.h"

namespace kcnet::server {

// The store query (scope, status, facility, category, author as indexed equality; the
// communes as buckets) and a `keep` for what the store cannot compare (funding: approved
// else proposed; age), null when not needed.
struct RequestFilter {
  sync::ListQuery query;
  std::function<bool(const kcnet::v1::RecordChange&)> keep;
};

// INVALID_ARGUMENT naming the field for a bad value; NOT_FOUND for an org unit outside
// the caller's scope (as one that does not exist).
absl::StatusOr<RequestFilter> MakeRequestFilter(RecordAccess& access, const Principal& caller,
                                                const kcnet::v1::ListSupportRequestsRequest& req);

// The ids of the facilities with at least one request that matches the queue's filter
// `req` (as MakeRequestFilter, whose errors it returns): the map's points and the exports
// of facilities and visits under the queue's filter.
using FacilityIds = absl::flat_hash_set<std::string>;
absl::StatusOr<FacilityIds> FacilitiesWithRequests(
    RecordAccess& access, const Principal& caller,
    const kcnet::v1::ListSupportRequestsRequest& req);

// The facility and visit filter of ListMapPoints and ExportRecords: INVALID_ARGUMENT naming
// the field for a query over 200 bytes, an unknown kind or sector, or a negative bound of
// the visit dates.
absl::Status CheckFacilityFilter(absl::string_view query, int kind, int sector,
                                 int64_t visited_from_ms, int64_t visited_to_ms);

}  // namespace kcnet::server

#endif  // KCNET_SERVER_RECORDS_REQUEST_FILTER_H_
