// ChildProcess (child_process.h).
#include "client_sdk/cli/child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

extern char** environ;

namespace kcnet::cli {

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Start(
    const std::vector<std::string>& argv, const std::string& stderr_path) {
  if (argv.empty()) return absl::InvalidArgumentError("no program to start");
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, stderr_path.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0644);
  pid_t pid = -1;
  const int error = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  if (error != 0) {
    close(out[0]);
    return absl::FailedPreconditionError(
        absl::StrCat("cannot start ", argv[0], ": ", std::strerror(error)));
  }
  auto child = std::unique_ptr<ChildProcess>(new ChildProcess());
  child->pid_ = pid;
  child->out_ = out[0];
  return child;
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && !exit_code_.has_value()) Stop(absl::Seconds(12));
  if (out_ >= 0) close(out_);
}

std::optional<std::string> ChildProcess::ReadLine(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    const size_t newline = buffer_.find('\n');
    if (newline != std::string::npos) {
      std::string line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      return line;
    }
    if (out_ < 0) return std::nullopt;
    const int64_t left_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left_ms <= 0) return std::nullopt;
    pollfd fd{out_, POLLIN, 0};
    const int ready = poll(&fd, 1, static_cast<int>(left_ms));
    if (ready < 0 && errno != EINTR) return std::nullopt;
    if (ready <= 0) continue;
    char chunk[1024];
    const ssize_t n = read(out_, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {  // closed
      close(out_);
      out_ = -1;
      if (buffer_.empty()) return std::nullopt;
      std::string rest = std::move(buffer_);
      buffer_.clear();
      return rest;
    }
    buffer_.append(chunk, static_cast<size_t>(n));
  }
}

std::string ChildProcess::ReadAll(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  std::string all;
  while (std::optional<std::string> line = ReadLine(deadline - absl::Now())) {
    absl::StrAppend(&all, *line, "\n");
  }
  return all;
}

absl::StatusOr<int> ChildProcess::Wait(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!exit_code_.has_value()) {
    int status = 0;
    const pid_t done = waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
      break;
    }
    if (done < 0 && errno != EINTR) {
      exit_code_ = -1;
      break;
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("process ", pid_, " is still running"));
    }
    absl::SleepFor(absl::Milliseconds(10));  // waitpid has no timeout
  }
  return *exit_code_;
}

int ChildProcess::Stop(absl::Duration grace) {
  if (exit_code_.has_value()) return *exit_code_;
  kill(pid_, SIGTERM);
  absl::StatusOr<int> code = Wait(grace);
  if (code.ok()) return *code;
  kill(pid_, SIGKILL);
  return Wait(absl::Seconds(10)).value_or(-SIGKILL);
}

int ChildProcess::Kill() {
  if (exit_code_.has_value()) return *exit_code_;
  kill(pid_, SIGKILL);
  return Wait(absl::Seconds(10)).value_or(-SIGKILL);
}

RunOutput RunProgram(const std::vector<std::string>& argv, const std::string& stderr_path,
                     absl::Duration timeout) {
  RunOutput result;
  absl::StatusOr<std::unique_ptr<ChildProcess>> child = ChildProcess::Start(argv, stderr_path);
  if (!child.ok()) {
    result.output = std::string(child.status().message());
    return result;
  }
  const absl::Time deadline = absl::Now() + timeout;
  result.output = (*child)->ReadAll(timeout);
  absl::StatusOr<int> code = (*child)->Wait(deadline - absl::Now());
  if (!code.ok()) {
    (*child)->Stop(absl::Seconds(1));
    result.output = absl::StrCat(argv[0], " did not finish within ", absl::FormatDuration(timeout));
    return result;
  }
  result.exit_code = *code;
  return result;
}

}  // namespace kcnet::cli
