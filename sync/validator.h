// The seam through which business rules (sync/model/rules.h) check a mutation inside the
// store transaction that applies it: on the server (ServerStore::Apply) and on the device
// (DeviceStore::Write), so that the check and the write see the same records.
//
// Thread-safety: a RecordReader is only valid during the validator call that receives it.
#ifndef KCNET_SYNC_VALIDATOR_H_
#define KCNET_SYNC_VALIDATOR_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kcnet/v1/sync.pb.h"

namespace kcnet::sync {

// Read access to current records inside the store's transaction, for business rules.
class RecordReader {
 public:
  virtual ~RecordReader() = default;
  // The record's full current state as a change (every field), nullopt when absent.
  virtual absl::StatusOr<std::optional<kcnet::v1::RecordChange>> Read(uint32_t type,
                                                                      absl::string_view id) = 0;
  // Of `buckets`, those another writer is writing right now, in a transaction not yet
  // committed nor rolled back: their records may still change when it ends. Only stores
  // with several writers at once have any (PostgreSQL with several instances); the answer
  // stays true until the caller's transaction ends (the store keeps other writers out of
  // the buckets it reports free). Default: none (one writer, as SQLite).
  virtual absl::StatusOr<std::vector<int64_t>> BucketsWrittenElsewhere(
      const std::vector<int64_t>& buckets) {
    (void)buckets;
    return std::vector<int64_t>();
  }
};

// Business rules run per mutation inside the transaction, before the write; a non-OK
// status refuses the mutation with that message and nothing is stored.
using MutationValidator =
    std::function<absl::Status(const kcnet::v1::Mutation& mutation, RecordReader& reader)>;

}  // namespace kcnet::sync

#endif  // KCNET_SYNC_VALIDATOR_H_
