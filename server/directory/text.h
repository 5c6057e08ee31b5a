// Small text checks shared by the directory and the code-list importer: UTF-8 validity,
// control characters, and the character classes of usernames and official codes.
//
// Thread-safety: pure functions, safe from any thread.
#ifndef KCNET_SERVER_DIRECTORY_TEXT_H_
#define KCNET_SERVER_DIRECTORY_TEXT_H_

#include "absl/strings/string_view.h"

namespace kcnet::server {

// True when `text` is well-formed UTF-8: no overlong forms, no surrogates, nothing above
// U+10FFFF, no truncated sequences.
bool IsValidUtf8(absl::string_view text);

// True when `text` holds an ASCII control character (U+0000-U+001F or U+007F).
bool HasControlCharacter(absl::string_view text);

// True when `text` is non-empty and made of ASCII digits only.
bool IsAllDigits(absl::string_view text);

}  // namespace kcnet::server

#endif  // KCNET_SERVER_DIRECTORY_TEXT_H_
