#include "server/records/request_filter.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "sync/model/record_types.h"
#include "sync/model/requests.h"

namespace kcnet::server {
namespace {

using kcnet::v1::RecordChange;
using kcnet::v1::SupportRequest;
using model::IntValue;
using model::TextValue;

constexpr int32_t kMaxAgeDays = 3650;
constexpr int kMaxFilterCommunes = 1000;
constexpr int64_t kDayMs = 24 * 60 * 60 * 1000;

}  // namespace

absl::StatusOr<RequestFilter> MakeRequestFilter(RecordAccess& access, const Principal& p,
                                                const kcnet::v1::ListSupportRequestsRequest& req) {
  if (!kcnet::v1::RequestStatus_IsValid(req.status())) {
    return absl::InvalidArgumentError(
        absl::StrCat("status: unknown request status ", req.status()));
  }
  if (!kcnet::v1::SupportCategory_IsValid(req.category())) {
    return absl::InvalidArgumentError(
        absl::StrCat("category: unknown support category ", req.category()));
  }
  if (!kcnet::v1::FundingSource_IsValid(req.funding())) {
    return absl::InvalidArgumentError(
        absl::StrCat("funding: unknown funding source ", req.funding()));
  }
  if (req.author_id() < 0) return absl::InvalidArgumentError("author_id: must not be negative");
  if (req.min_age_days() < 0 || req.min_age_days() > kMaxAgeDays) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_age_days: must be 0 to ", kMaxAgeDays, ", got ", req.min_age_days()));
  }
  if (req.commune_ids_size() > kMaxFilterCommunes) {
    return absl::InvalidArgumentError(absl::StrCat("commune_ids: at most ", kMaxFilterCommunes,
                                                   ", got ", req.commune_ids_size()));
  }
  absl::StatusOr<std::vector<int64_t>> scope = access.ListScope(p, req.org_unit_id());
  if (!scope.ok()) return scope.status();
  RequestFilter f;
  f.query = sync::ListQuery{.type = model::kSupportRequestType, .buckets = *scope};
  if (req.commune_ids_size() > 0) {
    for (int64_t id : req.commune_ids()) {
      if (id <= 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("commune_ids: ", id, " is not an org unit id"));
      }
      if (!access.InScope(p, id)) {  // as for org_unit_id: out of scope = absent
        return absl::NotFoundError(
            absl::StrCat("commune_ids: org unit ", id, " not found in your org units"));
      }
    }
    absl::StatusOr<std::vector<int64_t>> chosen = access.directory().Communes(
        std::vector<int64_t>(req.commune_ids().begin(), req.commune_ids().end()));
    if (!chosen.ok()) return chosen.status();
    std::vector<int64_t> both;
    for (int64_t c : f.query.buckets) {
      if (std::find(chosen->begin(), chosen->end(), c) != chosen->end()) both.push_back(c);
    }
    f.query.buckets = std::move(both);
  }
  if (req.status() != kcnet::v1::REQUEST_STATUS_UNSPECIFIED) {
    f.query.equals.push_back({SupportRequest::kStatusFieldNumber, IntValue(req.status())});
  }
  if (!req.facility_id().empty()) {
    f.query.equals.push_back(
        {SupportRequest::kFacilityIdFieldNumber, TextValue(req.facility_id())});
  }
  if (req.category() != kcnet::v1::SUPPORT_CATEGORY_UNSPECIFIED) {
    f.query.equals.push_back({SupportRequest::kCategoryFieldNumber, IntValue(req.category())});
  }
  if (req.author_id() != 0) {
    f.query.equals.push_back({SupportRequest::kAuthorIdFieldNumber, IntValue(req.author_id())});
  }
  const kcnet::v1::FundingSource funding = req.funding();
  const int64_t changed_before =
      req.min_age_days() > 0 ? access.NowMs() - int64_t{req.min_age_days()} * kDayMs : 0;
  if (funding != kcnet::v1::FUNDING_SOURCE_UNSPECIFIED || changed_before != 0) {
    f.keep = [funding, changed_before](const RecordChange& record) {
      SupportRequest r;
      if (!model::FromChange(record, &r).ok()) return false;
      if (funding != kcnet::v1::FUNDING_SOURCE_UNSPECIFIED) {
        const kcnet::v1::FundingSource has =
            r.approved_funding() != kcnet::v1::FUNDING_SOURCE_UNSPECIFIED ? r.approved_funding()
                                                                          : r.proposed_funding();
        if (has != funding) return false;
      }
      return changed_before == 0 || r.updated_ms() <= changed_before;
    };
  }
  return f;
}

absl::StatusOr<FacilityIds> FacilitiesWithRequests(
    RecordAccess& access, const Principal& caller,
    const kcnet::v1::ListSupportRequestsRequest& req) {
  absl::StatusOr<RequestFilter> filter = MakeRequestFilter(access, caller, req);
  if (!filter.ok()) return filter.status();
  FacilityIds ids;
  bool at_end = false;
  absl::Status failed;
  absl::StatusOr<uint64_t> last = access.Scan(
      filter->query,
      [&](const RecordChange& record) {
        if (filter->keep && !filter->keep(record)) return true;
        SupportRequest r;
        failed = model::FromChange(record, &r);
        if (!failed.ok()) return false;
        ids.insert(r.facility_id());
        return true;
      },
      &at_end);
  if (!last.ok()) return last.status();
  if (!failed.ok()) return failed;
  return ids;
}

absl::Status CheckFacilityFilter(absl::string_view query, int kind, int sector,
                                 int64_t visited_from_ms, int64_t visited_to_ms) {
  if (query.size() > 200) {
    return absl::InvalidArgumentError(
        "query: at most 200 bytes / từ khoá tìm kiếm tối đa 200 byte");
  }
  if (!kcnet::v1::FacilityKind_IsValid(kind)) {
    return absl::InvalidArgumentError(absl::StrCat("kind: unknown facility kind ", kind));
  }
  if (!kcnet::v1::Sector_IsValid(sector)) {
    return absl::InvalidArgumentError(absl::StrCat("sector: unknown sector ", sector));
  }
  if (visited_from_ms < 0 || visited_to_ms < 0) {
    return absl::InvalidArgumentError(visited_from_ms < 0 ? "visited_from_ms: must not be negative"
                                                          : "visited_to_ms: must not be negative");
  }
  return absl::OkStatus();
}

}  // namespace kcnet::server
