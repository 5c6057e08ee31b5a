// The business rules of kcnet, in one place for the server and the SDK: who may create,
// change or delete which record, and the support-request life cycle
//   draft -> submitted -> endorsed -> approved -> in progress -> completed
// with returned, rejected and cancelled (DOMAIN.md). The server enforces them on every
// write (unary APIs and tablet sync alike, as the validator of ServerStore::Apply); the
// SDK applies the same checks optimistically before queueing a write.
//
// Thread-safety: the functions are pure; the tables are immutable.
#ifndef KCNET_SYNC_MODEL_RULES_H_
#define KCNET_SYNC_MODEL_RULES_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "kcnet/v1/domain.pb.h"
#include "kcnet/v1/sync.pb.h"
#include "sync/server_store.h"

namespace kcnet::model {

// Attachments (record type 5): the largest size and the media types a record may announce.
// The server's upload limit (--attachment_max_bytes) may only be lower.
inline constexpr int64_t kAttachmentMaxBytes = 25 * 1024 * 1024;
const std::vector<std::string>& AttachmentMediaTypes();  // image/jpeg, image/png, ...

// The person making a write.
struct Actor {
  int64_t user_id = 0;
  kcnet::v1::Role role = kcnet::v1::ROLE_UNSPECIFIED;
  // True when the org unit id is a commune (a bucket) within the actor's subtrees; false
  // for any other unit, in scope or not (a record in a district bucket would be invisible
  // to every tablet).
  std::function<bool(int64_t commune_id)> in_scope;
};

// One allowed step of the request life cycle.
struct Transition {
  kcnet::v1::RequestAction action;
  kcnet::v1::RequestStatus from;
  kcnet::v1::RequestStatus to;
  std::vector<kcnet::v1::Role> roles;  // roles that may make it
  bool author_only = false;            // only the request's author (submit, cancel)
  bool not_author = false;             // never the request's author (endorse)
};

// Every allowed transition (docs/API.md prints this table).
const std::vector<Transition>& RequestTransitions();

// The transition `action` from `from` for `actor` on a request by `author_id`. NOT_FOUND-
// free: FAILED_PRECONDITION when the request is not in a state the action starts from,
// PERMISSION_DENIED when the actor's role (or authorship) does not allow it.
absl::StatusOr<const Transition*> FindTransition(kcnet::v1::RequestAction action,
                                                 kcnet::v1::RequestStatus from, const Actor& actor,
                                                 int64_t author_id);

// The transition that takes a request from `from` to `to`, if any.
const Transition* TransitionBetween(kcnet::v1::RequestStatus from, kcnet::v1::RequestStatus to);

// Checks one mutation against every rule, given the store's current records. Returns OK,
// or a status whose message starts with the offending field path ("changes[1].status:
// ..."): PERMISSION_DENIED (role, scope, authorship), FAILED_PRECONDITION (life-cycle
// state), INVALID_ARGUMENT (values), NOT_FOUND (a referenced record does not exist).
absl::Status CheckMutation(const Actor& actor, const kcnet::v1::Mutation& mutation,
                           sync::RecordReader& reader);

// CheckMutation bound to `actor`, for ServerStore::Apply.
sync::MutationValidator ValidatorFor(Actor actor);

}  // namespace kcnet::model

#endif  // KCNET_SYNC_MODEL_RULES_H_
