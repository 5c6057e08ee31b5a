#include "server/records/record_export.h"

#include <algorithm>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "kcnet/v1/record_export.grpc.pb.h"
#include "server/records/request_filter.h"
#include "server/reports/export_chunks.h"
#include "server/reports/export_file.h"
#include "server/reports/labels.h"
#include "server/rpc/storage_rpc_runner.h"
#include "sync/model/record_types.h"
#include "sync/model/requests.h"
#include "sync/text_fold.h"

namespace kcnet::server {
namespace {

using kcnet::v1::ExportRecordsRequest;
using kcnet::v1::Facility;
using kcnet::v1::RecordChange;
using kcnet::v1::SupportRequest;
using kcnet::v1::Visit;
using reports::Cell;
using reports::ReportTable;

// Vietnam's date (UTC+7 all year), "YYYY-MM-DD"; "" for 0 (no date).
std::string VnDate(int64_t ms) {
  if (ms == 0) return "";
  return absl::FormatTime("%Y-%m-%d", absl::FromUnixMillis(ms), absl::FixedTimeZone(7 * 3600));
}

// Whether a facility matches the registry's search (as ListFacilities: folded words, the
// last one a possible prefix), kind and sector.
bool FacilityMatches(const Facility& f, const ExportRecordsRequest& req,
                     const std::vector<std::string>& words) {
  if (req.kind() != 0 && f.kind() != req.kind()) return false;
  if (req.sector() != 0 && f.sector() != req.sector()) return false;
  if (words.empty()) return true;
  const std::vector<std::string> tokens = sync::SearchWords(
      absl::StrCat(f.name(), "\n", f.owner_name(), "\n", f.address(), "\n", f.main_products()));
  for (size_t w = 0; w < words.size(); ++w) {
    const bool last = w + 1 == words.size();
    bool found = false;
    for (const std::string& t : tokens) {
      if (t == words[w] || (last && t.rfind(words[w], 0) == 0)) {
        found = true;
        break;
      }
    }
    if (!found) return false;
  }
  return true;
}

// Reads every record of `query` (all pages), handing each decoded message to `row`; stops
// at the first error (of decoding or of `row`).
template <typename Message, typename Row>
absl::Status ScanAll(RecordAccess& access, sync::ListQuery query, Row row) {
  bool at_end = false;
  absl::Status failed;
  absl::StatusOr<uint64_t> last = access.Scan(
      std::move(query),
      [&](const RecordChange& r) {
        Message m;
        failed = model::FromChange(r, &m);
        if (failed.ok()) failed = row(m);
        return failed.ok();
      },
      &at_end);
  if (!last.ok()) return last.status();
  return failed;
}

// One export in flight: authenticated, written row by row to a temporary file, then sent
// chunk by chunk from it.
class ExportRecordsWriter : public reports::ExportChunkWriter {
 public:
  ExportRecordsWriter(RecordAccess* access, grpc::CallbackServerContext* ctx,
                      const ExportRecordsRequest* request) {
    std::optional<Principal> caller = Authenticate(*ctx, access->directory());
    if (!caller.has_value()) return;
    reports::ExportFile file(request->format() == kcnet::v1::EXPORT_FORMAT_XLSX
                                 ? reports::ExportFile::Format::kXlsx
                                 : reports::ExportFile::Format::kCsv);
    absl::Status s = WriteRecordExport(*access, *caller, *request, file);
    absl::StatusOr<reports::ExportBytes> bytes =
        s.ok() ? file.Finish() : absl::StatusOr<reports::ExportBytes>(s);
    if (!bytes.ok()) {
      Finish(ToGrpcStatus(bytes.status()));
      return;
    }
    SendFile(file.file_name(), *std::move(bytes));
  }
};

class RecordExportServiceImpl : public kcnet::v1::RecordExportService::CallbackService {
 public:
  explicit RecordExportServiceImpl(const RecordServiceDeps& deps) : access_(deps) {}

  grpc::ServerWriteReactor<kcnet::v1::ExportChunk>* ExportRecords(
      grpc::CallbackServerContext* ctx, const ExportRecordsRequest* req) override {
    return new ExportRecordsWriter(&access_, ctx, req);
  }

 private:
  RecordAccess access_;
};

}  // namespace

absl::StatusOr<ReportTable> RecordExportTable(RecordAccess& access, const Principal& caller,
                                              const ExportRecordsRequest& req) {
  ReportTable t;
  reports::TableSink sink(&t);
  absl::Status s = WriteRecordExport(access, caller, req, sink);
  if (!s.ok()) return s;
  return t;
}

absl::Status WriteRecordExport(RecordAccess& access, const Principal& caller,
                               const ExportRecordsRequest& req, reports::RowSink& sink) {
  if (req.format() != kcnet::v1::EXPORT_FORMAT_CSV &&
      req.format() != kcnet::v1::EXPORT_FORMAT_XLSX) {
    return absl::InvalidArgumentError("format: CSV or XLSX");
  }
  absl::Status filter = CheckFacilityFilter(req.query(), req.kind(), req.sector(),
                                            req.visited_from_ms(), req.visited_to_ms());
  if (!filter.ok()) return filter;
  absl::StatusOr<reports::Language> language = reports::ParseLanguage("language", req.language());
  if (!language.ok()) return language.status();
  const reports::Language lang = *language;
  auto label = [lang](const google::protobuf::EnumDescriptor* type, int value) {
    return Cell::Text(reports::EnumLabel(type, value, lang));
  };
  std::unordered_map<int64_t, std::string> commune_names;
  auto commune = [&](int64_t id) -> const std::string& {
    auto it = commune_names.find(id);
    if (it == commune_names.end()) {
      absl::StatusOr<kcnet::v1::OrgUnit> unit = access.directory().GetOrgUnit(id);
      it = commune_names.emplace(id, unit.ok() ? unit->name() : absl::StrCat(id)).first;
    }
    return it->second;
  };
  if (req.type() == kcnet::v1::EXPORT_RECORD_TYPE_REQUESTS) {
    absl::StatusOr<RequestFilter> filter = MakeRequestFilter(access, caller, req.requests());
    if (!filter.ok()) {
      return absl::Status(filter.status().code(),
                          absl::StrCat("requests.", filter.status().message()));
    }
    absl::Status s =
        sink.Start("de-nghi-ho-tro",
                   {"Mã đề nghị / Request id", "Mã cơ sở / Facility id", "Xã / Commune",
                    "Nội dung hỗ trợ / Category", "Trạng thái / Status",
                    "Số tiền đề nghị / Requested (VND)", "Đối ứng / Own contribution (VND)",
                    "Nguồn đề xuất / Proposed funding", "Số tiền duyệt / Approved (VND)",
                    "Nguồn duyệt / Approved funding", "Ngày tạo / Created", "Cập nhật / Updated"});
    if (!s.ok()) return s;
    bool at_end = false;
    absl::Status failed;
    absl::StatusOr<uint64_t> last = access.Scan(
        filter->query,
        [&](const RecordChange& record) {
          if (filter->keep && !filter->keep(record)) return true;
          SupportRequest r;
          failed = model::FromChange(record, &r);
          if (failed.ok()) {
            failed =
                sink.Add({Cell::Text(r.id()), Cell::Text(r.facility_id()),
                          Cell::Text(commune(r.commune_id())),
                          label(kcnet::v1::SupportCategory_descriptor(), r.category()),
                          label(kcnet::v1::RequestStatus_descriptor(), r.status()),
                          Cell::Vnd(r.requested_amount_vnd()), Cell::Vnd(r.own_contribution_vnd()),
                          label(kcnet::v1::FundingSource_descriptor(), r.proposed_funding()),
                          Cell::Vnd(r.approved_amount_vnd()),
                          label(kcnet::v1::FundingSource_descriptor(), r.approved_funding()),
                          Cell::Date(VnDate(r.created_ms())), Cell::Date(VnDate(r.updated_ms()))});
          }
          return failed.ok();
        },
        &at_end);
    if (!last.ok()) return last.status();
    return failed;
  }
  if (req.type() != kcnet::v1::EXPORT_RECORD_TYPE_FACILITIES &&
      req.type() != kcnet::v1::EXPORT_RECORD_TYPE_VISITS) {
    return absl::InvalidArgumentError("type: FACILITIES, VISITS or REQUESTS");
  }
  absl::StatusOr<std::vector<int64_t>> scope = access.ListScope(caller, req.org_unit_id());
  if (!scope.ok()) return scope.status();
  // The queue's filter, when the console sends it: only facilities with a matching request.
  std::optional<FacilityIds> with_requests;
  if (req.has_requests()) {
    absl::StatusOr<FacilityIds> ids = FacilitiesWithRequests(access, caller, req.requests());
    if (!ids.ok()) {
      return absl::Status(ids.status().code(), absl::StrCat("requests.", ids.status().message()));
    }
    with_requests = *std::move(ids);
  }
  const int64_t author = req.has_requests() ? req.requests().author_id() : 0;
  const std::vector<std::string> words = sync::SearchWords(req.query());
  const bool facilities = req.type() == kcnet::v1::EXPORT_RECORD_TYPE_FACILITIES;
  // For visits: the names of the facilities that match, to keep their visits only.
  std::unordered_map<std::string, std::string> matched;
  // With a filter on facilities (search, kind, sector, the queue's requests), the visits
  // are read facility by facility through the visits' facility index (in the facility's
  // commune, as ListVisits), so a search matching a tenth of a province reads a tenth of
  // its visits: those facilities in the order listed, each one's visits newest first.
  // Without one, every visit of the scope in one pass, newest first.
  const bool facility_filter =
      !words.empty() || req.kind() != 0 || req.sector() != 0 || with_requests.has_value();
  std::vector<std::pair<std::string, int64_t>> matched_order;  // id, commune
  absl::Status s;
  if (facilities) {
    s = sink.Start(
        "co-so", {"Mã cơ sở / Facility id", "Xã / Commune", "Tên cơ sở / Name", "Chủ cơ sở / Owner",
                  "Loại hình / Kind", "Ngành / Sector", "Địa chỉ / Address", "Vĩ độ / Latitude",
                  "Kinh độ / Longitude", "Lao động / Workers", "Sản phẩm chính / Main products",
                  "Ngày đăng ký / Registered"});
    if (!s.ok()) return s;
  }
  s = ScanAll<Facility>(
      access, sync::ListQuery{.type = model::kFacilityType, .buckets = *scope},
      [&](const Facility& f) {
        if (!FacilityMatches(f, req, words)) return absl::OkStatus();
        if (with_requests.has_value() && !with_requests->contains(f.id())) return absl::OkStatus();
        if (!facilities) {
          matched.emplace(f.id(), f.name());
          if (facility_filter) matched_order.emplace_back(f.id(), f.commune_id());
          return absl::OkStatus();
        }
        return sink.Add(
            {Cell::Text(f.id()), Cell::Text(commune(f.commune_id())), Cell::Text(f.name()),
             Cell::Text(f.owner_name()), label(kcnet::v1::FacilityKind_descriptor(), f.kind()),
             label(kcnet::v1::Sector_descriptor(), f.sector()), Cell::Text(f.address()),
             Cell::Number(f.latitude()), Cell::Number(f.longitude()), Cell::Int(f.workers()),
             Cell::Text(f.main_products()), Cell::Date(VnDate(f.created_ms()))});
      });
  if (!s.ok() || facilities) return s;
  s = sink.Start("lan-tham", {"Mã lần thăm / Visit id", "Mã cơ sở / Facility id",
                              "Tên cơ sở / Facility", "Xã / Commune", "Ngày thăm / Visited",
                              "Mục đích / Purpose", "Vĩ độ / Latitude", "Kinh độ / Longitude"});
  if (!s.ok()) return s;
  const int64_t from = req.visited_from_ms(), to = req.visited_to_ms();
  auto add_visit = [&](const Visit& v) {
    if (v.visited_ms() < from || (to != 0 && v.visited_ms() >= to)) return absl::OkStatus();
    if (author != 0 && v.collaborator_id() != author) return absl::OkStatus();
    auto it = matched.find(v.facility_id());
    if (it == matched.end()) return absl::OkStatus();
    return sink.Add({Cell::Text(v.id()), Cell::Text(v.facility_id()), Cell::Text(it->second),
                     Cell::Text(commune(v.commune_id())), Cell::Date(VnDate(v.visited_ms())),
                     label(kcnet::v1::VisitPurpose_descriptor(), v.purpose()),
                     Cell::Number(v.latitude()), Cell::Number(v.longitude())});
  };
  if (!facility_filter) {
    return ScanAll<Visit>(access, sync::ListQuery{.type = model::kVisitType, .buckets = *scope},
                          add_visit);
  }
  for (const auto& [id, commune_id] : matched_order) {
    s = ScanAll<Visit>(
        access,
        sync::ListQuery{.type = model::kVisitType,
                        .buckets = {commune_id},
                        .equals = {{Visit::kFacilityIdFieldNumber, model::TextValue(id)}}},
        add_visit);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

std::unique_ptr<grpc::Service> MakeRecordExportService(const RecordServiceDeps& deps) {
  return std::make_unique<RecordExportServiceImpl>(deps);
}

}  // namespace kcnet::server
