#include "server/directory/csv_import.h"

#include <algorithm>
#include <cstddef>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/directory/text.h"

namespace kcnet::server {
namespace {

using ::kcnet::v1::OrgUnit;
using ::kcnet::v1::OrgUnitLevel;

constexpr size_t kColumns = 4;
constexpr const char* kColumnNames[kColumns] = {"code", "name", "level", "parent_code"};
constexpr size_t kMaxCodeBytes = 32;
constexpr size_t kMaxNameBytes = 200;
constexpr size_t kExamples = 3;  // examples of each kind in a summary

std::string FieldName(size_t index) { return index < kColumns ? kColumnNames[index] : "row"; }

struct CsvRecord {
  int line = 0;  // where the record starts
  std::vector<std::string> fields;
};

// Splits `text` into records (RFC 4180: fields separated by commas, records by LF or CRLF,
// double quotes around fields that hold commas, quotes or line breaks, "" for a quote).
// A malformed record is reported in `errors` and skipped; an unterminated quote ends the
// parse, since the rest of the file is then inside it.
void ParseCsv(absl::string_view text, std::vector<CsvRecord>& records,
              std::vector<RowError>& errors) {
  if (absl::StartsWith(text, "\xEF\xBB\xBF")) text.remove_prefix(3);
  const size_t n = text.size();
  size_t i = 0;
  int line = 1;
  auto at_line_end = [&](size_t pos) {
    return pos >= n || text[pos] == '\n' ||
           (text[pos] == '\r' && (pos + 1 == n || text[pos + 1] == '\n'));
  };
  while (i < n) {
    CsvRecord record;
    record.line = line;
    bool bad = false;
    while (true) {
      const size_t field_index = record.fields.size();
      std::string field;
      if (i < n && text[i] == '"') {
        ++i;
        bool closed = false;
        while (i < n) {
          const char c = text[i];
          if (c == '"') {
            if (i + 1 < n && text[i + 1] == '"') {
              field.push_back('"');
              i += 2;
              continue;
            }
            ++i;
            closed = true;
            break;
          }
          if (c == '\n') ++line;
          field.push_back(c);
          ++i;
        }
        if (!closed) {
          errors.push_back({record.line, FieldName(field_index),
                            "a quoted field is not closed before the end of the file"});
          return;
        }
        if (i < n && text[i] != ',' && !at_line_end(i)) {
          errors.push_back(
              {record.line, FieldName(field_index), "text after the closing quote of a field"});
          bad = true;
        }
      } else {
        while (i < n && text[i] != ',' && !at_line_end(i)) {
          if (text[i] == '"' && !bad) {
            errors.push_back({record.line, FieldName(field_index),
                              "a quote inside an unquoted field (quote the whole field and "
                              "double the quote)"});
            bad = true;
          }
          field.push_back(text[i]);
          ++i;
        }
      }
      if (bad) {
        while (!at_line_end(i)) ++i;
        break;
      }
      record.fields.push_back(std::move(field));
      if (i < n && text[i] == ',') {
        ++i;
        continue;
      }
      break;
    }
    // At a line end or the end of the text.
    if (i < n && text[i] == '\r') ++i;
    if (i < n && text[i] == '\n') ++i;
    ++line;
    if (bad) continue;
    if (record.fields.size() == 1 && record.fields[0].empty()) continue;  // blank line
    records.push_back(std::move(record));
  }
}

std::optional<OrgUnitLevel> ParseLevel(absl::string_view text) {
  const std::string lower = absl::AsciiStrToLower(text);
  if (lower == "province") return v1::ORG_UNIT_LEVEL_PROVINCE;
  if (lower == "district") return v1::ORG_UNIT_LEVEL_DISTRICT;
  if (lower == "commune") return v1::ORG_UNIT_LEVEL_COMMUNE;
  return std::nullopt;
}

// Whether a unit of `child` level may sit under one of `parent` level in the official
// list: district under province, commune under district or (two-tier) province.
bool FitsUnder(OrgUnitLevel child, OrgUnitLevel parent) {
  switch (child) {
    case v1::ORG_UNIT_LEVEL_DISTRICT:
      return parent == v1::ORG_UNIT_LEVEL_PROVINCE;
    case v1::ORG_UNIT_LEVEL_COMMUNE:
      return parent == v1::ORG_UNIT_LEVEL_DISTRICT || parent == v1::ORG_UNIT_LEVEL_PROVINCE;
    default:
      return false;
  }
}

// A row that passed the per-row checks.
struct Row {
  int line = 0;
  NewOrgUnit unit;
};

// Checks one record's shape and fields; returns the row, or appends errors.
std::optional<Row> CheckRecord(const CsvRecord& record, std::vector<RowError>& errors) {
  const int line = record.line;
  if (record.fields.size() != kColumns) {
    errors.push_back({line, "row",
                      absl::StrCat("expected 4 fields (code,name,level,parent_code), found ",
                                   record.fields.size())});
    return std::nullopt;
  }
  for (size_t f = 0; f < kColumns; ++f) {
    if (!IsValidUtf8(record.fields[f])) {
      errors.push_back({line, FieldName(f), "not valid UTF-8"});
      return std::nullopt;
    }
  }
  const std::string& code = record.fields[0];
  const std::string& name = record.fields[1];
  const std::string& level_text = record.fields[2];
  const std::string& parent_code = record.fields[3];
  const size_t before = errors.size();
  if (code.empty()) {
    errors.push_back({line, "code", "empty"});
  } else if (!IsAllDigits(code)) {
    errors.push_back({line, "code", absl::StrCat("'", code, "' is not all digits")});
  } else if (code.size() > kMaxCodeBytes) {
    errors.push_back({line, "code", absl::StrCat("longer than ", kMaxCodeBytes, " digits")});
  }
  if (name.empty()) {
    errors.push_back({line, "name", "empty"});
  } else if (name.size() > kMaxNameBytes) {
    errors.push_back({line, "name", absl::StrCat("longer than ", kMaxNameBytes, " bytes")});
  } else if (HasControlCharacter(name)) {
    errors.push_back({line, "name", "contains a control character"});
  }
  const std::optional<OrgUnitLevel> level = ParseLevel(level_text);
  if (!level.has_value()) {
    errors.push_back({line, "level",
                      absl::StrCat("unknown level '", level_text,
                                   "' (expected province, district or commune)")});
  } else if (*level == v1::ORG_UNIT_LEVEL_PROVINCE && !parent_code.empty()) {
    errors.push_back(
        {line, "parent_code", absl::StrCat("a province has no parent, got '", parent_code, "'")});
  } else if (*level != v1::ORG_UNIT_LEVEL_PROVINCE && parent_code.empty()) {
    errors.push_back(
        {line, "parent_code", absl::StrCat("empty, but a ", level_text, " needs a parent")});
  }
  if (!parent_code.empty() && !IsAllDigits(parent_code)) {
    errors.push_back({line, "parent_code", absl::StrCat("'", parent_code, "' is not all digits")});
  }
  if (errors.size() != before) return std::nullopt;
  return Row{line, NewOrgUnit{code, name, *level, parent_code}};
}

std::string Quoted(absl::string_view text) { return absl::StrCat("'", text, "'"); }

void AppendExamples(std::string& out, absl::string_view verb,
                    const std::vector<UnitChange>& changes) {
  if (changes.empty()) return;
  std::vector<std::string> examples;
  for (size_t i = 0; i < changes.size() && i < kExamples; ++i) {
    examples.push_back(absl::StrCat(changes[i].code, " ", Quoted(changes[i].old_value), " -> ",
                                    Quoted(changes[i].new_value)));
  }
  absl::StrAppend(&out, "; ", verb, " e.g. ", absl::StrJoin(examples, ", "));
}

}  // namespace

std::string ImportReport::Summary() const {
  std::string out =
      absl::StrCat(rows, " rows: ", added.size(), " new, ", unchanged.size(), " unchanged");
  if (!would_rename.empty() || !would_reparent.empty() || !would_relevel.empty()) {
    absl::StrAppend(&out, ", would rename ", would_rename.size(), ", re-parent ",
                    would_reparent.size(), ", re-level ", would_relevel.size(), " existing units");
    AppendExamples(out, "rename", would_rename);
    AppendExamples(out, "re-parent", would_reparent);
    AppendExamples(out, "re-level", would_relevel);
  }
  if (!errors.empty()) {
    absl::StrAppend(&out, "; ", errors.size(), " bad rows: ");
    std::vector<std::string> examples;
    for (size_t i = 0; i < errors.size() && i < 5; ++i) {
      examples.push_back(
          absl::StrCat("line ", errors[i].line, ": ", errors[i].field, ": ", errors[i].message));
    }
    absl::StrAppend(&out, absl::StrJoin(examples, "; "));
    if (errors.size() > 5) absl::StrAppend(&out, "; ...");
  }
  return out;
}

ImportReport ImportOrgUnits(Directory& directory, absl::string_view csv_text, ImportMode mode) {
  ImportReport report;
  std::vector<CsvRecord> records;
  ParseCsv(csv_text, records, report.errors);

  // An optional header row naming the columns.
  if (!records.empty()) {
    const std::vector<std::string>& first = records.front().fields;
    bool header = first.size() == kColumns;
    for (size_t f = 0; header && f < kColumns; ++f) {
      header = absl::AsciiStrToLower(first[f]) == kColumnNames[f];
    }
    if (header) records.erase(records.begin());
  }
  report.rows = static_cast<int>(records.size());

  // Per-row checks and duplicates. A code seen on a bad row still counts as present, so
  // that its children are not reported as orphans as well.
  std::vector<Row> rows;
  absl::flat_hash_map<std::string, int> line_of_code;
  absl::flat_hash_map<std::string, size_t> row_of_code;
  for (const CsvRecord& record : records) {
    std::optional<Row> row = CheckRecord(record, report.errors);
    const std::string code = record.fields.empty() ? std::string() : record.fields[0];
    if (!code.empty()) {
      auto [it, inserted] = line_of_code.emplace(code, record.line);
      if (!inserted) {
        report.errors.push_back(
            {record.line, "code", absl::StrCat("'", code, "' duplicates line ", it->second)});
        continue;
      }
    }
    if (!row.has_value()) continue;
    row_of_code[row->unit.code] = rows.size();
    rows.push_back(*std::move(row));
  }

  // Parents: in the file (its level wins) or in the directory; one level up.
  for (const Row& row : rows) {
    const NewOrgUnit& unit = row.unit;
    if (unit.parent_code.empty()) continue;
    std::optional<OrgUnitLevel> parent_level;
    auto in_file = row_of_code.find(unit.parent_code);
    if (in_file != row_of_code.end()) {
      parent_level = rows[in_file->second].unit.level;
    } else if (line_of_code.contains(unit.parent_code)) {
      continue;  // the parent's own row is bad and already reported
    } else {
      absl::StatusOr<OrgUnit> parent = directory.FindByCode(unit.parent_code);
      if (parent.ok()) {
        parent_level = parent->level();
      } else if (absl::IsNotFound(parent.status())) {
        report.errors.push_back(
            {row.line, "parent_code",
             absl::StrCat("'", unit.parent_code, "' is neither in the file nor in the directory")});
        continue;
      } else {
        report.status = parent.status();
        return report;
      }
    }
    if (!FitsUnder(unit.level, *parent_level)) {
      report.errors.push_back(
          {row.line, "level",
           absl::StrCat("a ", LevelName(unit.level), " cannot be under a ",
                        LevelName(*parent_level), " (parent '", unit.parent_code, "')")});
    }
  }
  std::stable_sort(report.errors.begin(), report.errors.end(),
                   [](const RowError& a, const RowError& b) { return a.line < b.line; });

  // Compare with the directory, by code.
  std::vector<NewOrgUnit> additions;
  for (const Row& row : rows) {
    const NewOrgUnit& unit = row.unit;
    absl::StatusOr<OrgUnit> existing = directory.FindByCode(unit.code);
    if (absl::IsNotFound(existing.status())) {
      report.added.push_back(unit.code);
      additions.push_back(unit);
      continue;
    }
    if (!existing.ok()) {
      report.status = existing.status();
      return report;
    }
    std::string old_parent_code;
    if (existing->parent_id() != 0) {
      absl::StatusOr<OrgUnit> parent = directory.GetOrgUnit(existing->parent_id());
      if (!parent.ok()) {
        report.status = parent.status();
        return report;
      }
      old_parent_code = parent->code();
    }
    bool changed = false;
    if (existing->name() != unit.name) {
      report.would_rename.push_back({unit.code, existing->name(), unit.name});
      changed = true;
    }
    if (old_parent_code != unit.parent_code) {
      report.would_reparent.push_back({unit.code, old_parent_code, unit.parent_code});
      changed = true;
    }
    if (existing->level() != unit.level) {
      report.would_relevel.push_back(
          {unit.code, LevelName(existing->level()), LevelName(unit.level)});
      changed = true;
    }
    if (!changed) report.unchanged.push_back(unit.code);
  }

  if (!report.errors.empty()) {
    report.status = absl::InvalidArgumentError(
        absl::StrCat("import refused, nothing applied: ", report.Summary()));
    return report;
  }
  if (!report.would_rename.empty() || !report.would_reparent.empty() ||
      !report.would_relevel.empty()) {
    report.status = absl::FailedPreconditionError(
        absl::StrCat("import refused, nothing applied: the list would reorganise existing units (a "
                     "reorganisation is a separate, explicit operation): ",
                     report.Summary()));
    return report;
  }
  if (mode == ImportMode::kDryRun || additions.empty()) return report;
  absl::StatusOr<std::vector<OrgUnit>> added = directory.AddOrgUnits(additions);
  if (!added.ok()) {
    report.status =
        absl::Status(added.status().code(),
                     absl::StrCat("import failed, nothing applied: ", added.status().message()));
    return report;
  }
  report.applied = true;
  return report;
}

}  // namespace kcnet::server
