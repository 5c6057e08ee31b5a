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
// 5,000,000. `mirror`: pg_ingest mirror_off_mutations_per_s_{1,2}i,
// mirror_on_mutations_per_s_{1,2}i, mirror_ratio_on_vs_off_{1,2}i,
// all_heads_lock_ratio_vs_off_{1,2}i, running_heads_lock_ratio_vs_off_{1,2}i,
// mirror_thread_cpu_pct_{1,2}i, mirror_backend_cpu_pct_{1,2}i, mirror_catch_up_ms_p50/p99_{1,2}i.
//
// Usage: cluster_bench [others] [rounds] [small] [large] [through_store]
//        (default 1000 200 50000 5000000 100000: the changes loaded through the store)
//        cluster_bench live ...   or   cluster_bench catch_up ...   runs one part only.
//        cluster_bench mirror [devices] [batch] [seconds] [rounds]   (default 50 100 5 3):
//        pg_ingest with each instance's record mirror running vs not (see MirrorCost).
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
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
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
#include "server/pgstore/pg_record_mirror.h"
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
constexpr int kApplied = 100000;   // loaded through the store by default; beyond: SQL copies

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
               const std::string& database, int total, int through_store, const std::string& dir) {
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
  // One loader per load: with KCNET_PG_CONNINFO both sizes share a database (and its devices).
  const std::string loader_id = "loader-" + database;
  const sync::Writer loader{loader_id, sync::NodeIdFor(loader_id)};
  Timer load_timer;
  Timer stretch;  // the rate of each 50,000 loaded through the store, on stderr
  int loaded = 0;
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
      loaded += batch.mutations_size();
      if (loaded % 50000 == 0) {
        std::cerr << "cluster_bench: " << loaded
                  << " changes through the store, the last 50,000 at "
                  << static_cast<int>(50000 / stretch.Seconds()) << " changes/s\n";
        stretch = Timer();
      }
    }
  };
  // Up to kApplied changes go through the store (the merge, as devices write); the rest of
  // a large load is copies of those rows made by SQL with new ids and op ids (the target
  // commune's excepted: only its rows are pulled), so that 5M fits in minutes, not hours.
  // The pull reads the target's bucket through the (province, bucket, op) index, so what
  // the size changes is the table and index around it, which the copies make as large.
  const int applied = std::min(total, through_store);
  load(applied, false);
  if (total > applied) {
    auto conn = Must(pgstore::PgConn::Connect(conninfo), "connect");
    for (int64_t have = applied; have < total;) {
      const int64_t n = std::min<int64_t>(total - have, 200000);
      // As many as were copied (fewer than n while the table holds fewer rows than n).
      auto copied = Must(conn->Query(absl::StrCat(
                             "WITH c AS (INSERT INTO kcnet_records(province, bucket, type, id, "
                             "op, deleted, row, field_ops) SELECT province, bucket, type, "
                             "gen_random_uuid()::text, nextval('kcnet_op_seq'), deleted, row, "
                             "field_ops FROM kcnet_records WHERE bucket <> ",
                             kTarget, " LIMIT ", n, " RETURNING 1) SELECT count(*) FROM c")),
                         "copy rows");
      have += copied.GetInt(0, 0);
      if (copied.GetInt(0, 0) == 0) Die("copy rows: nothing to copy");
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

// ---- pg_ingest with the record mirror ---------------------------------------------------

constexpr int kNationalHeads = 3321;  // communes: one bucket head row each

// CPU seconds a process (a PostgreSQL backend) has used, from /proc (0 if unreadable).
double ProcessCpuSeconds(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = text.rfind(')');
  if (close == std::string::npos) return 0;
  std::vector<std::string> fields = absl::StrSplit(text.substr(close + 2), ' ');
  if (fields.size() < 13) return 0;  // utime, stime are fields 14, 15 (11, 12 after ')')
  return static_cast<double>(std::atoll(fields[11].c_str()) + std::atoll(fields[12].c_str())) /
         static_cast<double>(sysconf(_SC_CLK_TCK));
}

double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// What runs beside the writers during a phase, as each kcnet-server instance would: nothing,
// its mirror (PgRecordMirror::CatchUp every 50 ms), or only the mirror's wait for writers
// in flight, under the rule of before (FOR KEY SHARE on every head) or today's (on the
// heads a running transaction holds), each every 50 ms when the sequence moved.
enum class Follower { kNone, kMirror, kAllHeadsLock, kRunningHeadsLock };

constexpr char kAllHeadsLock[] = "SELECT 1 FROM kcnet_bucket_head ORDER BY bucket FOR KEY SHARE";
constexpr char kRunningHeadsLock[] =
    "SELECT 1 FROM kcnet_bucket_head WHERE xmax IN (SELECT transactionid FROM pg_locks "
    "WHERE locktype = 'transactionid') ORDER BY bucket FOR KEY SHARE";

const char* FollowerName(Follower f) {
  switch (f) {
    case Follower::kNone:
      return "none";
    case Follower::kMirror:
      return "mirror";
    case Follower::kAllHeadsLock:
      return "all-heads lock";
    case Follower::kRunningHeadsLock:
      return "running-heads lock";
  }
  return "?";
}

// A tablet of the mirror benchmark: its sequence, its visits and the op of each.
struct Tablet {
  uint64_t seq = 0;
  std::vector<Visit> visits;
  std::vector<uint64_t> ops;
};

struct PhaseResult {
  double mutations_per_s = 0;
  double follower_cpu_s = 0;  // the followers' own threads
  double backend_cpu_s = 0;   // their PostgreSQL backends
  double seconds = 0;
  std::vector<double> catch_up_ms;
};

// `devices` writers (threads) spread over `stores`, each pushing batches of `batch` visits
// in its own commune of the 3,321 (new at its first push, rewritten at every later one),
// one in flight at a time, for `seconds`; with
// one follower per store (an instance's mirror, or only its heads lock every 50 ms).
PhaseResult IngestPhase(const std::vector<pgstore::PgServerStore*>& stores,
                        const std::vector<pgstore::PgRecordMirror*>& mirrors,
                        const std::string& conninfo, Follower follower, int devices, int batch,
                        int seconds, uint64_t* seq_base, std::vector<Tablet>* tablets) {
  PhaseResult result;
  std::atomic<bool> running{true};
  std::atomic<int64_t> applied{0};
  absl::Mutex mu;
  std::vector<std::thread> threads;
  const uint64_t base = *seq_base;  // the writers' random seeds: new ids every phase
  *seq_base += static_cast<uint64_t>(devices);
  tablets->resize(static_cast<size_t>(devices));
  // The mirrors copy what earlier phases wrote before the clock starts: steady state.
  if (follower == Follower::kMirror) {
    for (pgstore::PgRecordMirror* m : mirrors) Must(m->CatchUp(), "mirror backlog");
  }
  // Followers first, so that the writers never run without them in a "with" phase.
  std::vector<int> backend_pids;
  for (size_t i = 0; follower != Follower::kNone && i < stores.size(); ++i) {
    threads.emplace_back([&, i] {
      std::unique_ptr<pgstore::PgConn> conn;
      int64_t last_seq = 0;
      if (follower != Follower::kMirror) {
        conn = Must(pgstore::PgConn::Connect(conninfo), "lock-only connection");
        auto pid = Must(conn->Query("SELECT pg_backend_pid()"), "pid");
        absl::MutexLock lock(&mu);
        backend_pids.push_back(static_cast<int>(pid.GetInt(0, 0)));
      }
      const double cpu0 = ThreadCpuSeconds();
      std::vector<double> ms;
      while (running.load()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));  // PgRecordMirror's poll
        Timer t;
        if (follower == Follower::kMirror) {
          Must(mirrors[i]->CatchUp(), "mirror catch-up");
        } else {
          auto seq = Must(conn->Query("SELECT last_value FROM kcnet_op_seq"), "sequence");
          if (seq.GetInt(0, 0) == last_seq) continue;  // nothing new: the mirror stops here
          last_seq = seq.GetInt(0, 0);
          Must(conn->Query(follower == Follower::kAllHeadsLock ? kAllHeadsLock : kRunningHeadsLock),
               "heads lock");
        }
        ms.push_back(t.Seconds() * 1000);
      }
      const double cpu = ThreadCpuSeconds() - cpu0;
      absl::MutexLock lock(&mu);
      result.follower_cpu_s += cpu;
      result.catch_up_ms.insert(result.catch_up_ms.end(), ms.begin(), ms.end());
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  if (follower == Follower::kMirror) {
    // The mirrors' backends, by their application_name.
    auto conn = Must(pgstore::PgConn::Connect(conninfo), "connect");
    auto pids = Must(conn->Query("SELECT pid FROM pg_stat_activity WHERE application_name = "
                                 "'kcnet_bench_mirror'"),
                     "mirror backends");
    absl::MutexLock lock(&mu);
    for (int r = 0; r < pids.rows(); ++r)
      backend_pids.push_back(static_cast<int>(pids.GetInt(r, 0)));
  }
  std::vector<double> backend_cpu0;
  {
    absl::MutexLock lock(&mu);
    for (int pid : backend_pids) backend_cpu0.push_back(ProcessCpuSeconds(pid));
  }
  sync::HybridClock clock(sync::SystemClock());
  Timer timer;
  std::vector<std::thread> writers;
  for (int d = 0; d < devices; ++d) {
    writers.emplace_back([&, d] {
      std::mt19937_64 rng(base + static_cast<uint64_t>(d));
      pgstore::PgServerStore* store = stores[static_cast<size_t>(d) % stores.size()];
      const std::string device = absl::StrCat("mirror-tablet-", d);
      const sync::Writer writer{device, sync::NodeIdFor(device)};
      Tablet& tablet = (*tablets)[static_cast<size_t>(d)];  // phase after phase
      // A tablet writes in its own commune, as a collaborator's does.
      const int64_t commune = (d * 997) % kNationalHeads + 1;
      while (running.load()) {
        MutationBatch mutations;
        for (int i = 0; i < batch; ++i) {
          auto* m = mutations.add_mutations();
          m->set_seq(++tablet.seq);
          const size_t slot = static_cast<size_t>(i);
          if (tablet.visits.size() <= slot) {
            // Its `batch` visits, made once; every later push rewrites them (the tables
            // keep their size, so the phases are alike).
            RecordChange made = NewVisit(rng, commune, clock.Now());
            Visit v;
            v.set_id(*sync::UuidToText(made.id()));
            v.set_commune_id(commune);
            v.set_facility_id("0f8c2a64-5d1e-4b7a-9c3e-2a1b0c9d8e70");
            v.set_collaborator_id(7);
            v.set_purpose(VISIT_PURPOSE_SURVEY);
            tablet.visits.push_back(v);
            tablet.ops.push_back(0);
          }
          Visit& v = tablet.visits[slot];
          v.set_visited_ms(1764000000000 + static_cast<int64_t>(tablet.seq));
          v.set_findings(absl::StrCat("Khảo sát lần ", tablet.seq));
          RecordChange c = Must(kcnet::model::ToChange(v), "ToChange");
          c.set_hlc(clock.Now());
          if (tablet.ops[slot] != 0) c.set_base_op(tablet.ops[slot]);
          *m->add_changes() = std::move(c);
        }
        auto ack = Must(store->Apply(writer, mutations), "Apply");
        int64_t n = 0;
        for (int r = 0; r < ack.results_size(); ++r) {
          const MutationResult& result = ack.results(r);
          if (result.outcome() == MUTATION_OUTCOME_APPLIED) {
            ++n;
            tablet.ops[static_cast<size_t>(r)] = result.op();
          } else if (n == 0 && d == 0) {
            Die(absl::StrCat("mutation ", result.seq(), " answered ",
                             MutationOutcome_Name(result.outcome()), ": ", result.reason()));
          }
        }
        applied.fetch_add(n);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  running = false;
  for (std::thread& t : writers) t.join();
  result.seconds = timer.Seconds();
  result.mutations_per_s = static_cast<double>(applied.load()) / result.seconds;
  for (std::thread& t : threads) t.join();
  for (size_t i = 0; i < backend_pids.size(); ++i) {
    result.backend_cpu_s += ProcessCpuSeconds(backend_pids[i]) - backend_cpu0[i];
  }
  return result;
}

// pg_ingest with and without each instance's record mirror (PgRecordMirror: a catch-up
// every 50 ms), on 1 and 2 instances, in one run: phases of `seconds` with the mirror /
// with only the heads lock of the old rule (every head) / of today's (the heads of running
// transactions), `rounds` times, each between two phases without, to which it is compared
// (the rate falls as the tables grow, and with the machine's load). 3,321 heads (the nation's
// communes, 34 provinces); 50 tablets, each in its own commune, pushing batches of 100 visits (its
// 100 visits rewritten: the tables keep their size, since the rate of a group falls as
// kcnet_records grows, docs/POSTGRES.md "Loading through the store").
void MirrorCost(const kcnet::testing::PgInstance* pg, const std::string& base_conninfo, int devices,
                int batch, int seconds, int rounds) {
  std::string conninfo = base_conninfo;
  if (pg != nullptr) {
    if (absl::Status created = pg->CreateDatabase("mirror_cost"); !created.ok()) {
      Die(absl::StrCat("create database: ", created.ToString()));
    }
    conninfo = pg->conninfo("mirror_cost");
  }
  const std::string dir = std::filesystem::temp_directory_path() / "kcnet-bench-pg-mirror";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const sync::Schema& schema = kcnet::model::KcnetSchema();
  std::vector<std::unique_ptr<pgstore::PgServerStore>> stores;
  std::vector<std::unique_ptr<pgstore::PgRecordMirror>> mirrors;
  for (int i = 0; i < 2; ++i) {
    pgstore::PgServerStoreOptions pg_options;
    pg_options.province_of = [](int64_t bucket) {
      return static_cast<int32_t>(bucket % kProvinces) + 1;
    };
    stores.push_back(
        Must(pgstore::PgServerStore::Open(conninfo, &schema, {}, std::move(pg_options)),
             "open PostgreSQL store"));
  }
  // Every commune's head exists (the national deployment's 3,321 rows).
  {
    std::mt19937_64 rng(5);
    sync::HybridClock clock(sync::SystemClock());
    const sync::Writer loader{"loader", sync::NodeIdFor("loader")};
    uint64_t seq = 0;
    for (int64_t commune = 1; commune <= kNationalHeads;) {
      MutationBatch mutations;
      for (int i = 0; i < 1000 && commune <= kNationalHeads; ++i, ++commune) {
        auto* m = mutations.add_mutations();
        m->set_seq(++seq);
        *m->add_changes() = NewVisit(rng, commune, clock.Now());
      }
      Must(stores[0]->Apply(loader, mutations), "load heads");
    }
  }
  for (int i = 0; i < 2; ++i) {
    mirrors.push_back(
        Must(pgstore::PgRecordMirror::Open(conninfo + " application_name=kcnet_bench_mirror",
                                           absl::StrCat(dir, "/mirror-", i, ".db"), &schema),
             "open mirror"));
    Must(mirrors.back()->CatchUp(), "first catch-up");
  }
  uint64_t seq_base = 1;
  std::vector<Tablet> tablets;
  for (size_t instances : {size_t{1}, size_t{2}}) {
    std::vector<pgstore::PgServerStore*> s;
    std::vector<pgstore::PgRecordMirror*> m;
    for (size_t i = 0; i < instances; ++i) {
      s.push_back(stores[i].get());
      m.push_back(mirrors[i].get());
    }
    // Off, X, off, Y, off, Z, off, X, ...: the rate falls as the tables grow (and the
    // machine's load swings), so each "with" phase is compared with the mean of the two
    // "off" phases around it, and the ratios averaged.
    std::map<Follower, std::vector<PhaseResult>> runs;
    std::map<Follower, std::vector<double>> ratios;
    auto phase = [&](Follower f) {
      runs[f].push_back(
          IngestPhase(s, m, conninfo, f, devices, batch, seconds, &seq_base, &tablets));
      std::cerr << "cluster_bench: mirror cost, " << instances << " instance(s), "
                << FollowerName(f) << ": " << runs[f].back().mutations_per_s << " mutations/s\n";
      return runs[f].back().mutations_per_s;
    };
    double before = phase(Follower::kNone);
    for (int round = 0; round < rounds; ++round) {
      for (Follower f : {Follower::kMirror, Follower::kAllHeadsLock, Follower::kRunningHeadsLock}) {
        const double with = phase(f);
        const double after = phase(Follower::kNone);
        ratios[f].push_back(with / ((before + after) / 2));
        before = after;
      }
    }
    auto rate = [&runs](Follower f) {
      double sum = 0;
      for (const PhaseResult& r : runs[f]) sum += r.mutations_per_s;
      return sum / static_cast<double>(runs[f].size());
    };
    auto ratio = [&ratios](Follower f) {
      double sum = 0;
      for (double r : ratios[f]) sum += r;
      return sum / static_cast<double>(ratios[f].size());
    };
    const std::string n = absl::StrCat("_", instances, "i");
    Emit("pg_ingest", "mirror_off_mutations_per_s" + n, rate(Follower::kNone), "mutations/s");
    Emit("pg_ingest", "mirror_on_mutations_per_s" + n, rate(Follower::kMirror), "mutations/s");
    Emit("pg_ingest", "mirror_ratio_on_vs_off" + n, ratio(Follower::kMirror), "ratio");
    Emit("pg_ingest", "all_heads_lock_ratio_vs_off" + n, ratio(Follower::kAllHeadsLock), "ratio");
    Emit("pg_ingest", "running_heads_lock_ratio_vs_off" + n, ratio(Follower::kRunningHeadsLock),
         "ratio");
    double cpu = 0, backend = 0, wall = 0;
    std::vector<double> ms;
    for (const PhaseResult& r : runs[Follower::kMirror]) {
      cpu += r.follower_cpu_s;
      backend += r.backend_cpu_s;
      wall += r.seconds;
      ms.insert(ms.end(), r.catch_up_ms.begin(), r.catch_up_ms.end());
    }
    // Per instance: CPU seconds per second of its mirror's thread and of its backend.
    const double per = wall * static_cast<double>(instances);
    Emit("pg_ingest", "mirror_thread_cpu_pct" + n, 100 * cpu / per, "%");
    Emit("pg_ingest", "mirror_backend_cpu_pct" + n, 100 * backend / per, "%");
    Emit("pg_ingest", "mirror_catch_up_ms_p50" + n, Percentile(ms, 0.5), "ms");
    Emit("pg_ingest", "mirror_catch_up_ms_p99" + n, Percentile(ms, 0.99), "ms");
  }
  mirrors.clear();
  stores.clear();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kcnet::bench

int main(int argc, char** argv) {
  using namespace kcnet::bench;  // NOLINT
  std::vector<std::string> args(argv + 1, argv + argc);
  bool live = true, catch_up = true;
  if (!args.empty() && args[0] == "mirror") {
    // cluster_bench mirror [devices] [batch] [seconds] [rounds]   (default 50 100 5 3)
    args.erase(args.begin());
    auto mirror_arg = [&args](size_t i, int fallback) {
      return args.size() > i ? std::atoi(args[i].c_str()) : fallback;
    };
    const int devices = mirror_arg(0, 50), batch = mirror_arg(1, 100), seconds = mirror_arg(2, 5),
              rounds = mirror_arg(3, 3);
    if (devices <= 0 || batch <= 0 || batch > 1000 || seconds <= 0 || rounds <= 0) {
      Die("usage: cluster_bench mirror [devices] [batch] [seconds] [rounds]");
    }
    std::unique_ptr<kcnet::testing::PgInstance> pg;
    std::string conninfo = std::getenv("KCNET_PG_CONNINFO") ? std::getenv("KCNET_PG_CONNINFO") : "";
    if (conninfo.empty()) {
      pg = Must(kcnet::testing::PgInstance::Start(), "starting PostgreSQL");
      conninfo = pg->conninfo();
    }
    MirrorCost(pg.get(), conninfo, devices, batch, seconds, rounds);
    return 0;
  }
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
  const int through_store = arg(4, kApplied);
  if (others < 0 || others > 20000 || rounds <= 0 || small <= 0 || large < small) {
    Die("usage: cluster_bench [live|catch_up] [others] [rounds] [small] [large] [through_store]");
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
    const double small_ms =
        CatchUp(pg.get(), conninfo, "catch_up_small", small, through_store, dir);
    const double large_ms =
        CatchUp(pg.get(), conninfo, "catch_up_large", large, through_store, dir);
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
