// Table: rows of text printed in aligned columns, for the tools' listings (kcnet-admin's
// demo accounts, `kcnet status`). Columns are padded by display width, not bytes, so
// Vietnamese names line up: "Nguyễn Thị Ánh" is 14 columns whatever its UTF-8 length,
// precomposed or with combining marks.
//
//   Table table({"USERNAME", "PASSWORD"});
//   table.AddRow({"collab1", "demo-collab1-pass"});
//   std::fputs(table.Render("  ").c_str(), stdout);
//
// Thread-safety: thread-compatible; DisplayWidth() is pure and thread-safe.
#ifndef KCNET_TOOLS_TABLE_H_
#define KCNET_TOOLS_TABLE_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace kcnet::tools {

// The columns `text` takes on a terminal: one per code point, none for combining marks
// (U+0300-U+036F and the other combining blocks). Invalid UTF-8 bytes count one each.
size_t DisplayWidth(absl::string_view text);

class Table {
 public:
  // `header`: the first row; empty for a table without one.
  explicit Table(std::vector<std::string> header = {});

  // A row; missing cells are empty, extra cells widen the table.
  void AddRow(std::vector<std::string> cells);

  // Every row on its own line, each starting with `indent`, the columns separated by
  // `gap`; the last column is not padded (no trailing spaces).
  std::string Render(absl::string_view indent = "", absl::string_view gap = " ") const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace kcnet::tools

#endif  // KCNET_TOOLS_TABLE_H_
