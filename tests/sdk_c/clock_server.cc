// kcnet-clock-server: a TEST-ONLY kcnet server whose clock a test moves from outside the
// process. It is the production server library (KcnetServer, server/app) with one change:
// its clock (sync::Clock, the seam ServerOptions::clock and DirectoryOptions::clock take:
// token and device-credential times, and the record store's hybrid clock) is the system
// clock plus an offset read from a control file. The production kcnet-server has no such
// thing and never will.
//
//   kcnet-clock-server --data_dir=DIR --clock_file=PATH [--listen=127.0.0.1:0]
//
// PATH holds the offset in milliseconds as one decimal integer ("15552000000" is 180 days
// ahead); a missing or empty file means 0. The file is read at every reading of the clock,
// so a test that wrote it sees the new time in its very next call (write it atomically:
// to a temporary file, then rename). Like kcnet-server it prints "kcnet-server listening
// on HOST:PORT" once it accepts calls and stops gracefully on SIGTERM or SIGINT. It
// serves plaintext on loopback only. tests/sdk_c/run_e2e.sh starts it for
// sdk_c_lifecycle (the 180-day credential).
//
// Thread-safety: OffsetFileClock is thread-safe (each reading opens the file anew).
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "server/app/kcnet_server.h"
#include "sync/hlc.h"

namespace {

// The system clock plus the offset (ms) written in a file.
class OffsetFileClock : public kcnet::sync::Clock {
 public:
  explicit OffsetFileClock(std::string path) : path_(std::move(path)) {}
  int64_t NowMs() override { return kcnet::sync::SystemClock()->NowMs() + OffsetMs(); }

 private:
  int64_t OffsetMs() const {
    std::ifstream in(path_);
    std::string text;
    if (!in || !std::getline(in, text)) return 0;
    int64_t offset = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &offset)) {
      std::fprintf(stderr, "kcnet-clock-server: %s: not a number of ms: '%s'\n", path_.c_str(),
                   text.c_str());
      std::abort();  // a broken test, said loudly
    }
    return offset;
  }
  const std::string path_;
};

// The value of --NAME=VALUE among the arguments, or `fallback`.
std::string Flag(int argc, char** argv, absl::string_view name, std::string fallback) {
  const std::string prefix = absl::StrCat("--", name, "=");
  for (int i = 1; i < argc; ++i) {
    if (absl::StartsWith(argv[i], prefix)) return std::string(argv[i] + prefix.size());
  }
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const std::string clock_file = Flag(argc, argv, "clock_file", "");
  kcnet::server::ServerOptions options;
  options.data_dir = Flag(argc, argv, "data_dir", "");
  options.listen = Flag(argc, argv, "listen", "127.0.0.1:0");
  if (options.data_dir.empty() || clock_file.empty()) {
    std::fprintf(stderr, "usage: %s --data_dir=DIR --clock_file=PATH [--listen=HOST:PORT]\n",
                 argv[0]);
    return 2;
  }
  OffsetFileClock clock(clock_file);
  options.clock = &clock;
  options.directory.clock = &clock;
  absl::StatusOr<std::unique_ptr<kcnet::server::KcnetServer>> server =
      kcnet::server::KcnetServer::Start(options);
  if (!server.ok()) {
    std::fprintf(stderr, "kcnet-clock-server: %s\n", server.status().ToString().c_str());
    return 1;
  }
  std::printf("kcnet-server listening on %s\n", (*server)->address().c_str());
  std::fflush(stdout);
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  (*server)->Shutdown(absl::Seconds(10));
  (*server)->Wait();
  return 0;
}
