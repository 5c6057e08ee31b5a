// Reading a password from standard input: one line, typed without echo when stdin is a
// terminal (the prompt goes to stderr). Shared by the `kcnet` CLI and `kcnet-admin`.
// Header-only and dependency-free (POSIX termios), so that either binary can include it.
//
// Thread-safety: uses the process's stdin and terminal settings; call from one thread.
#ifndef KCNET_CLIENT_SDK_CLI_PASSWORD_PROMPT_H_
#define KCNET_CLIENT_SDK_CLI_PASSWORD_PROMPT_H_

#include <termios.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>

namespace kcnet::cli {

// The line read, without a trailing '\r'; empty when stdin has ended or the line is empty.
inline std::string ReadPasswordFromStdin() {
  const bool terminal = isatty(STDIN_FILENO) != 0;
  termios saved{};
  if (terminal) {
    std::fprintf(stderr, "Password: ");
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

}  // namespace kcnet::cli

#endif  // KCNET_CLIENT_SDK_CLI_PASSWORD_PROMPT_H_
