// Where the tools get a password (password.h).
#include "tools/password.h"

#include <termios.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "tools/args.h"

namespace kcnet::tools {

std::string ReadPasswordFromStdin() {
  const bool terminal = isatty(STDIN_FILENO) != 0;
  termios saved{};
  if (terminal) {
    std::fprintf(stderr, "Password (mật khẩu): ");
    std::fflush(stderr);
    tcgetattr(STDIN_FILENO, &saved);
    termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
  }
  std::string password;
  if (!std::getline(std::cin, password)) password.clear();
  if (terminal) {
    tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    std::fprintf(stderr, "\n");
  }
  if (!password.empty() && password.back() == '\r') password.pop_back();
  return password;
}

absl::StatusOr<std::string> ReadPasswordFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string password;
  if (!in || !std::getline(in, password)) {
    return absl::NotFoundError(absl::StrCat("--password-file: cannot read ", path));
  }
  if (!password.empty() && password.back() == '\r') password.pop_back();
  if (password.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--password-file: the first line of ", path, " is empty"));
  }
  return password;
}

absl::StatusOr<std::string> ReadPassword(const std::optional<std::string>& password_file) {
  if (password_file.has_value()) return ReadPasswordFile(*password_file);
  std::string password = ReadPasswordFromStdin();
  if (password.empty()) {
    return UsageError(
        "no password: type it at the prompt, write it on stdin, or give --password-file=PATH");
  }
  return password;
}

absl::Status PasswordArgumentError() {
  return UsageError(
      "--password: a password in an argument shows in `ps`; give --password-file=PATH, or "
      "type it at the prompt (or on stdin)");
}

}  // namespace kcnet::tools
