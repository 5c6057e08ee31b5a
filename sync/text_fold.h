// Text folding for search: the form in which the device's search index stores text and
// in which queries are matched, so that "Hà Nội", "ha noi" and "HA NOI" are the same words.
// FoldForSearch lower-cases, removes Vietnamese (and common Latin) diacritics from
// precomposed letters, drops combining marks (text typed in decomposed form), and maps
// đ/Đ to d, which Unicode does not decompose. Other characters pass through unchanged.
//
// Thread-safety: thread-safe (pure; its table is built once).
#ifndef KCNET_SYNC_TEXT_FOLD_H_
#define KCNET_SYNC_TEXT_FOLD_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace kcnet::sync {

// `text` folded as above. Invalid UTF-8 bytes are dropped.
std::string FoldForSearch(absl::string_view text);

// The words of `text` after folding: runs of letters and digits (ASCII after folding, or
// any non-ASCII code point), in order.
std::vector<std::string> SearchWords(absl::string_view text);

}  // namespace kcnet::sync

#endif  // KCNET_SYNC_TEXT_FOLD_H_
