// ApprovalGuard: makes every approval of a support request draw on its province's plan.
// It is the MutationGuard (server/records/mutation_guard.h) of the record services and of
// the sync stream, so no path sets a request APPROVED without the plan check: for each
// change of a mutation that moves a request to APPROVED it finds the request's province
// and calls PlanStore::Draw, inside the record store's transaction. Over-plan approvals
// need WriteContext::over_plan_reason, which only ApproveSupportRequest carries: a tablet's
// pushed approval beyond the plan (or with no plan) is refused and must be made online.
// With several instances on PostgreSQL, another request's unconfirmed draw counts while
// another instance is still writing its commune (its approval may commit): a race for a
// line's last money is then refused with what remains, never over-committed.
//
// Thread-safety: thread-safe; `directory` and `plans` must outlive it.
#ifndef KCNET_SERVER_PLANS_APPROVAL_GUARD_H_
#define KCNET_SERVER_PLANS_APPROVAL_GUARD_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "server/directory/directory.h"
#include "server/plans/plan_store.h"
#include "server/records/mutation_guard.h"

namespace kcnet::server {

// The province of an org unit: the unit itself or its nearest ancestor of level PROVINCE.
// NOT_FOUND when the unit is unknown or has no province above it.
absl::StatusOr<int64_t> ProvinceOf(Directory& directory, int64_t org_unit_id);

class ApprovalGuard : public MutationGuard {
 public:
  ApprovalGuard(Directory* directory, PlanStore* plans) : directory_(directory), plans_(plans) {}

  absl::Status Check(const Principal& caller, const WriteContext& context,
                     const kcnet::v1::Mutation& mutation, sync::RecordReader& reader) override;

 private:
  Directory* directory_;
  PlanStore* plans_;
};

}  // namespace kcnet::server

#endif  // KCNET_SERVER_PLANS_APPROVAL_GUARD_H_
