// MutationGuard: a seam for checks of a write that the rules library (sync/model/rules.h)
// cannot make from the records alone, run inside the store transaction right after the
// rules passed, on every path that writes records (the unary record services, the sync
// stream's pushes and conflict restores). kcnet's one guard is the province plan's draw on
// an approval (server/plans/approval_guard.h).
//
// GuardedValidator() composes the rules with a guard into the validator ServerStore::Apply
// takes.
//
// Thread-safety: implementations must be thread-safe; Check() runs on the store's writer
// thread while it holds the store's lock, so it must never call back into the store.
#ifndef KCNET_SERVER_RECORDS_MUTATION_GUARD_H_
#define KCNET_SERVER_RECORDS_MUTATION_GUARD_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "kcnet/v1/sync.pb.h"
#include "server/directory/directory.h"
#include "sync/validator.h"

namespace kcnet::server {

// What a write carries beside its records: the over-plan reason of an approval
// (ApproveRequest.over_plan_reason; empty on every other path).
struct WriteContext {
  std::string over_plan_reason;
};

class MutationGuard {
 public:
  virtual ~MutationGuard() = default;
  // OK, or the refusal of `mutation` (a status whose message starts with the field path,
  // as the rules' refusals do). `reader` reads the records inside the transaction.
  virtual absl::Status Check(const Principal& caller, const WriteContext& context,
                             const kcnet::v1::Mutation& mutation, sync::RecordReader& reader) = 0;
};

// The rules for `caller` (model::ValidatorFor(ActorFor(...))), then `guard` (may be null).
sync::MutationValidator GuardedValidator(Directory* directory, MutationGuard* guard,
                                         const Principal& caller, WriteContext context = {});

}  // namespace kcnet::server

#endif  // KCNET_SERVER_RECORDS_MUTATION_GUARD_H_
