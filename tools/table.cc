// Table printing for the tools (table.h).
#include "tools/table.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace kcnet::tools {
namespace {

bool Combining(char32_t c) {
  return (c >= 0x0300 && c <= 0x036F) || (c >= 0x1AB0 && c <= 0x1AFF) ||
         (c >= 0x1DC0 && c <= 0x1DFF) || (c >= 0x20D0 && c <= 0x20FF) ||
         (c >= 0xFE20 && c <= 0xFE2F);
}

}  // namespace

size_t DisplayWidth(absl::string_view text) {
  size_t width = 0;
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char lead = static_cast<unsigned char>(text[i]);
    size_t length = 1;
    char32_t c = lead;
    if (lead >= 0xC0 && lead < 0xE0) {
      length = 2;
      c = lead & 0x1F;
    } else if (lead >= 0xE0 && lead < 0xF0) {
      length = 3;
      c = lead & 0x0F;
    } else if (lead >= 0xF0 && lead < 0xF8) {
      length = 4;
      c = lead & 0x07;
    }
    bool valid = length == 1 || i + length <= text.size();
    for (size_t k = 1; valid && k < length; ++k) {
      const unsigned char next = static_cast<unsigned char>(text[i + k]);
      valid = (next & 0xC0) == 0x80;
      c = (c << 6) | (next & 0x3F);
    }
    if (!valid) {  // a stray byte: one column, and go on from the next byte
      ++width;
      ++i;
      continue;
    }
    if (!Combining(c)) ++width;
    i += length;
  }
  return width;
}

Table::Table(std::vector<std::string> header) {
  if (!header.empty()) rows_.push_back(std::move(header));
}

void Table::AddRow(std::vector<std::string> cells) { rows_.push_back(std::move(cells)); }

std::string Table::Render(absl::string_view indent, absl::string_view gap) const {
  std::vector<size_t> widths;
  for (const std::vector<std::string>& row : rows_) {
    if (row.size() > widths.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], DisplayWidth(row[i]));
  }
  std::string out;
  for (const std::vector<std::string>& row : rows_) {
    std::string line(indent);
    // The last non-empty cell ends the line: no trailing padding.
    size_t cells = row.size();
    while (cells > 0 && row[cells - 1].empty()) --cells;
    for (size_t i = 0; i < cells; ++i) {
      if (i > 0) absl::StrAppend(&line, gap);
      absl::StrAppend(&line, row[i]);
      if (i + 1 < cells) line.append(widths[i] - DisplayWidth(row[i]), ' ');
    }
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

}  // namespace kcnet::tools
