// idle_streams: the server memory one idle sync stream costs.
//
// What it measures and how:
//  - The real kcnet-server binary runs as a child process (--listen=127.0.0.1:0, its log
//    on stderr sent to /dev/null) on a temp data dir that this program seeds before
//    starting it: directory.db through server::Directory (a district of 15 communes and
//    1,250 collaborators spread round-robin over them, each signed in there so that no
//    Argon2 runs in the server), and kcnet.db through sync::ServerStore (20 facilities per
//    commune, so each device's first page carries its commune's records).
//  - The server allows 4 open streams per user (SyncServiceOptions.max_streams_per_user,
//    not a kcnet-server flag), so 5,000 streams are 1,250 users x 4 devices.
//  - Each stream is a raw client of the generated stub's callback API (not SyncClient):
//    Hello, Welcome, every ChangeBatch acknowledged at once with the cursors it reached,
//    then held open reading. 50 channels of 100 streams, each channel its own HTTP/2
//    connection (local subchannel pool); gRPC 1.51's server does not lower HTTP/2's
//    max concurrent streams (unlimited), and 100 per connection stays within any default.
//  - VmRSS of the child (/proc/PID/status) is read "before": once the server is up and one
//    warm-up stream has been opened and closed (one-time start-up costs excluded), and
//    "after": once all 5,000 streams have had their first page and acknowledged it, and
//    6 s more have passed (past one of the server's 5 s scope-check ticks, which poke
//    every stream). bytes_per_stream = (after - before) / streams.
//  - Then every stream is half-closed, the server is stopped with SIGTERM.
//
// Metrics: bytes_per_stream (goal <= 102,400), rss_before_bytes, rss_after_bytes.
//
// Usage: idle_streams_bench [streams]   (default 5000)
//        KCNET_SERVER_BIN overrides the kcnet-server binary built with this benchmark.
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
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/bench_util.h"
#include "grpcpp/grpcpp.h"
#include "kcnet/v1/domain.pb.h"
#include "kcnet/v1/sync_service.grpc.pb.h"
#include "server/directory/directory.h"
#include "sync/hlc.h"
#include "sync/model/record_types.h"
#include "sync/server_store.h"

#ifndef KCNET_SERVER_BIN
#define KCNET_SERVER_BIN "kcnet-server"
#endif

namespace kcnet::bench {
namespace {

using namespace kcnet::v1;  // NOLINT

constexpr int kCommunes = 15;
constexpr int kStreamsPerChannel = 100;
constexpr int kDevicesPerUser = 4;  // SyncServiceOptions.max_streams_per_user
constexpr int kFacilitiesPerCommune = 20;
constexpr char kPassword[] = "password-123";

pid_t g_child = -1;  // the server child, killed by Die()

[[noreturn]] void Die(const std::string& what) {
  std::cerr << "idle_streams_bench: " << what << "\n";
  if (g_child > 0) kill(g_child, SIGKILL);
  std::_Exit(1);
}

template <typename T>
T Must(absl::StatusOr<T> v, const char* what) {
  if (!v.ok()) Die(absl::StrCat(what, ": ", v.status().ToString()));
  return *std::move(v);
}

void RaiseFileLimit() {
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

// Starts kcnet-server on `data_dir` and waits (at most 30 s) for its "listening on" line.
Child StartServer(const std::string& data_dir) {
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
    execl(bin.c_str(), bin.c_str(), "--listen=127.0.0.1:0", dir_flag.c_str(),
          static_cast<char*>(nullptr));
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
void StopServer(const Child& child) {
  kill(child.pid, SIGTERM);
  for (int i = 0; i < 400; ++i) {
    int status = 0;
    if (waitpid(child.pid, &status, WNOHANG) == child.pid) {
      g_child = -1;
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        std::cerr << "idle_streams_bench: kcnet-server ended with status " << status << "\n";
      }
      return;
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  std::cerr << "idle_streams_bench: kcnet-server ignored SIGTERM for 20 s; killing it\n";
  kill(child.pid, SIGKILL);
  waitpid(child.pid, nullptr, 0);
  g_child = -1;
}

// ---- A raw sync stream (callback API) -----------------------------------------------

// One device's stream: Hello, then every ChangeBatch is acknowledged at once with the
// cursors it reached; pushes are sent with Send(). `on_message` runs on a gRPC thread.
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
  explicit Channels(int port) : port_(port) {}
  SyncService::Stub* ForStream(int index) {
    const size_t c = static_cast<size_t>(index / kStreamsPerChannel);
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
void CloseAll(std::vector<std::unique_ptr<RawStream>>& streams) {
  for (auto& s : streams) s->Close();
  for (auto& s : streams) {
    if (!s->WaitDone(absl::Seconds(5))) {
      s->Cancel();
      if (!s->WaitDone(absl::Seconds(5))) Die("a stream did not end after cancellation");
    }
  }
}

// The child's resident set size in bytes (VmRSS in /proc/PID/status).
int64_t RssBytes(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "VmRSS:")) {
      int64_t kib = 0;
      std::string value(absl::StripAsciiWhitespace(line.substr(6)));
      value = value.substr(0, value.find(' '));
      if (absl::SimpleAtoi(value, &kib)) return kib * 1024;
    }
  }
  Die(absl::StrCat("no VmRSS for pid ", pid));
}

struct Account {
  int64_t id = 0;
  std::string token;
};

}  // namespace
}  // namespace kcnet::bench

int main(int argc, char** argv) {
  using namespace kcnet::bench;  // NOLINT
  namespace server = kcnet::server;
  namespace sync = kcnet::sync;
  const int n = argc > 1 ? std::atoi(argv[1]) : 5000;
  if (n <= 0 || n > 40000) Die("usage: idle_streams_bench [streams]");
  RaiseFileLimit();
  const std::string dir = std::filesystem::temp_directory_path() / "kcnet-bench-idle-streams";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);

  // Seed the data dir: org units, users and their tokens; facilities.
  const int users = (n + kDevicesPerUser - 1) / kDevicesPerUser;
  std::vector<int64_t> communes;
  std::vector<Account> accounts;
  {
    Timer seed;
    server::DirectoryOptions options;
    options.password_ops_limit = server::kArgon2OpsLimitMin;
    options.password_mem_limit = server::kArgon2MemLimitMin;
    auto d = Must(server::Directory::Open(dir + "/directory.db", options), "open directory");
    const int64_t province =
        Must(d->CreateOrgUnit("90", "Tỉnh", ORG_UNIT_LEVEL_PROVINCE, 0), "province").id();
    const int64_t district =
        Must(d->CreateOrgUnit("901", "Huyện", ORG_UNIT_LEVEL_DISTRICT, province), "district").id();
    for (int i = 0; i < kCommunes; ++i) {
      communes.push_back(Must(d->CreateOrgUnit(absl::StrCat(90100 + i), absl::StrCat("Xã ", i),
                                               ORG_UNIT_LEVEL_COMMUNE, district),
                              "commune")
                             .id());
    }
    for (int u = 0; u < users; ++u) {
      const std::string name = absl::StrCat("ctv", u);
      Account a;
      a.id = Must(d->CreateUser(name, "Cộng tác viên", kPassword, ROLE_COMMUNE_COLLABORATOR,
                                {communes[static_cast<size_t>(u % kCommunes)]}),
                  "create user")
                 .id();
      a.token = Must(d->Login(name, kPassword), "login").token;
      accounts.push_back(std::move(a));
    }
    std::cerr << "idle_streams_bench: seeded " << users << " users in " << seed.Seconds() << " s\n";
  }
  {
    auto store = Must(sync::ServerStore::Open(dir + "/kcnet.db", &kcnet::model::KcnetSchema()),
                      "open store");
    std::mt19937_64 rng(5);
    MutationBatch batch;
    uint64_t seq = 0;
    for (int i = 0; i < kCommunes; ++i) {
      for (int k = 0; k < kFacilitiesPerCommune; ++k) {
        Facility f;
        f.set_id(*sync::UuidToText(RandomUuidBytes(rng)));
        f.set_commune_id(communes[static_cast<size_t>(i)]);
        f.set_name(absl::StrCat("Cơ sở ", i, "-", k));
        f.set_owner_name("Trần Thị Bình");
        f.set_kind(FACILITY_KIND_HOUSEHOLD_BUSINESS);
        f.set_created_by(accounts[0].id);
        Mutation* m = batch.add_mutations();
        m->set_seq(++seq);
        RecordChange c = Must(kcnet::model::ToChange(f), "ToChange");
        c.set_hlc(store->clock().Now());
        *m->add_changes() = std::move(c);
      }
    }
    Must(store->Apply(sync::Writer{"", sync::NodeIdFor("seed")}, batch), "seed facilities");
  }

  const Child child = StartServer(dir);
  std::cerr << "idle_streams_bench: kcnet-server pid " << child.pid << " on port " << child.port
            << "\n";
  Channels channels(child.port);
  ReadyCounter ready;
  auto first_page = [&ready]() {
    auto seen = std::make_shared<std::atomic<bool>>(false);
    return [&ready, seen](RawStream*, const SyncServerMessage& m) {
      if (m.has_changes() && !seen->exchange(true)) ready.Add();
    };
  };

  // Warm-up: one stream opened and closed (lazy start-up costs are not the streams').
  {
    std::vector<std::unique_ptr<RawStream>> warm;
    warm.push_back(std::make_unique<RawStream>(channels.ForStream(0), accounts[0].token, "warm-up",
                                               first_page()));
    warm[0]->Start();
    if (!ready.WaitFor(1, absl::Seconds(30))) Die("the warm-up stream got no first page");
    CloseAll(warm);
  }
  absl::SleepFor(absl::Seconds(1));
  const int64_t before = RssBytes(child.pid);

  std::vector<std::unique_ptr<RawStream>> streams;
  streams.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    const Account& a = accounts[static_cast<size_t>(i / kDevicesPerUser)];
    streams.push_back(std::make_unique<RawStream>(
        channels.ForStream(i), a.token,
        absl::StrCat("device-", i / kDevicesPerUser, "-", i % kDevicesPerUser), first_page()));
  }
  Timer open_timer;
  for (int i = 0; i < n; ++i) {
    streams[static_cast<size_t>(i)]->Start();
    // Waves of 500: the server is not handed every Hello at once.
    if ((i + 1) % 500 == 0 && !ready.WaitFor(1 + i + 1, absl::Seconds(60))) {
      Die(absl::StrCat("only ", ready.ready() - 1, " of ", i + 1, " streams got their first page"));
    }
  }
  if (!ready.WaitFor(1 + n, absl::Seconds(60))) {
    Die(absl::StrCat("only ", ready.ready() - 1, " of ", n, " streams got their first page"));
  }
  std::cerr << "idle_streams_bench: " << n << " streams open over " << channels.size()
            << " channels in " << open_timer.Seconds() << " s\n";
  int64_t peak = 0;
  for (int i = 0; i < 12; ++i) {  // 6 s, past a scope-check tick
    absl::SleepFor(absl::Milliseconds(500));
    peak = std::max(peak, RssBytes(child.pid));
  }
  const int64_t after = RssBytes(child.pid);
  for (const auto& s : streams) {
    if (s->ended()) Die("stream " + s->device_id() + " ended: " + s->status().error_message());
  }
  std::cerr << "idle_streams_bench: VmRSS before " << before << ", after " << after
            << ", peak while idle " << peak << " bytes\n";
  Emit("idle_streams", "bytes_per_stream", static_cast<double>(after - before) / n, "bytes");
  Emit("idle_streams", "rss_before_bytes", static_cast<double>(before), "bytes");
  Emit("idle_streams", "rss_after_bytes", static_cast<double>(after), "bytes");

  CloseAll(streams);
  streams.clear();
  absl::SleepFor(absl::Seconds(1));
  std::cerr << "idle_streams_bench: VmRSS after closing every stream " << RssBytes(child.pid)
            << " bytes\n";
  StopServer(child);
  std::filesystem::remove_all(dir);
  return 0;
}
