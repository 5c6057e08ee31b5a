// Benchmark `reports`: the live reports on a national data set.
//
// The org-unit tree is the 2025 two-tier list (../shared/data/vn_admin/units_2tier_2025.csv:
// 34 provinces, 3,321 communes; skipped with a message when absent). The bench generates, at
// --scale=1, 200,000 facilities, 5,000,000 visits and 500,000 requests (each with one event)
// over 5 years (2021-2025) into a real record store (ServerStore::Apply as a bulk load, see
// Load(); the measured writes in batches of 1,000 mutations) and measures, in one run:
//   ingest_ratio_with_reports: mutations/s applied with the follower running / without it
//                              (alternating phases of the same kind of batches);
//   ingest_cpu_ratio_with_reports, ingest_cpu_ratio_one_core, follower_cpu_per_visit_us,
//   ingest_cpu_per_visit_us:   the same phases in CPU time, which the machine's load moves
//                              far less: the writer's CPU per visit alone over the larger of
//                              the writer's (follower on) and the follower's (the ratio on
//                              an idle 2-core machine, each on a core), over their sum (both
//                              on one core), and the two costs per visit;
//   rebuild_s, rebuild_cpu_s:  ReportsStore::Rebuild() of the whole set, wall and CPU
//                              seconds (all threads);
//   freshness_p50_ms/max_ms:   commit of one write -> the summaries' cursor covers it
//                              (what the next report call counts), over 50 writes, from
//                              caught-up summaries (stderr: how far the follower was behind
//                              at the end of each ingest phase, and how long it took to
//                              catch up);
//   province_p99_ms:           each report (coverage, pipeline, activity, quality) for one
//                              province and the year 2025, random provinces;
//   national_p99_ms:           each report for the whole country and 2025.
// Flags: --scale=F (default 1; e.g. 0.02 for a quick run), --data=PATH of the CSV,
// --keep=DIR to build in DIR and keep it; --generate_only (with --keep) to generate the set
// and stop; --reuse (with --keep of a kept run, the same --scale) to skip the generation
// and measure everything above over the kept set (its ingest phases add their visits to
// it); --rebuild_and_queries (with --reuse) to measure only rebuild_s and the queries,
// then the follower's rate; --queries_only (with --reuse) to measure only the queries over
// the kept summaries, --follower_only (with --reuse) only the follower's rate over the
// kept summaries; --old_load to generate as before 2026-12-07 (batches of 1,000 durable
// transactions on one thread, for comparisons; see Load()).
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "bench/bench_util.h"
#include "google/protobuf/arena.h"
#include "kcnet/v1/domain.pb.h"
#include "server/directory/csv_import.h"
#include "server/directory/directory.h"
#include "server/reports/report_service.h"
#include "server/reports/reports_store.h"
#include "sync/model/record_types.h"
#include "sync/schema.h"
#include "sync/server_store.h"
#include "sync/sqlite.h"

namespace kcnet::bench {
namespace {

using namespace ::kcnet::v1;  // NOLINT: messages and enum constants

constexpr char kBench[] = "reports";
constexpr int64_t kDayMs = 86400000;
const int64_t kStartMs = 1609434000000;  // 2021-01-01 00:00 Vietnam

std::string Text(std::mt19937_64& rng) { return *sync::UuidToText(RandomUuidBytes(rng)); }

struct World {
  std::vector<int64_t> communes;
  std::vector<int64_t> provinces;
  std::vector<std::pair<std::string, int64_t>> facilities;  // id, commune
  std::vector<std::pair<double, double>> points;
};

// Arena blocks of up to 4 MB for the bulk load's batches (tens of MB each).
google::protobuf::ArenaOptions ArenaForBatches() {
  google::protobuf::ArenaOptions options;
  options.start_block_size = 64 << 10;
  options.max_block_size = 4 << 20;
  return options;
}

class Generator {
 public:
  // `seed` 0: the generation's own; a run over a kept set passes another (its last op),
  // so that the visits it adds are new records, not the ids of an earlier run's.
  Generator(sync::ServerStore* store, World* world, uint64_t seed = 0)
      : store_(store), world_(world), rng_(20250701 + seed) {}

  void set_store(sync::ServerStore* store) { store_ = store; }

  // Applies `n` records made by `make` in batches of `per_batch` mutations, each one
  // ServerStore::Apply() (one transaction); returns mutations/s. With `parallel`, a second
  // thread makes the next batches (records, changes, clocks) while this one applies the
  // last; the records and their order are the same either way.
  template <typename Make>
  double Apply(int64_t n, Make make, int64_t per_batch = 1000, bool parallel = false) {
    Timer timer;
    auto fill = [&](int64_t count, MutationBatch* batch) {
      for (int64_t i = 0; i < count; ++i) {
        RecordChange change = *model::ToChange(make());
        change.set_hlc(store_->clock().Now());
        *batch->add_mutations()->add_changes() = std::move(change);
      }
    };
    const sync::Writer writer{"", sync::NodeIdFor("bench"), nullptr};
    auto apply = [&](const MutationBatch& batch) {
      absl::StatusOr<PushAck> ack = store_->Apply(writer, batch);
      if (!ack.ok()) {
        std::fprintf(stderr, "reports_bench: apply: %s\n", ack.status().ToString().c_str());
        std::exit(1);
      }
    };
    if (!parallel) {
      MutationBatch batch;
      for (int64_t done = 0; done < n;) {
        batch.Clear();
        const int64_t count = std::min<int64_t>(per_batch, n - done);
        fill(count, &batch);
        apply(batch);
        done += count;
      }
      return static_cast<double>(n) / timer.Seconds();
    }
    // The maker thread fills at most two batches ahead of the writer (this thread). Each
    // batch lives on an arena of its own: freeing 50,000 mutations object by object on the
    // writer's thread (allocated on the maker's) cost a tenth of the load's CPU in glibc's
    // malloc_consolidate; an arena frees a few large blocks.
    struct Made {
      google::protobuf::Arena arena{ArenaForBatches()};
      MutationBatch* batch = google::protobuf::Arena::CreateMessage<MutationBatch>(&arena);
    };
    absl::Mutex mu;
    std::deque<std::unique_ptr<Made>> ready;  // guarded by mu
    std::thread maker([&] {
      for (int64_t done = 0; done < n;) {
        auto made = std::make_unique<Made>();
        const int64_t count = std::min<int64_t>(per_batch, n - done);
        fill(count, made->batch);
        done += count;
        absl::MutexLock lock(&mu);
        mu.Await(absl::Condition(
            +[](std::deque<std::unique_ptr<Made>>* q) { return q->size() < 2; }, &ready));
        ready.push_back(std::move(made));
      }
    });
    for (int64_t done = 0; done < n;) {
      std::unique_ptr<Made> made;
      {
        absl::MutexLock lock(&mu);
        mu.Await(absl::Condition(
            +[](std::deque<std::unique_ptr<Made>>* q) { return !q->empty(); }, &ready));
        made = std::move(ready.front());
        ready.pop_front();
      }
      apply(*made->batch);
      done += made->batch->mutations_size();
    }
    maker.join();
    return static_cast<double>(n) / timer.Seconds();
  }

  Facility MakeFacility() {
    Facility f;
    f.set_id(Text(rng_));
    const int64_t commune = world_->communes[rng_() % world_->communes.size()];
    f.set_commune_id(commune);
    f.set_name(absl::StrCat("Cơ sở ", rng_() % 50000));
    const double lat = 9 + (rng_() % 1300) / 100.0, lon = 103 + (rng_() % 600) / 100.0;
    f.set_latitude(lat);
    f.set_longitude(lon);
    f.set_created_ms(kStartMs + static_cast<int64_t>(rng_() % (5 * 365)) * kDayMs);
    world_->facilities.emplace_back(f.id(), commune);
    world_->points.emplace_back(lat, lon);
    return f;
  }
  Visit MakeVisit() {
    const size_t i = rng_() % world_->facilities.size();
    Visit v;
    v.set_id(Text(rng_));
    v.set_commune_id(world_->facilities[i].second);
    v.set_facility_id(world_->facilities[i].first);
    // Two collaborators per commune, as in the field.
    v.set_collaborator_id(2 * world_->facilities[i].second + static_cast<int64_t>(rng_() % 2));
    v.set_visited_ms(kStartMs + static_cast<int64_t>(rng_() % (5 * 365 * 24)) * 3600000);
    const int kind = static_cast<int>(rng_() % 20);
    if (kind > 0) {  // 1 in 20 without GPS, 1 in 20 far off
      v.set_latitude(world_->points[i].first + (kind == 1 ? 0.2 : 0.001));
      v.set_longitude(world_->points[i].second);
    }
    return v;
  }
  std::pair<SupportRequest, RequestEvent> MakeRequest() {
    const size_t i = rng_() % world_->facilities.size();
    SupportRequest r;
    r.set_id(Text(rng_));
    r.set_commune_id(world_->facilities[i].second);
    r.set_facility_id(world_->facilities[i].first);
    r.set_author_id(2 * world_->facilities[i].second + static_cast<int64_t>(rng_() % 2));
    r.set_status(static_cast<RequestStatus>(1 + rng_() % 9));
    r.set_created_ms(kStartMs + static_cast<int64_t>(rng_() % (5 * 365)) * kDayMs);
    r.set_updated_ms(r.created_ms() + static_cast<int64_t>(rng_() % 60) * kDayMs);
    RequestEvent e;
    e.set_id(Text(rng_));
    e.set_commune_id(r.commune_id());
    e.set_request_id(r.id());
    e.set_action(r.status() == REQUEST_STATUS_APPROVED ? REQUEST_ACTION_APPROVE
                                                       : REQUEST_ACTION_SUBMIT);
    e.set_to_status(r.status());
    return {r, e};
  }

 private:
  sync::ServerStore* store_;
  World* world_;
  std::mt19937_64 rng_;
};

double last_ingest_off = 0, last_ingest_on = 0;  // mutations/s of the last IngestRatio()

// CPU seconds of the calling thread, and of the whole process (every thread).
double ThreadCpuSeconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9;
}
double ProcessCpuSeconds() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9;
}

// The CPU side of the last IngestRatio(), per visit written (us): the writer's own thread
// with the follower stopped and running, and the follower's thread (the process's other
// CPU while it ran and caught up, less what the other threads took with it stopped).
struct IngestCpu {
  double ingest_off_us = 0, ingest_on_us = 0, follower_us = 0;
  // What the ratio is when the writer and the follower share one core (a machine busy
  // with other work): the writer's CPU per visit alone over the writer's and the
  // follower's together. Independent of the load.
  double one_core_ratio() const { return ingest_off_us / (ingest_on_us + follower_us); }
  // On an idle 2-core machine (the issue's): the writer and the follower each on a core.
  // The writer then goes at 1 / ingest_on_us; the follower keeps up only when it needs no
  // more CPU per visit than the writer, so the slower of the two sets the pace at which
  // writes are also counted.
  double two_core_ratio() const { return ingest_off_us / std::max(ingest_on_us, follower_us); }
};
IngestCpu last_ingest_cpu;
// The follower's busy interval in the ingest phases (--busy_interval_ms; the server's
// default otherwise).
absl::Duration follower_busy_interval = server::reports::ReportsFollower::kDefaultBusyInterval;

// Mutations/s of visits applied with the follower running / without it: alternating
// phases of `phase` visits, two of each; -1 when a catch-up fails.
double IngestRatio(Generator* gen, sync::ServerStore* s, server::reports::ReportsStore* reports,
                   int64_t phase) {
  double off = 0, on = 0;
  double ingest_off_cpu = 0, ingest_on_cpu = 0, others_off_cpu = 0, others_on_cpu = 0;
  for (int round = 0; round < 2; ++round) {
    double thread0 = ThreadCpuSeconds(), process0 = ProcessCpuSeconds();
    off += gen->Apply(phase, [&] { return gen->MakeVisit(); });
    double thread1 = ThreadCpuSeconds(), process1 = ProcessCpuSeconds();
    ingest_off_cpu += thread1 - thread0;
    others_off_cpu += (process1 - process0) - (thread1 - thread0);
    // The off phase's writes are counted before the on phase starts its clock.
    if (!reports->CatchUp().ok()) return -1;
    thread0 = ThreadCpuSeconds();
    process0 = ProcessCpuSeconds();
    double ingest_thread = 0;
    {
      server::reports::ReportsFollower follower(
          reports, [s] { return s->last_op(); }, nullptr,
          server::reports::ReportsFollower::kDefaultPoll, follower_busy_interval);
      on += gen->Apply(phase, [&] { return gen->MakeVisit(); });
      ingest_thread = ThreadCpuSeconds() - thread0;
      // How far the follower is behind the writer at the end of the phase, and how long
      // it takes to catch up (the freshness below is measured from caught-up summaries).
      const uint64_t last = s->last_op();
      const uint64_t behind = last - *reports->Cursor();
      Timer drain;
      while (*reports->Cursor() < last) absl::SleepFor(absl::Milliseconds(1));
      std::fprintf(stderr,
                   "reports_bench: follower %llu ops behind at the end of phase %d, "
                   "caught up in %.0f ms\n",
                   static_cast<unsigned long long>(behind), round, drain.Seconds() * 1000);
    }  // the follower stopped
    thread1 = ThreadCpuSeconds();
    process1 = ProcessCpuSeconds();
    ingest_on_cpu += ingest_thread;
    others_on_cpu += (process1 - process0) - (thread1 - thread0);
  }
  last_ingest_off = off / 2;
  last_ingest_on = on / 2;
  const double visits = 2.0 * static_cast<double>(phase);
  last_ingest_cpu.ingest_off_us = ingest_off_cpu / visits * 1e6;
  last_ingest_cpu.ingest_on_us = ingest_on_cpu / visits * 1e6;
  last_ingest_cpu.follower_us = std::max(0.0, others_on_cpu - others_off_cpu) / visits * 1e6;
  std::fprintf(stderr,
               "reports_bench: CPU per visit: writer %.1f us (follower off), %.1f us (on); "
               "follower %.1f us; one-core ratio %.3f, two-core ratio %.3f\n",
               last_ingest_cpu.ingest_off_us, last_ingest_cpu.ingest_on_us,
               last_ingest_cpu.follower_us, last_ingest_cpu.one_core_ratio(),
               last_ingest_cpu.two_core_ratio());
  return on / off;
}

// The CPU figures of the last IngestRatio() as JSON lines.
void EmitIngestCpu() {
  Emit(kBench, "ingest_cpu_ratio_with_reports", last_ingest_cpu.two_core_ratio(), "ratio");
  Emit(kBench, "ingest_cpu_ratio_one_core", last_ingest_cpu.one_core_ratio(), "ratio");
  Emit(kBench, "follower_cpu_per_visit_us", last_ingest_cpu.follower_us, "us");
  Emit(kBench, "ingest_cpu_per_visit_us", last_ingest_cpu.ingest_off_us, "us");
}

double P99(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  return ms[std::min(ms.size() - 1, static_cast<size_t>(ms.size() * 0.99))];
}

struct Latencies {
  double province_p99 = 0, national_p99 = 0;
};

// Each report for random provinces and for the whole country, the year 2025.
Latencies MeasureQueries(const World& world, server::Directory* directory,
                         server::reports::ReportsStore* reports) {
  // Query latencies through the Reporter (scope, dates, the directory's names).
  server::reports::Reporter reporter(directory, reports, sync::SystemClock());
  std::mt19937_64 rng(7);
  // Per report (coverage, pipeline, activity, quality; province then national), on
  // stderr: where the time goes.
  std::vector<std::vector<double>> by_kind(8);
  // The same calls' CPU time on this thread (ms): what the machine's load moves far less
  // than the wall time (on this shared 2-core machine a call waits for a core most of
  // its wall time).
  std::vector<std::vector<double>> cpu_by_kind(8);
  auto measure = [&](int64_t org_unit, std::vector<double>* out) {
    ReportFilter filter;
    filter.set_org_unit_id(org_unit);
    filter.set_from_date("2025-01-01");
    filter.set_to_date("2025-12-31");
    for (int kind = 0; kind < 4; ++kind) {
      Timer t;
      const double cpu0 = ThreadCpuSeconds();
      absl::Status status;
      if (kind == 0) {
        CoverageRequest r;
        *r.mutable_filter() = filter;
        status = reporter.Coverage(world.provinces, r).status();
      } else if (kind == 1) {
        PipelineRequest r;
        *r.mutable_filter() = filter;
        status = reporter.Pipeline(world.provinces, r).status();
      } else if (kind == 2) {
        ActivityRequest r;
        *r.mutable_filter() = filter;
        status = reporter.Activity(world.provinces, r).status();
      } else {
        QualityRequest r;
        *r.mutable_filter() = filter;
        status = reporter.Quality(world.provinces, r).status();
      }
      if (!status.ok()) {
        std::fprintf(stderr, "reports_bench: report %d: %s\n", kind, status.ToString().c_str());
        std::exit(1);
      }
      out->push_back(t.Seconds() * 1000);
      by_kind[org_unit == 0 ? kind + 4 : kind].push_back(out->back());
      cpu_by_kind[org_unit == 0 ? kind + 4 : kind].push_back((ThreadCpuSeconds() - cpu0) * 1000);
    }
  };
  std::vector<double> province_ms, national_ms;
  for (int i = 0; i < 30; ++i)
    measure(world.provinces[rng() % world.provinces.size()], &province_ms);
  for (int i = 0; i < 5; ++i) measure(0, &national_ms);

  const char* kKinds[] = {"coverage", "pipeline", "activity", "quality"};
  for (int k = 0; k < 8; ++k) {
    std::vector<double> sorted = by_kind[k];
    std::sort(sorted.begin(), sorted.end());
    std::vector<double> cpu = cpu_by_kind[k];
    std::sort(cpu.begin(), cpu.end());
    std::fprintf(stderr,
                 "reports_bench: %s %s p99 %.1f ms (median %.1f, min %.1f); CPU max %.1f ms, "
                 "median %.1f\n",
                 k < 4 ? "province" : "national", kKinds[k % 4], P99(by_kind[k]),
                 sorted[sorted.size() / 2], sorted.front(), cpu.back(), cpu[cpu.size() / 2]);
  }
  return Latencies{P99(province_ms), P99(national_ms)};
}

// The kept set's facilities (id, commune, point) into `world`, for the visits a run over
// it adds.
bool ReadFacilities(const std::filesystem::path& root, World* world) {
  absl::StatusOr<std::unique_ptr<sync::Db>> db =
      sync::Db::Open((root / "kcnet.db").string(), sync::DbOptions());
  if (!db.ok()) return false;
  absl::StatusOr<sync::Statement*> rows =
      (*db)->Prepare("SELECT id, commune_id, latitude, longitude FROM facility WHERE _del = 0");
  if (!rows.ok()) return false;
  while (*(*rows)->Step()) {
    world->facilities.emplace_back(std::string((*rows)->ColumnText(0)), (*rows)->ColumnInt(1));
    world->points.emplace_back((*rows)->ColumnDouble(2), (*rows)->ColumnDouble(3));
  }
  (*rows)->Reset();
  return true;
}

// --reuse: the summaries rebuilt over a kept store, then the queries.
// --queries_only: the kept summaries caught up (no rebuild), then only the queries;
// --follower_only: caught up (no rebuild), then only the follower's rate.
int Measure(const World& world, const std::filesystem::path& root, sync::ServerStore* store,
            server::Directory* directory, bool queries_only, bool follower_only) {
  auto reports = server::reports::ReportsStore::Open((root / "reports.db").string(),
                                                     (root / "kcnet.db").string());
  if (!reports.ok()) {
    std::fprintf(stderr, "reports_bench: %s\n", reports.status().ToString().c_str());
    return 1;
  }
  if (queries_only) {
    if (!(*reports)->CatchUp().ok()) return 1;
    const Latencies latencies = MeasureQueries(world, directory, reports->get());
    Emit(kBench, "province_p99_ms", latencies.province_p99, "ms");
    Emit(kBench, "national_p99_ms", latencies.national_p99, "ms");
    return 0;
  }
  double rebuild_s = 0, rebuild_cpu_s = 0;
  if (!follower_only) {
    Timer rebuild;
    const double rebuild_cpu0 = ProcessCpuSeconds();
    absl::StatusOr<uint64_t> rebuilt = (*reports)->Rebuild();
    rebuild_cpu_s = ProcessCpuSeconds() - rebuild_cpu0;
    if (!rebuilt.ok()) {
      std::fprintf(stderr, "reports_bench: rebuild: %s\n", rebuilt.status().ToString().c_str());
      return 1;
    }
    rebuild_s = rebuild.Seconds();
    std::fprintf(stderr, "reports_bench: reused %s (%llu ops)\n", root.c_str(),
                 static_cast<unsigned long long>(store->last_op()));
    const Latencies latencies = MeasureQueries(world, directory, reports->get());
    Emit(kBench, "province_p99_ms", latencies.province_p99, "ms");
    Emit(kBench, "national_p99_ms", latencies.national_p99, "ms");
    Emit(kBench, "rebuild_s", rebuild_s, "s");
    Emit(kBench, "rebuild_cpu_s", rebuild_cpu_s, "s");
  } else if (!(*reports)->CatchUp().ok()) {
    return 1;
  }

  // The follower's own rate: 20,000 visits written with it stopped, then counted by one
  // CatchUp() (stderr; the facilities are read back from the kept store).
  World more = world;
  if (!ReadFacilities(root, &more)) return 1;
  Generator gen(store, &more, store->last_op());
  gen.Apply(20000, [&] { return gen.MakeVisit(); });
  if (follower_only) {  // a moment to attach a profiler to the catch-up alone
    std::fprintf(stderr, "reports_bench: 20,000 visits written; counting them in 2 s\n");
    absl::SleepFor(absl::Seconds(2));
  }
  Timer catch_up;
  if (!(*reports)->CatchUp().ok()) return 1;
  std::fprintf(stderr, "reports_bench: the follower counted 20,000 visits at %.0f/s\n",
               20000 / catch_up.Seconds());
  if (follower_only) {
    // The follower's cost per write by the size of its catch-ups: batches of 200 visits
    // (what a catch-up every 50 ms counts at 4,000 writes/s) and of 1,000 (every 250 ms),
    // each counted by one CatchUp() (its own transaction), timed alone: wall and this
    // thread's CPU (stderr).
    double cpu_s = 0;
    for (int per : {200, 1000}) {
      double wall_s = 0;
      cpu_s = 0;
      for (int batch = 0; batch < 20000 / per; ++batch) {
        gen.Apply(per, [&] { return gen.MakeVisit(); });
        timespec cpu0, cpu1;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu0);
        Timer wall;
        if (!(*reports)->CatchUp().ok()) return 1;
        wall_s += wall.Seconds();
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu1);
        cpu_s += (cpu1.tv_sec - cpu0.tv_sec) + (cpu1.tv_nsec - cpu0.tv_nsec) / 1e9;
      }
      std::fprintf(stderr,
                   "reports_bench: catch-ups of %d visits: %.1f us wall, %.1f us CPU per visit\n",
                   per, wall_s / 20000 * 1e6, cpu_s / 20000 * 1e6);
    }
    // The ingest ratio over the kept data set, as the full run.
    const double ratio = IngestRatio(&gen, store, reports->get(), 20000);
    if (ratio < 0) return 1;
    Emit(kBench, "ingest_ratio_with_reports", ratio, "ratio");
    EmitIngestCpu();
    std::fprintf(stderr, "reports_bench: ingest %.0f/s off, %.0f/s on\n", last_ingest_off,
                 last_ingest_on);
  }
  return 0;
}

// Generates the data set into the record store at `path` through ServerStore::Apply, as
// every write reaches it: facilities, requests, their events, then `visits` visits. With
// `old_load`, as before 2026-12-07 (for comparisons): batches of 1,000, each one durable
// transaction, made and applied on one thread. Otherwise as a bulk load of the same
// records in the same order: batches of kBulkBatch mutations (each one transaction, as
// large batches from a device would be), made on a second thread while the last applies,
// `synchronous = NORMAL` (no fsync per commit: the data set is rebuilt if the machine
// fails), and the schema's secondary
// indexes (RecordStore::DropSecondaryIndexes: visits, requests and events by facility or
// request) dropped during the load and built once at the end, sorted, as `CREATE INDEX`
// does. The files are the same as a server's: same tables, rows, op log and checksums.
constexpr int64_t kBulkBatch = 50000;
bool Load(const std::string& path, Generator* gen, int64_t facilities, int64_t requests,
          int64_t visits, bool old_load) {
  sync::ServerStoreOptions options;
  if (!old_load) {
    options.durable = false;
    options.max_batch_mutations = kBulkBatch;
    options.max_batch_bytes = size_t{512} << 20;
    options.reader_connections = 0;
  }
  auto store = sync::ServerStore::Open(path, &model::KcnetSchema(), options);
  if (!store.ok()) {
    std::fprintf(stderr, "reports_bench: %s\n", store.status().ToString().c_str());
    return false;
  }
  gen->set_store(store->get());
  // The secondary indexes, dropped on a second connection (the store's own recreates any
  // missing one when it is opened again), and their SQL to build them at the end.
  std::vector<std::string> dropped;
  std::unique_ptr<sync::Db> side;
  if (!old_load) {
    absl::StatusOr<std::unique_ptr<sync::Db>> db = sync::Db::Open(path, sync::DbOptions());
    if (!db.ok()) return false;
    side = *std::move(db);
    auto indexes = [&]() {
      std::vector<std::pair<std::string, std::string>> out;
      absl::StatusOr<sync::Statement*> rows = side->Prepare(
          "SELECT name, sql FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL");
      if (!rows.ok()) return out;
      while (*(*rows)->Step()) {
        out.emplace_back(std::string((*rows)->ColumnText(0)), std::string((*rows)->ColumnText(1)));
      }
      (*rows)->Reset();
      return out;
    };
    const std::vector<std::pair<std::string, std::string>> before = indexes();
    absl::StatusOr<std::unique_ptr<sync::RecordStore>> records =
        sync::RecordStore::Open(side.get(), &model::KcnetSchema(), "server");
    if (!records.ok() || !(*records)->DropSecondaryIndexes().ok()) {
      std::fprintf(stderr, "reports_bench: could not drop the secondary indexes\n");
      return false;
    }
    const std::vector<std::pair<std::string, std::string>> after = indexes();
    for (const auto& index : before) {
      if (std::find(after.begin(), after.end(), index) == after.end()) {
        dropped.push_back(index.second);
      }
    }
  }
  const int64_t per_batch = old_load ? 1000 : kBulkBatch;
  const bool parallel = !old_load;
  Timer phase;
  gen->Apply(
      facilities, [&] { return gen->MakeFacility(); }, per_batch, parallel);
  // Requests and their events as two records each.
  std::vector<RequestEvent> events;
  gen->Apply(
      requests,
      [&] {
        std::pair<SupportRequest, RequestEvent> made = gen->MakeRequest();
        events.push_back(std::move(made.second));
        return std::move(made.first);
      },
      per_batch, parallel);
  size_t next_event = 0;
  gen->Apply(
      static_cast<int64_t>(events.size()), [&] { return events[next_event++]; }, per_batch,
      parallel);
  std::fprintf(stderr, "reports_bench: facilities, requests and events in %.1f s\n",
               phase.Seconds());
  Timer visits_timer;
  gen->Apply(
      visits, [&] { return gen->MakeVisit(); }, per_batch, parallel);
  std::fprintf(stderr, "reports_bench: %lld visits in %.1f s\n", static_cast<long long>(visits),
               visits_timer.Seconds());
  gen->set_store(nullptr);
  store->reset();
  if (!dropped.empty()) {
    Timer build;
    // A large sort buffer on two threads: SQLite sorts each index's entries in chunks of
    // the page cache's size before writing the B-tree in order.
    absl::Status status = side->Exec("PRAGMA cache_size = -524288; PRAGMA threads = 2");
    for (size_t i = 0; status.ok() && i < dropped.size(); ++i) status = side->Exec(dropped[i]);
    if (!status.ok()) {
      std::fprintf(stderr, "reports_bench: building the indexes: %s\n", status.ToString().c_str());
      return false;
    }
    std::fprintf(stderr, "reports_bench: %zu secondary indexes built in %.1f s\n", dropped.size(),
                 build.Seconds());
  }
  return true;
}

int Run(int argc, char** argv) {
  double scale = 1.0;
  std::string data = "/work/shared/data/vn_admin/units_2tier_2025.csv";
  std::string keep;
  bool reuse = false, queries_only = false, follower_only = false, generate_only = false,
       old_load = false, old_reuse = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--reuse") {
      reuse = true;
      continue;
    }
    if (a == "--queries_only") {
      queries_only = true;
      continue;
    }
    if (a == "--follower_only") {
      follower_only = true;
      continue;
    }
    if (a == "--generate_only") {
      generate_only = true;
      continue;
    }
    if (a == "--old_load") {
      old_load = true;
      continue;
    }
    if (a == "--rebuild_and_queries") {
      old_reuse = true;
      continue;
    }
    if (a.rfind("--scale=", 0) == 0 && absl::SimpleAtod(a.substr(8), &scale) && scale > 0) continue;
    int busy_ms = 0;
    if (a.rfind("--busy_interval_ms=", 0) == 0 && absl::SimpleAtoi(a.substr(19), &busy_ms) &&
        busy_ms > 0) {
      follower_busy_interval = absl::Milliseconds(busy_ms);
      continue;
    }
    if (a.rfind("--data=", 0) == 0) {
      data = a.substr(7);
      continue;
    }
    if (a.rfind("--keep=", 0) == 0) {
      keep = a.substr(7);
      continue;
    }
    std::fprintf(stderr, "reports_bench: unknown or bad flag %s\n", a.c_str());
    return 2;
  }
  if (!std::filesystem::exists(data)) {
    std::fprintf(stderr,
                 "reports_bench: skipped: the 2025 two-tier list %s is absent (give --data=PATH)\n",
                 data.c_str());
    return 0;
  }
  std::string dir = keep;
  if (dir.empty()) {
    char pattern[] = "/tmp/kcnet-reports-bench-XXXXXX";
    dir = mkdtemp(pattern);
  }
  std::filesystem::create_directories(dir);
  const std::filesystem::path root(dir);
  reuse = reuse && !keep.empty() && std::filesystem::exists(root / "kcnet.db");

  server::DirectoryOptions directory_options;
  auto directory = server::Directory::Open((root / "directory.db").string(), directory_options);
  if (!directory.ok()) {
    std::fprintf(stderr, "reports_bench: %s\n", directory.status().ToString().c_str());
    return 1;
  }
  std::stringstream csv;
  csv << std::ifstream(data).rdbuf();
  server::ImportReport imported =
      server::ImportOrgUnits(**directory, csv.str(), server::ImportMode::kApply);
  if (!imported.status.ok() && imported.status.code() != absl::StatusCode::kFailedPrecondition) {
    std::fprintf(stderr, "reports_bench: import: %s\n", imported.Summary().c_str());
    return 1;
  }
  World world;
  absl::StatusOr<std::vector<OrgUnit>> roots = (*directory)->ListChildren(0);
  if (!roots.ok()) return 1;
  for (const OrgUnit& p : *roots) world.provinces.push_back(p.id());
  absl::StatusOr<std::vector<int64_t>> communes = (*directory)->Communes(world.provinces);
  if (!communes.ok()) return 1;
  world.communes = *std::move(communes);
  std::fprintf(stderr, "reports_bench: %zu provinces, %zu communes, scale %.3g, in %s\n",
               world.provinces.size(), world.communes.size(), scale, dir.c_str());

  const std::string store_path = (root / "kcnet.db").string();
  sync::ServerStoreOptions store_options;
  Generator gen(nullptr, &world);
  const int64_t facilities = static_cast<int64_t>(200000 * scale);
  const int64_t visits = static_cast<int64_t>(5000000 * scale);
  const int64_t requests = static_cast<int64_t>(500000 * scale);
  // Most of the visits are loaded without the summaries (they are rebuilt below); the last
  // part in alternating phases, with and without the follower, for the ingest ratio.
  const int64_t phase = std::max<int64_t>(10000, visits / 50);
  if (!reuse) {
    Timer load;
    const double load_cpu0 = ProcessCpuSeconds();
    if (!Load(store_path, &gen, facilities, requests, std::max<int64_t>(0, visits - 4 * phase),
              old_load)) {
      return 1;
    }
    std::fprintf(stderr, "reports_bench: loaded in %.1f s (%.1f s CPU, all threads)\n",
                 load.Seconds(), ProcessCpuSeconds() - load_cpu0);
    if (generate_only) return 0;
  }
  auto store = sync::ServerStore::Open(store_path, &model::KcnetSchema(), store_options);
  if (!store.ok()) {
    std::fprintf(stderr, "reports_bench: %s\n", store.status().ToString().c_str());
    return 1;
  }
  gen.set_store(store->get());
  if (reuse && (queries_only || follower_only || old_reuse)) {
    return Measure(world, root, store->get(), directory->get(), queries_only, follower_only);
  }
  Generator again(store->get(), &world, (*store)->last_op());
  if (reuse) {
    // The whole measurement below over the kept set: its visits are added to it.
    if (!ReadFacilities(root, &world)) return 1;
    std::fprintf(stderr, "reports_bench: reusing %s (%llu ops, %zu facilities)\n", dir.c_str(),
                 static_cast<unsigned long long>((*store)->last_op()), world.facilities.size());
  }
  Generator& gen_next = reuse ? again : gen;

  auto reports = server::reports::ReportsStore::Open((root / "reports.db").string(),
                                                     (root / "kcnet.db").string());
  if (!reports.ok()) {
    std::fprintf(stderr, "reports_bench: %s\n", reports.status().ToString().c_str());
    return 1;
  }
  Timer rebuild;
  const double rebuild_cpu0 = ProcessCpuSeconds();
  if (!(*reports)->Rebuild().ok()) return 1;
  const double rebuild_s = rebuild.Seconds();
  const double rebuild_cpu_s = ProcessCpuSeconds() - rebuild_cpu0;

  sync::ServerStore* s = store->get();
  const double ratio = IngestRatio(&gen_next, s, reports->get(), phase);
  if (ratio < 0) return 1;

  // Freshness: commit -> counted, with the follower running.
  std::vector<double> fresh;
  {
    server::reports::ReportsFollower follower(
        reports->get(), [s] { return s->last_op(); }, nullptr);
    for (int i = 0; i < 50; ++i) {
      absl::SleepFor(absl::Milliseconds(20));
      gen_next.Apply(1, [&] { return gen_next.MakeVisit(); });
      const absl::Time start = absl::Now();  // Apply returns once the write is committed
      const uint64_t op = s->last_op();
      while (*(*reports)->Cursor() < op) absl::SleepFor(absl::Microseconds(200));
      fresh.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
    }
  }
  std::fprintf(stderr, "reports_bench: freshness max at write %d of 50\n",
               static_cast<int>(std::max_element(fresh.begin(), fresh.end()) - fresh.begin()));
  std::sort(fresh.begin(), fresh.end());

  const Latencies latencies = MeasureQueries(world, directory->get(), reports->get());
  Emit(kBench, "province_p99_ms", latencies.province_p99, "ms");
  Emit(kBench, "national_p99_ms", latencies.national_p99, "ms");
  Emit(kBench, "freshness_max_ms", fresh.back(), "ms");
  Emit(kBench, "freshness_p50_ms", fresh[fresh.size() / 2], "ms");
  Emit(kBench, "ingest_ratio_with_reports", ratio, "ratio");
  EmitIngestCpu();
  Emit(kBench, "rebuild_s", rebuild_s, "s");
  Emit(kBench, "rebuild_cpu_s", rebuild_cpu_s, "s");
  std::fprintf(stderr,
               "reports_bench: %lld facilities, %lld visits, %lld requests; ingest %.0f/s off, "
               "%.0f/s on\n",
               static_cast<long long>(facilities), static_cast<long long>(visits),
               static_cast<long long>(requests), last_ingest_off, last_ingest_on);
  if (keep.empty()) std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace
}  // namespace kcnet::bench

int main(int argc, char** argv) { return kcnet::bench::Run(argc, argv); }
