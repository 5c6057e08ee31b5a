// Where the tools get a password: a file (--password-file=PATH, the file's first line), or
// else a prompt on the terminal without echo, or else one line of stdin. Never from an
// argument, which any user of the machine sees in `ps`: PasswordArgumentError() is the
// tools' answer to --password=.
//
// Thread-safety: ReadPassword() and ReadPasswordFromStdin() use the process's stdin and
// terminal settings; call them from one thread. The rest is thread-safe.
#ifndef KCNET_TOOLS_PASSWORD_H_
#define KCNET_TOOLS_PASSWORD_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kcnet::tools {

// One line of stdin without its line ending; typed without echo after a "Password: "
// prompt on stderr when stdin is a terminal. Empty when stdin has ended or the line is.
std::string ReadPasswordFromStdin();

// The first line of the file at `path` (without "\n" or "\r\n"). NOT_FOUND naming
// --password-file when it cannot be read, INVALID_ARGUMENT when that line is empty.
absl::StatusOr<std::string> ReadPasswordFile(const std::string& path);

// From `password_file` when given, else from stdin (ReadPasswordFromStdin()). A usage
// error when stdin gives nothing.
absl::StatusOr<std::string> ReadPassword(const std::optional<std::string>& password_file);

// The usage error for a password given as an argument (--password=...).
absl::Status PasswordArgumentError();

}  // namespace kcnet::tools

#endif  // KCNET_TOOLS_PASSWORD_H_
