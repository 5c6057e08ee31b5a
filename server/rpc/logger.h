// Logger: the server's log lines, one per event, as plain text or as one JSON object per
// line (--log_format=text|json). The main event is the RPC line the runner writes for
// every call: method, caller, status code name, latency.
//
//   text: 2025-01-02T03:04:05.678Z rpc method=/kcnet.v1.AuthService/WhoAmI caller=admin1
//         status=OK latency_ms=0.412
//   json: {"ts":"2025-01-02T03:04:05.678Z","event":"rpc","method":"/kcnet.v1.AuthService/WhoAmI",
//          "caller":"admin1","status":"OK","latency_ms":0.412}
//
// A failed call adds its message (`error="..."` / "error":"..."). Passwords and tokens never
// reach the log: the runner logs only the method, the caller's username and the status.
//
// Thread-safety: thread-safe; lines from concurrent calls never interleave.
#ifndef KCNET_SERVER_RPC_LOGGER_H_
#define KCNET_SERVER_RPC_LOGGER_H_

#include <functional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace kcnet::server {

enum class LogFormat { kText, kJson };

// "text" or "json"; INVALID_ARGUMENT naming log_format otherwise.
absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name);

// One finished RPC.
struct RpcLogEntry {
  absl::string_view method;  // e.g. "/kcnet.v1.AuthService/Login"
  absl::string_view caller;  // the username, or "-" when unknown
  absl::StatusCode code = absl::StatusCode::kOk;
  absl::string_view message;  // the error message; empty for OK
  double latency_ms = 0;
};

class Logger {
 public:
  // Receives each finished line, without its newline.
  using Sink = std::function<void(absl::string_view line)>;

  // Writes to `sink`, or to stderr when it is empty.
  explicit Logger(LogFormat format, Sink sink = nullptr);

  // The line for one RPC.
  void Rpc(const RpcLogEntry& entry);
  // A server event ("event":"info" / "warning") with a free-form message.
  void Info(absl::string_view message);
  void Warning(absl::string_view message);

  LogFormat format() const { return format_; }

 private:
  void Event(absl::string_view event, absl::string_view message);
  void Write(const std::string& line);

  const LogFormat format_;
  const Sink sink_;
  absl::Mutex mu_;  // serialises writes to the sink
};

// `text` as the inside of a JSON string: quotes, backslashes and control characters
// escaped; other bytes (UTF-8) unchanged.
std::string JsonEscape(absl::string_view text);

}  // namespace kcnet::server

#endif  // KCNET_SERVER_RPC_LOGGER_H_
