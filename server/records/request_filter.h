// The review queue's request filter (ListSupportRequestsRequest: scope, status, facility,
// category, funding, author, communes, age) as a store query plus an in-memory `keep`,
// shared by ListSupportRequests, CountSupportRequests and the record exports, so that the
// queue, its count and an export of requests see the same set.
//
// Thread-safety: a free function; RecordAccess is thread-safe.
#ifndef KCNET_SERVER_RECORDS_REQUEST_FILTER_H_
#define KCNET_SERVER_RECORDS_REQUEST_FILTER_H_

#include <functional>

#include "absl/status/statusor.h"
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

}  // namespace kcnet::server

#endif  // KCNET_SERVER_RECORDS_REQUEST_FILTER_H_
