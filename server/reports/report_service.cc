#include "server/reports/report_service.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "kcnet/v1/reports.grpc.pb.h"
#include "server/plans/budget.h"
#include "server/reports/export.h"
#include "server/reports/export_chunks.h"
#include "server/rpc/paging.h"
#include "server/rpc/storage_rpc_runner.h"

namespace kcnet::server::reports {
namespace {

// A paged report's token (server/rpc/paging.h: bound to the request without its paging
// fields and to the caller's org units) holds the op of the listing's first page, then
// each list's position: "s" (from the first item), "d" (done) or "a<major>" followed by
// the C-escaped minor key, fields separated by \x1f.
constexpr char kSep = '\x1f';

std::string Fingerprint(const std::vector<int64_t>& roots) { return absl::StrJoin(roots, ","); }

std::string EncodePositions(uint64_t first_op, const std::vector<ListPosition>& lists) {
  std::string out = absl::StrCat(first_op);
  for (const ListPosition& p : lists) {
    out.push_back(kSep);
    if (p.done) {
      out.push_back('d');
    } else if (!p.started) {
      out.push_back('s');
    } else {
      absl::StrAppend(&out, "a", p.major, std::string(1, kSep), absl::CEscape(p.minor));
    }
  }
  return out;
}

absl::Status BadPosition() {
  return absl::InvalidArgumentError(
      "page_token: not a page token of this report / mã trang không hợp lệ");
}

// Decodes EncodePositions' text of `lists` lists; the first page when `text` is empty.
absl::Status DecodePositions(const std::string& text, size_t lists, uint64_t* first_op,
                             std::vector<ListPosition>* out) {
  out->assign(lists, ListPosition());
  *first_op = 0;
  if (text.empty()) return absl::OkStatus();
  std::vector<std::string> fields = absl::StrSplit(text, kSep);
  size_t f = 0;
  if (fields.empty() || !absl::SimpleAtoi(fields[f++], first_op)) return BadPosition();
  for (ListPosition& p : *out) {
    if (f >= fields.size() || fields[f].empty()) return BadPosition();
    const std::string& state = fields[f++];
    if (state == "d") {
      p.done = true;
    } else if (state[0] == 'a') {
      p.started = true;
      if (!absl::SimpleAtoi(absl::string_view(state).substr(1), &p.major) || f >= fields.size() ||
          !absl::CUnescape(fields[f++], &p.minor)) {
        return BadPosition();
      }
    } else if (state != "s") {
      return BadPosition();
    }
  }
  if (f != fields.size()) return BadPosition();
  return absl::OkStatus();
}

// The page size of a paged report: 0 gives kDefaultReportPage.
absl::StatusOr<int> ReportPageSize(uint32_t requested) {
  if (requested == 0) return kDefaultReportPage;
  if (requested > static_cast<uint32_t>(kMaxReportPage)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "page_size: at most ", kMaxReportPage, " / tối đa ", kMaxReportPage, " dòng mỗi trang"));
  }
  return static_cast<int>(requested);
}

// Reads the page's token into `page`; sets `*first_op`.
absl::Status StartPage(const google::protobuf::Message& request, const std::vector<int64_t>& roots,
                       uint32_t page_size, const std::string& token, size_t lists, ReportPage* page,
                       uint64_t* first_op) {
  absl::StatusOr<int> size = ReportPageSize(page_size);
  if (!size.ok()) return size.status();
  page->page_size = *size;
  absl::StatusOr<std::string> position =
      DecodePageToken(token, QueryFingerprint(request, Fingerprint(roots)));
  if (!position.ok()) return position.status();
  return DecodePositions(*position, lists, first_op, &page->from);
}

// The next page's token ("" after the last page), once the store answered at `as_of_op`.
absl::StatusOr<std::string> NextToken(const google::protobuf::Message& request,
                                      const std::vector<int64_t>& roots, const ReportPage& page,
                                      uint64_t first_op, uint64_t as_of_op, bool first_page) {
  if (!first_page && as_of_op < first_op) {
    // The summaries were counted again from the start (a restore) since the first page.
    return absl::AbortedError(
        "page_token: the report was recounted since the first page; start again from the "
        "first page / báo cáo đã được tính lại, hãy tải lại từ trang đầu");
  }
  if (page.last()) return std::string();
  return EncodePageToken(QueryFingerprint(request, Fingerprint(roots)),
                         EncodePositions(first_page ? as_of_op : first_op, page.next));
}

// Sets each row's commune_name from the directory, in one lookup (a national report has
// 3,321 rows). A commune the directory does not know keeps an empty name, as before.
template <typename Rows>
void NameCommunes(Directory& directory, Rows* rows) {
  std::vector<int64_t> ids;
  ids.reserve(rows->size());
  for (const auto& row : *rows) ids.push_back(row.commune_id());
  absl::StatusOr<absl::flat_hash_map<int64_t, std::string>> names = directory.OrgUnitNames(ids);
  if (!names.ok()) return;
  for (auto& row : *rows) {
    auto it = names->find(row.commune_id());
    if (it != names->end()) row.set_commune_name(it->second);
  }
}

}  // namespace

absl::StatusOr<std::vector<int64_t>> Reporter::AllRoots() {
  absl::StatusOr<std::vector<kcnet::v1::OrgUnit>> roots = directory_->ListChildren(0);
  if (!roots.ok()) return roots.status();
  std::vector<int64_t> ids;
  for (const auto& unit : *roots) ids.push_back(unit.id());
  return ids;
}

absl::StatusOr<ReportScope> Reporter::Scope(const std::vector<int64_t>& roots,
                                            const kcnet::v1::ReportFilter& filter) {
  ReportScope scope;
  scope.today = VietnamDay(clock_->NowMs());
  if (filter.org_unit_id() < 0) {
    return absl::InvalidArgumentError("filter.org_unit_id: must not be negative / không được âm");
  }
  if (!filter.from_date().empty()) {
    absl::StatusOr<int64_t> from = ParseDay(filter.from_date(), "filter.from_date");
    if (!from.ok()) return from.status();
    scope.from_day = *from;
  }
  scope.to_day = scope.today;
  if (!filter.to_date().empty()) {
    absl::StatusOr<int64_t> to = ParseDay(filter.to_date(), "filter.to_date");
    if (!to.ok()) return to.status();
    scope.to_day = *to;
  }
  if (scope.to_day < scope.from_day) {
    return absl::InvalidArgumentError(
        "filter.to_date: before filter.from_date / ngày kết thúc trước ngày bắt đầu");
  }
  std::vector<int64_t> within = roots;
  if (filter.org_unit_id() != 0) {
    const bool in_scope = std::any_of(roots.begin(), roots.end(), [&](int64_t root) {
      return directory_->IsWithin(filter.org_unit_id(), root);
    });
    if (!in_scope) {
      return absl::NotFoundError(absl::StrCat("filter.org_unit_id: org unit ", filter.org_unit_id(),
                                              " not found in your org units"));
    }
    within = {filter.org_unit_id()};
  }
  absl::StatusOr<std::vector<int64_t>> communes = directory_->Communes(within);
  if (!communes.ok()) return communes.status();
  scope.communes = *std::move(communes);
  std::sort(scope.communes.begin(), scope.communes.end());
  return scope;
}

absl::StatusOr<kcnet::v1::CoverageReport> Reporter::Coverage(
    const std::vector<int64_t>& roots, const kcnet::v1::CoverageRequest& request) {
  absl::StatusOr<ReportScope> scope = Scope(roots, request.filter());
  if (!scope.ok()) return scope.status();
  absl::StatusOr<kcnet::v1::CoverageReport> report = store_->Coverage(*scope);
  if (!report.ok()) return report.status();
  NameCommunes(*directory_, report->mutable_communes());
  return report;
}

absl::StatusOr<kcnet::v1::PipelineReport> Reporter::Pipeline(
    const std::vector<int64_t>& roots, const kcnet::v1::PipelineRequest& request) {
  for (int i = 0; i < request.limits_size(); ++i) {
    if (!kcnet::v1::RequestStatus_IsValid(request.limits(i).status()) ||
        request.limits(i).status() == kcnet::v1::REQUEST_STATUS_UNSPECIFIED) {
      return absl::InvalidArgumentError(
          absl::StrCat("limits[", i, "].status: unknown status / trạng thái không hợp lệ"));
    }
  }
  absl::StatusOr<ReportScope> scope = Scope(roots, request.filter());
  if (!scope.ok()) return scope.status();
  return store_->Pipeline(*scope, request);
}

absl::StatusOr<kcnet::v1::ActivityReport> Reporter::Activity(
    const std::vector<int64_t>& roots, const kcnet::v1::ActivityRequest& request) {
  if (request.inactive_days() > 3660) {
    return absl::InvalidArgumentError("inactive_days: at most 3660 / tối đa 3660 ngày");
  }
  absl::StatusOr<ReportScope> scope = Scope(roots, request.filter());
  if (!scope.ok()) return scope.status();
  ReportPage page;
  uint64_t first_op = 0;
  absl::Status paged =
      StartPage(request, roots, request.page_size(), request.page_token(), 1, &page, &first_op);
  if (!paged.ok()) return paged;
  UserFilter filter;
  filter.within = request.filter().org_unit_id() != 0
                      ? std::vector<int64_t>{request.filter().org_unit_id()}
                      : roots;
  filter.include_inactive = false;
  absl::StatusOr<std::vector<kcnet::v1::User>> users = directory_->ListUsers(filter);
  if (!users.ok()) return users.status();
  std::vector<kcnet::v1::CollaboratorActivity> collaborators;
  absl::flat_hash_map<int64_t, std::string> names;
  for (const kcnet::v1::User& u : *users) {
    names[u.id()] = u.display_name();
    if (u.role() != kcnet::v1::ROLE_COMMUNE_COLLABORATOR) continue;
    kcnet::v1::CollaboratorActivity a;
    a.set_user_id(u.id());
    collaborators.push_back(std::move(a));
  }
  absl::StatusOr<kcnet::v1::ActivityReport> report =
      store_->Activity(*scope, request.inactive_days(), std::move(collaborators), &page);
  if (!report.ok()) return report.status();
  absl::StatusOr<std::string> next =
      NextToken(request, roots, page, first_op, report->as_of_op(), request.page_token().empty());
  if (!next.ok()) return next.status();
  report->set_next_page_token(*std::move(next));
  // Names from the list already read; the directory only for users not in it (another
  // subtree's user who wrote here, a deactivated one).
  for (kcnet::v1::CollaboratorActivity& a : *report->mutable_collaborators()) {
    auto name = names.find(a.user_id());
    if (name != names.end()) {
      a.set_display_name(name->second);
      continue;
    }
    absl::StatusOr<kcnet::v1::User> user = directory_->GetUser(a.user_id());
    if (user.ok()) a.set_display_name(user->display_name());
  }
  return report;
}

absl::StatusOr<kcnet::v1::QualityReport> Reporter::Quality(
    const std::vector<int64_t>& roots, const kcnet::v1::QualityRequest& request) {
  if (request.max_gps_distance_km() < 0 || request.max_gps_distance_km() > 20000) {
    return absl::InvalidArgumentError(
        "max_gps_distance_km: must be between 0 and 20000 / phải từ 0 đến 20000");
  }
  absl::StatusOr<ReportScope> scope = Scope(roots, request.filter());
  if (!scope.ok()) return scope.status();
  ReportPage page;
  uint64_t first_op = 0;
  absl::Status paged =
      StartPage(request, roots, request.page_size(), request.page_token(), 3, &page, &first_op);
  if (!paged.ok()) return paged;
  absl::StatusOr<kcnet::v1::QualityReport> report =
      store_->Quality(*scope, request.max_gps_distance_km(), &page);
  if (!report.ok()) return report.status();
  absl::StatusOr<std::string> next =
      NextToken(request, roots, page, first_op, report->as_of_op(), request.page_token().empty());
  if (!next.ok()) return next.status();
  report->set_next_page_token(*std::move(next));
  return report;
}

absl::StatusOr<kcnet::v1::OutcomesReport> Reporter::Outcomes(
    const std::vector<int64_t>& roots, const kcnet::v1::OutcomesRequest& request) {
  absl::StatusOr<ReportScope> scope = Scope(roots, request.filter());
  if (!scope.ok()) return scope.status();
  absl::StatusOr<kcnet::v1::OutcomesReport> report = store_->Outcomes(*scope);
  if (!report.ok()) return report.status();
  NameCommunes(*directory_, report->mutable_communes());
  return report;
}

absl::StatusOr<kcnet::v1::BudgetReport> Reporter::Budget(const std::vector<int64_t>& roots,
                                                         const kcnet::v1::BudgetRequest& request) {
  if (plans_ == nullptr || records_ == nullptr) {
    return absl::UnavailableError("budget: the plans store is not open");
  }
  // A budget is a province's: without an org unit, the caller's one root.
  int64_t unit = request.filter().org_unit_id();
  if (unit == 0) {
    if (roots.size() != 1) {
      return absl::InvalidArgumentError(
          "filter.org_unit_id: hãy chọn một đơn vị (tỉnh, xã) / required for the budget "
          "when you work in several org units");
    }
    unit = roots.front();
  }
  Principal caller;
  caller.org_unit_ids = roots;
  absl::StatusOr<BudgetFigures> figures =
      BudgetFor(*directory_, *plans_, *records_, caller, unit, request.year());
  if (!figures.ok()) return figures.status();
  kcnet::v1::BudgetReport report;
  report.set_as_of_op(figures->as_of_op);
  report.set_province_id(figures->province_id);
  report.set_year(figures->year);
  report.set_has_plan(figures->has_plan);
  report.set_plan_revision(figures->plan_revision);
  report.set_as_of_change(figures->as_of_change);
  for (const BudgetRow& r : figures->rows) {
    kcnet::v1::BudgetRow* row = report.add_rows();
    row->set_funding_source(r.funding);
    row->set_category(r.category);
    row->set_planned_vnd(r.planned_vnd);
    row->set_approved_vnd(r.approved_vnd);
    row->set_disbursed_vnd(r.disbursed_vnd);
    row->set_remaining_vnd(r.remaining_vnd);
    row->set_planned_facilities(r.planned_facilities);
    row->set_approved_requests(r.approved_requests);
  }
  return report;
}

absl::StatusOr<std::string> Reporter::Export(const std::vector<int64_t>& roots,
                                             const kcnet::v1::ExportRequest& request,
                                             std::string* file_name) {
  absl::StatusOr<ExportBytes> file = ExportToFile(roots, request, file_name);
  if (!file.ok()) return file.status();
  return file->ReadAll();
}

absl::StatusOr<ExportBytes> Reporter::ExportToFile(const std::vector<int64_t>& roots,
                                                   const kcnet::v1::ExportRequest& request,
                                                   std::string* file_name) {
  const std::string& report = request.report();
  const kcnet::v1::ExportFormat format = request.format();
  const kcnet::v1::ReportFilter& filter = request.filter();
  if (!IsExportableReport(report)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "report: '", report.substr(0, 32),
        "' is not coverage, pipeline, activity, quality, budget or outcomes / không có báo cáo "
        "này"));
  }
  if (format != kcnet::v1::EXPORT_FORMAT_CSV && format != kcnet::v1::EXPORT_FORMAT_XLSX) {
    return absl::InvalidArgumentError("format: csv or xlsx / định dạng phải là csv hoặc xlsx");
  }
  absl::StatusOr<Language> language = ParseLanguage("language", request.language());
  if (!language.ok()) return language.status();
  ReportTable table;
  if (report == "coverage") {
    kcnet::v1::CoverageRequest r;
    *r.mutable_filter() = filter;
    absl::StatusOr<kcnet::v1::CoverageReport> out = Coverage(roots, r);
    if (!out.ok()) return out.status();
    table = CoverageTable(*out);
  } else if (report == "pipeline") {
    kcnet::v1::PipelineRequest r;
    *r.mutable_filter() = filter;
    r.set_max_items(1000);
    absl::StatusOr<kcnet::v1::PipelineReport> out = Pipeline(roots, r);
    if (!out.ok()) return out.status();
    table = PipelineTable(*out, *language);
  } else if (report == "activity") {
    // Never capped: every page of the listing, the largest pages.
    kcnet::v1::ActivityRequest r;
    *r.mutable_filter() = filter;
    r.set_page_size(export_page_size_);
    kcnet::v1::ActivityReport all;
    do {
      absl::StatusOr<kcnet::v1::ActivityReport> out = Activity(roots, r);
      if (!out.ok()) return out.status();
      if (r.page_token().empty()) all.set_as_of_op(out->as_of_op());
      for (auto& a : *out->mutable_collaborators()) *all.add_collaborators() = std::move(a);
      r.set_page_token(out->next_page_token());
    } while (!r.page_token().empty());
    table = ActivityTable(all);
  } else if (report == "quality") {
    kcnet::v1::QualityRequest r;
    *r.mutable_filter() = filter;
    absl::StatusOr<kcnet::v1::QualityReport> out = Quality(roots, r);
    if (!out.ok()) return out.status();
    table = QualityTable(*out);
  } else if (report == "budget") {
    kcnet::v1::BudgetRequest r;
    *r.mutable_filter() = filter;
    r.set_year(request.year() != 0 ? request.year() : VietnamYear(clock_->NowMs()));
    absl::StatusOr<kcnet::v1::BudgetReport> out = Budget(roots, r);
    if (!out.ok()) return out.status();
    table = BudgetTable(*out, *language);
  } else {
    kcnet::v1::OutcomesRequest r;
    *r.mutable_filter() = filter;
    absl::StatusOr<kcnet::v1::OutcomesReport> out = Outcomes(roots, r);
    if (!out.ok()) return out.status();
    table = OutcomesTable(*out);
  }
  ExportFile file(format == kcnet::v1::EXPORT_FORMAT_CSV ? ExportFile::Format::kCsv
                                                         : ExportFile::Format::kXlsx);
  absl::Status s = file.Start(table.name, table.headers);
  for (size_t r = 0; s.ok() && r < table.rows.size(); ++r) s = file.Add(table.rows[r]);
  if (!s.ok()) return s;
  *file_name = file.file_name();
  return file.Finish();
}

// ---------------------------------------------------------------------------------------

namespace {

using grpc::CallbackServerContext;
using grpc::ServerUnaryReactor;

// Builds the report's file for the caller, then sends it in chunks (ExportChunkWriter).
class ExportWriter : public ExportChunkWriter {
 public:
  ExportWriter(Directory* directory, Reporter* reporter, CallbackServerContext* ctx,
               const kcnet::v1::ExportRequest* request) {
    std::optional<Principal> caller = Authenticate(*ctx, *directory);
    if (!caller.has_value()) return;
    std::string name;
    absl::StatusOr<ExportBytes> file =
        reporter->ExportToFile(caller->org_unit_ids, *request, &name);
    if (!file.ok()) {
      Finish(ToGrpcStatus(file.status()));
      return;
    }
    SendFile(std::move(name), *std::move(file));
  }
};

class ReportServiceImpl : public kcnet::v1::ReportService::CallbackService {
 public:
  ReportServiceImpl(Directory* directory, Reporter* reporter, RpcRunner* runner)
      : directory_(directory), reporter_(reporter), runner_(runner) {}

  ServerUnaryReactor* GetCoverage(CallbackServerContext* ctx, const v1::CoverageRequest* req,
                                  v1::CoverageReport* resp) override {
    return runner_->Run(ctx, "kcnet.v1.ReportService/GetCoverage",
                        [=, this](const Principal* p) -> absl::Status {
                          auto r = reporter_->Coverage(p->org_unit_ids, *req);
                          if (!r.ok()) return r.status();
                          *resp = *std::move(r);
                          return absl::OkStatus();
                        });
  }
  ServerUnaryReactor* GetPipeline(CallbackServerContext* ctx, const v1::PipelineRequest* req,
                                  v1::PipelineReport* resp) override {
    return runner_->Run(ctx, "kcnet.v1.ReportService/GetPipeline",
                        [=, this](const Principal* p) -> absl::Status {
                          auto r = reporter_->Pipeline(p->org_unit_ids, *req);
                          if (!r.ok()) return r.status();
                          *resp = *std::move(r);
                          return absl::OkStatus();
                        });
  }
  ServerUnaryReactor* GetActivity(CallbackServerContext* ctx, const v1::ActivityRequest* req,
                                  v1::ActivityReport* resp) override {
    return runner_->Run(ctx, "kcnet.v1.ReportService/GetActivity",
                        [=, this](const Principal* p) -> absl::Status {
                          auto r = reporter_->Activity(p->org_unit_ids, *req);
                          if (!r.ok()) return r.status();
                          *resp = *std::move(r);
                          return absl::OkStatus();
                        });
  }
  ServerUnaryReactor* GetQuality(CallbackServerContext* ctx, const v1::QualityRequest* req,
                                 v1::QualityReport* resp) override {
    return runner_->Run(ctx, "kcnet.v1.ReportService/GetQuality",
                        [=, this](const Principal* p) -> absl::Status {
                          auto r = reporter_->Quality(p->org_unit_ids, *req);
                          if (!r.ok()) return r.status();
                          *resp = *std::move(r);
                          return absl::OkStatus();
                        });
  }
  ServerUnaryReactor* GetBudget(CallbackServerContext* ctx, const v1::BudgetRequest* req,
                                v1::BudgetReport* resp) override {
    return runner_->Run(ctx, "kcnet.v1.ReportService/GetBudget",
                        [=, this](const Principal* p) -> absl::Status {
                          auto r = reporter_->Budget(p->org_unit_ids, *req);
                          if (!r.ok()) return r.status();
                          *resp = *std::move(r);
                          return absl::OkStatus();
                        });
  }
  ServerUnaryReactor* GetOutcomes(CallbackServerContext* ctx, const v1::OutcomesRequest* req,
                                  v1::OutcomesReport* resp) override {
    return runner_->Run(ctx, "kcnet.v1.ReportService/GetOutcomes",
                        [=, this](const Principal* p) -> absl::Status {
                          auto r = reporter_->Outcomes(p->org_unit_ids, *req);
                          if (!r.ok()) return r.status();
                          *resp = *std::move(r);
                          return absl::OkStatus();
                        });
  }
  grpc::ServerWriteReactor<kcnet::v1::ExportChunk>* ExportReport(
      CallbackServerContext* ctx, const v1::ExportRequest* req) override {
    return new ExportWriter(directory_, reporter_, ctx, req);
  }

 private:
  Directory* directory_;
  Reporter* reporter_;
  RpcRunner* runner_;
};

}  // namespace

std::unique_ptr<grpc::Service> MakeReportService(Directory* directory, Reporter* reporter,
                                                 RpcRunner* runner) {
  return std::make_unique<ReportServiceImpl>(directory, reporter, runner);
}

}  // namespace kcnet::server::reports
