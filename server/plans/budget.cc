#include "server/plans/budget.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/plans/approval_guard.h"
#include "server/services/checks.h"
#include "sync/model/record_types.h"
#include "sync/schema.h"

namespace kcnet::server {

absl::Status ConfirmCommittedDraws(PlanStore& plans, sync::ServerStore& records) {
  absl::StatusOr<std::vector<std::string>> ids = plans.UnconfirmedDraws();
  if (!ids.ok()) return ids.status();
  for (const std::string& id : *ids) {
    absl::StatusOr<std::string> bytes = sync::UuidFromText(id);
    if (!bytes.ok()) continue;
    absl::StatusOr<std::optional<kcnet::v1::RecordChange>> record =
        records.ReadRecord(model::kSupportRequestType, *bytes);
    if (!record.ok()) return record.status();
    if (!record->has_value() || (*record)->deleted()) continue;
    kcnet::v1::SupportRequest request;
    absl::Status s = model::FromChange(**record, &request);
    if (!s.ok()) return s;
    const kcnet::v1::RequestStatus status = request.status();
    if (status == kcnet::v1::REQUEST_STATUS_APPROVED ||
        status == kcnet::v1::REQUEST_STATUS_IN_PROGRESS ||
        status == kcnet::v1::REQUEST_STATUS_COMPLETED) {
      s = plans.ConfirmDraw(id);
      if (!s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

absl::Status ReconcileWithRecords(PlanStore& plans, sync::ServerStore& records) {
  absl::StatusOr<std::vector<std::string>> ids = plans.AllDraws();
  if (!ids.ok()) return ids.status();
  for (const std::string& id : *ids) {
    kcnet::v1::RequestStatus status = kcnet::v1::REQUEST_STATUS_UNSPECIFIED;
    absl::StatusOr<std::string> bytes = sync::UuidFromText(id);
    if (bytes.ok()) {
      absl::StatusOr<std::optional<kcnet::v1::RecordChange>> record =
          records.ReadRecord(model::kSupportRequestType, *bytes);
      if (!record.ok()) return record.status();
      if (record->has_value() && !(*record)->deleted()) {
        kcnet::v1::SupportRequest request;
        absl::Status s = model::FromChange(**record, &request);
        if (!s.ok()) return s;
        status = request.status();
      }
    }
    const bool started = status == kcnet::v1::REQUEST_STATUS_IN_PROGRESS ||
                         status == kcnet::v1::REQUEST_STATUS_COMPLETED;
    const bool approved = started || status == kcnet::v1::REQUEST_STATUS_APPROVED;
    if (started) continue;
    absl::Status s = plans.DropForRestore(id, /*draw=*/!approved);
    if (!s.ok()) return s;
  }
  return ConfirmCommittedDraws(plans, records);
}

absl::StatusOr<BudgetFigures> BudgetFor(Directory& directory, PlanStore& plans,
                                        sync::ServerStore& records, const Principal& caller,
                                        int64_t org_unit_id, int32_t year) {
  absl::Status s = CheckId("org_unit_id", org_unit_id);
  if (!s.ok()) return s;
  if (year < kMinPlanYear || year > kMaxPlanYear) {
    return absl::InvalidArgumentError(absl::StrCat("year: must be between ", kMinPlanYear, " and ",
                                                   kMaxPlanYear, ", got ", year));
  }
  const absl::Status not_found =
      absl::NotFoundError(absl::StrCat("org_unit_id: no org unit ", org_unit_id));
  absl::StatusOr<kcnet::v1::OrgUnit> unit = directory.GetOrgUnit(org_unit_id);
  if (!unit.ok()) {
    return unit.status().code() == absl::StatusCode::kNotFound ? not_found : unit.status();
  }
  if (!Covers(directory, caller, org_unit_id)) return not_found;
  absl::StatusOr<int64_t> province = ProvinceOf(directory, org_unit_id);
  if (!province.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("org_unit_id: budget figures are per province; org unit ", org_unit_id,
                     " is not a province nor inside one"));
  }
  BudgetQuery query{.province_id = *province, .year = year};
  if (*province != org_unit_id) {
    absl::StatusOr<std::vector<int64_t>> communes = directory.Communes({org_unit_id});
    if (!communes.ok()) return communes.status();
    query.commune_ids = *std::move(communes);
    if (query.commune_ids.empty()) query.commune_ids.push_back(-1);  // no commune: nothing counts
  }
  const uint64_t as_of_op = records.last_op();
  s = ConfirmCommittedDraws(plans, records);
  if (!s.ok()) return s;
  absl::StatusOr<BudgetFigures> figures = plans.Budget(query);
  if (figures.ok()) figures->as_of_op = as_of_op;
  return figures;
}

}  // namespace kcnet::server
