#include "server/plans/approval_guard.h"

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "sync/model/record_types.h"
#include "sync/model/requests.h"
#include "sync/schema.h"

namespace kcnet::server {
namespace {

using kcnet::v1::RecordChange;
using kcnet::v1::SupportRequest;

bool Approved(kcnet::v1::RequestStatus status) {
  return status == kcnet::v1::REQUEST_STATUS_APPROVED ||
         status == kcnet::v1::REQUEST_STATUS_IN_PROGRESS ||
         status == kcnet::v1::REQUEST_STATUS_COMPLETED;
}

// The request `id` (16 bytes) as the transaction sees it; nullopt when absent.
absl::StatusOr<std::optional<SupportRequest>> ReadRequest(sync::RecordReader& reader,
                                                          const std::string& id) {
  absl::StatusOr<std::optional<RecordChange>> record = reader.Read(model::kSupportRequestType, id);
  if (!record.ok()) return record.status();
  if (!record->has_value() || (*record)->deleted()) return std::optional<SupportRequest>();
  SupportRequest request;
  absl::Status s = model::FromChange(**record, &request);
  if (!s.ok()) return s;
  return std::optional<SupportRequest>(std::move(request));
}

}  // namespace

absl::StatusOr<int64_t> ProvinceOf(Directory& directory, int64_t org_unit_id) {
  int64_t id = org_unit_id;
  for (int depth = 0; id > 0 && depth < 64; ++depth) {
    absl::StatusOr<kcnet::v1::OrgUnit> unit = directory.GetOrgUnit(id);
    if (!unit.ok()) break;
    if (unit->level() == kcnet::v1::ORG_UNIT_LEVEL_PROVINCE) return unit->id();
    id = unit->parent_id();
  }
  return absl::NotFoundError(
      absl::StrCat("org unit ", org_unit_id, " lies in no province (its plan decides approvals)"));
}

absl::Status ApprovalGuard::Check(const Principal& caller, const WriteContext& context,
                                  const kcnet::v1::Mutation& mutation, sync::RecordReader& reader) {
  for (int i = 0; i < mutation.changes_size(); ++i) {
    const RecordChange& change = mutation.changes(i);
    if (change.type() != model::kSupportRequestType || change.deleted()) continue;
    bool to_approved = false;
    for (const kcnet::v1::FieldChange& f : change.fields()) {
      if (f.field() == SupportRequest::kStatusFieldNumber &&
          f.value().int_value() == kcnet::v1::REQUEST_STATUS_APPROVED) {
        to_approved = true;
      }
    }
    if (!to_approved) continue;
    absl::StatusOr<std::optional<RecordChange>> before =
        reader.Read(model::kSupportRequestType, change.id());
    if (!before.ok()) return before.status();
    // The request after the change: its current fields with the change's on top.
    RecordChange merged;
    if (before->has_value()) {
      SupportRequest old;
      absl::Status s = model::FromChange(**before, &old);
      if (!s.ok()) return s;
      if (old.status() == kcnet::v1::REQUEST_STATUS_APPROVED) continue;  // no transition
      merged = **before;
    } else {
      merged.set_type(change.type());
      merged.set_id(change.id());
    }
    for (const kcnet::v1::FieldChange& f : change.fields()) {
      model::SetField(&merged, f.field(), f.value());
    }
    SupportRequest request;
    absl::Status s = model::FromChange(merged, &request);
    if (!s.ok()) return s;
    const std::string path = absl::StrCat("changes[", i, "]");
    absl::StatusOr<int64_t> province = ProvinceOf(*directory_, request.commune_id());
    if (!province.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, ".commune_id: ", province.status().message()));
    }
    ApprovalDraw draw{.request_id = request.id(),
                      .province_id = *province,
                      .commune_id = request.commune_id(),
                      .category = request.category(),
                      .funding = request.approved_funding(),
                      .amount_vnd = request.approved_amount_vnd(),
                      .own_contribution_vnd = request.own_contribution_vnd()};
    // Another request's unconfirmed draw holds its money when the request is approved as
    // this transaction sees it, or when another instance is writing its commune right now
    // (its approval may be about to commit: counted, as the safe side). The probe comes
    // first: a commune found free stays free until this transaction ends, so the read
    // after it is the final word.
    auto holds = [&reader](const std::string& id_text, int64_t commune_id) -> absl::StatusOr<bool> {
      absl::StatusOr<std::vector<int64_t>> busy = reader.BucketsWrittenElsewhere({commune_id});
      if (!busy.ok()) return busy.status();
      if (!busy->empty()) return true;
      absl::StatusOr<std::string> id = sync::UuidFromText(id_text);
      if (!id.ok()) return false;
      absl::StatusOr<std::optional<SupportRequest>> r = ReadRequest(reader, *id);
      if (!r.ok()) return r.status();
      return r->has_value() && Approved((*r)->status());
    };
    s = plans_->Draw(draw, {caller.user_id, caller.username}, context.over_plan_reason, holds);
    if (!s.ok()) {
      if (absl::StartsWith(s.message(), "approved_amount_vnd")) {
        return absl::Status(s.code(), absl::StrCat(path, ".", s.message()));
      }
      return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace kcnet::server
