// RecordAccess: what the record services share. It turns a signed-in Principal into the
// set of communes it may touch and into a rules Actor, reads records (NOT_FOUND when absent
// or outside the caller's subtree, so existence does not leak), and writes them as one
// mutation through ServerStore::Apply with the rules as validator: the same merge and the
// same rules as tablet sync.
//
// Thread-safety: thread-safe; the dependencies must outlive it.
#ifndef KCNET_SERVER_RECORDS_RECORD_ACCESS_H_
#define KCNET_SERVER_RECORDS_RECORD_ACCESS_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "google/protobuf/field_mask.pb.h"
#include "google/protobuf/message.h"
#include "server/directory/directory.h"
#include "server/records/mutation_guard.h"
#include "server/records/record_services.h"
#include "sync/model/rules.h"
#include "sync/server_store.h"

namespace kcnet::server {

// The rules' view of a signed-in caller: its role, and its scope as the communes in the
// union of the subtrees of its org units (other units are never buckets). `directory` must outlive
// the Actor. The Actor remembers each scope answer, so make one per request or pushed batch (a
// reassignment is seen by the next one).
model::Actor ActorFor(Directory* directory, const Principal& caller);

class RecordAccess {
 public:
  explicit RecordAccess(const RecordServiceDeps& deps) : deps_(deps) {}

  int64_t NowMs() const { return deps_.clock->NowMs(); }
  Directory& directory() { return *deps_.directory; }
  FacilitySearch* search() { return deps_.search; }

  model::Actor ActorFor(const Principal& caller) {
    return server::ActorFor(deps_.directory, caller);
  }
  bool InScope(const Principal& caller, int64_t org_unit_id);

  // The communes (buckets) to list: all of the caller's, or those under `org_unit_id`
  // (NOT_FOUND when that unit is outside the caller's subtree).
  absl::StatusOr<std::vector<int64_t>> ListScope(const Principal& caller, int64_t org_unit_id);

  // Reads a record of `type` into `out` (a Facility, Visit, ...). INVALID_ARGUMENT for a
  // malformed id, NOT_FOUND when absent, deleted or outside the caller's subtree.
  // Returns the record's current op.
  absl::StatusOr<uint64_t> Read(const Principal& caller, uint32_t type, const std::string& id,
                                google::protobuf::Message* out);

  // True when a record of `type` with this id (text form) was ever stored, deleted or
  // not, in any bucket: for ids a client chose, never for answers about scope.
  absl::StatusOr<bool> Exists(uint32_t type, const std::string& id);

  // Applies `changes` as one mutation by the caller. Each change's base_op must be set by
  // the caller (the op it read, 0 for a new record). A refusal comes back as its status,
  // with the field path rewritten to the record's field ("visit.latitude: ...").
  // The rules and then the deps' guard (if any) check it, with `context`.
  absl::Status Write(const Principal& caller, std::vector<kcnet::v1::RecordChange> changes,
                     WriteContext context = {});

  // A change setting the fields of `message` named by `mask` (all fields when mask is
  // empty) on record `id`. INVALID_ARGUMENT naming an unknown or read-only path.
  static absl::StatusOr<kcnet::v1::RecordChange> MaskedChange(
      const google::protobuf::Message& message, const google::protobuf::FieldMask& mask,
      const std::vector<std::string>& read_only);

  // A new random (version 4) UUID in text form.
  static std::string NewId();

  // Lists records for the caller; `page_token` continues a previous page of the same query
  // (`fingerprint`, from QueryFingerprint in server/rpc/paging.h, identifies it). Fills
  // `next_token` when more may follow.
  // With `keep`, only the records it accepts are listed: the store is read in chunks and at
  // most kMaxFilteredScan records per call, so a page may be short (even empty) and still
  // carry a next token.
  absl::StatusOr<std::vector<kcnet::v1::RecordChange>> List(
      sync::ListQuery query, int32_t page_size, const std::string& page_token, uint64_t fingerprint,
      std::string* next_token,
      const std::function<bool(const kcnet::v1::RecordChange&)>& keep = nullptr);
  static constexpr size_t kMaxFilteredScan = 20000;

  // Reads the records of `query` in its order from `query.after` in chunks, handing each to
  // `visit` until it returns false (after that record) or the list ends (`*at_end`).
  // Returns the position of the last record handed over (`query.after` when none).
  absl::StatusOr<uint64_t> Scan(sync::ListQuery query,
                                const std::function<bool(const kcnet::v1::RecordChange&)>& visit,
                                bool* at_end);

  // The changes of `buckets` (the caller's scope, from ListScope) after op `after`, every
  // change a record's whole current state (or its tombstone), within `max_changes`
  // (ServerStore::ChangesSince; `more` set when some bucket has more). The page's
  // server_op is a safe next `after` when `more` is not set: every op up to it in those
  // buckets is in the page or at or below `after`. With `after` above every op (INT64_MAX)
  // it reads no change, only that server_op: where a full read begun now is complete.
  absl::StatusOr<kcnet::v1::ChangeBatch> ChangesSince(const std::vector<int64_t>& buckets,
                                                      uint64_t after, size_t max_changes);

  // How many records `query` lists (its `after` and `limit` ignored) that `keep` accepts
  // (all when null): reads the whole list in chunks, so the cost is the list's length.
  absl::StatusOr<int64_t> Count(
      sync::ListQuery query,
      const std::function<bool(const kcnet::v1::RecordChange&)>& keep = nullptr);

 private:
  RecordServiceDeps deps_;
};

}  // namespace kcnet::server

#endif  // KCNET_SERVER_RECORDS_RECORD_ACCESS_H_
