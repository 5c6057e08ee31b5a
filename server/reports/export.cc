#include "server/reports/export.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "kcnet/v1/domain.pb.h"
#include "xlsxwriter.h"

namespace kcnet::server::reports {
namespace {

std::string StatusName(int status) {
  const std::string name = kcnet::v1::RequestStatus_Name(status);
  constexpr absl::string_view kPrefix = "REQUEST_STATUS_";
  return name.size() > kPrefix.size() ? name.substr(kPrefix.size()) : name;
}

std::string CsvField(const std::string& text) {
  if (text.find_first_of(",\"\r\n") == std::string::npos) return text;
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

}  // namespace

std::string FundingLabel(kcnet::v1::FundingSource f) {
  switch (f) {
    case kcnet::v1::FUNDING_SOURCE_LOCAL:
      return "Ngân sách địa phương / Local budget";
    case kcnet::v1::FUNDING_SOURCE_NATIONAL:
      return "Ngân sách trung ương / National budget";
    case kcnet::v1::FUNDING_SOURCE_COUNTERPART:
      return "Vốn đối ứng / Counterpart funds";
    default:
      return absl::StrCat(static_cast<int>(f));
  }
}

std::string CategoryLabel(kcnet::v1::SupportCategory c) {
  switch (c) {
    case kcnet::v1::SUPPORT_CATEGORY_DEMONSTRATION_MODEL:
      return "Mô hình trình diễn / Demonstration model";
    case kcnet::v1::SUPPORT_CATEGORY_MACHINERY_TECHNOLOGY:
      return "Máy móc, công nghệ / Machinery and technology";
    case kcnet::v1::SUPPORT_CATEGORY_TRAINING:
      return "Đào tạo / Training";
    case kcnet::v1::SUPPORT_CATEGORY_MANAGEMENT_CONSULTING:
      return "Tư vấn quản lý / Management consulting";
    case kcnet::v1::SUPPORT_CATEGORY_PRODUCT_DEVELOPMENT:
      return "Phát triển sản phẩm / Product development";
    case kcnet::v1::SUPPORT_CATEGORY_TRADE_PROMOTION:
      return "Xúc tiến thương mại / Trade promotion";
    case kcnet::v1::SUPPORT_CATEGORY_CLEANER_PRODUCTION:
      return "Sản xuất sạch hơn / Cleaner production";
    case kcnet::v1::SUPPORT_CATEGORY_OTHER:
      return "Khác / Other";
    default:
      return absl::StrCat(static_cast<int>(c));
  }
}

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
                      Cell::Number(r.share())});
  };
  for (const auto& r : report.communes()) add(r, r.commune_name());
  add(report.total(), "Tổng / Total");
  return t;
}

ReportTable PipelineTable(const kcnet::v1::PipelineReport& report) {
  ReportTable t;
  t.name = "pipeline";
  t.as_of_op = report.as_of_op();
  t.headers = {"Yêu cầu / Request", "Mã xã / Commune id",   "Trạng thái / Status",
               "Từ ngày / Since",   "Số ngày / Age (days)", "Quá hạn / Overdue"};
  for (const auto& i : report.oldest()) {
    t.rows.push_back({Cell::Text(i.request_id()), Cell::Int(i.commune_id()),
                      Cell::Text(StatusName(i.status())), Cell::Date(i.since_date()),
                      Cell::Int(i.age_days()), Cell::Text(i.overdue() ? "x" : "")});
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
                    Cell::Int(report.duplicates_size())});
  t.rows.push_back({Cell::Text("Duyệt không có lượt thăm 12 tháng / Approved without a visit in "
                               "12 months"),
                    Cell::Int(report.approved_without_recent_visit())});
  return t;
}

ReportTable BudgetTable(const kcnet::v1::BudgetReport& report) {
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
    t.rows.push_back({Cell::Int(report.year()), Cell::Text(FundingLabel(r.funding_source())),
                      Cell::Text(CategoryLabel(r.category())), Cell::Vnd(r.planned_vnd()),
                      Cell::Vnd(r.approved_vnd()), Cell::Vnd(r.disbursed_vnd()),
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

std::string ToCsv(const ReportTable& table) {
  std::string out = "\xEF\xBB\xBF";
  std::vector<std::string> fields;
  for (const std::string& h : table.headers) fields.push_back(CsvField(h));
  absl::StrAppend(&out, absl::StrJoin(fields, ","), "\r\n");
  for (const auto& row : table.rows) {
    fields.clear();
    for (const Cell& c : row) {
      switch (c.kind) {
        case Cell::Kind::kText:
        case Cell::Kind::kDate:
          fields.push_back(CsvField(c.text));
          break;
        case Cell::Kind::kInt:
        case Cell::Kind::kVnd:
          fields.push_back(absl::StrCat(static_cast<int64_t>(c.number)));
          break;
        case Cell::Kind::kNumber:
          fields.push_back(absl::StrFormat("%.4f", c.number));
          break;
      }
    }
    absl::StrAppend(&out, absl::StrJoin(fields, ","), "\r\n");
  }
  return out;
}

absl::StatusOr<std::string> ToXlsx(const ReportTable& table) {
  // libxlsxwriter writes a file: a private temporary one, read back and removed.
  char path[] = "/tmp/kcnet-export-XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) return absl::InternalError("export: cannot create a temporary file");
  close(fd);
  lxw_workbook* book = workbook_new(path);
  if (book == nullptr) {
    std::remove(path);
    return absl::InternalError("export: libxlsxwriter cannot start a workbook");
  }
  lxw_worksheet* sheet = workbook_add_worksheet(book, table.name.c_str());
  lxw_format* bold = workbook_add_format(book);
  format_set_bold(bold);
  lxw_format* date = workbook_add_format(book);
  format_set_num_format(date, "yyyy-mm-dd");
  lxw_format* vnd = workbook_add_format(book);
  format_set_num_format(vnd, "#,##0");
  lxw_format* share = workbook_add_format(book);
  format_set_num_format(share, "0.00%");
  for (size_t c = 0; c < table.headers.size(); ++c) {
    worksheet_write_string(sheet, 0, static_cast<lxw_col_t>(c), table.headers[c].c_str(), bold);
    worksheet_set_column(sheet, static_cast<lxw_col_t>(c), static_cast<lxw_col_t>(c), 22, nullptr);
  }
  for (size_t r = 0; r < table.rows.size(); ++r) {
    const auto row = static_cast<lxw_row_t>(r + 1);
    for (size_t c = 0; c < table.rows[r].size(); ++c) {
      const Cell& cell = table.rows[r][c];
      const auto col = static_cast<lxw_col_t>(c);
      switch (cell.kind) {
        case Cell::Kind::kText:
          worksheet_write_string(sheet, row, col, cell.text.c_str(), nullptr);
          break;
        case Cell::Kind::kInt:
          worksheet_write_number(sheet, row, col, cell.number, nullptr);
          break;
        case Cell::Kind::kNumber:
          worksheet_write_number(sheet, row, col, cell.number, share);
          break;
        case Cell::Kind::kVnd:
          worksheet_write_number(sheet, row, col, cell.number, vnd);
          break;
        case Cell::Kind::kDate: {
          std::vector<std::string> p = absl::StrSplit(cell.text, '-');
          if (p.size() != 3) break;  // no date: an empty cell
          lxw_datetime dt = {};
          dt.year = std::atoi(p[0].c_str());
          dt.month = std::atoi(p[1].c_str());
          dt.day = std::atoi(p[2].c_str());
          worksheet_write_datetime(sheet, row, col, &dt, date);
          break;
        }
      }
    }
  }
  const lxw_error error = workbook_close(book);
  if (error != LXW_NO_ERROR) {
    std::remove(path);
    return absl::InternalError(absl::StrCat("export: libxlsxwriter: ", lxw_strerror(error)));
  }
  std::ifstream in(path, std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  std::remove(path);
  return bytes.str();
}

}  // namespace kcnet::server::reports
