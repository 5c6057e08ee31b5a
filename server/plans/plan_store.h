// PlanStore: the money side of kcnet, behind a storage seam (plan_db.h): its own SQLite
// file (plans.db in the data dir, versioned migrations as the directory's), or the schema
// kcnet_plans of the PostgreSQL database every kcnet-server instance shares: provinces' yearly
// extension plans (kế hoạch khuyến công) by support category x funding source with their audited
// revisions, the draw each approval makes on a plan line, the disbursements (giải ngân) of
// requests, and the budget figures (plan vs approved vs disbursed) computed from them.
//
// Approvals are made in the record store (kcnet.db) by the life-cycle rules; the draw is
// made by ApprovalGuard (approval_guard.h) inside that store's transaction, before the
// approval is written. A draw is recorded "unconfirmed" and becomes confirmed once the
// approval is seen committed; until then it counts only where the record store shows the
// request approved, so a refused or rolled-back approval never holds plan money.
//
// Validation lives here: every write checks its input and names the field (INVALID_ARGUMENT),
// and nothing is stored when it fails. Scope (who may touch which province) is the
// caller's job (plan_service.h).
//
// One copy of the rules for both stores. On SQLite one process writes and the mutex below
// serialises the check-and-record of two approvals racing for a line's last money. On
// PostgreSQL several instances write at once: a draw locks its plan line's row (SELECT ...
// FOR UPDATE) in the plan transaction, so draws on one line take turns across instances;
// and an unconfirmed draw whose approval another instance is still writing counts as held
// (ApprovalGuard asks the record store: sync::RecordReader::BucketsWrittenElsewhere).
// Revisions of one plan take turns on the plan's row, payments on the change counter's.
//
// Thread-safety: thread-safe. Every call runs under one mutex.
#ifndef KCNET_SERVER_PLANS_PLAN_STORE_H_
#define KCNET_SERVER_PLANS_PLAN_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kcnet/v1/domain.pb.h"
#include "kcnet/v1/plans.pb.h"
#include "server/plans/plan_db.h"
#include "sync/hlc.h"

namespace kcnet::server {

// The schema version plans.db is migrated to (PRAGMA user_version). The PostgreSQL
// tables are migration 4 of server/pgstore/pg_schema.h.
inline constexpr int64_t kPlansSchemaVersion = 1;

// Limits of plan input.
inline constexpr int32_t kMinPlanYear = 2000;
inline constexpr int32_t kMaxPlanYear = 2100;
inline constexpr int64_t kMaxPlanAmountVnd = 1'000'000'000'000'000;  // 10^15 VND

// The year of `ms` (Unix ms) in Vietnam's local time (UTC+7, no daylight saving).
int32_t VietnamYear(int64_t ms);
// The date "YYYY-MM-DD" of `ms` in Vietnam's local time.
std::string VietnamDate(int64_t ms);
// "12.000.000" (Vietnamese grouping) and "12,000,000" (English grouping) of `vnd`.
std::string VndVi(int64_t vnd);
std::string VndEn(int64_t vnd);
// Vietnamese names for messages: "máy móc, công nghệ", "ngân sách trung ương".
std::string CategoryVi(kcnet::v1::SupportCategory category);
std::string FundingVi(kcnet::v1::FundingSource funding);

// Who writes (for the audit columns).
struct PlanActor {
  int64_t user_id = 0;
  std::string username;
};

// What an approval asks of the plan (ApprovalGuard fills it from the request).
struct ApprovalDraw {
  std::string request_id;  // text UUID
  int64_t province_id = 0;
  int64_t commune_id = 0;
  kcnet::v1::SupportCategory category = kcnet::v1::SUPPORT_CATEGORY_UNSPECIFIED;
  kcnet::v1::FundingSource funding = kcnet::v1::FUNDING_SOURCE_UNSPECIFIED;
  int64_t amount_vnd = 0;
  int64_t own_contribution_vnd = 0;  // counted on the COUNTERPART line, never checked
};

// A query of budget figures: one province, optionally some of its communes, one year.
struct BudgetQuery {
  int64_t province_id = 0;
  // Empty: the whole province. Otherwise only approvals and disbursements of requests
  // made in these communes count (the plan figures stay the province's: a plan has no
  // commune breakdown).
  std::vector<int64_t> commune_ids;
  int32_t year = 0;
};

// One row of the budget: one funding source x support category of the year.
struct BudgetRow {
  kcnet::v1::FundingSource funding = kcnet::v1::FUNDING_SOURCE_UNSPECIFIED;
  kcnet::v1::SupportCategory category = kcnet::v1::SUPPORT_CATEGORY_UNSPECIFIED;
  int64_t planned_vnd = 0;         // the plan line (0 without one)
  int64_t approved_vnd = 0;        // approvals of the year drawing on the line
  int64_t disbursed_vnd = 0;       // paid to those approvals, whatever the payment date
  int64_t remaining_vnd = 0;       // planned - approved (negative: approved over plan)
  int64_t planned_facilities = 0;  // the plan line's planned count
  int64_t approved_requests = 0;   // approvals counted in approved_vnd
};

// The budget of a province and year (docs/REPORTS.md, "Budget", defines every figure).
struct BudgetFigures {
  int64_t province_id = 0;
  int32_t year = 0;
  bool has_plan = false;
  int64_t plan_revision = 0;  // 0 without a plan
  // Rows for every line of the plan and every (funding, category) with an approval,
  // ordered by funding then category.
  std::vector<BudgetRow> rows;
  // The plan store's change counter these figures count up to: every plan write, draw
  // confirmation and disbursement increments it.
  int64_t as_of_change = 0;
  // Set by BudgetFor: the record store's last op (ServerStore::last_op) when it began.
  // Every approval committed at or before that op is counted (later ones may be too).
  uint64_t as_of_op = 0;
};

// Whether an unconfirmed draw (request `request_id`, made in commune `commune_id`) holds
// its money: its approval is in the record store as the caller's transaction sees it, or
// may still commit there (another instance is writing that commune's records).
using DrawHolds =
    std::function<absl::StatusOr<bool>(const std::string& request_id, int64_t commune_id)>;

class PlanStore {
 public:
  // Opens or creates plans.db at `path`, migrating it to kPlansSchemaVersion.
  // FAILED_PRECONDITION for a file of another application or a newer kcnet.
  static absl::StatusOr<std::unique_ptr<PlanStore>> Open(const std::string& path,
                                                         sync::Clock* clock = sync::SystemClock());
  // The same on any PlanDb (pgstore::OpenPgPlanDb for PostgreSQL), migrated first.
  static absl::StatusOr<std::unique_ptr<PlanStore>> Open(std::unique_ptr<PlanDb> db,
                                                         sync::Clock* clock = sync::SystemClock());

  // True when the plans are shared with other processes (PostgreSQL).
  bool shared() const;

  // ---- Plans ----
  // NOT_FOUND "plan: ..." when the province has no plan for the year.
  absl::StatusOr<kcnet::v1::Plan> GetPlan(int64_t province_id, int32_t year);
  // Plans of `provinces` (every province when empty) of `year` (every year when 0).
  absl::StatusOr<std::vector<kcnet::v1::Plan>> ListPlans(const std::vector<int64_t>& provinces,
                                                         int32_t year);
  // Stores a new plan (revision 1) with its first audit entry. INVALID_ARGUMENT naming
  // `plan.<field>` (year outside 2000-2100, a line's unknown category or funding, negative
  // or too large amounts, a duplicate (category, funding)); ALREADY_EXISTS "plan: ..."
  // when the province has a plan for that year.
  absl::StatusOr<kcnet::v1::Plan> CreatePlan(const kcnet::v1::Plan& plan, const PlanActor& actor,
                                             const std::string& note);
  // Replaces the plan's lines (revision + 1), auditing before and after. As CreatePlan,
  // and NOT_FOUND when there is no plan, FAILED_PRECONDITION "expected_revision: ..." when
  // `expected_revision` (non-zero) is not the current one, INVALID_ARGUMENT "note: ..."
  // when it is empty.
  absl::StatusOr<kcnet::v1::Plan> RevisePlan(const kcnet::v1::Plan& plan, int64_t expected_revision,
                                             const PlanActor& actor, const std::string& note);
  // The plan's audit trail, oldest first, revisions above `after_revision`, at most `limit`.
  absl::StatusOr<std::vector<kcnet::v1::PlanRevision>> ListRevisions(int64_t province_id,
                                                                     int32_t year,
                                                                     int64_t after_revision,
                                                                     int limit);

  // ---- Draws (approvals) ----
  // Checks an approval against what remains of its plan line (the plan of its province
  // for the current year in Vietnam) and records the draw, unconfirmed. `holds` says
  // whether another request's unconfirmed draw counts: when the record store, as the
  // caller's transaction sees it, holds that request approved (APPROVED, IN_PROGRESS or
  // COMPLETED), or when its approval may still commit (DrawHolds). Refuses with FAILED_PRECONDITION
  // "approved_amount_vnd: Vượt kế hoạch ... / over plan ..." (the line's remaining amount in both
  // languages) when the amount exceeds what remains, or "approved_amount_vnd: Chưa có kế hoạch ...
  // / no extension plan ..." when the province has no plan for the year, unless `over_plan_reason`
  // is given.
  absl::Status Draw(const ApprovalDraw& draw, const PlanActor& actor,
                    const std::string& over_plan_reason, const DrawHolds& holds);
  // Marks a request's draw confirmed (its approval is committed). OK when there is none.
  absl::Status ConfirmDraw(const std::string& request_id);
  // The draw of a request (nullopt when it has none).
  absl::StatusOr<std::optional<kcnet::v1::PlanDraw>> GetDraw(const std::string& request_id);
  // Request ids of unconfirmed draws (for confirmation against the record store).
  absl::StatusOr<std::vector<std::string>> UnconfirmedDraws();
  // Request ids of every draw, confirmed or not (reconciliation after a restore).
  absl::StatusOr<std::vector<std::string>> AllDraws();
  // Removes a request's payments and, with `draw`, its draw too, in one transaction; bumps
  // the change counter when anything went. Only for reconciling a restored plans.db with
  // the restored record store (ReconcileWithRecords, server/plans/budget.h): a backup's
  // plans.db may hold the draw of an approval, or the payment of a start, that committed
  // after its kcnet.db was copied.
  absl::Status DropForRestore(const std::string& request_id, bool draw);

  // ---- Disbursements ----
  // Records a payment to `request` (its committed state). The
  // request must be IN_PROGRESS or COMPLETED (FAILED_PRECONDITION "disbursement.request_id:
  // ..."); amount > 0 and, with the earlier payments, at most the approved amount
  // (FAILED_PRECONDITION "disbursement.amount_vnd: ... còn lại N ₫ / N VND remain");
  // paid_date a real YYYY-MM-DD from 2000-01-01 to today in Vietnam; reference 1-200 bytes;
  // note at most 1,000 bytes (INVALID_ARGUMENT naming the field).
  absl::StatusOr<kcnet::v1::Disbursement> RecordDisbursement(
      const kcnet::v1::SupportRequest& request, const kcnet::v1::Disbursement& disbursement,
      const PlanActor& actor);
  // A request's payments, oldest first.
  absl::StatusOr<std::vector<kcnet::v1::Disbursement>> ListDisbursements(
      const std::string& request_id);

  // ---- Budget ----
  // The budget figures of `query` (province > 0, year 2000-2100: INVALID_ARGUMENT
  // otherwise). Counts confirmed draws only: call ConfirmDraw for the committed ones first
  // (BudgetFor in plan_service.h does).
  absl::StatusOr<BudgetFigures> Budget(const BudgetQuery& query);

 private:
  PlanStore(std::unique_ptr<PlanDb> db, sync::Clock* clock)
      : clock_(clock), shared_(db->shared()), db_(std::move(db)) {}
  absl::StatusOr<std::optional<kcnet::v1::Plan>> ReadPlanLocked(int64_t province_id, int32_t year)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Makes the stored lines `plan`'s (they were `before`'s).
  absl::Status WriteLinesLocked(const kcnet::v1::Plan& before, const kcnet::v1::Plan& plan)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::vector<std::string>> RequestIdsLocked(absl::string_view sql)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status AuditLocked(const kcnet::v1::Plan& before, const kcnet::v1::Plan& after,
                           const PlanActor& actor, const std::string& note, int64_t now_ms)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status BumpChangeLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  sync::Clock* clock_;
  const bool shared_;
  absl::Mutex mu_;
  std::unique_ptr<PlanDb> db_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kcnet::server

#endif  // KCNET_SERVER_PLANS_PLAN_STORE_H_
