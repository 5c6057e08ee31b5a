// The client SDK's benchmarks, one program each (bench/CMakeLists.txt builds this file
// three times with KCNET_SDK_BENCH set to the benchmark's name):
//
//  sdk_write: recording a visit through kcnet::sdk::Client (validation, the shared rules,
//    the record and its outbox row in one durable transaction: WAL + synchronous=FULL) vs
//    a plain INSERT of the same row into a table with the visit's columns, one durable
//    transaction per row, same run, same disk: 2,000 writes each (after 200 warm-up), in
//    10 alternating rounds so that both sides see the same load.
//    Metrics: sdk_writes_per_s, plain_writes_per_s, ratio_vs_plain = SDK seconds / plain
//    seconds (goal <= 1.3).
//  sdk_sync_memory: a district coordinator's new tablet syncing 100,000 records (15
//    communes: 1,500 facilities and their visits) through Client::SyncNow. The server runs
//    in this process; the tablet is a child process (this program re-executed with
//    --child) so that its peak resident set (VmHWM, read from /proc/self/status after the
//    sync) is the SDK's alone. Metrics: peak_rss_mib (goal <= 50), records_per_s.
//  search: 50,000 facilities (varied Vietnamese names, owners and products) synced into a
//    tablet's store, then 2,000 searches as users type them (with or without diacritics,
//    any case: "ha noi", "GỐM SỨ", "nguyen van"), each Client::SearchFacilities(q, 20)
//    including reading the 20 facilities. Metrics: p50_ms, p99_ms (goal <= 10).
//
// Usage: <name>_bench [records]
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "bench/bench_util.h"
#include "bench/load_util.h"
#include "kcnet/client.h"
#include "server/app/kcnet_server.h"
#include "sync/model/record_types.h"
#include "sync/server_store.h"
#include "sync/sqlite.h"
#include "sync/text_fold.h"
#include "tests/testing/test_server.h"

namespace kcnet::bench {
namespace {

using namespace kcnet::v1;  // NOLINT

constexpr char kBench[] = KCNET_SDK_BENCH;
constexpr char kPassword[] = "password-123";
constexpr int kCommunes = 15;

[[noreturn]] void Die(const std::string& what) {
  std::cerr << kBench << "_bench: " << what << "\n";
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

const char* kKinds[] = {"Cơ sở", "Hợp tác xã", "Tổ hợp tác", "Xưởng", "Công ty TNHH", "Làng nghề"};
const char* kProducts[] = {"mây tre đan", "gốm sứ",   "dệt lụa",  "chế biến chè", "đồ gỗ mỹ nghệ",
                           "nón lá",      "bánh đa",  "nước mắm", "chiếu cói",    "rèn nông cụ",
                           "sơn mài",     "thêu ren", "đúc đồng", "miến dong",    "chế biến cà phê",
                           "tương bần",   "giấy dó",  "đan lát",  "may mặc",      "cơ khí nhỏ"};
const char* kPlaces[] = {"Hà Nội",   "Phú Vinh", "Bát Tràng",  "Vạn Phúc",  "Đồng Kỵ",   "Chuông",
                         "Thổ Hà",   "Phù Lãng", "Kim Sơn",    "Đông Hồ",   "Làng Vòng", "Cự Đà",
                         "Đa Sỹ",    "Tân Lập",  "Hương Canh", "Bảo Hà",    "Cát Đằng",  "Thanh Hà",
                         "Hòa Bình", "Đại Bái",  "Nam Định",   "Thái Bình", "Nghệ An",   "Huế",
                         "Hội An",   "Đắk Lắk",  "Cần Thơ",    "Bến Tre",   "Sa Đéc",    "Long An"};
const char* kFamily[] = {"Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Vũ", "Đặng", "Bùi", "Đỗ", "Hồ"};
const char* kMiddle[] = {"Văn", "Thị", "Đức", "Minh", "Hữu", "Thu", "Quang", "Ngọc"};
const char* kGiven[] = {"An",   "Bình",  "Cường", "Dũng", "Hà",   "Hải",  "Hương",
                        "Lan",  "Long",  "Mai",   "Nam",  "Phúc", "Quân", "Sơn",
                        "Thảo", "Trung", "Tuấn",  "Vân",  "Yến",  "Đông"};

template <size_t N>
const char* Pick(const char* const (&a)[N], std::mt19937_64& rng) {
  return a[rng() % N];
}

// A district of kCommunes communes, `facilities` facilities and visits up to `records`.
struct World {
  std::vector<Facility> facilities;
  std::vector<Visit> visits;
};

World MakeWorld(const std::vector<int64_t>& communes, int64_t author, int records, int facilities) {
  std::mt19937_64 rng(42);
  World w;
  for (int i = 0; i < facilities; ++i) {
    Facility f;
    f.set_id(*sync::UuidToText(RandomUuidBytes(rng)));
    f.set_commune_id(communes[static_cast<size_t>(i) % communes.size()]);
    f.set_name(absl::StrCat(Pick(kKinds, rng), " ", Pick(kProducts, rng), " ", Pick(kPlaces, rng),
                            " ", i % 97 + 1));
    f.set_owner_name(
        absl::StrCat(Pick(kFamily, rng), " ", Pick(kMiddle, rng), " ", Pick(kGiven, rng)));
    f.set_main_products(absl::StrCat(Pick(kProducts, rng), ", ", Pick(kProducts, rng)));
    f.set_kind(FACILITY_KIND_HOUSEHOLD_BUSINESS);
    f.set_address(absl::StrCat("Thôn ", i % 12 + 1, ", ", Pick(kPlaces, rng)));
    f.set_latitude(20.5 + static_cast<double>(rng() % 10000) / 10000.0);
    f.set_longitude(105.5 + static_cast<double>(rng() % 10000) / 10000.0);
    f.set_workers(static_cast<int64_t>(rng() % 40 + 1));
    f.set_created_by(author);
    f.set_created_ms(1760000000000 + static_cast<int64_t>(rng() % 86400000));
    w.facilities.push_back(std::move(f));
  }
  for (int i = facilities; i < records; ++i) {
    const Facility& f = w.facilities[rng() % w.facilities.size()];
    Visit v;
    v.set_id(*sync::UuidToText(RandomUuidBytes(rng)));
    v.set_commune_id(f.commune_id());
    v.set_facility_id(f.id());
    v.set_collaborator_id(author);
    v.set_visited_ms(1764000000000 + static_cast<int64_t>(rng() % 86400000));
    v.set_latitude(f.latitude());
    v.set_longitude(f.longitude());
    v.set_purpose(VISIT_PURPOSE_FOLLOW_UP);
    v.set_findings("Cơ sở cần hỗ trợ máy sấy nông sản, công suất hiện tại thấp");
    v.add_needs(SUPPORT_CATEGORY_MACHINERY_TECHNOLOGY);
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

// An in-process server with one district and a coordinator and a collaborator.
struct Setup {
  std::unique_ptr<server::KcnetServer> server;
  std::vector<int64_t> communes;
  int64_t coordinator_id = 0;
  std::string address;
};

Setup StartServer(const std::string& dir) {
  Setup s;
  server::ServerOptions options = kcnet::testing::TestServerOptions(dir + "/server", "127.0.0.1:0");
  s.server = Must(server::KcnetServer::Start(options), "start server");
  server::Directory* d = s.server->directory();
  const int64_t province =
      Must(d->CreateOrgUnit("90", "Tỉnh", ORG_UNIT_LEVEL_PROVINCE, 0), "province").id();
  const int64_t district =
      Must(d->CreateOrgUnit("901", "Huyện", ORG_UNIT_LEVEL_DISTRICT, province), "district").id();
  for (int i = 1; i <= kCommunes; ++i) {
    s.communes.push_back(Must(d->CreateOrgUnit(absl::StrCat(90100 + i), absl::StrCat("Xã ", i),
                                               ORG_UNIT_LEVEL_COMMUNE, district),
                              "commune")
                             .id());
  }
  s.coordinator_id = Must(d->CreateUser("coord", "Điều phối viên", kPassword,
                                        ROLE_DISTRICT_COORDINATOR, {district}),
                          "coordinator")
                         .id();
  Must(d->CreateUser("ctv", "Cộng tác viên", kPassword, ROLE_COMMUNE_COLLABORATOR, {s.communes[0]}),
       "collaborator");
  s.address = absl::StrCat("127.0.0.1:", s.server->port());
  return s;
}

std::unique_ptr<sdk::Client> OpenClient(const std::string& path, const std::string& address,
                                        const std::string& user, bool durable) {
  sdk::ClientOptions o;
  o.path = path;
  o.device_id = absl::StrCat("bench-", user);
  o.server_address = address;
  o.durable = durable;
  o.sync_timeout = absl::Minutes(10);
  auto client = Must(sdk::Client::Open(o), "open client");
  Must(client->SignIn(user, kPassword), "sign in");
  return client;
}

int64_t PeakRssKib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      int64_t kib = 0;
      for (absl::string_view part : absl::StrSplit(line.substr(6), ' ', absl::SkipEmpty())) {
        if (absl::SimpleAtoi(part, &kib)) return kib;
      }
    }
  }
  return -1;
}

// ---- sdk_write ----

int RunWrite(const std::string& dir) {
  Setup s = StartServer(dir);
  auto client = OpenClient(dir + "/tablet.db", s.address, "ctv", /*durable=*/true);
  Facility f;
  f.set_commune_id(s.communes[0]);
  f.set_name("Cơ sở mây tre đan Phú Vinh");
  f.set_latitude(20.9);
  f.set_longitude(105.6);
  f = Must(client->RegisterFacility(f), "register facility");
  Must(client->SyncNow().status(), "first sync");
  constexpr int kWarm = 200, kWrites = 2000, kRounds = 10;
  auto visit = [&](int i) {
    Visit v;
    v.set_facility_id(f.id());
    v.set_visited_ms(1764000000000 + i);
    v.set_latitude(20.9);
    v.set_longitude(105.6);
    v.set_purpose(VISIT_PURPOSE_FOLLOW_UP);
    v.set_findings("Cơ sở cần hỗ trợ máy sấy nông sản, công suất hiện tại thấp");
    v.add_needs(SUPPORT_CATEGORY_MACHINERY_TECHNOLOGY);
    return v;
  };
  auto db = Must(sync::Db::Open(dir + "/plain.db", {.durable = true}), "open plain");
  Must(db->Exec("CREATE TABLE visit(id TEXT PRIMARY KEY NOT NULL, commune_id INTEGER, facility_id "
                "TEXT, collaborator_id INTEGER, visited_ms INTEGER, latitude REAL, longitude REAL, "
                "purpose INTEGER, findings TEXT, needs BLOB, next_visit_due_ms INTEGER, "
                "photo_refs TEXT);"
                "CREATE INDEX visit_commune ON visit(commune_id);"
                "CREATE INDEX visit_facility_id ON visit(facility_id);"),
       "create plain");
  std::mt19937_64 rng(7);
  auto plain = [&](int i) {
    auto txn = Must(sync::Transaction::Begin(db.get()), "begin");
    sync::Statement* st =
        Must(db->Prepare("INSERT INTO visit VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"), "prepare");
    const Visit v = visit(i);
    st->BindText(1, *sync::UuidToText(RandomUuidBytes(rng)));
    st->BindInt(2, s.communes[0]);
    st->BindText(3, f.id());
    st->BindInt(4, 1);
    st->BindInt(5, v.visited_ms());
    st->BindDouble(6, v.latitude());
    st->BindDouble(7, v.longitude());
    st->BindInt(8, v.purpose());
    st->BindText(9, v.findings());
    st->BindBlob(10, std::string(1, '\x02'));
    st->BindInt(11, 0);
    st->BindText(12, "");
    Must(st->Run(), "insert");
    st->Reset();
    Must(txn->Commit(), "commit");
  };
  for (int i = 0; i < kWarm; ++i) {
    Must(client->RecordVisit(visit(i)).status(), "warm-up");
    plain(i);
  }
  // Alternating rounds, so that both sides see the same disk and machine load.
  double sdk_s = 0, plain_s = 0;
  for (int round = 0; round < kRounds; ++round) {
    const int base = kWarm + round * (kWrites / kRounds);
    Timer sdk_timer;
    for (int i = 0; i < kWrites / kRounds; ++i) {
      Must(client->RecordVisit(visit(base + i)).status(), "record visit");
    }
    sdk_s += sdk_timer.Seconds();
    Timer plain_timer;
    for (int i = 0; i < kWrites / kRounds; ++i) plain(base + i);
    plain_s += plain_timer.Seconds();
  }
  std::cerr << "sdk_write: " << kWrites << " visits, SDK " << sdk_s << " s, plain " << plain_s
            << " s\n";
  Emit("sdk_write", "sdk_writes_per_s", kWrites / sdk_s, "writes/s");
  Emit("sdk_write", "plain_writes_per_s", kWrites / plain_s, "writes/s");
  Emit("sdk_write", "ratio_vs_plain", sdk_s / plain_s, "x");
  s.server->Shutdown(absl::Seconds(2));
  return 0;
}

// ---- sdk_sync_memory ----

int RunSyncChild(const std::string& dir, const std::string& address, int records) {
  auto client = OpenClient(dir + "/tablet.db", address, "coord", /*durable=*/true);
  Timer timer;
  sdk::SyncSummary summary = Must(client->SyncNow(), "sync");
  const double seconds = timer.Seconds();
  if (summary.received_changes < records) {
    Die(absl::StrCat("received ", summary.received_changes, " of ", records, " records"));
  }
  std::cout << PeakRssKib() << " " << seconds << "\n";
  return 0;
}

int RunSyncMemory(const std::string& dir, const char* self, int records) {
  Setup s = StartServer(dir);
  Load(s.server->store(), MakeWorld(s.communes, s.coordinator_id, records, 100 * kCommunes));
  const std::string out = dir + "/child.out";
  const pid_t pid = fork();
  if (pid == 0) {
    if (!std::freopen(out.c_str(), "w", stdout)) _exit(127);
    execl(self, self, "--child", dir.c_str(), s.address.c_str(), std::to_string(records).c_str(),
          nullptr);
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) Die("the tablet process failed");
  std::ifstream in(out);
  int64_t kib = 0;
  double seconds = 0;
  if (!(in >> kib >> seconds) || kib <= 0) Die("no figure from the tablet process");
  std::cerr << "sdk_sync_memory: " << records << " records in " << seconds << " s, VmHWM " << kib
            << " KiB\n";
  Emit("sdk_sync_memory", "peak_rss_mib", static_cast<double>(kib) / 1024.0, "MiB");
  Emit("sdk_sync_memory", "records_per_s", records / seconds, "records/s");
  s.server->Shutdown(absl::Seconds(2));
  return 0;
}

// ---- search ----

int RunSearch(const std::string& dir, int facilities) {
  Setup s = StartServer(dir);
  Load(s.server->store(), MakeWorld(s.communes, s.coordinator_id, facilities, facilities));
  auto client = OpenClient(dir + "/tablet.db", s.address, "coord", /*durable=*/false);
  Must(client->SyncNow().status(), "sync");
  std::mt19937_64 rng(11);
  // What people type: a place, a product, an owner's name; with or without marks, any case.
  const auto fold = [](const std::string& s) { return sync::FoldForSearch(s); };
  std::vector<std::string> queries;
  for (int i = 0; i < 2000; ++i) {
    std::string q;
    switch (rng() % 4) {
      case 0:
        q = Pick(kPlaces, rng);
        break;
      case 1:
        q = Pick(kProducts, rng);
        break;
      case 2:
        q = absl::StrCat(Pick(kFamily, rng), " ", Pick(kMiddle, rng));
        break;
      default:
        q = absl::StrCat(Pick(kProducts, rng), " ", Pick(kPlaces, rng));
        break;
    }
    if (rng() % 2 == 0) q = fold(q);
    if (rng() % 4 == 0) {
      for (char& c : q) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
    queries.push_back(q);
  }
  std::vector<double> ms;
  std::vector<std::pair<double, std::string>> slowest;
  size_t hits = 0;
  for (const std::string& q : queries) {
    Timer t;
    std::vector<sdk::FacilityHit> found = Must(client->SearchFacilities(q, 20), "search");
    ms.push_back(t.Seconds() * 1000);
    slowest.push_back({ms.back(), q});
    hits += found.size();
  }
  std::sort(ms.begin(), ms.end());
  std::sort(slowest.rbegin(), slowest.rend());
  for (size_t i = 0; i < 5 && i < slowest.size(); ++i) {
    double again = 1e9;  // the same query again, best of 5: noise or the query itself?
    for (int k = 0; k < 5; ++k) {
      Timer t;
      Must(client->SearchFacilities(slowest[i].second, 20), "search");
      again = std::min(again, t.Seconds() * 1000);
    }
    std::cerr << "search: slow query '" << slowest[i].second << "' " << slowest[i].first
              << " ms (again: " << again << " ms)\n";
  }
  std::cerr << "search: " << facilities << " facilities, " << queries.size() << " queries, "
            << static_cast<double>(hits) / static_cast<double>(queries.size()) << " hits each\n";
  Emit("search", "p50_ms", ms[ms.size() / 2], "ms");
  Emit("search", "p99_ms", ms[ms.size() * 99 / 100], "ms");
  s.server->Shutdown(absl::Seconds(2));
  return 0;
}

}  // namespace
}  // namespace kcnet::bench

int main(int argc, char** argv) {
  using namespace kcnet::bench;  // NOLINT
  const std::string name = kBench;
  if (argc >= 5 && std::string(argv[1]) == "--child") {
    return RunSyncChild(argv[2], argv[3], std::atoi(argv[4]));
  }
  char tmpl[] = "/tmp/kcnet-sdk-bench-XXXXXX";
  const char* dir = mkdtemp(tmpl);
  if (dir == nullptr) Die("mkdtemp failed");
  int rc = 0;
  if (name == "sdk_write") {
    rc = RunWrite(dir);
  } else if (name == "sdk_sync_memory") {
    rc = RunSyncMemory(dir, "/proc/self/exe", argc > 1 ? std::atoi(argv[1]) : 100000);
  } else {
    rc = RunSearch(dir, argc > 1 ? std::atoi(argv[1]) : 50000);
  }
  if (std::getenv("KCNET_BENCH_KEEP") == nullptr) std::filesystem::remove_all(dir);
  return rc;
}
