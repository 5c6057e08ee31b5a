// Building the changes of kcnet's record writes, shared by the server's unary services and
// the client SDK so that both write exactly the same records: new record ids, single-field
// edits, and the support-request actions (a transition of the life cycle in rules.h, or a
// comment), each of which updates the request and appends a RequestEvent to its audit
// trail in the same mutation.
//
// Thread-safety: the functions are thread-safe (NewRecordId uses a thread-local generator).
#ifndef KCNET_SYNC_MODEL_REQUESTS_H_
#define KCNET_SYNC_MODEL_REQUESTS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "google/protobuf/message.h"
#include "kcnet/v1/domain.pb.h"
#include "kcnet/v1/sync.pb.h"
#include "sync/model/rules.h"

namespace kcnet::model {

// A new record id: a version 7 UUID (RFC 9562), i.e. the creation time in Unix
// milliseconds (48 bits, big-endian) then 74 random bits. Ids made later sort later, so
// the stores' id indexes grow at their right edge instead of at random pages; ids made in
// the same millisecond differ by their random bits. As 16 bytes, or in text form.
std::string NewRecordIdBytes(absl::Time now = absl::Now());
std::string NewRecordId();

kcnet::v1::Value IntValue(int64_t v);
kcnet::v1::Value TextValue(const std::string& v);
// Sets (or replaces) one field of `change`.
void SetField(kcnet::v1::RecordChange* change, uint32_t number, const kcnet::v1::Value& value);

// A change of record `message` carrying the fields named in `paths` (every field when
// `paths` is empty). INVALID_ARGUMENT "<paths_name>[i]: ..." for an unknown field or
// one in `read_only`.
absl::StatusOr<kcnet::v1::RecordChange> MaskedChange(const google::protobuf::Message& message,
                                                     const std::vector<std::string>& paths,
                                                     const std::vector<std::string>& read_only,
                                                     absl::string_view paths_name);

// A refusal's reason with the mutation-relative path turned into the record's field:
// "changes[0].fields[5]: visit.latitude: ..." -> "visit.latitude: ...",
// "changes[1].status: ..." -> "support_request.status: ...".
std::string RecordFieldMessage(const kcnet::v1::Mutation& m, absl::string_view reason);

// One action on a support request by the actor.
struct RequestActionInput {
  kcnet::v1::RequestAction action = kcnet::v1::REQUEST_ACTION_UNSPECIFIED;
  std::string note;
  int64_t approved_amount_vnd = 0;                                           // APPROVE only
  kcnet::v1::FundingSource funding = kcnet::v1::FUNDING_SOURCE_UNSPECIFIED;  // APPROVE only
};

// The audit-trail entry of an action on `request` (`to` is the new status; for CREATE and
// COMMENT the request's status is kept).
kcnet::v1::RequestEvent NewRequestEvent(const kcnet::v1::SupportRequest& request, int64_t actor_id,
                                        kcnet::v1::RequestAction action,
                                        kcnet::v1::RequestStatus to, const std::string& note,
                                        int64_t amount_vnd, int64_t now_ms);

// The changes of `input` on `current` (read at op `base_op`): for a transition, the
// request's new status, updated_ms, decision note (review actions), approved amount and
// funding (APPROVE), then its RequestEvent; for COMMENT only the RequestEvent (the note
// must not be empty). Errors name the field: "status: ..." (FAILED_PRECONDITION for a
// state the action does not start from, PERMISSION_DENIED for a role or authorship that
// may not take it), "approved_amount_vnd: ...", "funding: ...", "note: ..." (INVALID_ARGUMENT).
absl::StatusOr<std::vector<kcnet::v1::RecordChange>> RequestActionChanges(
    const kcnet::v1::SupportRequest& current, uint64_t base_op, const Actor& actor,
    const RequestActionInput& input, int64_t now_ms);

}  // namespace kcnet::model

#endif  // KCNET_SYNC_MODEL_REQUESTS_H_
