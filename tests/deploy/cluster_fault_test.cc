// cluster_fault_test (issue 18, point 7): the whole cluster on one machine, broken on purpose.
//
// Real parts only: a PostgreSQL primary and a synchronous standby made by
// deploy/postgres/standby.sh (tests/testing/pg_instance.h), three kcnet-server processes on
// them with --store=postgres: and the multi-host conninfo (target_session_attrs=read-write),
// Debian's nginx with deploy/nginx/kcnet.conf (TLS, grpc_pass over the three), and 20
// tablets (kcnet::sdk::Client, one thread each) of two collaborators writing facilities
// (new ones, and edits of their own) and syncing through nginx. Meanwhile:
//   1. kill -9 of a random instance, restarted a second later on the same port, six times;
//   2. kill -9 of the primary, and the standby promoted by deploy/postgres/promote.sh; the
//      instances find it by themselves.
// Then every tablet uploads what is pending and syncs once more, and the test checks, on
// the promoted standby (the new primary):
//   - every write a tablet accepted is there exactly once (its unique name counted among
//     the facilities), and nothing is there that no tablet wrote;
//   - no conflict was recorded and no tablet got a report (a replay applied twice shows as
//     a conflict of identical stamps; a tablet that took the server for restored hands
//     back, which the server refuses with a report);
//   - every tablet converges: each of its buckets has the store's checksum and record count.
//
// The directory (accounts, tokens, device credentials) is still a SQLite file per instance
// until it moves to PostgreSQL: the tablets sign in on the first instance alone, and the
// other two start from a copy of its data directory, so every instance knows every tablet.
// A tablet whose token or credential is refused anyway signs in again (counted): once the
// directory is shared, that path is simply not taken, and the test runs unchanged.
//
// Reproduce the random choices with KCNET_CLUSTER_SEED=N (printed at the start). Skipped
// when PostgreSQL, nginx or openssl is absent. Label cluster (~1-2 min).
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client_sdk/cli/child_process.h"
#include "gtest/gtest.h"
#include "kcnet/client.h"
#include "server/pgstore/pg_conn.h"
#include "server/pgstore/pg_server_store.h"
#include "sync/model/record_types.h"
#include "tests/testing/pg_instance.h"
#include "tests/testing/test_tls.h"
#include "tests/testing/test_util.h"

namespace kcnet::deploy {
namespace {

using ::kcnet::cli::ChildProcess;
using ::kcnet::cli::RunOutput;
using ::kcnet::cli::RunProgram;
using ::kcnet::sdk::Client;
using ::kcnet::sdk::ClientOptions;
using ::kcnet::testing::PgInstance;
using ::kcnet::v1::Facility;

constexpr int kTablets = 20;
constexpr int kInstances = 3;
constexpr int kInstanceKills = 6;
constexpr char kMarkerPrefix[] = "Cơ sở cụm ";  // + tablet "-" number: unique per write

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string NginxPath() {
  for (const char* path : {"/usr/sbin/nginx", "/usr/bin/nginx"}) {
    if (access(path, X_OK) == 0) return path;
  }
  return "";
}

// A port nothing listens on now (the kernel's pick, released at once).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t size = sizeof(address);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), size) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) == 0) {
    port = ntohs(address.sin_port);
  }
  close(fd);
  return port;
}

bool Accepts(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
  close(fd);
  return ok;
}

uint64_t SeedFromEnvironment() {
  uint64_t seed = 0;
  const char* text = std::getenv("KCNET_CLUSTER_SEED");
  if (text != nullptr && absl::SimpleAtoi(text, &seed)) return seed;
  return std::random_device{}();
}

// How the standby is attached, by query on the primary: "sync", "async" or "".
std::string SyncState(const PgInstance& primary) {
  auto conn = pgstore::PgConn::Connect(primary.conninfo("postgres"));
  if (!conn.ok()) return "";
  auto rows = (*conn)->Query(
      "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby1'");
  if (!rows.ok() || rows->rows() == 0) return "";
  return std::string(rows->Get(0, 0));
}

struct Tablet {
  int index = 0;
  std::string device_id;
  std::string path;
  std::string user;  // collab1 or collab2 (seed-demo's accounts)
  std::unique_ptr<Client> client;
  std::vector<std::string> own;  // facility ids registered here (for edits)
  int written = 0;
  int syncs = 0;
  int failed_syncs = 0;
  int sign_ins = 0;  // sign-ins after the first (a token or credential refused)
  std::mt19937_64 rng;
};

class ClusterFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = SeedFromEnvironment();
    std::printf("cluster_fault_test: KCNET_CLUSTER_SEED=%llu\n",
                static_cast<unsigned long long>(seed_));
    nginx_ = NginxPath();
    if (nginx_.empty()) GTEST_SKIP() << "nginx is not installed (apt-get install nginx-light)";
    certs_ = std::make_unique<kcnet::testing::TestCertificates>(dir_.path());
    if (!certs_->ok()) GTEST_SKIP() << certs_->error();
    auto primary = PgInstance::Start();
    if (absl::IsNotFound(primary.status())) GTEST_SKIP() << primary.status();
    ASSERT_TRUE(primary.ok()) << primary.status();
    primary_ = *std::move(primary);
    auto standby = PgInstance::StartStandby(*primary_, KCNET_PG_STANDBY_SCRIPT, "standby1");
    ASSERT_TRUE(standby.ok()) << standby.status();
    standby_ = *std::move(standby);
    const absl::Time attached_by = absl::Now() + absl::Seconds(30);
    while (SyncState(*primary_) != "sync" && absl::Now() < attached_by) {
      absl::SleepFor(absl::Milliseconds(50));
    }
    ASSERT_EQ(SyncState(*primary_), "sync");
    conninfo_ =
        absl::StrCat("host=127.0.0.1,127.0.0.1 port=", primary_->port(), ",", standby_->port(),
                     " user=kcnet dbname=kcnet connect_timeout=2 "
                     "target_session_attrs=read-write");
    for (int i = 0; i < kInstances; ++i) ports_.push_back(FreePort());
    processes_.resize(kInstances);
  }

  void TearDown() override {
    for (auto& t : tablets_) t->client.reset();
    if (nginx_process_ != nullptr) nginx_process_->Stop(absl::Seconds(10));
    for (auto& p : processes_) {
      if (p != nullptr) p->Stop(absl::Seconds(10));
    }
  }

  std::string DataDir(int i) const { return dir_.File(absl::StrCat("instance", i)); }

  // Starts instance `i` on its port and waits until it listens.
  void StartInstance(int i) {
    const std::string err = dir_.File(absl::StrCat("instance", i, ".", ++starts_, ".err"));
    absl::StatusOr<std::unique_ptr<ChildProcess>> process = ChildProcess::Start(
        {KCNET_SERVER_PATH, "--data_dir=" + DataDir(i), "--store=postgres:" + conninfo_,
         absl::StrCat("--listen=127.0.0.1:", ports_[i]), "--trusted_proxies=127.0.0.1"},
        err);
    ASSERT_TRUE(process.ok()) << process.status();
    std::optional<std::string> line = (*process)->ReadLine(absl::Seconds(60));
    ASSERT_TRUE(line.has_value()) << ReadFile(err);
    ASSERT_TRUE(absl::StrContains(*line, absl::StrCat("listening on 127.0.0.1:", ports_[i])))
        << *line << ReadFile(err);
    processes_[i] = *std::move(process);
  }

  // Renders kcnet.conf for the three instances and starts nginx; returns its port.
  int StartNginx() {
    const std::string prefix = dir_.File("nginx");
    std::filesystem::create_directories(prefix + "/logs");
    const int port = FreePort();
    std::vector<std::string> render = {
        "/bin/bash", KCNET_RENDER_NGINX,    "--listen", absl::StrCat(port),
        "--cert",    certs_->server_cert(), "--key",    certs_->server_key(),
        "--log-dir", prefix + "/logs"};
    for (int p : ports_) render.insert(render.end(), {"--grpc", absl::StrCat("127.0.0.1:", p)});
    RunOutput conf = RunProgram(render, prefix + "/render.err", absl::Seconds(30));
    EXPECT_EQ(conf.exit_code, 0) << ReadFile(prefix + "/render.err");
    std::ofstream(prefix + "/kcnet.conf") << conf.output;
    std::ofstream main(prefix + "/nginx.conf");
    main << "daemon off;\nworker_processes 1;\npid " << prefix << "/nginx.pid;\n"
         << "error_log " << prefix << "/logs/error.log info;\n"
         << (geteuid() == 0 ? "user root;\n" : "") << "events { worker_connections 512; }\n"
         << "http {\n  access_log off;\n";
    for (const char* temp : {"client_body", "proxy", "fastcgi", "uwsgi", "scgi"}) {
      main << "  " << temp << "_temp_path " << prefix << "/" << temp << ";\n";
    }
    main << "  include " << prefix << "/kcnet.conf;\n}\n";
    main.close();
    absl::StatusOr<std::unique_ptr<ChildProcess>> nginx = ChildProcess::Start(
        {nginx_, "-p", prefix, "-c", prefix + "/nginx.conf"}, prefix + "/nginx.stderr");
    EXPECT_TRUE(nginx.ok()) << nginx.status();
    if (!nginx.ok()) return 0;
    nginx_process_ = *std::move(nginx);
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (!Accepts(port) && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(20));
    EXPECT_TRUE(Accepts(port)) << ReadFile(prefix + "/logs/error.log");
    return port;
  }

  absl::Status Open(Tablet& t, const std::string& address, bool tls) {
    t.client.reset();
    ClientOptions o;
    o.path = t.path;
    o.device_id = t.device_id;
    o.server_address = address;
    o.use_tls = tls;
    if (tls) o.tls_ca_file = certs_->ca_cert();
    o.durable = false;
    o.sync_timeout = absl::Seconds(20);
    o.seed = seed_ + static_cast<uint64_t>(t.index);
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Open(o);
    if (!client.ok()) return client.status();
    t.client = *std::move(client);
    return absl::OkStatus();
  }

  static std::string Password(const std::string& user) {
    return absl::StrCat("demo-", user, "-pass");
  }

  // One write: a new facility (unique name), or an edit of one registered here.
  void Write(Tablet& t) {
    std::bernoulli_distribution edit(0.3);
    if (!t.own.empty() && edit(t.rng)) {
      std::uniform_int_distribution<size_t> pick(0, t.own.size() - 1);
      absl::StatusOr<Facility> f = t.client->GetFacility(t.own[pick(t.rng)]);
      ASSERT_TRUE(f.ok()) << f.status();
      f->set_workers(static_cast<int32_t>(t.rng() % 500));
      absl::StatusOr<Facility> updated = t.client->UpdateFacility(*f, {"workers"});
      ASSERT_TRUE(updated.ok()) << updated.status();
      return;
    }
    Facility f;
    f.set_commune_id(communes_.at(t.user));
    f.set_name(absl::StrCat(kMarkerPrefix, t.index, "-", ++t.written));
    f.set_owner_name("Nguyễn Văn An");
    f.set_kind(v1::FACILITY_KIND_HOUSEHOLD_BUSINESS);
    f.set_sector(v1::SECTOR_HANDICRAFTS);
    f.set_latitude(20.1);
    f.set_longitude(105.5);
    f.set_workers(12);
    absl::StatusOr<Facility> made = t.client->RegisterFacility(f);
    ASSERT_TRUE(made.ok()) << made.status();
    t.own.push_back(made->id());
    absl::MutexLock lock(&mu_);
    accepted_.insert(f.name());
  }

  // One sync; a refused token or credential (not yet shared by every instance) signs in again.
  absl::Status Sync(Tablet& t) {
    ++t.syncs;
    absl::Status status = t.client->SyncNow().status();
    if (absl::IsUnauthenticated(status)) {
      ++t.sign_ins;
      absl::Status signed_in = t.client->SignIn(t.user, Password(t.user));
      if (!signed_in.ok()) return signed_in;
      status = t.client->SyncNow().status();
    }
    if (!status.ok()) ++t.failed_syncs;
    return status;
  }

  // Syncs until nothing waits for upload; the cluster may still be recovering.
  absl::Status Upload(Tablet& t) {
    absl::Status status;
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (absl::Now() < deadline) {
      status = Sync(t);
      if (status.ok() && t.client->Status().pending_uploads == 0) return absl::OkStatus();
      absl::SleepFor(absl::Milliseconds(200));
    }
    return status.ok() ? absl::DeadlineExceededError(absl::StrCat(
                             t.client->Status().pending_uploads, " still pending after 60 s"))
                       : status;
  }

  kcnet::testing::TempDir dir_;
  uint64_t seed_ = 0;
  std::string nginx_;
  std::unique_ptr<kcnet::testing::TestCertificates> certs_;
  std::unique_ptr<PgInstance> primary_;
  std::unique_ptr<PgInstance> standby_;
  std::string conninfo_;
  std::vector<int> ports_;
  std::vector<std::unique_ptr<ChildProcess>> processes_;
  std::unique_ptr<ChildProcess> nginx_process_;
  int starts_ = 0;
  std::map<std::string, int64_t> communes_;
  int32_t province_ =
      0;  // the org unit id of their province  // user -> the commune (bucket) they write in
  std::vector<std::unique_ptr<Tablet>> tablets_;
  absl::Mutex mu_;
  std::set<std::string> accepted_ ABSL_GUARDED_BY(mu_);
};

TEST_F(ClusterFaultTest, InstancesAndThePrimaryKilledNothingAcknowledgedLostEveryTabletConverges) {
  // The demo accounts and records, in the shared database (the directory is there since
  // issue 18's shared directory) and one data directory (plans); the tablets sign in on
  // one instance, and the others start from a copy of its data directory.
  RunOutput seed = RunProgram(
      {KCNET_ADMIN_PATH, "seed-demo", "--data_dir=" + DataDir(0), "--store=postgres:" + conninfo_},
      dir_.File("seed.err"), absl::Seconds(60));
  ASSERT_EQ(seed.exit_code, 0) << ReadFile(dir_.File("seed.err"));
  ASSERT_NO_FATAL_FAILURE(StartInstance(0));
  std::mt19937_64 rng(seed_);
  for (int i = 0; i < kTablets; ++i) {
    auto t = std::make_unique<Tablet>();
    t->index = i;
    t->device_id = absl::StrCat("cluster-tablet-", i);
    t->path = dir_.File(absl::StrCat("tablet-", i, ".db"));
    t->user = i % 2 == 0 ? "collab1" : "collab2";
    t->rng.seed(seed_ * 1000003 + static_cast<uint64_t>(i));
    ASSERT_TRUE(Open(*t, absl::StrCat("127.0.0.1:", ports_[0]), /*tls=*/false).ok());
    absl::Status signed_in = t->client->SignIn(t->user, Password(t->user));
    ASSERT_TRUE(signed_in.ok()) << signed_in;
    if (!communes_.contains(t->user)) {
      absl::StatusOr<v1::OrgUnit> commune =
          t->client->FindOrgUnitByCode(t->user == "collab1" ? "90101" : "90201");
      ASSERT_TRUE(commune.ok()) << commune.status();
      communes_[t->user] = commune->id();
      absl::StatusOr<v1::OrgUnit> province = t->client->FindOrgUnitByCode("90");
      ASSERT_TRUE(province.ok()) << province.status();
      province_ = province->id();
    }
    t->client.reset();
    tablets_.push_back(std::move(t));
  }
  ASSERT_EQ(processes_[0]->Stop(absl::Seconds(15)), 0);
  for (int i = 1; i < kInstances; ++i) {
    std::filesystem::copy(DataDir(0), DataDir(i), std::filesystem::copy_options::recursive);
  }
  for (int i = 0; i < kInstances; ++i) ASSERT_NO_FATAL_FAILURE(StartInstance(i));
  const int port = StartNginx();
  ASSERT_GT(port, 0);
  const std::string address = absl::StrCat("localhost:", port);
  for (auto& t : tablets_) ASSERT_TRUE(Open(*t, address, /*tls=*/true).ok());

  // The tablets write and sync through nginx until told to stop.
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (auto& owned : tablets_) {
    Tablet* t = owned.get();
    threads.emplace_back([this, t, &stop] {
      while (!stop.load()) {
        const int writes = 1 + static_cast<int>(t->rng() % 3);
        for (int w = 0; w < writes; ++w) Write(*t);
        (void)Sync(*t);  // failures are expected while an instance or the primary is down
        absl::SleepFor(absl::Milliseconds(50 + static_cast<int64_t>(t->rng() % 250)));
      }
    });
  }

  // 1. kill -9 of random instances, each restarted a second later.
  int kills = 0;
  for (int k = 0; k < kInstanceKills; ++k) {
    absl::SleepFor(absl::Milliseconds(1500 + static_cast<int64_t>(rng() % 1500)));
    const int victim = static_cast<int>(rng() % kInstances);
    processes_[victim]->Kill();
    ++kills;
    absl::SleepFor(absl::Seconds(1));
    ASSERT_NO_FATAL_FAILURE(StartInstance(victim));
  }
  // 2. The primary's machine is lost; the standby is promoted.
  absl::SleepFor(absl::Seconds(2));
  const absl::Time kill_at = absl::Now();
  primary_->Kill();
  absl::Status promoted = standby_->Promote(KCNET_PG_PROMOTE_SCRIPT);
  ASSERT_TRUE(promoted.ok()) << promoted;
  std::printf("cluster_fault_test: standby promoted %.2f s after the primary was killed\n",
              absl::ToDoubleSeconds(absl::Now() - kill_at));
  absl::SleepFor(absl::Seconds(8));
  stop = true;
  for (std::thread& thread : threads) thread.join();
  ASSERT_FALSE(HasFailure()) << "KCNET_CLUSTER_SEED=" << seed_;

  // Everything pending uploads; then everyone downloads everyone's.
  for (auto& t : tablets_) {
    absl::Status status = Upload(*t);
    ASSERT_TRUE(status.ok()) << "tablet " << t->index << ": " << status;
  }
  for (auto& t : tablets_) {
    absl::Status status = Sync(*t);
    ASSERT_TRUE(status.ok()) << "tablet " << t->index << ": " << status;
  }

  // On the new primary: every accepted write exactly once, nothing else, no conflict.
  // Both communes are in the demo province "90": kcnet-server partitions by province, and
  // a store reading its rows must know the same (PgServerStoreOptions::province_of).
  pgstore::PgServerStoreOptions pg_options;
  pg_options.province_of = [province = province_](int64_t) { return province; };
  auto store = pgstore::PgServerStore::Open(standby_->conninfo(), &model::KcnetSchema(), {},
                                            std::move(pg_options));
  ASSERT_TRUE(store.ok()) << store.status();
  std::vector<int64_t> buckets;
  for (const auto& entry : communes_) buckets.push_back(entry.second);
  std::map<std::string, int> on_server;
  sync::ListQuery query;
  query.type = model::kFacilityType;
  query.buckets = buckets;
  query.newest_first = false;
  query.limit = 500;
  while (true) {
    absl::StatusOr<std::vector<v1::RecordChange>> page = (*store)->List(query);
    ASSERT_TRUE(page.ok()) << page.status();
    if (page->empty()) break;
    for (const v1::RecordChange& change : *page) {
      Facility f;
      ASSERT_TRUE(model::FromChange(change, &f).ok());
      if (absl::StartsWith(f.name(), kMarkerPrefix)) ++on_server[f.name()];
      query.after = change.op();
    }
  }
  std::set<std::string> accepted;
  {
    absl::MutexLock lock(&mu_);
    accepted = accepted_;
  }
  EXPECT_GT(accepted.size(), 100u);
  for (const std::string& marker : accepted) {
    EXPECT_EQ(on_server[marker], 1) << marker << "; KCNET_CLUSTER_SEED=" << seed_;
  }
  for (const auto& entry : on_server) {
    EXPECT_TRUE(accepted.contains(entry.first)) << entry.first << " was never written";
  }
  absl::StatusOr<std::vector<v1::Conflict>> conflicts =
      (*store)->ListConflicts(buckets, /*include_resolved=*/true, 0, 100);
  ASSERT_TRUE(conflicts.ok()) << conflicts.status();
  EXPECT_TRUE(conflicts->empty()) << conflicts->size() << " conflicts, the first: "
                                  << (conflicts->empty() ? "" : conflicts->front().DebugString());

  // Every tablet converged: its buckets' checksums and counts are the store's; no report.
  int syncs = 0, failed = 0, sign_ins = 0;
  for (auto& t : tablets_) {
    syncs += t->syncs;
    failed += t->failed_syncs;
    sign_ins += t->sign_ins;
    EXPECT_EQ(t->client->Status().pending_uploads, 0) << "tablet " << t->index;
    absl::StatusOr<std::vector<sdk::Report>> reports = t->client->ListReports();
    ASSERT_TRUE(reports.ok()) << reports.status();
    EXPECT_TRUE(reports->empty()) << "tablet " << t->index << " got " << reports->size()
                                  << " reports, the first: "
                                  << (reports->empty() ? "" : reports->front().reason);
    absl::StatusOr<std::vector<v1::BucketCheckpoint>> mine = t->client->Checkpoints();
    ASSERT_TRUE(mine.ok()) << mine.status();
    EXPECT_EQ(mine->size(), 1u) << "tablet " << t->index;
    for (const v1::BucketCheckpoint& cp : *mine) {
      absl::StatusOr<v1::BucketCheckpoint> server = (*store)->Checkpoint(cp.bucket());
      ASSERT_TRUE(server.ok()) << server.status();
      EXPECT_EQ(cp.checksum(), server->checksum()) << "tablet " << t->index;
      EXPECT_EQ(cp.records(), server->records()) << "tablet " << t->index;
      EXPECT_EQ(cp.op(), server->op()) << "tablet " << t->index;
    }
  }
  std::printf(
      "cluster_fault_test: %zu accepted writes, %d syncs (%d failed), %d instance kills, "
      "%d sign-ins again (refused tokens)\n",
      accepted.size(), syncs, failed, kills, sign_ins);
  // The faults were felt: some syncs failed.
  EXPECT_GT(failed, 0);
}

}  // namespace
}  // namespace kcnet::deploy
