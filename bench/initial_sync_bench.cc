// initial_sync: a new tablet's first sync of a whole district over the real stream.
//
// What it measures and how:
//  - A KcnetServer runs in process (real port on 127.0.0.1, real channel, per-RPC log
//    silenced) on a temp data dir. Its store holds one district of 15 communes: 100
//    facilities per commune and visits on those facilities, 100,000 records in all, loaded
//    straight into the ServerStore with ServerStore::Apply in batches of 1,000 (not timed).
//    Record ids are made as the SDK makes them (time-ordered UUIDs of each record's
//    creation time), and the visits reach the server in about the order they were made.
//  - A district coordinator's new device (a DeviceStore in a temp file, durable=true as on
//    a tablet: WAL + synchronous=FULL) runs SyncClient::SyncOnce against it. Timed: the
//    whole SyncOnce (connect, Hello/Welcome, every acknowledged download page: the
//    server's ChangesSince, the page deflated, the device's inflate and ApplyDownload (the
//    pages already received stored in one durable transaction), the DownloadAck, the final
//    half-close). records_per_s = records / those seconds. Three runs, each with a new
//    device; the figure is the median and each run is printed on stderr.
//  - In the same run, the same rows go into a fresh plain SQLite file by plain INSERTs
//    into tables with the records' own columns (facility, visit) and the same indexes as
//    the device's tables (commune, and visit.facility_id), WAL + synchronous=FULL, one
//    transaction per 1,000 rows: the page size of the stream (SyncServiceOptions.page
//    .max_changes = 1000). Three runs, the median.
//    plain_records_per_s = rows / seconds, ratio_vs_plain = records_per_s / plain.
//
// Metrics: records_per_s (goal >= 100,000), plain_records_per_s, ratio_vs_plain
// (goal >= 0.5). Details (pages, seconds) go to stderr.
//
// With a third argument "breakdown", it also prints on stderr where the time of the
// stream goes, by redoing its parts one at a time without the network: the server's
// ChangesSince pages, their serialization and gzip (zlib level 6, as gRPC's message
// compression), gunzip and parse, a second fresh durable device applying the same pages
// directly, and a third applying pages of up to 5,000 changes (fewer, larger transactions).
//
// Usage: initial_sync_bench [records] [facilities_per_commune] [breakdown]
//        (default 100000 100)
#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <zlib.h>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "bench/bench_util.h"
#include "bench/load_util.h"
#include "client_sdk/sync_client.h"
#include "grpcpp/grpcpp.h"
#include "kcnet/v1/domain.pb.h"
#include "server/app/kcnet_server.h"
#include "sync/device_store.h"
#include "sync/model/record_types.h"
#include "sync/model/requests.h"
#include "sync/server_store.h"
#include "sync/sqlite.h"

namespace kcnet::bench {
namespace {

using namespace kcnet::v1;  // NOLINT

constexpr int kCommunes = 15;
constexpr int kBatch = 1000;  // load batches, plain transactions, stream pages
constexpr char kPassword[] = "password-123";

double MonotonicSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

[[noreturn]] void Die(const std::string& what) {
  std::cerr << "initial_sync_bench: " << what << "\n";
  std::exit(1);
}

template <typename T>
T Must(absl::StatusOr<T> v, const char* what) {
  if (!v.ok()) Die(absl::StrCat(what, ": ", v.status().ToString()));
  return *std::move(v);
}

void Must(const absl::Status& s, const char* what) {
  if (!s.ok()) Die(absl::StrCat(what, ": ", s.ToString()));
}

const char* kFindings[] = {"Cơ sở cần hỗ trợ máy sấy nông sản, công suất hiện tại thấp",
                           "Đề nghị tập huấn an toàn lao động cho 12 công nhân",
                           "Sản phẩm mây tre đan đạt chất lượng, cần xúc tiến thương mại",
                           "Đã lắp đặt máy chế biến, đang vận hành thử"};

// Each side is measured this many times; the figures are the medians (on a 2-core VM,
// runs of the same build vary by 10% or more).
constexpr int kRuns = 3;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct World {
  std::vector<Facility> facilities;
  std::vector<Visit> visits;
};

World MakeWorld(const std::vector<int64_t>& communes, int64_t author, int records,
                int facilities_per_commune) {
  std::mt19937_64 rng(42);
  World w;
  for (size_t c = 0; c < communes.size(); ++c) {
    for (int i = 0; i < facilities_per_commune; ++i) {
      Facility f;
      f.set_commune_id(communes[c]);
      f.set_name(absl::StrCat("Cơ sở sản xuất số ", c * 1000 + static_cast<size_t>(i)));
      f.set_owner_name("Nguyễn Văn An");
      f.set_kind(FACILITY_KIND_HOUSEHOLD_BUSINESS);
      f.set_address(absl::StrCat("Thôn ", i % 12 + 1));
      f.set_latitude(20.5 + static_cast<double>(rng() % 10000) / 10000.0);
      f.set_longitude(105.5 + static_cast<double>(rng() % 10000) / 10000.0);
      f.set_workers(static_cast<int64_t>(rng() % 40 + 1));
      f.set_main_products("Mây tre đan");
      f.set_contact_phone("0912345678");
      f.set_created_by(author);
      f.set_created_ms(1760000000000 + static_cast<int64_t>(rng() % 86400000));
      // Ids as the SDK makes them: time-ordered UUIDs of the record's creation.
      f.set_id(*sync::UuidToText(model::NewRecordIdBytes(absl::FromUnixMillis(f.created_ms()))));
      w.facilities.push_back(std::move(f));
    }
  }
  const int visits = records - static_cast<int>(w.facilities.size());
  if (visits < 0) Die("fewer records than facilities");
  for (int i = 0; i < visits; ++i) {
    const Facility& f = w.facilities[rng() % w.facilities.size()];
    Visit v;
    v.set_commune_id(f.commune_id());
    v.set_facility_id(f.id());
    v.set_collaborator_id(author);
    // Visits over about a day, reaching the server roughly in the order they were made
    // (within a few seconds).
    v.set_visited_ms(1764000000000 + i * int64_t{86400000} / visits +
                     static_cast<int64_t>(rng() % 5000));
    v.set_id(*sync::UuidToText(model::NewRecordIdBytes(absl::FromUnixMillis(v.visited_ms()))));
    v.set_latitude(f.latitude());
    v.set_longitude(f.longitude());
    v.set_purpose(static_cast<VisitPurpose>(rng() % 4 + 1));
    v.set_findings(kFindings[rng() % 4]);
    v.add_needs(SUPPORT_CATEGORY_TRAINING);
    v.add_needs(SUPPORT_CATEGORY_MACHINERY_TECHNOLOGY);
    v.set_next_visit_due_ms(v.visited_ms() + 30LL * 86400000);
    w.visits.push_back(std::move(v));
  }
  return w;
}

void Load(sync::ServerStore* store, const World& w) {
  std::vector<const google::protobuf::Message*> all;
  for (const auto& f : w.facilities) all.push_back(&f);
  for (const auto& v : w.visits) all.push_back(&v);
  Must(LoadRecords(store, all), "load");
}

std::string Needs(const Visit& v) {
  std::string needs;
  for (int n : v.needs()) needs.push_back(static_cast<char>(n));
  return needs;
}

// The plain baseline: the same rows by plain INSERTs, 1,000 per durable transaction.
double RunPlain(const World& w, const std::string& path) {
  auto db = Must(sync::Db::Open(path, {.durable = true}), "open plain");  // WAL, FULL
  sync::Db& d = *db;
  Must(d.Exec("CREATE TABLE facility(id TEXT PRIMARY KEY NOT NULL, commune_id INTEGER, name "
              "TEXT, owner_name TEXT, kind INTEGER, sector INTEGER, address TEXT, latitude REAL, "
              "longitude REAL, workers INTEGER, main_products TEXT, recognition INTEGER, "
              "contact_phone TEXT, created_by INTEGER, created_ms INTEGER);"
              "CREATE INDEX facility_commune ON facility(commune_id);"
              "CREATE TABLE visit(id TEXT PRIMARY KEY NOT NULL, commune_id INTEGER, facility_id "
              "TEXT, collaborator_id INTEGER, visited_ms INTEGER, latitude REAL, longitude REAL, "
              "purpose INTEGER, findings TEXT, needs BLOB, next_visit_due_ms INTEGER, "
              "photo_refs TEXT);"
              "CREATE INDEX visit_commune ON visit(commune_id);"
              "CREATE INDEX visit_facility_id ON visit(facility_id);"),
       "create plain tables");
  const size_t total = w.facilities.size() + w.visits.size();
  Timer timer;
  for (size_t i = 0; i < total; i += kBatch) {
    auto txn = Must(sync::Transaction::Begin(&d), "begin");
    for (size_t k = i; k < std::min(total, i + kBatch); ++k) {
      if (k < w.facilities.size()) {
        const Facility& f = w.facilities[k];
        sync::Statement* s = Must(
            d.Prepare("INSERT INTO facility VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"), "prepare");
        s->BindText(1, f.id());
        s->BindInt(2, f.commune_id());
        s->BindText(3, f.name());
        s->BindText(4, f.owner_name());
        s->BindInt(5, f.kind());
        s->BindInt(6, f.sector());
        s->BindText(7, f.address());
        s->BindDouble(8, f.latitude());
        s->BindDouble(9, f.longitude());
        s->BindInt(10, f.workers());
        s->BindText(11, f.main_products());
        s->BindInt(12, f.recognition());
        s->BindText(13, f.contact_phone());
        s->BindInt(14, f.created_by());
        s->BindInt(15, f.created_ms());
        Must(s->Run(), "insert facility");
        s->Reset();
      } else {
        const Visit& v = w.visits[k - w.facilities.size()];
        sync::Statement* s =
            Must(d.Prepare("INSERT INTO visit VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"), "prepare");
        s->BindText(1, v.id());
        s->BindInt(2, v.commune_id());
        s->BindText(3, v.facility_id());
        s->BindInt(4, v.collaborator_id());
        s->BindInt(5, v.visited_ms());
        s->BindDouble(6, v.latitude());
        s->BindDouble(7, v.longitude());
        s->BindInt(8, v.purpose());
        s->BindText(9, v.findings());
        s->BindBlob(10, Needs(v));
        s->BindInt(11, v.next_visit_due_ms());
        s->BindNull(12);
        Must(s->Run(), "insert visit");
        s->Reset();
      }
    }
    Must(txn->Commit(), "commit");
  }
  return timer.Seconds();
}

// gzip as gRPC's message compression does it (deflate level 6, gzip header).
std::string Gzip(const std::string& in) {
  z_stream zs{};
  if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 | 16, 8, Z_DEFAULT_STRATEGY) !=
      Z_OK) {
    Die("deflateInit2");
  }
  std::string out(deflateBound(&zs, in.size()) + 32, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  if (deflate(&zs, Z_FINISH) != Z_STREAM_END) Die("deflate");
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

std::string Gunzip(const std::string& in, size_t size) {
  z_stream zs{};
  if (inflateInit2(&zs, 15 | 16) != Z_OK) Die("inflateInit2");
  std::string out(size, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  if (inflate(&zs, Z_FINISH) != Z_STREAM_END) Die("inflate");
  inflateEnd(&zs);
  return out;
}

// Reads every page of the district from the store as the stream does (cursors updated
// the way the device stores them), with the per-part timings of Breakdown().
struct Pages {
  std::vector<ChangeBatch> pages;
  double read_s = 0, serialize_s = 0, gzip_s = 0, gunzip_s = 0, parse_s = 0;
  size_t raw_bytes = 0, wire_bytes = 0;
};

Pages ReadPages(sync::ServerStore* store, const std::vector<int64_t>& communes,
                const sync::DownloadLimits& limits) {
  Pages out;
  std::vector<BucketCursor> cursors;
  for (int64_t b : communes) cursors.emplace_back().set_bucket(b);
  for (int guard = 0; guard < 100000; ++guard) {
    Timer read;
    ChangeBatch page = Must(store->ChangesSince(cursors, limits), "page");
    out.read_s += read.Seconds();
    Timer serialize;
    SyncServerMessage message;
    *message.mutable_changes() = page;
    const std::string bytes = message.SerializeAsString();
    out.serialize_s += serialize.Seconds();
    Timer gzip;
    const std::string packed = Gzip(bytes);
    out.gzip_s += gzip.Seconds();
    Timer gunzip;
    const std::string unpacked = Gunzip(packed, bytes.size());
    out.gunzip_s += gunzip.Seconds();
    Timer parse;
    SyncServerMessage parsed;
    if (!parsed.ParseFromString(unpacked)) Die("parse");
    out.parse_s += parse.Seconds();
    out.raw_bytes += bytes.size();
    out.wire_bytes += packed.size();
    for (const BucketCursor& c : page.cursors()) {
      for (BucketCursor& mine : cursors) {
        if (mine.bucket() != c.bucket()) continue;
        if (c.op() >= mine.op() && c.floor() == c.op()) mine.set_floor(c.op());
        mine.set_op(std::max(mine.op(), c.op()));
      }
    }
    out.pages.push_back(std::move(page));
    if (!out.pages.back().more()) break;
  }
  return out;
}

// A fresh durable device applying `pages` directly (no network), `group` pages per
// transaction: seconds.
double ApplyPages(const std::vector<ChangeBatch>& pages, const std::vector<int64_t>& communes,
                  const std::string& path, size_t expected, size_t group = 1) {
  auto device =
      Must(sync::DeviceStore::Open(path, &model::KcnetSchema(), "breakdown", {.durable = true}),
           "open device");
  for (int64_t b : communes) Must(device->Subscribe(b), "subscribe");
  Timer apply;
  size_t applied = 0;
  for (size_t i = 0; i < pages.size(); i += group) {
    std::vector<const ChangeBatch*> some;
    for (size_t k = i; k < std::min(pages.size(), i + group); ++k) some.push_back(&pages[k]);
    applied += Must(device->ApplyDownload(some), "apply").applied;
    Must(device->Cursors(), "cursors");  // the ack's cursors, as SyncClient reads them
  }
  const double s = apply.Seconds();
  if (applied != expected) Die(absl::StrCat("breakdown applied ", applied, " of ", expected));
  return s;
}

// The stream's parts one at a time, without the network (see the top of the file), and
// the device's apply with pages five times larger (fewer, larger transactions).
void Breakdown(sync::ServerStore* store, const std::vector<int64_t>& communes,
               const std::string& dir, size_t records, double sync_s) {
  const Pages p = ReadPages(store, communes, {.max_changes = 1000, .max_bytes = 1 << 20});
  const double apply_s = ApplyPages(p.pages, communes, dir + "/breakdown-1000.db", records);
  const double group_s =
      ApplyPages(p.pages, communes, dir + "/breakdown-group.db", records, /*group=*/4);
  const Pages big = ReadPages(store, communes, {.max_changes = 5000, .max_bytes = 8 << 20});
  const double big_apply_s = ApplyPages(big.pages, communes, dir + "/breakdown-5000.db", records);
  const double server_s = p.read_s + p.serialize_s + p.gzip_s;
  const double device_s = p.gunzip_s + p.parse_s + apply_s;
  std::cerr << "initial_sync_bench: breakdown over " << p.pages.size() << " pages (" << p.raw_bytes
            << " bytes, " << p.wire_bytes << " gzipped):\n"
            << "  server ChangesSince   " << p.read_s << " s\n"
            << "  serialize             " << p.serialize_s << " s\n"
            << "  gzip (level 6)        " << p.gzip_s << " s\n"
            << "  gunzip                " << p.gunzip_s << " s\n"
            << "  parse                 " << p.parse_s << " s\n"
            << "  device ApplyDownload  " << apply_s << " s (durable, one transaction a page)\n"
            << "  device ApplyDownload  " << group_s
            << " s (four pages a transaction, as SyncClient stores received pages)\n"
            << "  server side " << server_s << " s + device side " << device_s
            << " s = " << server_s + device_s << " s; SyncOnce took " << sync_s
            << " s (the rest: gRPC, one round trip per page, the client's bookkeeping)\n"
            << "  device ApplyDownload with " << big.pages.size()
            << " pages of up to 5,000: " << big_apply_s << " s\n";
}

}  // namespace
}  // namespace kcnet::bench

int main(int argc, char** argv) {
  using namespace kcnet::bench;  // NOLINT
  const int records = argc > 1 ? std::atoi(argv[1]) : 100000;
  const int per_commune = argc > 2 ? std::atoi(argv[2]) : 100;
  const bool breakdown = argc > 3 && std::string(argv[3]) == "breakdown";
  if (records <= 0 || per_commune <= 0) Die("usage: initial_sync_bench [records] [per_commune]");
  const std::string dir = std::filesystem::temp_directory_path() / "kcnet-bench-initial-sync";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);

  kcnet::server::ServerOptions options;
  options.data_dir = dir + "/server";
  options.listen = "127.0.0.1:0";
  options.directory.password_ops_limit = kcnet::server::kArgon2OpsLimitMin;
  options.directory.password_mem_limit = kcnet::server::kArgon2MemLimitMin;
  options.log_sink = [](absl::string_view) {};
  auto server = Must(kcnet::server::KcnetServer::Start(options), "start server");
  kcnet::server::Directory* d = server->directory();
  const int64_t province =
      Must(d->CreateOrgUnit("90", "Tỉnh", ORG_UNIT_LEVEL_PROVINCE, 0), "province").id();
  const int64_t district =
      Must(d->CreateOrgUnit("901", "Huyện", ORG_UNIT_LEVEL_DISTRICT, province), "district").id();
  std::vector<int64_t> communes;
  for (int i = 0; i < kCommunes; ++i) {
    communes.push_back(Must(d->CreateOrgUnit(absl::StrCat(90100 + i), absl::StrCat("Xã ", i),
                                             ORG_UNIT_LEVEL_COMMUNE, district),
                            "commune")
                           .id());
  }
  const User coordinator = Must(
      d->CreateUser("coord", "Điều phối viên", kPassword, ROLE_DISTRICT_COORDINATOR, {district}),
      "coordinator");
  const std::string token = Must(d->Login("coord", kPassword), "login").token;

  const World world = MakeWorld(communes, coordinator.id(), records, per_commune);
  Load(server->store(), world);
  std::cerr << "initial_sync_bench: loaded " << world.facilities.size() << " facilities and "
            << world.visits.size() << " visits in " << kCommunes << " communes\n";

  // Measured: a new device's SyncOnce, three times (a fresh device each time): the
  // figures are the medians, each run is printed on stderr.
  const kcnet::sync::Schema& schema = kcnet::model::KcnetSchema();
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server->port()),
                                     grpc::InsecureChannelCredentials());
  std::vector<double> sync_runs;
  for (int run = 0; run < kRuns; ++run) {
    const std::string path = absl::StrCat(dir, "/device-", run, ".db");
    auto device =
        Must(kcnet::sync::DeviceStore::Open(path, &schema, absl::StrCat("coordinator-tablet-", run),
                                            {.durable = true}),
             "open device");
    kcnet::sdk::SyncClientOptions client_options;
    client_options.token = token;
    client_options.timeout = absl::Seconds(150);
    kcnet::sdk::SyncClient client(channel, device.get(), client_options);
    // CLOCK_MONOTONIC bounds of the measured part, for `perf record -k CLOCK_MONOTONIC` and
    // `perf report --time START,END`.
    std::cerr << "initial_sync_bench: SyncOnce starts at monotonic " << MonotonicSeconds() << "\n";
    Timer timer;
    kcnet::sdk::SyncResult result = Must(client.SyncOnce(), "SyncOnce");
    const double sync_s = timer.Seconds();
    std::cerr << "initial_sync_bench: SyncOnce ends at monotonic " << MonotonicSeconds() << "\n";
    if (!result.server_status.ok()) Die("server status: " + result.server_status.ToString());
    if (result.received_changes != static_cast<size_t>(records) ||
        result.applied_changes != static_cast<size_t>(records)) {
      Die(absl::StrCat("received ", result.received_changes, " changes, applied ",
                       result.applied_changes, ", expected ", records));
    }
    std::cerr << "initial_sync_bench: SyncOnce " << sync_s << " s (" << records / sync_s
              << " records/s), " << result.download_batches << " pages, " << result.received_changes
              << " changes\n";
    sync_runs.push_back(sync_s);
    device.reset();
    std::filesystem::remove(path);
  }
  const double sync_s = Median(sync_runs);
  if (breakdown) Breakdown(server->store(), communes, dir, static_cast<size_t>(records), sync_s);
  server->Shutdown(absl::Seconds(2));

  std::vector<double> plain_runs;
  for (int run = 0; run < kRuns; ++run) {
    const std::string path = absl::StrCat(dir, "/plain-", run, ".db");
    plain_runs.push_back(RunPlain(world, path));
    std::cerr << "initial_sync_bench: plain " << plain_runs.back() << " s ("
              << records / plain_runs.back() << " rows/s)\n";
  }
  const double plain_s = Median(plain_runs);

  const double rate = records / sync_s;
  const double plain_rate = records / plain_s;
  Emit("initial_sync", "records_per_s", rate, "records/s");
  Emit("initial_sync", "plain_records_per_s", plain_rate, "records/s");
  Emit("initial_sync", "ratio_vs_plain", rate / plain_rate, "ratio");
  server.reset();
  std::filesystem::remove_all(dir);
  return 0;
}
