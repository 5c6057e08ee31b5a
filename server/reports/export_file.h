// Exports written row by row (issue 16: exports that finish, no row cap, flat memory).
//
// RowSink is where an export's rows go: the name and headers first, then one row at a time.
// ExportFile writes them straight to a private temporary file, CSV (UTF-8 with a BOM) or
// XLSX (libxlsxwriter in constant-memory mode: each row goes to disk when the next one
// starts), so a 100,000-row export never sits in memory; Finish() hands the finished file
// back as ExportBytes, read in chunks by the sender. TableSink keeps the rows in a
// ReportTable instead (small reports, tests).
//
// XLSX cells: numbers as numbers, VND as numbers in the format `#,##0 "₫"`, dates as
// Excel dates shown dd/mm/yyyy, the header row bold.
//
// Thread-safety: none; one export is written by one thread.
#ifndef KCNET_SERVER_REPORTS_EXPORT_FILE_H_
#define KCNET_SERVER_REPORTS_EXPORT_FILE_H_

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/reports/export.h"

struct lxw_workbook;
struct lxw_worksheet;
struct lxw_format;

namespace kcnet::server::reports {

class RowSink {
 public:
  virtual ~RowSink() = default;
  // Once, before the rows: the file's name without extension ("co-so") and the headers.
  virtual absl::Status Start(const std::string& name, const std::vector<std::string>& headers) = 0;
  virtual absl::Status Add(const std::vector<Cell>& row) = 0;
};

// Keeps the rows in `table`.
class TableSink : public RowSink {
 public:
  explicit TableSink(ReportTable* table) : table_(table) {}
  absl::Status Start(const std::string& name, const std::vector<std::string>& headers) override;
  absl::Status Add(const std::vector<Cell>& row) override;

 private:
  ReportTable* table_;
};

// A finished export file, open for reading. It has no name on disk any more: the space
// is freed when it is closed (destroyed).
class ExportBytes {
 public:
  ExportBytes(std::FILE* file, uint64_t size);
  ExportBytes(ExportBytes&&) = default;
  ExportBytes& operator=(ExportBytes&&) = default;
  uint64_t size() const { return size_; }
  // Up to `max` next bytes; "" at the end (or after a read error).
  std::string Read(size_t max);
  // The rest of the file (tests, the admin tool).
  std::string ReadAll();

 private:
  struct Closer {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };
  std::unique_ptr<std::FILE, Closer> file_;
  uint64_t size_ = 0;
};

class ExportFile : public RowSink {
 public:
  enum class Format { kCsv, kXlsx };
  explicit ExportFile(Format format) : format_(format) {}
  ~ExportFile() override;
  ExportFile(const ExportFile&) = delete;
  ExportFile& operator=(const ExportFile&) = delete;

  absl::Status Start(const std::string& name, const std::vector<std::string>& headers) override;
  absl::Status Add(const std::vector<Cell>& row) override;
  // Closes the file and opens it for reading. INTERNAL when the disk or libxlsxwriter fails.
  absl::StatusOr<ExportBytes> Finish();

  // The file's name with its extension ("co-so.xlsx"), once started.
  const std::string& file_name() const { return file_name_; }
  uint64_t rows() const { return rows_; }

 private:
  Format format_;
  std::string path_;  // the temporary file (XLSX only: CSV's is removed at once)
  std::string file_name_;
  std::FILE* csv_ = nullptr;
  lxw_workbook* book_ = nullptr;
  lxw_worksheet* sheet_ = nullptr;
  lxw_format* date_ = nullptr;
  lxw_format* vnd_ = nullptr;
  lxw_format* share_ = nullptr;
  uint64_t rows_ = 0;
};

}  // namespace kcnet::server::reports

#endif  // KCNET_SERVER_REPORTS_EXPORT_FILE_H_
