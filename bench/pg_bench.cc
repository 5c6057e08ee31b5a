// pg: the PostgreSQL record store and op log (server/pgstore) against the SQLite record
// store, in one run.
//
// What it measures and how (docs/POSTGRES.md, "Measured"):
//  - PostgreSQL: KCNET_PG_CONNINFO when set, else a private server this program starts
//    (tests/testing/pg_instance.h: initdb in a temp dir, fsync on, synchronous_commit on).
//  - pg_ingest: 50 devices (threads), each pushing batches of 100 new records, one batch
//    in flight at a time, for 10 s, into (a) PgOpLog::Append with group commit and libpq
//    pipelines, (b) the same without pipelines, (c) SQLite's ServerStore::Apply (durable,
//    group commit), (d) PgServerStore::Apply: the real PostgreSQL record store, the same
//    merge as SQLite's (durable: synchronous_commit on). Records are the sync core's test
//    type (7 fields), in 15 buckets. The op log appends each record as one op without the
//    merge: an upper bound.
//  - pg_initial_sync: one bucket of 50,000 records read from the start in pages of 1,000:
//    the page as the stream sends it to a device taking deflated pages (the SDK's default:
//    ServerStore::SerializedChangesSince on an arena, then serialized; pgsync18b), and as a
//    ChangeBatch message (ChangesSince, the figure until pgsync18b: `message_` metrics),
//    PgServerStore against SQLite's store; PgOpLog::ReadSince (the op log's raw ops).
//
// Metrics: pg_ingest mutations_per_s, ratio_vs_sqlite (the record store),
// oplog_mutations_per_s, oplog_no_pipeline_mutations_per_s, sqlite_mutations_per_s,
// oplog_ratio_vs_sqlite; pg_initial_sync records_per_s, ratio_vs_sqlite, cpu_ratio_vs_sqlite
// (the record store, the page as sent), the same prefixed message_ (as a message),
// oplog_records_per_s, sqlite_records_per_s, oplog_ratio_vs_sqlite, page_bytes.
//
// CPU (docs/BENCHMARKS.md, pgperf): with its own PostgreSQL the bench also prints the CPU
// seconds each store spent per 1,000 mutations (ingest) or records (initial sync): this
// process's CPU (getrusage) plus, for PostgreSQL, every postgres process's (/proc: the
// postmaster, its live children and those it reaped). Unlike the rates, these do not move
// with the machine's load: cpu_ms_per_1000 (of which postgres_cpu_ms_per_1000 in the
// postgres processes) and sqlite_cpu_ms_per_1000.
// The initial sync of each store is run 3 times in each form (alternating); the medians
// are printed.
// WAL: wal_bytes_per_mutation and wal_fpi_per_1000 (full-page images) of the PostgreSQL
// ingest, from pg_stat_wal. KCNET_PG_SETTINGS="name=value;name=value" applies server
// settings that a reload takes (ALTER SYSTEM, pg_reload_conf()) before measuring, e.g.
// "wal_compression=lz4;checkpoint_timeout=30s" (never fsync or synchronous_commit: the
// bench stays durable).
//
// Usage: pg_bench [devices] [seconds] [batch]   (default 50 10 100)
//        pg_bench sync [runs]   only the initial sync, `runs` downloads per store (default
//                               3): for profiling it and for repeating it quickly
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/bench_util.h"
#include "server/pgstore/pg_conn.h"
#include "server/pgstore/pg_op_log.h"
#include "server/pgstore/pg_server_store.h"
#include "sync/hlc.h"
#include "sync/server_store.h"
#include "tests/testing/pg_instance.h"
#include "tests/testing/test_util.h"

namespace kcnet::bench {
namespace {

constexpr int kBuckets = 15;
constexpr int kSyncRecords = 50000;

[[noreturn]] void Fail(const std::string& what) {
  std::cerr << "pg_bench: " << what << "\n";
  std::exit(1);
}

template <typename T>
T Must(absl::StatusOr<T> value, const std::string& what) {
  if (!value.ok()) Fail(absl::StrCat(what, ": ", value.status().ToString()));
  return std::move(*value);
}

v1::RecordChange Record(std::mt19937_64& rng, int64_t bucket, uint64_t hlc) {
  v1::RecordChange c = testing::Change(1, RandomUuidBytes(rng),
                                       {{2, testing::IntValue(bucket)},
                                        {3, testing::IntValue(static_cast<int64_t>(rng() % 1000))},
                                        {4, testing::DoubleValue(21.02)},
                                        {5, testing::StringValue("Cơ sở cần hỗ trợ máy sấy")}});
  c.set_hlc(hlc);
  return c;
}

// This process's CPU seconds (every thread).
double OwnCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

// The CPU seconds of the PostgreSQL server whose postmaster is `postmaster`: its own, its
// reaped children's and its live children's (the backends). 0 when unknown.
double PostgresCpuSeconds(pid_t postmaster) {
  if (postmaster <= 0) return 0;
  const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  // Fields after the command's closing parenthesis: state(3) ppid(4) ... utime(14)
  // stime(15) cutime(16) cstime(17).
  auto fields = [](const std::string& path) {
    std::ifstream in(path);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::string> out;
    const size_t close = text.rfind(')');
    if (close == std::string::npos) return out;
    std::istringstream rest(text.substr(close + 2));
    for (std::string f; rest >> f;) out.push_back(f);
    return out;  // out[0] is field 3
  };
  double ticks = 0;
  std::vector<std::string> own = fields(absl::StrCat("/proc/", postmaster, "/stat"));
  if (own.size() > 14) {
    for (int f = 14; f <= 17; ++f) ticks += std::atof(own[static_cast<size_t>(f - 3)].c_str());
  }
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    std::vector<std::string> f = fields(entry.path().string() + "/stat");
    if (f.size() <= 14 || std::atoi(f[1].c_str()) != postmaster) continue;
    ticks += std::atof(f[11].c_str()) + std::atof(f[12].c_str());
  }
  return ticks / tick;
}

// CPU of this process and the PostgreSQL server together.
double TotalCpuSeconds(pid_t postmaster) {
  return OwnCpuSeconds() + PostgresCpuSeconds(postmaster);
}

// Runs `push(device, rng)` (one batch, returns the records applied) on `devices` threads
// for `seconds`; returns records per second.
template <typename Push>
double Ingest(int devices, int seconds, Push push) {
  std::atomic<bool> running{true};
  std::atomic<int64_t> applied{0};
  std::vector<std::thread> threads;
  Timer timer;
  for (int d = 0; d < devices; ++d) {
    threads.emplace_back([&, d] {
      std::mt19937_64 rng(static_cast<uint64_t>(d) + 1);
      while (running.load()) applied.fetch_add(push(d, rng));
    });
  }
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  running = false;
  for (std::thread& t : threads) t.join();
  return static_cast<double>(applied.load()) / timer.Seconds();
}

}  // namespace
}  // namespace kcnet::bench

int main(int argc, char** argv) {
  using namespace kcnet::bench;  // NOLINT
  namespace pgstore = kcnet::pgstore;
  namespace sync = kcnet::sync;
  namespace v1 = kcnet::v1;
  const bool sync_only = argc > 1 && std::string(argv[1]) == "sync";
  const int sync_runs = sync_only && argc > 2 ? std::atoi(argv[2]) : 3;
  const int devices = sync_only ? 1 : argc > 1 ? std::atoi(argv[1]) : 50;
  const int seconds = sync_only ? 1 : argc > 2 ? std::atoi(argv[2]) : 10;
  const int batch = sync_only ? 1 : argc > 3 ? std::atoi(argv[3]) : 100;
  if (sync_runs < 1 || sync_runs > 100) Fail("usage: pg_bench sync [runs<=100]");
  if (devices <= 0 || devices > 500 || seconds <= 0 || seconds > 120 || batch <= 0 ||
      batch > 1000) {
    Fail("usage: pg_bench [devices<=500] [seconds<=120] [batch<=1000]");
  }

  std::unique_ptr<kcnet::testing::PgInstance> pg;
  std::string conninfo = std::getenv("KCNET_PG_CONNINFO") ? std::getenv("KCNET_PG_CONNINFO") : "";
  if (conninfo.empty()) {
    pg = Must(kcnet::testing::PgInstance::Start(), "starting PostgreSQL");
    conninfo = pg->conninfo();
  }
  if (const char* settings = std::getenv("KCNET_PG_SETTINGS"); settings != nullptr) {
    auto admin = Must(kcnet::pgstore::PgConn::Connect(conninfo), "connecting");
    for (absl::string_view setting : absl::StrSplit(settings, ';', absl::SkipEmpty())) {
      const std::vector<std::string> kv = absl::StrSplit(setting, absl::MaxSplits('=', 1));
      if (kv.size() != 2 || kv[0] == "fsync" || kv[0] == "synchronous_commit") {
        Fail(absl::StrCat("KCNET_PG_SETTINGS: cannot apply '", setting, "'"));
      }
      absl::Status set = admin->Exec(absl::StrCat("ALTER SYSTEM SET ", kv[0], " = '", kv[1], "'"));
      if (!set.ok()) Fail(set.ToString());
    }
    if (absl::Status s = admin->Exec("SELECT pg_reload_conf()"); !s.ok()) Fail(s.ToString());
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  // pg_stat_wal's bytes and full-page images so far.
  auto wal = [&conninfo]() -> std::pair<double, double> {
    auto conn = kcnet::pgstore::PgConn::Connect(conninfo);
    if (!conn.ok()) return {0, 0};
    auto row = (*conn)->Query("SELECT wal_bytes, wal_fpi FROM pg_stat_wal");
    if (!row.ok() || row->rows() == 0) return {0, 0};
    return {std::atof(std::string(row->Get(0, 0)).c_str()),
            std::atof(std::string(row->Get(0, 1)).c_str())};
  };
  const std::string dir = std::filesystem::temp_directory_path() / "kcnet-bench-pg";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const sync::Schema schema = kcnet::testing::TestSchema();
  sync::HybridClock clock(sync::SystemClock());

  // --- ingest ---
  auto oplog_ingest = [&](bool pipeline) {
    pgstore::PgOpLogOptions options;
    options.pipeline = pipeline;
    options.reader_connections = 1;
    auto log = Must(pgstore::PgOpLog::Open(conninfo, options), "PgOpLog::Open");
    std::vector<std::atomic<uint64_t>> seqs(static_cast<size_t>(devices));
    const std::string prefix = pipeline ? "p" : "s";
    return Ingest(devices, seconds, [&](int d, std::mt19937_64& rng) -> int64_t {
      pgstore::PgPush push;
      push.device_id = absl::StrCat(prefix, "-tablet-", d);
      push.seq = ++seqs[static_cast<size_t>(d)];
      for (int i = 0; i < batch; ++i) {
        const int64_t bucket = 1 + static_cast<int64_t>(rng() % kBuckets);
        v1::RecordChange c = Record(rng, bucket, clock.Now());
        push.ops.push_back({bucket, c.type(), c.id(), c.SerializeAsString()});
      }
      auto result = Must(log->Append(push), "PgOpLog::Append");
      return static_cast<int64_t>(result.ops.size());
    });
  };
  const double oplog = sync_only ? 0 : oplog_ingest(true);
  const double oplog_sequential = sync_only ? 0 : oplog_ingest(false);

  auto store = Must(sync::ServerStore::Open(dir + "/kcnet.db", &schema), "ServerStore::Open");
  // The record store in a database of its own (the op log's tables share names with it).
  std::string store_conninfo = conninfo;
  if (pg != nullptr) {
    if (absl::Status s = pg->CreateDatabase("records"); !s.ok()) Fail(s.ToString());
    store_conninfo = pg->conninfo("records");
  }
  std::unique_ptr<sync::ServerStore> pg_store =
      Must(pgstore::PgServerStore::Open(store_conninfo, &schema), "PgServerStore::Open");
  // The same pushes into a record store (SQLite's or PostgreSQL's).
  auto store_ingest = [&](sync::ServerStore* target) {
    std::vector<std::atomic<uint64_t>> seqs(static_cast<size_t>(devices));
    return Ingest(devices, seconds, [&](int d, std::mt19937_64& rng) -> int64_t {
      const std::string device = absl::StrCat("tablet-", d);
      const sync::Writer writer{device, sync::NodeIdFor(device)};
      v1::MutationBatch mutations;
      for (int i = 0; i < batch; ++i) {
        v1::Mutation* m = mutations.add_mutations();
        m->set_seq(++seqs[static_cast<size_t>(d)]);
        *m->add_changes() = Record(rng, 1 + static_cast<int64_t>(rng() % kBuckets), clock.Now());
      }
      auto ack = Must(target->Apply(writer, mutations), "ServerStore::Apply");
      int64_t applied = 0;
      for (const v1::MutationResult& r : ack.results()) {
        if (r.outcome() == v1::MUTATION_OUTCOME_APPLIED) ++applied;
      }
      return applied;
    });
  };
  const pid_t postmaster = pg != nullptr ? pg->pid() : -1;
  if (!sync_only) {
    // The rates and the CPU spent per 1,000 mutations (records applied) of each store.
    double cpu_start = TotalCpuSeconds(postmaster);
    Timer sqlite_timer;
    const double sqlite = store_ingest(store.get());
    const double sqlite_cpu_ms =
        1e6 * (TotalCpuSeconds(postmaster) - cpu_start) / (sqlite * sqlite_timer.Seconds());
    cpu_start = TotalCpuSeconds(postmaster);
    const double server_cpu_start = PostgresCpuSeconds(postmaster);
    const auto wal_start = wal();
    Timer pg_timer_ingest;
    const double pg_rate_ingest = store_ingest(pg_store.get());
    const auto wal_end = wal();
    const double pg_mutations = pg_rate_ingest * pg_timer_ingest.Seconds();
    const double pg_cpu_ms = 1e6 * (TotalCpuSeconds(postmaster) - cpu_start) / pg_mutations;
    const double pg_server_cpu_ms =
        1e6 * (PostgresCpuSeconds(postmaster) - server_cpu_start) / pg_mutations;
    Emit("pg_ingest", "mutations_per_s", pg_rate_ingest, "mutations/s");
    Emit("pg_ingest", "ratio_vs_sqlite", pg_rate_ingest / sqlite, "ratio");
    if (postmaster > 0) {
      Emit("pg_ingest", "cpu_ms_per_1000", pg_cpu_ms, "ms");
      Emit("pg_ingest", "postgres_cpu_ms_per_1000", pg_server_cpu_ms, "ms");
      Emit("pg_ingest", "sqlite_cpu_ms_per_1000", sqlite_cpu_ms, "ms");
    }
    if (wal_end.first > wal_start.first) {
      Emit("pg_ingest", "wal_bytes_per_mutation", (wal_end.first - wal_start.first) / pg_mutations,
           "bytes");
      Emit("pg_ingest", "wal_fpi_per_1000",
           1000 * (wal_end.second - wal_start.second) / pg_mutations, "images");
    }
    Emit("pg_ingest", "oplog_mutations_per_s", oplog, "mutations/s");
    Emit("pg_ingest", "oplog_no_pipeline_mutations_per_s", oplog_sequential, "mutations/s");
    Emit("pg_ingest", "sqlite_mutations_per_s", sqlite, "mutations/s");
    Emit("pg_ingest", "oplog_ratio_vs_sqlite", oplog / sqlite, "ratio");
  }

  // --- initial sync: one bucket of kSyncRecords, read from the start ---
  constexpr int64_t kSyncBucket = 1000;
  std::mt19937_64 rng(0x5eed5eed);  // not a device's seed (1..devices): new ids
  {
    auto log = Must(pgstore::PgOpLog::Open(conninfo), "PgOpLog::Open");
    const sync::Writer loader{"loader", sync::NodeIdFor("loader")};
    uint64_t seq = 0;
    for (int done = 0; done < kSyncRecords; done += 1000) {
      pgstore::PgPush push;
      v1::MutationBatch mutations;
      for (int i = 0; i < 1000; ++i) {
        v1::RecordChange c = Record(rng, kSyncBucket, clock.Now());
        push.ops.push_back({kSyncBucket, c.type(), c.id(), c.SerializeAsString()});
        v1::Mutation* m = mutations.add_mutations();
        m->set_seq(++seq);
        *m->add_changes() = c;
      }
      Must(log->Append(push), "load PgOpLog");
      for (sync::ServerStore* target : {store.get(), pg_store.get()}) {
        v1::PushAck ack = Must(target->Apply(loader, mutations), "load ServerStore");
        for (const v1::MutationResult& r : ack.results()) {
          if (r.outcome() != v1::MUTATION_OUTCOME_APPLIED) {
            Fail(absl::StrCat("loading: mutation ", r.seq(), " answered ",
                              v1::MutationOutcome_Name(r.outcome()), ": ", r.reason()));
          }
        }
      }
    }
    if (sync_only) {
      // For a profiler to attach to this process and the postgres processes now, or for
      // psql to look at the store (KCNET_PG_BENCH_PAUSE seconds, default 3).
      const char* pause = std::getenv("KCNET_PG_BENCH_PAUSE");
      const int pause_s = pause != nullptr ? std::atoi(pause) : 3;
      std::cerr << "pg_bench: loaded (store: " << store_conninfo << "), downloading in " << pause_s
                << " s" << std::endl;
      std::this_thread::sleep_for(std::chrono::seconds(pause_s));
    }
    Timer pg_timer;
    int64_t read = 0;
    uint64_t cursor = 0;
    while (true) {
      auto ops = Must(log->ReadSince(kSyncBucket, cursor, 1000), "ReadSince");
      if (ops.empty()) break;
      for (const pgstore::PgStoredOp& op : ops) {
        v1::RecordChange change;
        if (!change.ParseFromString(op.body)) Fail("a stored op does not parse");
        ++read;
      }
      cursor = ops.back().op;
    }
    const double pg_rate = static_cast<double>(read) / pg_timer.Seconds();

    // A new device's download of the bucket from a record store: records per second.
    // `serialized`: the page as the stream sends it to a device that takes deflated pages
    // (the SDK's default): SerializedChangesSince() on an arena sized as the stream's, then
    // serialized (not deflated: that costs the same for both stores). Else the page as a
    // ChangeBatch message on the heap (ChangesSince(); the figure until pgsync18b).
    int64_t page_bytes = 0;
    auto initial_sync = [&](sync::ServerStore* source, bool serialized, int64_t* records) {
      Timer timer;
      v1::BucketCursor start;
      start.set_bucket(kSyncBucket);
      std::vector<v1::BucketCursor> cursors = {start};
      const sync::DownloadLimits limits;
      while (true) {
        google::protobuf::ArenaOptions arena_options;
        arena_options.start_block_size = 64 << 10;
        arena_options.max_block_size = 256 << 10;
        google::protobuf::Arena arena(arena_options);
        v1::ChangeBatch heap_page;
        v1::ChangeBatch* page =
            serialized ? google::protobuf::Arena::CreateMessage<v1::ChangeBatch>(&arena)
                       : &heap_page;
        int changes = 0;
        if (serialized) {
          sync::SerializedPage wire(page);
          if (absl::Status s = source->SerializedChangesSince(cursors, limits, &wire); !s.ok()) {
            Fail(s.ToString());
          }
          page_bytes = static_cast<int64_t>(wire.Serialize().size());
          changes = wire.changes_size();
        } else {
          if (absl::Status s = source->ChangesSince(cursors, limits, page); !s.ok()) {
            Fail(s.ToString());
          }
          changes = page->changes_size();
        }
        *records += changes;
        if (changes == 0 || page->cursors_size() == 0) break;
        cursors.assign(page->cursors().begin(), page->cursors().end());
        if (page->checkpoints_size() > 0) break;  // the bucket is complete
      }
      return static_cast<double>(*records) / timer.Seconds();
    };
    // `sync_runs` downloads from each store in each form, alternating; the medians, and
    // the CPU per 1,000 records over all of them.
    struct Figures {
      std::vector<double> sqlite_rates, store_rates;
      double sqlite_cpu = 0, store_cpu = 0, store_server_cpu = 0;
      int64_t sqlite_read = 0, store_read = 0;
    };
    Figures sent, message;
    for (int run = 0; run < sync_runs; ++run) {
      for (bool serialized : {true, false}) {
        Figures& f = serialized ? sent : message;
        f.sqlite_read = f.store_read = 0;
        double before = TotalCpuSeconds(postmaster);
        f.sqlite_rates.push_back(initial_sync(store.get(), serialized, &f.sqlite_read));
        f.sqlite_cpu += TotalCpuSeconds(postmaster) - before;
        before = TotalCpuSeconds(postmaster);
        const double server_before = PostgresCpuSeconds(postmaster);
        f.store_rates.push_back(initial_sync(pg_store.get(), serialized, &f.store_read));
        f.store_cpu += TotalCpuSeconds(postmaster) - before;
        f.store_server_cpu += PostgresCpuSeconds(postmaster) - server_before;
      }
    }
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    for (const Figures* f : {&sent, &message}) {
      if (f->sqlite_read != kSyncRecords || f->store_read != kSyncRecords) {
        Fail(absl::StrCat("initial sync read ", f->store_read, " (PostgreSQL store) and ",
                          f->sqlite_read, " (SQLite) of ", kSyncRecords));
      }
    }
    if (read != kSyncRecords) Fail(absl::StrCat("initial sync read ", read, " (op log)"));
    const double sqlite_rate = median(message.sqlite_rates);  // for the op log, as before
    const double per_1000 = 1e6 / (sync_runs * double{kSyncRecords});
    for (const Figures* f : {&sent, &message}) {
      const std::string prefix = f == &sent ? "" : "message_";
      const double store_rate = median(f->store_rates);
      Emit("pg_initial_sync", prefix + "records_per_s", store_rate, "records/s");
      Emit("pg_initial_sync", prefix + "ratio_vs_sqlite", store_rate / median(f->sqlite_rates),
           "ratio");
      if (postmaster > 0) {
        Emit("pg_initial_sync", prefix + "cpu_ms_per_1000", f->store_cpu * per_1000, "ms");
        Emit("pg_initial_sync", prefix + "postgres_cpu_ms_per_1000", f->store_server_cpu * per_1000,
             "ms");
        Emit("pg_initial_sync", prefix + "sqlite_cpu_ms_per_1000", f->sqlite_cpu * per_1000, "ms");
        Emit("pg_initial_sync", prefix + "cpu_ratio_vs_sqlite", f->sqlite_cpu / f->store_cpu,
             "ratio");
      }
      Emit("pg_initial_sync", prefix + "sqlite_records_per_s", median(f->sqlite_rates),
           "records/s");
    }
    Emit("pg_initial_sync", "page_bytes", static_cast<double>(page_bytes), "bytes");
    Emit("pg_initial_sync", "oplog_records_per_s", pg_rate, "records/s");
    Emit("pg_initial_sync", "oplog_ratio_vs_sqlite", pg_rate / sqlite_rate, "ratio");
  }
  store.reset();
  pg_store.reset();
  std::filesystem::remove_all(dir);
  return 0;
}
