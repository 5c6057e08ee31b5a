// Shared by the stream benchmarks (idle_streams, live_latency, ingest): the kcnet-server
// child process (start, stop), a minimal raw sync-stream client on gRPC's callback API
// (Hello, acknowledge every page, hold the stream), channels that each carry their own
// connection, and small process helpers. Error messages carry the program's name.
//
// Thread-safety: RawStream and ReadyCounter are thread-safe; the rest is for the main thread.
#ifndef KCNET_BENCH_STREAM_BENCH_UTIL_H_
#define KCNET_BENCH_STREAM_BENCH_UTIL_H_

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "kcnet/v1/sync_service.grpc.pb.h"
#include "server/directory/directory.h"
#include "sync/page_codec.h"

#ifndef KCNET_SERVER_BIN
#define KCNET_SERVER_BIN "kcnet-server"
#endif

namespace kcnet::bench {

using namespace kcnet::v1;  // NOLINT: the stream's messages

inline constexpr int kStreamsPerChannel = 100;  // each channel has its own connection
inline constexpr char kPassword[] = "password-123";

inline pid_t g_child = -1;  // the server child, killed by Die()

[[noreturn]] inline void Die(const std::string& what) {
  std::cerr << program_invocation_short_name << ": " << what << "\n";
  if (g_child > 0) kill(g_child, SIGKILL);
  std::_Exit(1);
}

template <typename T>
inline T Must(absl::StatusOr<T> v, const char* what) {
  if (!v.ok()) Die(absl::StrCat(what, ": ", v.status().ToString()));
  return *std::move(v);
}

inline void RaiseFileLimit() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
  }
}

// ---- The server as a child process ------------------------------------------------

struct Child {
  pid_t pid = -1;
  int port = 0;
};

// Starts kcnet-server on `data_dir` (and `extra` flags, e.g. --store=postgres:...) and
// waits (at most 30 s) for its "listening on" line.
inline Child StartServer(const std::string& data_dir, const std::vector<std::string>& extra = {}) {
  const char* env = std::getenv("KCNET_SERVER_BIN");
  const std::string bin = env != nullptr && *env != '\0' ? env : KCNET_SERVER_BIN;
  int out[2];
  if (pipe(out) != 0) Die("pipe");
  const std::string dir_flag = "--data_dir=" + data_dir;
  const pid_t pid = fork();
  if (pid < 0) Die("fork");
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    const int null = open("/dev/null", O_WRONLY);
    if (null >= 0) dup2(null, STDERR_FILENO);
    close(out[0]);
    close(out[1]);
    std::vector<std::string> args = {bin, "--listen=127.0.0.1:0", dir_flag};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  close(out[1]);
  g_child = pid;
  std::string line;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (line.find('\n') == std::string::npos) {
    const int left = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    pollfd p{out[0], POLLIN, 0};
    if (left <= 0 || poll(&p, 1, left) <= 0) Die("kcnet-server did not start within 30 s");
    char buf[256];
    const ssize_t n = read(out[0], buf, sizeof buf);
    if (n <= 0) Die("kcnet-server exited at start (binary: " + bin + ")");
    line.append(buf, static_cast<size_t>(n));
  }
  close(out[0]);
  Child child{pid, 0};
  const size_t colon = line.rfind(':');
  if (!absl::StartsWith(line, "kcnet-server listening on ") || colon == std::string::npos ||
      !absl::SimpleAtoi(absl::StripAsciiWhitespace(line.substr(colon + 1)), &child.port)) {
    Die("unexpected kcnet-server output: " + line);
  }
  return child;
}

// SIGTERM, then waits up to 20 s (SIGKILL after that).
inline void StopServer(const Child& child) {
  kill(child.pid, SIGTERM);
  for (int i = 0; i < 400; ++i) {
    int status = 0;
    if (waitpid(child.pid, &status, WNOHANG) == child.pid) {
      g_child = -1;
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        std::cerr << program_invocation_short_name << ": kcnet-server ended with status " << status
                  << "\n";
      }
      return;
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  std::cerr << program_invocation_short_name
            << ": kcnet-server ignored SIGTERM for 20 s; killing it\n";
  kill(child.pid, SIGKILL);
  waitpid(child.pid, nullptr, 0);
  g_child = -1;
}

// ---- A raw sync stream (callback API) -----------------------------------------------

// One device's stream: Hello (asking for deflated pages, as the SDK does), then every
// ChangeBatch is inflated (sync::InflatePage, as the SDK does) and acknowledged at once
// with the cursors it reached; pushes are sent with Send(). `on_message` runs on a gRPC
// thread and sees each page as `changes`.
class RawStream : public grpc::ClientBidiReactor<SyncClientMessage, SyncServerMessage> {
 public:
  using Handler = std::function<void(RawStream*, const SyncServerMessage&)>;

  RawStream(SyncService::Stub* stub, const std::string& token, std::string device_id,
            Handler on_message)
      : device_id_(std::move(device_id)), on_message_(std::move(on_message)) {
    ctx_.AddMetadata("authorization", "Bearer " + token);
    stub->async()->Sync(&ctx_, this);
  }

  void Start() {
    SyncClientMessage hello;
    hello.mutable_hello()->set_device_id(device_id_);
    hello.mutable_hello()->set_schema_version(SCHEMA_VERSION_1);
    hello.mutable_hello()->set_deflate_pages(true);
    Send(std::move(hello));
    StartRead(&in_);
    AddHold();  // Send() and Close() come from outside the reactor's callbacks
    StartCall();
  }

  // Queues one message; at most one write is in flight.
  void Send(SyncClientMessage message) {
    const SyncClientMessage* next = nullptr;
    {
      absl::MutexLock lock(&mu_);
      if (closing_) return;
      queue_.push_back(std::move(message));
      if (writing_) return;
      writing_ = true;
      next = &queue_.front();  // deque elements stay put while others are appended
    }
    StartWrite(next);
  }

  // Half-closes once the queue is written, and lets the call end. Once.
  void Close() {
    bool done_now = false;
    {
      absl::MutexLock lock(&mu_);
      closing_ = true;
      if (!writing_ && !writes_done_) writes_done_ = done_now = true;
    }
    if (done_now) StartWritesDone();
    RemoveHold();
  }
  void Cancel() { ctx_.TryCancel(); }

  void OnWriteDone(bool ok) override {
    const SyncClientMessage* next = nullptr;
    bool done_now = false;
    {
      absl::MutexLock lock(&mu_);
      queue_.pop_front();
      if (!ok) queue_.clear();
      if (!queue_.empty()) {
        next = &queue_.front();
      } else {
        writing_ = false;
        if (closing_ && !writes_done_ && ok) writes_done_ = done_now = true;
      }
    }
    if (next != nullptr) StartWrite(next);
    if (done_now) StartWritesDone();
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      ended_.store(true);
      return;
    }
    if (in_.has_deflated_changes()) {
      const std::string deflated = in_.deflated_changes();
      absl::Status inflated = sync::InflatePage(deflated, in_.mutable_changes());
      if (!inflated.ok()) Die(absl::StrCat(device_id_, ": ", inflated.ToString()));
    }
    if (on_message_) on_message_(this, in_);
    if (in_.has_changes()) {
      SyncClientMessage ack;
      {
        absl::MutexLock lock(&mu_);
        for (const BucketCursor& c : in_.changes().cursors()) {
          // As the device store does: op only grows; the floor moves up only when the
          // page completes the bucket (floor == op).
          BucketCursor& mine = cursors_[c.bucket()];
          mine.set_bucket(c.bucket());
          if (c.op() >= mine.op() && c.floor() == c.op()) mine.set_floor(c.op());
          mine.set_op(std::max(mine.op(), c.op()));
        }
        for (const auto& [bucket, c] : cursors_) *ack.mutable_download_ack()->add_cursors() = c;
      }
      Send(std::move(ack));
    }
    in_.Clear();
    StartRead(&in_);
  }

  void OnDone(const grpc::Status& status) override {
    {
      absl::MutexLock lock(&mu_);
      status_ = status;
      done_ = true;
    }
    ended_.store(true);
  }

  bool ended() const { return ended_.load(); }
  bool WaitDone(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&done_), timeout);
  }
  grpc::Status status() {
    absl::MutexLock lock(&mu_);
    return status_;
  }
  const std::string& device_id() const { return device_id_; }

 private:
  const std::string device_id_;
  const Handler on_message_;
  grpc::ClientContext ctx_;
  SyncServerMessage in_;
  std::atomic<bool> ended_{false};
  absl::Mutex mu_;
  std::deque<SyncClientMessage> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  bool writes_done_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
  std::map<int64_t, BucketCursor> cursors_ ABSL_GUARDED_BY(mu_);
};

// Channels of their own connection each (no shared subchannel), created on demand.
class Channels {
 public:
  // `streams_per_channel`: 1 gives each stream its own connection, as tablets have.
  explicit Channels(int port, int streams_per_channel = kStreamsPerChannel)
      : port_(port), streams_per_channel_(streams_per_channel) {}
  SyncService::Stub* ForStream(int index) {
    const size_t c = static_cast<size_t>(index / streams_per_channel_);
    while (stubs_.size() <= c) {
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
      args.SetInt("kcnet.bench.channel", static_cast<int>(stubs_.size()));
      stubs_.push_back(SyncService::NewStub(grpc::CreateCustomChannel(
          absl::StrCat("127.0.0.1:", port_), grpc::InsecureChannelCredentials(), args)));
    }
    return stubs_[c].get();
  }
  size_t size() const { return stubs_.size(); }

 private:
  const int port_;
  const int streams_per_channel_;
  std::vector<std::unique_ptr<SyncService::Stub>> stubs_;
};

// Counts streams that have had their Welcome and first ChangeBatch.
class ReadyCounter {
 public:
  void Add() {
    absl::MutexLock lock(&mu_);
    ++ready_;
  }
  bool WaitFor(int n, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return ready_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
  }
  int ready() {
    absl::MutexLock lock(&mu_);
    return ready_;
  }

 private:
  absl::Mutex mu_;
  int ready_ ABSL_GUARDED_BY(mu_) = 0;
};

// Closes every stream and waits for them to end (cancelling laggards).
inline void CloseAll(std::vector<std::unique_ptr<RawStream>>& streams) {
  for (auto& s : streams) s->Close();
  for (auto& s : streams) {
    if (!s->WaitDone(absl::Seconds(5))) {
      s->Cancel();
      if (!s->WaitDone(absl::Seconds(5))) Die("a stream did not end after cancellation");
    }
  }
}

// A directory at DIR/directory.db (cheap password hashing: seeding is not measured) with
// province 90, district 901 and `communes` communes 90100, 90101, ... under it.
struct SeededDistrict {
  std::unique_ptr<server::Directory> directory;
  std::vector<int64_t> communes;
};
// Cheap password hashing: seeding is not measured.
inline server::DirectoryOptions CheapDirectoryOptions() {
  server::DirectoryOptions options;
  options.password_ops_limit = server::kArgon2OpsLimitMin;
  options.password_mem_limit = server::kArgon2MemLimitMin;
  return options;
}
// The same in an open directory (e.g. one on PostgreSQL).
inline SeededDistrict SeedDistrict(std::unique_ptr<server::Directory> directory, int communes);
inline SeededDistrict SeedDistrict(const std::string& dir, int communes) {
  return SeedDistrict(Must(server::Directory::Open(dir + "/directory.db", CheapDirectoryOptions()),
                           "open directory"),
                      communes);
}
inline SeededDistrict SeedDistrict(std::unique_ptr<server::Directory> directory, int communes) {
  SeededDistrict out;
  out.directory = std::move(directory);
  server::Directory& d = *out.directory;
  const int64_t province =
      Must(d.CreateOrgUnit("90", "Tỉnh", ORG_UNIT_LEVEL_PROVINCE, 0), "province").id();
  const int64_t district =
      Must(d.CreateOrgUnit("901", "Huyện", ORG_UNIT_LEVEL_DISTRICT, province), "district").id();
  for (int i = 0; i < communes; ++i) {
    out.communes.push_back(Must(d.CreateOrgUnit(absl::StrCat(90100 + i), absl::StrCat("Xã ", i),
                                                ORG_UNIT_LEVEL_COMMUNE, district),
                                "commune")
                               .id());
  }
  return out;
}

}  // namespace kcnet::bench

#endif  // KCNET_BENCH_STREAM_BENCH_UTIL_H_
