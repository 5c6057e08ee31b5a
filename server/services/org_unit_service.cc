#include <algorithm>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/directory/csv_import.h"
#include "server/rpc/paging.h"
#include "server/services/checks.h"
#include "server/services/directory_services.h"

namespace kcnet::server {
namespace {

using kcnet::v1::OrgUnit;

// The same answer for a unit that does not exist and one the caller may not see.
absl::Status UnitNotFound(absl::string_view field, int64_t id) {
  return absl::NotFoundError(absl::StrCat(field, ": no org unit ", id));
}

// The unit `id` if the caller may see it, else NOT_FOUND naming `field`.
absl::StatusOr<OrgUnit> VisibleUnit(Directory& directory, const Principal& caller,
                                    absl::string_view field, int64_t id) {
  absl::StatusOr<OrgUnit> unit = directory.GetOrgUnit(id);
  if (!unit.ok() && unit.status().code() != absl::StatusCode::kNotFound) return unit.status();
  if (!unit.ok() || !MaySeeOrgUnit(directory, caller, id)) return UnitNotFound(field, id);
  return unit;
}

// The caller's own units, less those inside another of them.
absl::StatusOr<std::vector<OrgUnit>> OwnRoots(Directory& directory, const Principal& caller) {
  std::vector<OrgUnit> roots;
  for (int64_t id : caller.org_unit_ids) {
    bool nested = false;
    for (int64_t other : caller.org_unit_ids) {
      if (other != id && directory.IsWithin(id, other)) nested = true;
    }
    if (nested) continue;
    absl::StatusOr<OrgUnit> unit = directory.GetOrgUnit(id);
    if (!unit.ok()) {
      if (unit.status().code() == absl::StatusCode::kNotFound) continue;
      return unit.status();
    }
    if (std::none_of(roots.begin(), roots.end(),
                     [&](const OrgUnit& seen) { return seen.id() == id; })) {
      roots.push_back(*std::move(unit));
    }
  }
  return roots;
}

}  // namespace

grpc::ServerUnaryReactor* OrgUnitServiceImpl::GetOrgUnit(
    grpc::CallbackServerContext* context, const kcnet::v1::GetOrgUnitRequest* request,
    OrgUnit* response) {
  return runner_->Run(context, "/kcnet.v1.OrgUnitService/GetOrgUnit",
                      [this, request, response](const Principal* caller) {
                        absl::Status status = CheckId("id", request->id());
                        if (!status.ok()) return status;
                        absl::StatusOr<OrgUnit> unit =
                            VisibleUnit(*directory_, *caller, "id", request->id());
                        if (!unit.ok()) return unit.status();
                        *response = *std::move(unit);
                        return absl::OkStatus();
                      });
}

grpc::ServerUnaryReactor* OrgUnitServiceImpl::ListOrgUnits(
    grpc::CallbackServerContext* context, const kcnet::v1::ListOrgUnitsRequest* request,
    kcnet::v1::ListOrgUnitsResponse* response) {
  return runner_->Run(
      context, "/kcnet.v1.OrgUnitService/ListOrgUnits",
      [this, request, response](const Principal* caller) -> absl::Status {
        if (request->parent_id() < 0) {
          return absl::InvalidArgumentError(absl::StrCat(
              "parent_id: must be >= 0 (0: your own org units), got ", request->parent_id()));
        }
        absl::StatusOr<int> page_size = PageSize(request->page_size());
        if (!page_size.ok()) return page_size.status();
        const uint64_t fingerprint = QueryFingerprint(*request, absl::StrCat(caller->user_id));
        absl::StatusOr<std::string> position = DecodePageToken(request->page_token(), fingerprint);
        if (!position.ok()) return position.status();

        std::vector<OrgUnit> units;
        if (request->parent_id() == 0) {
          absl::StatusOr<std::vector<OrgUnit>> roots = OwnRoots(*directory_, *caller);
          if (!roots.ok()) return roots.status();
          units = *std::move(roots);
        } else {
          absl::StatusOr<OrgUnit> parent =
              VisibleUnit(*directory_, *caller, "parent_id", request->parent_id());
          if (!parent.ok()) return parent.status();
          absl::StatusOr<std::vector<OrgUnit>> children =
              directory_->ListChildren(request->parent_id());
          if (!children.ok()) return children.status();
          for (OrgUnit& child : *children) {
            if (MaySeeOrgUnit(*directory_, *caller, child.id())) units.push_back(std::move(child));
          }
        }

        // Pages resume after the last code returned: byte order, whatever the directory's.
        std::sort(units.begin(), units.end(),
                  [](const OrgUnit& a, const OrgUnit& b) { return a.code() < b.code(); });
        std::string next;
        std::vector<OrgUnit> page = TakePage(
            std::move(units), *position, *page_size,
            [](const OrgUnit& unit) -> const std::string& { return unit.code(); }, &next);
        for (OrgUnit& unit : page) *response->add_org_units() = std::move(unit);
        if (!next.empty()) response->set_next_page_token(EncodePageToken(fingerprint, next));
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* OrgUnitServiceImpl::ImportOrgUnits(
    grpc::CallbackServerContext* context, const kcnet::v1::ImportOrgUnitsRequest* request,
    kcnet::v1::ImportOrgUnitsResponse* response) {
  return runner_->Run(
      context, "/kcnet.v1.OrgUnitService/ImportOrgUnits",
      [this, request, response](const Principal* caller) -> absl::Status {
        // A list may add units anywhere, new provinces included: only an administrator
        // whose scope holds every root unit may import it.
        const absl::Status denied = absl::PermissionDeniedError(
            "org unit import: only an administrator whose org units cover every province "
            "may import the code list (or kcnet-admin import-org-units on the server)");
        if (caller->role != kcnet::v1::ROLE_ADMINISTRATOR) return denied;
        absl::StatusOr<std::vector<OrgUnit>> roots = directory_->ListChildren(0);
        if (!roots.ok()) return roots.status();
        for (const OrgUnit& root : *roots) {
          const bool covered =
              std::any_of(caller->org_unit_ids.begin(), caller->org_unit_ids.end(),
                          [&](int64_t mine) { return directory_->IsWithin(root.id(), mine); });
          if (!covered) return denied;
        }
        constexpr size_t kMaxCsvBytes = 4 << 20;
        if (request->csv().size() > kMaxCsvBytes) {
          return absl::InvalidArgumentError(
              absl::StrCat("csv: at most ", kMaxCsvBytes, " bytes, got ", request->csv().size()));
        }
        if (request->csv().empty()) return absl::InvalidArgumentError("csv: empty");
        const ImportReport report = ::kcnet::server::ImportOrgUnits(
            *directory_, request->csv(),
            request->dry_run() ? ImportMode::kDryRun : ImportMode::kApply);
        if (!report.status.ok()) return report.status;
        response->set_applied(report.applied);
        response->set_rows(report.rows);
        for (const std::string& code : report.added) response->add_added(code);
        for (const std::string& code : report.unchanged) response->add_unchanged(code);
        response->set_summary(report.Summary());
        return absl::OkStatus();
      });
}

}  // namespace kcnet::server
