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
#include "bench/stream_bench_util.h"
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
constexpr int kDevicesPerUser = 4;  // SyncServiceOptions.max_streams_per_user
constexpr int kFacilitiesPerCommune = 20;

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
    SeededDistrict seeded = SeedDistrict(dir, kCommunes);
    std::unique_ptr<server::Directory>& d = seeded.directory;
    communes = seeded.communes;
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
