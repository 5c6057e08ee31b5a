// cluster: kcnet on PostgreSQL with several instances (issue 18, Performance).
//
// 1. cluster_live_latency: how long a change committed through instance A takes to reach
//    a tablet's open sync stream on instance B, while 1,000 other tablets hold streams on
//    B. As live_latency (bench/live_latency_bench.cc: raw sync streams, a directory with
//    tokens issued before the run, A pushes a new visit, B is timed until the ChangeBatch
//    holding it arrives), but with two real kcnet-server processes on one PostgreSQL
//    (--store=postgres:): the path is A's durable commit (synchronous_commit on), A's
//    NOTIFY after the commit (coalesced, 20 ms at most), B's LISTEN, B's read and the
//    network. Each instance has its own copy of the directory (accounts and tokens),
//    since the directory is not on PostgreSQL yet. 10 warm-up rounds, then 200 measured,
//    10-40 ms apart.
// 2. pg_catch_up: as catch_up (bench/catch_up_bench.cc) on PgServerStore: the time for a
//    device to pull one commune's week of changes (300) when PostgreSQL holds `small`
//    changes nationwide and when it holds `large` (10,000 communes in 34 provinces, i.e.
//    34 partitions). Median of 5 pulls, each from a copy of the device's store. The first
//    100,000 changes are written through PgServerStore::Apply; beyond that, copies of those
//    rows made by SQL (new ids and op ids, never in the target's commune) give the tables
//    their size in minutes (through the store the load slowed from ~3,400 changes/s at the
//    start to ~450/s near 500,000 on this loaded machine: 5M would take hours).
//
// PostgreSQL: KCNET_PG_CONNINFO when set, else a private server this program starts
// (tests/testing/pg_instance.h: initdb in a temp dir, fsync on, synchronous_commit on).
//
// Metrics: cluster_live_latency p50_ms, p99_ms (goal p99 <= 100), max_ms;
// pg_catch_up catch_up_ms_small, catch_up_ms_large, small_changes, large_changes,
// ratio_large_vs_small, and ratio_5m_vs_50k (goal <= 1.5) when the sizes are 50,000 and
// 5,000,000.
//
// Usage: cluster_bench [others] [rounds] [small] [large]   (default 1000 200 50000 5000000)
//        cluster_bench live ...   or   cluster_bench catch_up ...   runs one part only.
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
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

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
#include "server/pgstore/pg_conn.h"
#include "server/pgstore/pg_directory_store.h"
#include "server/pgstore/pg_server_store.h"
#include "sync/device_store.h"
#include "sync/hlc.h"
#include "sync/model/record_types.h"
#include "sync/server_store.h"
#include "tests/testing/pg_instance.h"

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

double Percentile(std::vector<double> ms, double p) {
  std::sort(ms.begin(), ms.end());
  const size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(ms.size())));
  return ms[std::clamp<size_t>(rank, 1, ms.size()) - 1];
}

void LiveLatency(const std::string& conninfo, int others, int rounds) {
  namespace server = kcnet::server;
  namespace sync = kcnet::sync;
  const std::string dir = std::filesystem::temp_directory_path() / "kcnet-bench-cluster";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir + "/a");
  std::vector<int64_t> communes;
  int32_t province = 0;
  Account writer, reader;
  std::vector<Account> other_users;
  {
    // The directory both instances share (on PostgreSQL, as kcnet-server keeps it there).
    SeededDistrict seeded = SeedDistrict(
        Must(server::Directory::Open(Must(pgstore::OpenPgDirectoryStore(conninfo), "directory"),
                                     CheapDirectoryOptions()),
             "open directory"),
        kCommunes);
    std::unique_ptr<server::Directory>& d = seeded.directory;
    communes = seeded.communes;
    province = static_cast<int32_t>(Must(d->FindByCode("90"), "province").id());
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
  std::filesystem::create_directories(dir + "/b");
  // One facility per commune, in PostgreSQL, in the province's partition as kcnet-server
  // puts it (the province above the commune).
  std::string facility_c0;
  {
    pgstore::PgServerStoreOptions pg_options;
    pg_options.province_of = [province](int64_t) { return province; };
    auto store = Must(pgstore::PgServerStore::Open(conninfo, &kcnet::model::KcnetSchema(), {},
                                                   std::move(pg_options)),
                      "open PostgreSQL store");
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

  const std::string store_flag = "--store=postgres:" + conninfo;
  const Child a_child = StartServer(dir + "/a", {store_flag});
  const pid_t a_pid = a_child.pid;
  const Child b_child = StartServer(dir + "/b", {store_flag});
  std::cerr << "cluster_bench: instance A pid " << a_child.pid << " port " << a_child.port
            << ", instance B pid " << b_child.pid << " port " << b_child.port << "\n";
  Channels a_channels(a_child.port);
  Channels b_channels(b_child.port);
  ReadyCounter ready;
  Probe probe;
  Acks acks("cluster_bench");
  std::vector<std::unique_ptr<RawStream>> streams;
  auto count_first_batch = [&ready](std::shared_ptr<std::atomic<bool>> seen) {
    return [&ready, seen](RawStream*, const SyncServerMessage& m) {
      if (m.has_changes() && !seen->exchange(true)) ready.Add();
    };
  };
  {
    auto first_a = count_first_batch(std::make_shared<std::atomic<bool>>(false));
    streams.push_back(
        std::make_unique<RawStream>(a_channels.ForStream(0), writer.token, "device-a",
                                    [&acks, first_a](RawStream* s, const SyncServerMessage& m) {
                                      first_a(s, m);
                                      if (m.has_push_ack()) acks.Got(m.push_ack());
                                    }));
    auto first_b = count_first_batch(std::make_shared<std::atomic<bool>>(false));
    streams.push_back(
        std::make_unique<RawStream>(b_channels.ForStream(0), reader.token, "device-b",
                                    [&probe, first_b](RawStream* s, const SyncServerMessage& m) {
                                      first_b(s, m);
                                      if (m.has_changes()) probe.Saw(m.changes());
                                    }));
  }
  for (int i = 0; i < others; ++i) {
    const Account& a = other_users[static_cast<size_t>(i / kDevicesPerUser)];
    streams.push_back(std::make_unique<RawStream>(
        b_channels.ForStream(i + 1), a.token, absl::StrCat("device-", i),
        count_first_batch(std::make_shared<std::atomic<bool>>(false))));
  }
  const int total = static_cast<int>(streams.size());
  for (int i = 0; i < total; ++i) {
    streams[static_cast<size_t>(i)]->Start();
    if ((i + 1) % 200 == 0 && !ready.WaitFor(i + 1, absl::Seconds(30))) {
      kill(a_pid, SIGKILL);
      Die(absl::StrCat("only ", ready.ready(), " of ", i + 1, " streams got their first page"));
    }
  }
  if (!ready.WaitFor(total, absl::Seconds(30))) {
    kill(a_pid, SIGKILL);
    Die(absl::StrCat("only ", ready.ready(), " of ", total, " streams got their first page"));
  }
  std::cerr << "cluster_bench: 1 stream on A, " << total - 1 << " on B\n";

  RawStream* a = streams[0].get();
  sync::HybridClock clock(sync::SystemClock());
  std::mt19937_64 rng(17);
  constexpr int kWarmup = 10;
  std::vector<double> ms;
  const absl::Time end_by = absl::Now() + absl::Minutes(3);
  for (int round = 0; round < kWarmup + rounds; ++round) {
    if (absl::Now() > end_by) {
      kill(a_pid, SIGKILL);
      Die("rounds did not finish within 3 minutes");
    }
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
    if (!arrived.has_value() || !acks.WaitFor(seq, absl::Seconds(10))) {
      kill(a_pid, SIGKILL);
      Die(absl::StrCat("round ", round, ": B did not see the visit, or A's push failed"));
    }
    if (round >= kWarmup) ms.push_back(absl::ToDoubleMilliseconds(*arrived - start));
    absl::SleepFor(absl::Milliseconds(10 + static_cast<int64_t>(rng() % 31)));
  }
  Emit("cluster_live_latency", "p50_ms", Percentile(ms, 0.50), "ms");
  Emit("cluster_live_latency", "p99_ms", Percentile(ms, 0.99), "ms");
  Emit("cluster_live_latency", "max_ms", Percentile(ms, 1.0), "ms");
  CloseAll(streams);
  streams.clear();
  StopServer(b_child);
  StopServer(a_child);
  std::filesystem::remove_all(dir);
}

// ---- pg_catch_up --------------------------------------------------------------------

constexpr int64_t kTarget = 5000;  // the device's commune
constexpr int kNationCommunes = 10000;
constexpr int kProvinces = 34;
constexpr int kWeekChanges = 300;  // the target commune's changes during the week
constexpr int kApplied = 100000;   // loaded through the store; beyond: SQL copies

RecordChange NewVisit(std::mt19937_64& rng, int64_t commune, uint64_t hlc) {
  Visit v;
  v.set_id(*sync::UuidToText(RandomUuidBytes(rng)));
  v.set_commune_id(commune);
  v.set_facility_id("0f8c2a64-5d1e-4b7a-9c3e-2a1b0c9d8e70");
  v.set_collaborator_id(7);
  v.set_visited_ms(1764000000000);
  v.set_purpose(VISIT_PURPOSE_SURVEY);
  v.set_findings("Khảo sát");
  RecordChange c = Must(kcnet::model::ToChange(v), "ToChange");
  c.set_hlc(hlc);
  return c;
}

// Loads `total` visits over the nation into a new database `database`, then the target's
// week; returns the median ms a device at the start of the week takes to catch up.
double CatchUp(const kcnet::testing::PgInstance* pg, const std::string& base_conninfo,
               const std::string& database, int total, const std::string& dir) {
  namespace sync = kcnet::sync;
  std::string conninfo = base_conninfo;
  if (pg != nullptr) {
    if (absl::Status created = pg->CreateDatabase(database); !created.ok()) {
      Die(absl::StrCat("create database ", database, ": ", created.ToString()));
    }
    conninfo = pg->conninfo(database);
  }
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const sync::Schema& schema = kcnet::model::KcnetSchema();
  pgstore::PgServerStoreOptions pg_options;
  pg_options.province_of = [](int64_t bucket) {
    return static_cast<int32_t>(bucket % kProvinces) + 1;
  };
  auto server = Must(pgstore::PgServerStore::Open(conninfo, &schema,
                                                  {.durable = false, .max_batch_mutations = 5000},
                                                  std::move(pg_options)),
                     "open PostgreSQL store");
  std::mt19937_64 rng(11);
  sync::HybridClock clock(sync::SystemClock());
  uint64_t seq = 0;
  const sync::Writer loader{"loader", sync::NodeIdFor("loader")};
  Timer load_timer;
  auto load = [&](int n, bool week) {
    for (int done = 0; done < n;) {
      MutationBatch batch;
      for (int i = 0; i < 5000 && done < n; ++i, ++done) {
        const int64_t commune =
            week && i % 2 == 0 ? kTarget : static_cast<int64_t>(rng() % kNationCommunes) + 1;
        auto* m = batch.add_mutations();
        m->set_seq(++seq);
        *m->add_changes() = NewVisit(rng, commune, clock.Now());
      }
      Must(server->Apply(loader, batch), "load");
    }
  };
  // Up to kApplied changes go through the store (the merge, as devices write); the rest of
  // a large load is copies of those rows made by SQL with new ids and op ids (the target
  // commune's excepted: only its rows are pulled), so that 5M fits in minutes, not hours.
  // The pull reads the target's bucket through the (province, bucket, op) index, so what
  // the size changes is the table and index around it, which the copies make as large.
  const int applied = std::min(total, kApplied);
  load(applied, false);
  if (total > applied) {
    auto conn = Must(pgstore::PgConn::Connect(conninfo), "connect");
    for (int64_t have = applied; have < total;) {
      const int64_t n = std::min<int64_t>(total - have, 200000);
      Must(conn->Query(absl::StrCat(
               "INSERT INTO kcnet_records(province, bucket, type, id, op, deleted, "
               "row, field_ops) SELECT province, bucket, type, gen_random_uuid()::text, "
               "nextval('kcnet_op_seq'), deleted, row, field_ops FROM kcnet_records "
               "WHERE bucket <> ",
               kTarget, " LIMIT ", n)),
           "copy rows");
      have += n;
    }
    Must(conn->Query("ANALYZE kcnet_records"), "analyze");
  }
  std::cerr << "cluster_bench: loaded " << total << " changes into PostgreSQL (" << applied
            << " through the store) in " << load_timer.Seconds() << " s\n";
  auto device = Must(
      sync::DeviceStore::Open(dir + "/device.db", &schema, "tablet", {.durable = true}), "device");
  if (!device->Subscribe(kTarget).ok()) Die("subscribe");
  while (true) {
    ChangeBatch page = Must(server->ChangesSince(Must(device->Cursors(), "cursors")), "pull");
    Must(device->ApplyDownload(page), "apply");
    if (!page.more()) break;
  }
  load(2 * kWeekChanges, true);
  std::vector<double> ms;
  for (int run = 0; run < 5; ++run) {
    const std::string copy = dir + "/device-" + std::to_string(run) + ".db";
    device.reset();
    std::filesystem::copy_file(dir + "/device.db", copy);
    auto d = Must(sync::DeviceStore::Open(copy, &schema, "tablet", {.durable = true}), "copy");
    Timer t;
    size_t applied = 0;
    while (true) {
      ChangeBatch page = Must(server->ChangesSince(Must(d->Cursors(), "cursors")), "pull");
      applied += Must(d->ApplyDownload(page), "apply").applied;
      if (!page.more()) break;
    }
    ms.push_back(t.Seconds() * 1000);
    if (applied != static_cast<size_t>(kWeekChanges)) {
      Die(absl::StrCat("pulled ", applied, " changes, expected ", kWeekChanges));
    }
    device = Must(sync::DeviceStore::Open(dir + "/device.db", &schema, "tablet"), "device");
  }
  std::filesystem::remove_all(dir);
  return Percentile(ms, 0.5);
}

}  // namespace
}  // namespace kcnet::bench

int main(int argc, char** argv) {
  using namespace kcnet::bench;  // NOLINT
  std::vector<std::string> args(argv + 1, argv + argc);
  bool live = true, catch_up = true;
  if (!args.empty() && (args[0] == "live" || args[0] == "catch_up")) {
    live = args[0] == "live";
    catch_up = !live;
    args.erase(args.begin());
  }
  auto arg = [&args](size_t i, int fallback) {
    return args.size() > i ? std::atoi(args[i].c_str()) : fallback;
  };
  const int others = arg(0, 1000);
  const int rounds = arg(1, 200);
  const int small = arg(2, 50000);
  const int large = arg(3, 5000000);
  if (others < 0 || others > 20000 || rounds <= 0 || small <= 0 || large < small) {
    Die("usage: cluster_bench [live|catch_up] [others] [rounds] [small] [large]");
  }
  RaiseFileLimit();
  std::unique_ptr<kcnet::testing::PgInstance> pg;
  std::string conninfo = std::getenv("KCNET_PG_CONNINFO") ? std::getenv("KCNET_PG_CONNINFO") : "";
  if (conninfo.empty()) {
    pg = Must(kcnet::testing::PgInstance::Start(), "starting PostgreSQL");
    conninfo = pg->conninfo();
  }
  if (live) LiveLatency(conninfo, others, rounds);
  if (catch_up) {
    const std::string dir = std::filesystem::temp_directory_path() / "kcnet-bench-pg-catch-up";
    // With KCNET_PG_CONNINFO both sizes share its database (the large load comes after).
    const double small_ms = CatchUp(pg.get(), conninfo, "catch_up_small", small, dir);
    const double large_ms = CatchUp(pg.get(), conninfo, "catch_up_large", large, dir);
    Emit("pg_catch_up", "small_changes", small, "changes");
    Emit("pg_catch_up", "large_changes", large, "changes");
    Emit("pg_catch_up", "catch_up_ms_small", small_ms, "ms");
    Emit("pg_catch_up", "catch_up_ms_large", large_ms, "ms");
    Emit("pg_catch_up", "ratio_large_vs_small", large_ms / small_ms, "ratio");
    if (small == 50000 && large == 5000000) {
      Emit("pg_catch_up", "ratio_5m_vs_50k", large_ms / small_ms, "ratio");
    }
  }
  return 0;
}
