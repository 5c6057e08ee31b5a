// The importer of the official administrative code list (GSO codes) into the directory.
//
// Input: CSV text with the columns `code,name,level,parent_code` (an optional header row
// naming them), RFC 4180 quoting, LF or CRLF line endings, an optional UTF-8 BOM. `level`
// is province, district or commune; a province has an empty parent_code, a district's
// parent is a province, a commune's parent is a district (three-tier) or a province
// (two-tier). Rows may come in any order: a child may be listed before its parent.
//
// Rules (DOMAIN.md, "Official codes are reused"): units are matched by code; a code not
// in the directory is added; a row equal to its unit (same name, level and parent code)
// is unchanged; a row that would rename, re-parent or re-level an existing unit makes the
// whole import refused (a reorganisation is a separate, explicit operation). A bad row
// refuses the whole import too. Nothing is ever applied in part: the additions go in one
// transaction.
//
// Thread-safety: ImportOrgUnits() may run from any thread (the Directory is
// thread-safe); ImportReport is a plain value.
#ifndef KCNET_SERVER_DIRECTORY_CSV_IMPORT_H_
#define KCNET_SERVER_DIRECTORY_CSV_IMPORT_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "server/directory/directory.h"

namespace kcnet::server {

enum class ImportMode {
  kApply,   // add the new units when the import is acceptable
  kDryRun,  // report what would happen; change nothing
};

// An existing unit that the list would change: its code and the attribute's old and new
// value (a name, a parent code, "" for no parent, or a level name).
struct UnitChange {
  std::string code;
  std::string old_value;
  std::string new_value;
  friend bool operator==(const UnitChange&, const UnitChange&) = default;
};

// A bad row: its 1-based line in the file, the field ("code", "name", "level",
// "parent_code", or "row" for the row's shape) and the reason.
struct RowError {
  int line = 0;
  std::string field;
  std::string message;
  friend bool operator==(const RowError&, const RowError&) = default;
};

struct ImportReport {
  // OK: applied (kApply) or acceptable (kDryRun). INVALID_ARGUMENT: bad rows (see
  // `errors`). FAILED_PRECONDITION: the list would reorganise existing units (see the
  // would_* lists). Otherwise a storage error. The message is one line with a summary.
  absl::Status status;
  bool applied = false;                // true only when units were added (kApply and status OK)
  int rows = 0;                        // data rows read (header and blank lines not counted)
  std::vector<std::string> added;      // codes, in file order
  std::vector<std::string> unchanged;  // codes, in file order
  std::vector<UnitChange> would_rename;
  std::vector<UnitChange> would_reparent;
  std::vector<UnitChange> would_relevel;
  std::vector<RowError> errors;  // ordered by line

  // One line: the counts, and for a refused import the first few examples.
  std::string Summary() const;
};

// Imports `csv_text` into `directory` following the rules above; see ImportReport for
// what the result says. With kDryRun nothing is ever written.
ImportReport ImportOrgUnits(Directory& directory, absl::string_view csv_text, ImportMode mode);

}  // namespace kcnet::server

#endif  // KCNET_SERVER_DIRECTORY_CSV_IMPORT_H_
