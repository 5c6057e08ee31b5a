#include "server/reports/export.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "kcnet/v1/domain.pb.h"
#include "server/reports/export_file.h"

namespace kcnet::server::reports {

bool IsExportableReport(const std::string& name) {
  return name == "coverage" || name == "pipeline" || name == "activity" || name == "quality" ||
         name == "budget" || name == "outcomes";
}

ReportTable CoverageTable(const kcnet::v1::CoverageReport& report) {
  ReportTable t;
  t.name = "coverage";
  t.as_of_op = report.as_of_op();
  t.headers = {"Mã xã / Commune id", "Xã / Commune", "Cơ sở đã đăng ký / Registered facilities",
               "Cơ sở đã thăm / Visited facilities", "Tỷ lệ / Share"};
  auto add = [&](const kcnet::v1::CoverageRow& r, const std::string& name) {
    t.rows.push_back({Cell::Int(r.commune_id()), Cell::Text(name),
                      Cell::Int(r.registered_facilities()), Cell::Int(r.visited_facilities()),
                      Cell::Share(r.share())});
  };
  for (const auto& r : report.communes()) add(r, r.commune_name());
  add(report.total(), "Tổng / Total");
  return t;
}

ReportTable PipelineTable(const kcnet::v1::PipelineReport& report, Language language) {
  ReportTable t;
  t.name = "pipeline";
  t.as_of_op = report.as_of_op();
  t.headers = {"Yêu cầu / Request", "Mã xã / Commune id",   "Trạng thái / Status",
               "Từ ngày / Since",   "Số ngày / Age (days)", "Quá hạn / Overdue"};
  for (const auto& i : report.oldest()) {
    t.rows.push_back(
        {Cell::Text(i.request_id()), Cell::Int(i.commune_id()),
         Cell::Text(EnumLabel(kcnet::v1::RequestStatus_descriptor(), i.status(), language)),
         Cell::Date(i.since_date()), Cell::Int(i.age_days()), Cell::Text(i.overdue() ? "x" : "")});
  }
  return t;
}

ReportTable ActivityTable(const kcnet::v1::ActivityReport& report) {
  ReportTable t;
  t.name = "activity";
  t.as_of_op = report.as_of_op();
  t.headers = {"Mã người dùng / User id",
               "Họ tên / Name",
               "Lượt thăm / Visits",
               "Yêu cầu / Requests",
               "Hoạt động gần nhất / Last activity",
               "Không hoạt động / Inactive"};
  for (const auto& a : report.collaborators()) {
    t.rows.push_back({Cell::Int(a.user_id()), Cell::Text(a.display_name()), Cell::Int(a.visits()),
                      Cell::Int(a.requests()), Cell::Date(a.last_activity_date()),
                      Cell::Text(a.inactive() ? "x" : "")});
  }
  return t;
}

ReportTable QualityTable(const kcnet::v1::QualityReport& report) {
  ReportTable t;
  t.name = "quality";
  t.as_of_op = report.as_of_op();
  t.headers = {"Chỉ số / Figure", "Giá trị / Value"};
  t.rows.push_back({Cell::Text("Lượt thăm / Visits"), Cell::Int(report.visits())});
  t.rows.push_back({Cell::Text("Thăm không có GPS / Visits without GPS"),
                    Cell::Int(report.visits_without_gps())});
  t.rows.push_back({Cell::Text("Thăm xa cơ sở / Visits far from the facility"),
                    Cell::Int(report.visits_far_from_facility())});
  t.rows.push_back({Cell::Text("Nhóm cơ sở trùng / Duplicate facility groups"),
                    Cell::Int(report.duplicate_groups())});
  t.rows.push_back({Cell::Text("Duyệt không có lượt thăm 12 tháng / Approved without a visit in "
                               "12 months"),
                    Cell::Int(report.approved_without_recent_visit())});
  return t;
}

ReportTable BudgetTable(const kcnet::v1::BudgetReport& report, Language language) {
  ReportTable t;
  t.name = "budget";
  t.as_of_op = report.as_of_op();
  t.headers = {"Năm / Year",
               "Nguồn vốn / Funding source",
               "Nhóm hỗ trợ / Support category",
               "Kế hoạch (đồng) / Planned (VND)",
               "Đã duyệt (đồng) / Approved (VND)",
               "Đã giải ngân (đồng) / Disbursed (VND)",
               "Còn lại (đồng) / Remaining (VND)",
               "Số cơ sở dự kiến / Planned facilities",
               "Số đề nghị đã duyệt / Approved requests"};
  for (const auto& r : report.rows()) {
    t.rows.push_back(
        {Cell::Int(report.year()),
         Cell::Text(EnumLabel(kcnet::v1::FundingSource_descriptor(), r.funding_source(), language)),
         Cell::Text(EnumLabel(kcnet::v1::SupportCategory_descriptor(), r.category(), language)),
         Cell::Vnd(r.planned_vnd()), Cell::Vnd(r.approved_vnd()), Cell::Vnd(r.disbursed_vnd()),
         Cell::Vnd(r.remaining_vnd()), Cell::Int(r.planned_facilities()),
         Cell::Int(r.approved_requests())});
  }
  return t;
}

ReportTable OutcomesTable(const kcnet::v1::OutcomesReport& report) {
  ReportTable t;
  t.name = "outcomes";
  t.as_of_op = report.as_of_op();
  t.headers = {"Yêu cầu / Request",
               "Mã xã / Commune id",
               "Cơ sở / Facility",
               "Ngày duyệt / Baseline",
               "Ngày hoàn thành / Completed",
               "Ngày thăm trước / Visit before",
               "Ngày thăm sau / Visit after",
               "Lao động trước / Workers before",
               "Lao động sau / Workers after",
               "Chênh lệch lao động / Workers delta",
               "Mặt hàng trước / Product lines before",
               "Mặt hàng sau / Product lines after",
               "Chênh lệch mặt hàng / Product lines delta",
               "Giá trị SX trước (đồng) / Output before (VND)",
               "Giá trị SX sau (đồng) / Output after (VND)",
               "Chênh lệch giá trị SX (đồng) / Output delta (VND)",
               "Đo được / Measured"};
  for (const auto& r : report.rows()) {
    const bool m = r.measured();
    auto delta = [m](int64_t before, int64_t after) {
      return m ? Cell::Int(after - before) : Cell::Text("");
    };
    t.rows.push_back(
        {Cell::Text(r.request_id()), Cell::Int(r.commune_id()), Cell::Text(r.facility_id()),
         Cell::Date(r.baseline_date()), Cell::Date(r.completed_date()), Cell::Date(r.before_date()),
         Cell::Date(r.after_date()), Cell::Int(r.workers_before()), Cell::Int(r.workers_after()),
         delta(r.workers_before(), r.workers_after()), Cell::Int(r.product_lines_before()),
         Cell::Int(r.product_lines_after()),
         delta(r.product_lines_before(), r.product_lines_after()),
         Cell::Vnd(r.annual_output_vnd_before()), Cell::Vnd(r.annual_output_vnd_after()),
         m ? Cell::Vnd(r.annual_output_vnd_after() - r.annual_output_vnd_before()) : Cell::Text(""),
         Cell::Text(m ? "x" : "")});
  }
  // Summaries: the request column says what the row is; the measured column the counts.
  auto add = [&](const kcnet::v1::OutcomeSummary& s, const std::string& name) {
    t.rows.push_back(
        {Cell::Text(name), Cell::Int(s.commune_id()), Cell::Text(""), Cell::Date(""),
         Cell::Date(""), Cell::Date(""), Cell::Date(""), Cell::Int(s.workers_before()),
         Cell::Int(s.workers_after()), Cell::Int(s.workers_delta()),
         Cell::Int(s.product_lines_before()), Cell::Int(s.product_lines_after()),
         Cell::Int(s.product_lines_delta()), Cell::Vnd(s.annual_output_vnd_before()),
         Cell::Vnd(s.annual_output_vnd_after()), Cell::Vnd(s.annual_output_vnd_delta()),
         // "2 trên 3 / 2 of 3", never "2/3": Excel would read that as a date.
         Cell::Text(absl::StrCat(s.measured_requests(), " trên ", s.completed_requests(), " / ",
                                 s.measured_requests(), " of ", s.completed_requests()))});
  };
  for (const auto& s : report.communes()) add(s, absl::StrCat("Xã / Commune: ", s.commune_name()));
  add(report.total(), "Tổng / Total");
  return t;
}

namespace {

absl::StatusOr<std::string> WriteWhole(const ReportTable& table, ExportFile::Format format) {
  ExportFile file(format);
  absl::Status s = file.Start(table.name, table.headers);
  for (size_t r = 0; s.ok() && r < table.rows.size(); ++r) s = file.Add(table.rows[r]);
  if (!s.ok()) return s;
  absl::StatusOr<ExportBytes> bytes = file.Finish();
  if (!bytes.ok()) return bytes.status();
  return bytes->ReadAll();
}

}  // namespace

std::string ToCsv(const ReportTable& table) {
  absl::StatusOr<std::string> csv = WriteWhole(table, ExportFile::Format::kCsv);
  return csv.ok() ? *std::move(csv) : "";
}

absl::StatusOr<std::string> ToXlsx(const ReportTable& table) {
  return WriteWhole(table, ExportFile::Format::kXlsx);
}

}  // namespace kcnet::server::reports
