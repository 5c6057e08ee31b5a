// BudgetFor: the budget figures (plan vs approved vs disbursed, by funding source x support
// category) of one province and year as a signed-in caller may see them. This is the
// function the ReportService's budget report calls; docs/REPORTS.md ("Budget") defines
// every figure.
//
// Thread-safety: thread-safe (the stores and the directory are); they must outlive the call.
#ifndef KCNET_SERVER_PLANS_BUDGET_H_
#define KCNET_SERVER_PLANS_BUDGET_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "server/directory/directory.h"
#include "server/plans/plan_store.h"
#include "sync/server_store.h"

namespace kcnet::server {

// The budget of `year` (2000-2100) for `org_unit_id`, a unit in the caller's scope:
//   - a province: the whole province's figures;
//   - a district or a commune: the figures of its province, with approved_vnd,
//     disbursed_vnd and approved_requests counting only requests made in the communes
//     under that unit (planned_vnd, planned_facilities and remaining_vnd stay the
//     province line's: a plan has no breakdown below the province).
// Errors: INVALID_ARGUMENT "org_unit_id: ..." (not > 0, or a unit above the provinces)
// or "year: ..."; NOT_FOUND "org_unit_id: ..." when the unit does not exist or lies outside
// the caller's subtrees (one message for both). Before counting, it confirms the draws of
// approvals committed in `records` since the last call (PlanStore::ConfirmDraw), so an
// approval is counted as soon as its commit is visible; `as_of_op` says up to which op of
// the record store the answer is complete.
absl::StatusOr<BudgetFigures> BudgetFor(Directory& directory, PlanStore& plans,
                                        sync::ServerStore& records, const Principal& caller,
                                        int64_t org_unit_id, int32_t year);

// The confirmation step of BudgetFor alone: every unconfirmed draw whose request
// `records` shows approved (APPROVED, IN_PROGRESS or COMPLETED) becomes confirmed.
absl::Status ConfirmCommittedDraws(PlanStore& plans, sync::ServerStore& records);

// After a restore: makes `plans` agree with `records`, the record store restored with it.
// A backup copies kcnet.db before plans.db (server/admin/backup.h), so plans.db may hold
// what committed after kcnet.db's snapshot: the draw of a request `records` does not show
// approved (dropped, with its payments), payments to a request `records` does not show
// started (IN_PROGRESS or COMPLETED; dropped). Then every remaining draw is confirmed.
// The reverse (an approval in `records` without its draw) cannot happen: a draw commits
// in plans.db before its approval commits in kcnet.db.
absl::Status ReconcileWithRecords(PlanStore& plans, sync::ServerStore& records);

}  // namespace kcnet::server

#endif  // KCNET_SERVER_PLANS_BUDGET_H_
