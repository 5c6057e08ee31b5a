// Report exports: each report as one table (ReportTable) with typed cells, written as CSV
// (UTF-8 with a BOM, so that Excel shows Vietnamese correctly) or XLSX (libxlsxwriter:
// numbers as numbers, dates as dates, VND with thousands separators).
//
// Column headers are Vietnamese first, English second ("Xã / Commune"); the values of enums
// (status, category, funding source) are labels in the export's language (labels.h).
// ToCsv and ToXlsx write through ExportFile (export_file.h), as the streamed exports do.
//
// Thread-safety: free functions without shared state.
#ifndef KCNET_SERVER_REPORTS_EXPORT_H_
#define KCNET_SERVER_REPORTS_EXPORT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kcnet/v1/reports.pb.h"
#include "server/reports/labels.h"

namespace kcnet::server::reports {

struct Cell {
  enum class Kind { kText, kInt, kNumber, kDate, kVnd, kShare };
  Kind kind = Kind::kText;
  std::string text;   // kText; kDate as "YYYY-MM-DD" (Vietnam's date; empty: no date)
  double number = 0;  // kInt, kNumber, kVnd, kShare (a fraction: 0.25 shows as 25.00%)
  static Cell Text(std::string t) { return Cell{Kind::kText, std::move(t), 0}; }
  static Cell Int(int64_t v) { return Cell{Kind::kInt, "", static_cast<double>(v)}; }
  static Cell Number(double v) { return Cell{Kind::kNumber, "", v}; }
  static Cell Date(std::string d) { return Cell{Kind::kDate, std::move(d), 0}; }
  static Cell Vnd(int64_t v) { return Cell{Kind::kVnd, "", static_cast<double>(v)}; }
  static Cell Share(double v) { return Cell{Kind::kShare, "", v}; }
};

struct ReportTable {
  std::string name;  // the report: "coverage", ... (the sheet and file name)
  std::vector<std::string> headers;
  std::vector<std::vector<Cell>> rows;
  uint64_t as_of_op = 0;
};

ReportTable CoverageTable(const kcnet::v1::CoverageReport& report);
ReportTable PipelineTable(const kcnet::v1::PipelineReport& report,
                          Language language = Language::kVietnamese);
ReportTable ActivityTable(const kcnet::v1::ActivityReport& report);
ReportTable QualityTable(const kcnet::v1::QualityReport& report);
// One row per (funding source, category), VND as kVnd cells.
ReportTable BudgetTable(const kcnet::v1::BudgetReport& report,
                        Language language = Language::kVietnamese);
// One row per completed request (before, after, delta of each indicator), then one per
// commune and the total (their request id column empty, the commune's name in its place).
ReportTable OutcomesTable(const kcnet::v1::OutcomesReport& report);

// The reports that export: coverage, pipeline, activity, quality, budget, outcomes.
bool IsExportableReport(const std::string& name);

// CSV per RFC 4180, UTF-8 with BOM, CRLF line ends; numbers in plain digits.
std::string ToCsv(const ReportTable& table);
// An XLSX workbook with one sheet; INTERNAL when libxlsxwriter fails.
absl::StatusOr<std::string> ToXlsx(const ReportTable& table);

}  // namespace kcnet::server::reports

#endif  // KCNET_SERVER_REPORTS_EXPORT_H_
