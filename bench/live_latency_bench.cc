// live_latency: how long a change committed by one tablet takes to reach another tablet's
// open sync stream, while 1,000 other tablets hold idle streams on the same server.
//
// What it measures and how:
//  - The real kcnet-server binary runs as a child process (--listen=127.0.0.1:0, its log
//    on stderr sent to /dev/null) on a temp data dir that this program seeds before
//    starting it: directory.db (a district of 15 communes, the users) through
//    server::Directory, with sign-in tokens issued there (so no Argon2 runs during the
//    measurement), and kcnet.db (one facility per commune) through sync::ServerStore.
//  - 1,002 raw sync streams (the generated stub's callback API, not SyncClient: Hello,
//    Welcome, every ChangeBatch acknowledged at once with the cursors it reached, as a
//    device does, then held open reading) over 11 channels of at most 100 streams each,
//    each channel its own HTTP/2 connection (local subchannel pool). The 1,000 "other"
//    devices belong to 250 collaborators (4 devices each, the server's per-user limit),
//    assigned round-robin to the 15 communes, so ~67 of them share the commune of A and B
//    and receive every change too, as in the field.
//  - Device A (a collaborator of commune 0) pushes a new visit (one mutation, on the
//    commune's facility) on its own stream; device B (another collaborator of commune 0)
//    is timed from just before A's push is handed to gRPC until the ChangeBatch holding
//    that visit arrives on B's stream: the durable commit (fsync), the live notification,
//    the page read and the network. 10 warm-up rounds, then 200 measured rounds, one at a
//    time, 10-40 ms apart (so that some fall on the server's 5 s scope-check tick, which
//    pokes every stream).
//
// Metrics: p50_ms, p99_ms (goal p99 <= 50), max_ms.
//
// Usage: live_latency_bench [other_devices] [rounds]   (default 1000 200)
//        KCNET_SERVER_BIN overrides the kcnet-server binary built with this benchmark.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
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
#include "bench/live_probe.h"
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

struct Account {
  int64_t id = 0;
  int64_t commune = 0;
  std::string token;
};

}  // namespace
}  // namespace kcnet::bench

int main(int argc, char** argv) {
  using namespace kcnet::bench;  // NOLINT
  namespace server = kcnet::server;
  namespace sync = kcnet::sync;
  const int others = argc > 1 ? std::atoi(argv[1]) : 1000;
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 200;
  if (others < 0 || rounds <= 0 || others > 20000)
    Die("usage: live_latency_bench [others] [rounds]");
  RaiseFileLimit();
  const std::string dir = std::filesystem::temp_directory_path() / "kcnet-bench-live-latency";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);

  // Seed the data dir: org units, users and their tokens; one facility per commune.
  std::vector<int64_t> communes;
  Account writer, reader;
  std::vector<Account> other_users;
  {
    SeededDistrict seeded = SeedDistrict(dir, kCommunes);
    std::unique_ptr<server::Directory>& d = seeded.directory;
    communes = seeded.communes;
    auto account = [&](const std::string& name, int64_t commune) {
      Account a;
      a.commune = commune;
      a.id = Must(d->CreateUser(name, "Cộng tác viên", kPassword, ROLE_COMMUNE_COLLABORATOR,
                                {commune}),
                  "create user")
                 .id();
      a.token = Must(d->Login(name, kPassword), "login").token;
      return a;
    };
    writer = account("writer", communes[0]);
    reader = account("reader", communes[0]);
    const int users = (others + kDevicesPerUser - 1) / kDevicesPerUser;
    for (int u = 0; u < users; ++u) {
      other_users.push_back(account(absl::StrCat("ctv", u), communes[u % kCommunes]));
    }
  }
  std::string facility_c0;
  {
    auto store = Must(sync::ServerStore::Open(dir + "/kcnet.db", &kcnet::model::KcnetSchema()),
                      "open store");
    std::mt19937_64 rng(5);
    MutationBatch batch;
    for (int i = 0; i < kCommunes; ++i) {
      Facility f;
      f.set_id(*sync::UuidToText(RandomUuidBytes(rng)));
      f.set_commune_id(communes[i]);
      f.set_name(absl::StrCat("Hợp tác xã ", i));
      f.set_kind(FACILITY_KIND_COOPERATIVE);
      f.set_created_by(writer.id);
      if (i == 0) facility_c0 = f.id();
      Mutation* m = batch.add_mutations();
      m->set_seq(static_cast<uint64_t>(i) + 1);
      RecordChange c = Must(kcnet::model::ToChange(f), "ToChange");
      c.set_hlc(store->clock().Now());
      *m->add_changes() = std::move(c);
    }
    Must(store->Apply(sync::Writer{"", sync::NodeIdFor("seed")}, batch), "seed facilities");
  }

  const Child child = StartServer(dir);
  std::cerr << "live_latency_bench: kcnet-server pid " << child.pid << " on port " << child.port
            << "\n";
  Channels channels(child.port);
  ReadyCounter ready;
  Probe probe;
  Acks acks("live_latency_bench");
  std::vector<std::unique_ptr<RawStream>> streams;
  auto count_first_batch = [&ready](std::shared_ptr<std::atomic<bool>> seen) {
    return [&ready, seen](RawStream*, const SyncServerMessage& m) {
      if (m.has_changes() && !seen->exchange(true)) ready.Add();
    };
  };
  // A and B first, then the others.
  {
    auto seen_a = std::make_shared<std::atomic<bool>>(false);
    auto first_a = count_first_batch(seen_a);
    streams.push_back(
        std::make_unique<RawStream>(channels.ForStream(0), writer.token, "device-a",
                                    [&acks, first_a](RawStream* s, const SyncServerMessage& m) {
                                      first_a(s, m);
                                      if (m.has_push_ack()) acks.Got(m.push_ack());
                                    }));
    auto seen_b = std::make_shared<std::atomic<bool>>(false);
    auto first_b = count_first_batch(seen_b);
    streams.push_back(
        std::make_unique<RawStream>(channels.ForStream(1), reader.token, "device-b",
                                    [&probe, first_b](RawStream* s, const SyncServerMessage& m) {
                                      first_b(s, m);
                                      if (m.has_changes()) probe.Saw(m.changes());
                                    }));
  }
  for (int i = 0; i < others; ++i) {
    const Account& a = other_users[static_cast<size_t>(i / kDevicesPerUser)];
    streams.push_back(
        std::make_unique<RawStream>(channels.ForStream(i + 2), a.token, absl::StrCat("device-", i),
                                    count_first_batch(std::make_shared<std::atomic<bool>>(false))));
  }
  const int total = static_cast<int>(streams.size());
  for (int i = 0; i < total; ++i) {
    streams[static_cast<size_t>(i)]->Start();
    // Open in waves of 200 so that the server is not handed every Hello at once.
    if ((i + 1) % 200 == 0 && !ready.WaitFor(i + 1, absl::Seconds(30))) {
      Die(absl::StrCat("only ", ready.ready(), " of ", i + 1, " streams got their first page"));
    }
  }
  if (!ready.WaitFor(total, absl::Seconds(30))) {
    Die(absl::StrCat("only ", ready.ready(), " of ", total, " streams got their first page"));
  }
  for (const auto& s : streams) {
    if (s->ended()) Die("stream " + s->device_id() + " ended: " + s->status().error_message());
  }
  std::cerr << "live_latency_bench: " << total << " streams open over " << channels.size()
            << " channels\n";

  // The rounds: A pushes a new visit, B is timed until it arrives.
  RawStream* a = streams[0].get();
  sync::HybridClock clock(sync::SystemClock());
  std::mt19937_64 rng(17);
  constexpr int kWarmup = 10;
  std::vector<double> ms;
  const absl::Time end_by = absl::Now() + absl::Minutes(2);
  for (int round = 0; round < kWarmup + rounds; ++round) {
    if (absl::Now() > end_by) Die("rounds did not finish within 2 minutes");
    Visit v;
    v.set_id(*sync::UuidToText(RandomUuidBytes(rng)));
    v.set_commune_id(writer.commune);
    v.set_facility_id(facility_c0);
    v.set_collaborator_id(writer.id);
    v.set_visited_ms(absl::ToUnixMillis(absl::Now()));
    v.set_purpose(VISIT_PURPOSE_FOLLOW_UP);
    v.set_findings("Theo dõi tiến độ lắp đặt máy");
    RecordChange change = Must(kcnet::model::ToChange(v), "ToChange");
    change.set_hlc(clock.Now());
    const uint64_t seq = static_cast<uint64_t>(round) + 1;
    SyncClientMessage push;
    push.mutable_push()->set_settled_through(seq - 1);
    Mutation* m = push.mutable_push()->add_mutations();
    m->set_seq(seq);
    *m->add_changes() = change;
    probe.Arm(change.id());
    const absl::Time start = absl::Now();
    a->Send(std::move(push));
    const std::optional<absl::Time> arrived = probe.Wait(absl::Seconds(10));
    if (!arrived.has_value())
      Die(absl::StrCat("round ", round, ": B did not see the visit in 10 s"));
    if (!acks.WaitFor(seq, absl::Seconds(10)))
      Die(absl::StrCat("round ", round, ": push not applied"));
    if (round >= kWarmup) ms.push_back(absl::ToDoubleMilliseconds(*arrived - start));
    absl::SleepFor(absl::Milliseconds(10 + static_cast<int64_t>(rng() % 31)));
  }
  for (const auto& s : streams) {
    if (s->ended()) Die("stream " + s->device_id() + " ended: " + s->status().error_message());
  }
  std::sort(ms.begin(), ms.end());
  // Nearest rank: the smallest sample with at least p of the samples at or below it.
  const auto pct = [&](double p) {
    const size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(ms.size())));
    return ms[std::clamp<size_t>(rank, 1, ms.size()) - 1];
  };
  Emit("live_latency", "p50_ms", pct(0.50), "ms");
  Emit("live_latency", "p99_ms", pct(0.99), "ms");
  Emit("live_latency", "max_ms", ms.back(), "ms");

  CloseAll(streams);
  streams.clear();
  StopServer(child);
  std::filesystem::remove_all(dir);
  return 0;
}
