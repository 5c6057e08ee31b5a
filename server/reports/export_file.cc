#include "server/reports/export_file.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "xlsxwriter.h"

namespace kcnet::server::reports {
namespace {

std::string CsvField(const std::string& text) {
  if (text.find_first_of(",\"\r\n") == std::string::npos) return text;
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

// A new private temporary file ("kcnet-export-XXXXXX" in the temp directory), open.
absl::StatusOr<std::pair<int, std::string>> TempFile() {
  std::error_code error;
  std::filesystem::path dir = std::filesystem::temp_directory_path(error);
  if (error) dir = "/tmp";
  std::string path = (dir / "kcnet-export-XXXXXX").string();
  const int fd = mkstemp(path.data());
  if (fd < 0) return absl::InternalError("export: cannot create a temporary file");
  return std::make_pair(fd, std::move(path));
}

}  // namespace

absl::Status TableSink::Start(const std::string& name, const std::vector<std::string>& headers) {
  table_->name = name;
  table_->headers = headers;
  return absl::OkStatus();
}

absl::Status TableSink::Add(const std::vector<Cell>& row) {
  table_->rows.push_back(row);
  return absl::OkStatus();
}

ExportBytes::ExportBytes(std::FILE* file, uint64_t size) : file_(file), size_(size) {}

std::string ExportBytes::Read(size_t max) {
  std::string out(max, '\0');
  const size_t n = file_ ? std::fread(out.data(), 1, max, file_.get()) : 0;
  out.resize(n);
  return out;
}

std::string ExportBytes::ReadAll() {
  std::string out;
  for (std::string part = Read(1 << 20); !part.empty(); part = Read(1 << 20)) out += part;
  return out;
}

ExportFile::~ExportFile() {
  if (csv_ != nullptr) std::fclose(csv_);
  if (book_ != nullptr) lxw_workbook_free(book_);
  if (!path_.empty()) std::remove(path_.c_str());
}

absl::Status ExportFile::Start(const std::string& name, const std::vector<std::string>& headers) {
  if (csv_ != nullptr || book_ != nullptr) return absl::InternalError("export: started twice");
  absl::StatusOr<std::pair<int, std::string>> temp = TempFile();
  if (!temp.ok()) return temp.status();
  if (format_ == Format::kCsv) {
    file_name_ = absl::StrCat(name, ".csv");
    csv_ = fdopen(temp->first, "w+b");
    std::remove(temp->second.c_str());  // open: it lives until closed
    if (csv_ == nullptr) {
      close(temp->first);
      return absl::InternalError("export: cannot open the temporary file");
    }
    std::string line = "\xEF\xBB\xBF";
    for (size_t c = 0; c < headers.size(); ++c) {
      absl::StrAppend(&line, c == 0 ? "" : ",", CsvField(headers[c]));
    }
    line += "\r\n";
    if (std::fwrite(line.data(), 1, line.size(), csv_) != line.size()) {
      return absl::InternalError("export: cannot write the temporary file");
    }
    return absl::OkStatus();
  }
  // libxlsxwriter writes the file by its path when the workbook closes.
  close(temp->first);
  path_ = temp->second;
  file_name_ = absl::StrCat(name, ".xlsx");
  lxw_workbook_options options = {};
  options.constant_memory = LXW_TRUE;  // each row to disk when the next one starts
  book_ = workbook_new_opt(path_.c_str(), &options);
  if (book_ == nullptr) return absl::InternalError("export: libxlsxwriter cannot start a workbook");
  sheet_ = workbook_add_worksheet(book_, name.c_str());
  lxw_format* bold = workbook_add_format(book_);
  format_set_bold(bold);
  date_ = workbook_add_format(book_);
  format_set_num_format(date_, "dd/mm/yyyy");
  vnd_ = workbook_add_format(book_);
  format_set_num_format(vnd_, "#,##0 \"₫\"");
  share_ = workbook_add_format(book_);
  format_set_num_format(share_, "0.00%");
  for (size_t c = 0; c < headers.size(); ++c) {
    worksheet_set_column(sheet_, static_cast<lxw_col_t>(c), static_cast<lxw_col_t>(c), 22, nullptr);
  }
  for (size_t c = 0; c < headers.size(); ++c) {
    worksheet_write_string(sheet_, 0, static_cast<lxw_col_t>(c), headers[c].c_str(), bold);
  }
  return absl::OkStatus();
}

absl::Status ExportFile::Add(const std::vector<Cell>& cells) {
  if (csv_ == nullptr && book_ == nullptr) return absl::InternalError("export: not started");
  ++rows_;
  if (format_ == Format::kCsv) {
    std::string line;
    for (size_t c = 0; c < cells.size(); ++c) {
      const Cell& cell = cells[c];
      if (c > 0) line += ',';
      switch (cell.kind) {
        case Cell::Kind::kText:
        case Cell::Kind::kDate:
          line += CsvField(cell.text);
          break;
        case Cell::Kind::kInt:
        case Cell::Kind::kVnd:
          absl::StrAppend(&line, static_cast<int64_t>(cell.number));
          break;
        case Cell::Kind::kNumber:
        case Cell::Kind::kShare:
          absl::StrAppend(&line, absl::StrFormat("%.4f", cell.number));
          break;
      }
    }
    line += "\r\n";
    if (std::fwrite(line.data(), 1, line.size(), csv_) != line.size()) {
      return absl::InternalError("export: cannot write the temporary file");
    }
    return absl::OkStatus();
  }
  if (rows_ > LXW_ROW_MAX - 1) {
    return absl::InvalidArgumentError(
        "export: more rows than a worksheet holds (1,048,575); choose CSV / quá số dòng của "
        "một trang tính, hãy chọn CSV");
  }
  const auto row = static_cast<lxw_row_t>(rows_);
  for (size_t c = 0; c < cells.size(); ++c) {
    const Cell& cell = cells[c];
    const auto col = static_cast<lxw_col_t>(c);
    switch (cell.kind) {
      case Cell::Kind::kText:
        if (!cell.text.empty())
          worksheet_write_string(sheet_, row, col, cell.text.c_str(), nullptr);
        break;
      case Cell::Kind::kInt:
      case Cell::Kind::kNumber:
        worksheet_write_number(sheet_, row, col, cell.number, nullptr);
        break;
      case Cell::Kind::kShare:
        worksheet_write_number(sheet_, row, col, cell.number, share_);
        break;
      case Cell::Kind::kVnd:
        worksheet_write_number(sheet_, row, col, cell.number, vnd_);
        break;
      case Cell::Kind::kDate: {
        std::vector<std::string> p = absl::StrSplit(cell.text, '-');
        if (p.size() != 3) break;  // no date: an empty cell
        lxw_datetime dt = {};
        dt.year = std::atoi(p[0].c_str());
        dt.month = std::atoi(p[1].c_str());
        dt.day = std::atoi(p[2].c_str());
        worksheet_write_datetime(sheet_, row, col, &dt, date_);
        break;
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ExportBytes> ExportFile::Finish() {
  if (format_ == Format::kCsv) {
    if (csv_ == nullptr) return absl::InternalError("export: not started");
    if (std::fflush(csv_) != 0) return absl::InternalError("export: cannot write the file");
    const long size = std::ftell(csv_);
    std::rewind(csv_);
    std::FILE* file = csv_;
    csv_ = nullptr;
    return ExportBytes(file, static_cast<uint64_t>(size));
  }
  if (book_ == nullptr) return absl::InternalError("export: not started");
  const lxw_error error = workbook_close(book_);  // frees the workbook
  book_ = nullptr;
  if (error != LXW_NO_ERROR) {
    return absl::InternalError(absl::StrCat("export: libxlsxwriter: ", lxw_strerror(error)));
  }
  std::FILE* file = std::fopen(path_.c_str(), "rb");
  std::remove(path_.c_str());  // open: it lives until closed
  path_.clear();
  if (file == nullptr) return absl::InternalError("export: cannot read the finished file");
  std::fseek(file, 0, SEEK_END);
  const long size = std::ftell(file);
  std::rewind(file);
  return ExportBytes(file, static_cast<uint64_t>(size));
}

}  // namespace kcnet::server::reports
