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

bool IsExportableReport(const std::string& name) {
  return name == "coverage" || name == "pipeline" || name == "activity" || name == "quality";
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
