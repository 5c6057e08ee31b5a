#include "server/rpc/logger.h"

#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace kcnet::server {
namespace {

std::string Timestamp() {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
}

}  // namespace

absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name) {
  if (name == "text") return LogFormat::kText;
  if (name == "json") return LogFormat::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat("log_format: must be text or json, got '", name, "'"));
}

std::string JsonEscape(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          absl::StrAppendFormat(&out, "\\u%04x", static_cast<unsigned char>(c));
        } else {
          out.push_back(c);
        }
    }
  }
  return out;
}

Logger::Logger(LogFormat format, Sink sink) : format_(format), sink_(std::move(sink)) {}

void Logger::Rpc(const RpcLogEntry& entry) {
  const std::string status = absl::StatusCodeToString(entry.code);
  std::string line;
  if (format_ == LogFormat::kJson) {
    line = absl::StrFormat(
        R"({"ts":"%s","event":"rpc","method":"%s","caller":"%s","status":"%s","latency_ms":%.3f)",
        Timestamp(), JsonEscape(entry.method), JsonEscape(entry.caller), status, entry.latency_ms);
    if (entry.code != absl::StatusCode::kOk) {
      absl::StrAppend(&line, R"(,"error":")", JsonEscape(entry.message), "\"");
    }
    line += "}";
  } else {
    line = absl::StrFormat("%s rpc method=%s caller=%s status=%s latency_ms=%.3f", Timestamp(),
                           entry.method, entry.caller, status, entry.latency_ms);
    if (entry.code != absl::StatusCode::kOk) {
      absl::StrAppend(&line, " error=\"", JsonEscape(entry.message), "\"");
    }
  }
  Write(line);
}

void Logger::Info(absl::string_view message) { Event("info", message); }

void Logger::Warning(absl::string_view message) { Event("warning", message); }

void Logger::Event(absl::string_view event, absl::string_view message) {
  if (format_ == LogFormat::kJson) {
    Write(absl::StrFormat(R"({"ts":"%s","event":"%s","message":"%s"})", Timestamp(), event,
                          JsonEscape(message)));
  } else {
    Write(absl::StrCat(Timestamp(), " ", event, " ", message));
  }
}

void Logger::Write(const std::string& line) {
  absl::MutexLock lock(&mu_);
  if (sink_) {
    sink_(line);
    return;
  }
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

}  // namespace kcnet::server
