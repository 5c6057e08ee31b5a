// ChildProcess: a program `kcnet demo` runs (kcnet-admin, kcnet-server), started with
// posix_spawn (safe in a process with threads), stdin from /dev/null, stdout on a pipe
// this side reads line by line, stderr appended to a log file. The destructor stops a
// child still running: SIGTERM, then SIGKILL after a grace period.
//
// Thread-safety: thread-compatible (one thread uses a ChildProcess at a time).
#ifndef KCNET_CLIENT_SDK_CLI_CHILD_PROCESS_H_
#define KCNET_CLIENT_SDK_CLI_CHILD_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace kcnet::cli {

class ChildProcess {
 public:
  // Starts argv[0] (a path) with argv. FAILED_PRECONDITION when it cannot be started.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(const std::vector<std::string>& argv,
                                                             const std::string& stderr_path);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // The next line of stdout (without its newline), or nullopt at its end or when none
  // comes within `timeout`.
  std::optional<std::string> ReadLine(absl::Duration timeout);
  // The rest of stdout, until the child closes it or `timeout` passes.
  std::string ReadAll(absl::Duration timeout);
  // The exit code (-signal when killed by one), or DEADLINE_EXCEEDED.
  absl::StatusOr<int> Wait(absl::Duration timeout);
  // SIGTERM, then SIGKILL when it has not exited within `grace`; returns the exit code.
  int Stop(absl::Duration grace);
  // SIGKILL at once (a crash, not a shutdown) and waits; returns the exit code.
  int Kill();

 private:
  ChildProcess() = default;
  pid_t pid_ = -1;
  int out_ = -1;
  std::string buffer_;
  std::optional<int> exit_code_;
};

// Runs a program to its end: its stdout, and its exit code (1 when it could not start or
// did not end within `timeout`; then `output` says why).
struct RunOutput {
  int exit_code = 1;
  std::string output;
};
RunOutput RunProgram(const std::vector<std::string>& argv, const std::string& stderr_path,
                     absl::Duration timeout);

}  // namespace kcnet::cli

#endif  // KCNET_CLIENT_SDK_CLI_CHILD_PROCESS_H_
