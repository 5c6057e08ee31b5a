// Server restore from a backup (issue 13, point 3), with real processes: 4 fault_device
// processes write and sync against the real kcnet-server; `kcnet-admin backup` copies the
// data directory while they do; they keep writing and syncing (so the devices acknowledge,
// download and prune writes that the backup does not hold, and their cursors pass the
// backup's last op); two of them then write offline (pending work); the server is stopped
// and `kcnet-admin restore` puts the backup back (refused first while the server runs);
// the server starts again and every device writes and syncs again while the server is
// killed (kill -9) and restarted a few times. Then CheckConvergence:
// every write any device acknowledged is on the server exactly once with its latest value,
// nothing is pending, refused or in conflict, and every replica has the server's checksums.
//
// On PostgreSQL (`Stores/RestoreTest.*/Postgres`, a PostgreSQL of the test's own) the
// backup is `pg_dump` of the database while the devices write, the restore `pg_restore`
// into a new database followed by `kcnet-admin new-incarnation --restored` (refused first
// while the server is connected), and the server starts again on the restored database.
//
// Seeded: KCNET_FAULT_SEED (printed as seed=N).
#include <signal.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "server/pgstore/pg_conn.h"
#include "server/pgstore/pg_server_store.h"
#include "sync/model/record_types.h"
#include "sync/sqlite.h"
#include "tests/fault/fault_util.h"
#include "tests/testing/pg_instance.h"
#include "tests/testing/test_util.h"

#ifndef KCNET_SERVER_PATH
#error "KCNET_SERVER_PATH must name the kcnet-server binary"
#endif
#ifndef KCNET_ADMIN_PATH
#error "KCNET_ADMIN_PATH must name the kcnet-admin binary"
#endif
#ifndef FAULT_DEVICE_PATH
#error "FAULT_DEVICE_PATH must name the fault_device binary"
#endif

namespace kcnet::fault {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

enum class StoreKind { kSqlite, kPostgres };

class RestoreTest : public ::testing::TestWithParam<StoreKind> {
 protected:
  static void TearDownTestSuite() { pg_.reset(); }

  void SetUp() override {
    if (GetParam() == StoreKind::kPostgres) {
      absl::StatusOr<std::unique_ptr<kcnet::testing::PgInstance>> pg =
          kcnet::testing::PgInstance::Start();
      if (absl::IsNotFound(pg.status())) GTEST_SKIP() << pg.status();
      ASSERT_TRUE(pg.ok()) << pg.status();
      pg_ = *std::move(pg);
      ASSERT_TRUE(pg_->CreateDatabase("live").ok());
      conninfo_ = pg_->conninfo("live");
    }
    seed_ = FaultSeed();
    std::printf("seed=%llu (replay: KCNET_FAULT_SEED=%llu)\n",
                static_cast<unsigned long long>(seed_), static_cast<unsigned long long>(seed_));
    std::fflush(stdout);
    rng_ = absl::BitGen(std::seed_seq{seed_});
    data_dir_ = tmp_.File("server");
    absl::StatusOr<std::vector<Account>> accounts =
        SetUpDirectory(data_dir_, kDevices, /*coordinators=*/1, conninfo_);
    ASSERT_TRUE(accounts.ok()) << accounts.status();
    accounts_ = *std::move(accounts);
    server_ =
        std::make_unique<ServerProcess>(KCNET_SERVER_PATH, data_dir_, tmp_.File("server.log"));
    if (!conninfo_.empty()) server_->set_extra_args({"--store=postgres:" + conninfo_});
    ASSERT_TRUE(server_->Start().ok()) << ReadFile(tmp_.File("server.log"));
    procs_.resize(kDevices);
  }

  void TearDown() override {
    for (auto& p : procs_) p.reset();
    if (server_ != nullptr) server_->Kill9();
    if (HasFailure()) {
      std::printf("seed=%llu failed; server log tail:\n%s\n",
                  static_cast<unsigned long long>(seed_),
                  ReadFile(tmp_.File("server.log")).substr(0, 4000).c_str());
      for (int i = 0; i < kDevices; ++i) {
        std::printf("device %d stderr:\n%s\n", i, ReadFile(DeviceFile(i, "err")).c_str());
      }
    }
  }

  std::string DeviceFile(int i, const std::string& ext) const {
    return tmp_.File(absl::StrCat("dev", i, ".", ext));
  }
  std::string DeviceId(int i) const { return absl::StrCat("restore-dev-", i); }

  std::vector<std::string> DeviceArgs(int i, const std::string& mode) {
    const Account& a = accounts_[i];
    return {FAULT_DEVICE_PATH,
            "--store=" + DeviceFile(i, "db"),
            "--device_id=" + DeviceId(i),
            absl::StrCat("--index=", i),
            "--token=" + a.token,
            "--target=" + server_->target(),
            "--log=" + DeviceFile(i, "log"),
            absl::StrCat("--seed=", seed_),
            "--mode=" + mode,
            "--stop_file=" + tmp_.File("stop"),
            absl::StrCat("--commune=", a.commune),
            absl::StrCat("--user_id=", a.user_id)};
  }

  // Runs device i in `mode` to its end; expects exit 0.
  void RunDevice(int i, const std::string& mode, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = DeviceArgs(i, mode);
    argv.insert(argv.end(), extra.begin(), extra.end());
    Process p(argv, DeviceFile(i, "err"));
    ASSERT_TRUE(p.started());
    EXPECT_EQ(p.Wait(absl::Seconds(60)), std::optional<int>(0))
        << "device " << i << " " << mode << ": " << ReadFile(DeviceFile(i, "err"));
  }

  // Every device writes and syncs in a loop for `how_long`, then stops and syncs until
  // caught up.
  void WriteAndSync(absl::Duration how_long, const std::function<void()>& meanwhile = nullptr) {
    std::remove(tmp_.File("stop").c_str());
    for (int i = 0; i < kDevices; ++i) {
      procs_[i] = std::make_unique<Process>(DeviceArgs(i, "loop"), DeviceFile(i, "err"));
      ASSERT_TRUE(procs_[i]->started());
    }
    const absl::Time end = absl::Now() + how_long;
    if (meanwhile) {
      absl::SleepFor(how_long * absl::Uniform(rng_, 0.2, 0.6));
      meanwhile();
    }
    absl::SleepFor(end - absl::Now());
    { std::ofstream(tmp_.File("stop")) << "stop\n"; }
    for (int i = 0; i < kDevices; ++i) {
      const std::optional<int> code = procs_[i]->Wait(absl::Seconds(60));
      EXPECT_EQ(code, std::optional<int>(0)) << "device " << i << " exit " << code.value_or(-1000)
                                             << ": " << ReadFile(DeviceFile(i, "err"));
      procs_[i].reset();
    }
  }

  // Runs kcnet-admin with `args`; returns its exit code and its stderr in *err.
  int Admin(const std::vector<std::string>& args, std::string* err) {
    std::vector<std::string> argv = {KCNET_ADMIN_PATH, "--data_dir=" + data_dir_};
    argv.insert(argv.end(), args.begin(), args.end());
    const std::string err_path = tmp_.File(absl::StrCat("admin", ++admin_runs_, ".err"));
    Process p(argv, err_path);
    if (!p.started()) return -1000;
    while (p.ReadLine(absl::Seconds(30)).has_value()) {
    }
    const std::optional<int> code = p.Wait(absl::Seconds(30));
    *err = ReadFile(err_path);
    return code.value_or(-1000);
  }

  // Runs a PostgreSQL client tool (pg_dump, pg_restore) to its end; its exit code.
  int PgTool(const std::string& tool, std::vector<std::string> args, std::string* err) {
    args.insert(args.begin(), pg_->bin() + "/" + tool);
    const std::string err_path = tmp_.File(absl::StrCat(tool, ++admin_runs_, ".err"));
    Process p(args, err_path);
    if (!p.started()) return -1000;
    while (p.ReadLine(absl::Seconds(60)).has_value()) {
    }
    const std::optional<int> code = p.Wait(absl::Seconds(60));
    *err = ReadFile(err_path);
    return code.value_or(-1000);
  }

  // The backup, while the server runs: kcnet-admin backup (SQLite) or pg_dump, which
  // reads one consistent snapshot of the database.
  int Backup(const std::string& to, std::string* err) {
    if (conninfo_.empty()) return Admin({"backup", "--to=" + to}, err);
    return PgTool("pg_dump", {"--format=custom", "--file=" + to, "--dbname=" + conninfo_}, err);
  }

  // The restore, the server stopped: kcnet-admin restore (SQLite), or pg_restore into a new
  // database, then kcnet-admin new-incarnation --restored; the server then runs on it.
  int Restore(const std::string& from, std::string* err) {
    if (conninfo_.empty()) return Admin({"restore", "--from=" + from}, err);
    if (!pg_->CreateDatabase("restored").ok()) return -1000;
    const std::string restored = pg_->conninfo("restored");
    const int code = PgTool("pg_restore", {"--no-owner", "--dbname=" + restored, from}, err);
    if (code != 0) return code;
    conninfo_ = restored;
    server_->set_extra_args({"--store=postgres:" + conninfo_});
    return NewIncarnation(err);
  }
  int NewIncarnation(std::string* err) {
    return Admin({"new-incarnation", "--restored", "--store=postgres:" + conninfo_}, err);
  }

  // Live facility records in the stopped server's store.
  int64_t FacilityRecords() {
    if (conninfo_.empty()) {
      absl::StatusOr<std::unique_ptr<sync::Db>> db = sync::Db::Open(data_dir_ + "/kcnet.db");
      if (!db.ok()) return -1;
      return (*db)->QueryInt("SELECT count(*) FROM facility").value_or(-1);
    }
    absl::StatusOr<std::unique_ptr<pgstore::PgConn>> db = pgstore::PgConn::Connect(conninfo_);
    if (!db.ok()) return -1;
    absl::StatusOr<pgstore::PgResult> n =
        (*db)->Query("SELECT count(*) FROM kcnet_records WHERE type = $1 AND NOT deleted",
                     {pgstore::PgParam::Int(model::kFacilityType)});
    return n.ok() ? n->GetInt(0, 0) : -1;
  }

  static inline std::unique_ptr<kcnet::testing::PgInstance> pg_;
  std::string conninfo_;  // the PostgreSQL variant's database; empty on SQLite
  static constexpr int kDevices = 4;
  static constexpr int kServerKills = 4;
  kcnet::testing::TempDir tmp_;
  uint64_t seed_ = 0;
  absl::BitGen rng_;
  int admin_runs_ = 0;
  std::string data_dir_;
  std::vector<Account> accounts_;
  std::unique_ptr<ServerProcess> server_;
  std::vector<std::unique_ptr<Process>> procs_;
};

TEST_P(RestoreTest, RestoredServerWedgesNoTabletAndLosesNoAcknowledgedWrite) {
  const absl::Time started = absl::Now();
  RunDevice(0, "seed", {"--count=300"});
  if (HasFatalFailure()) return;

  // Before the backup, and the backup itself while the devices write and sync.
  const std::string backup = tmp_.File("backup");
  std::string err;
  int backup_code = -1;
  absl::Duration backup_took;
  WriteAndSync(absl::Seconds(2), [&] {
    const absl::Time t = absl::Now();
    backup_code = Backup(backup, &err);
    backup_took = absl::Now() - t;
  });
  ASSERT_EQ(backup_code, 0) << err;

  // After the backup: writes the backup does not hold, acknowledged, downloaded and pruned
  // by their devices (every device ends caught up).
  WriteAndSync(absl::Seconds(3));
  for (int i = 0; i < kDevices; ++i) RunDevice(i, "final");
  // Pending work at the moment of the restore: two tablets write offline.
  for (int i = 1; i <= 2; ++i) RunDevice(i, "offline", {"--count=6"});
  if (HasFatalFailure()) return;

  // A restore (or a new incarnation) while the server runs is refused and changes nothing.
  if (conninfo_.empty()) {
    EXPECT_EQ(Admin({"restore", "--from=" + backup}, &err), 1) << err;
    EXPECT_TRUE(absl::StrContains(err, "stop the server")) << err;
  } else {
    EXPECT_EQ(NewIncarnation(&err), 1) << err;
    EXPECT_TRUE(absl::StrContains(err, "stop every kcnet-server")) << err;
  }

  ASSERT_TRUE(server_->Stop().ok()) << ReadFile(tmp_.File("server.log"));
  const absl::Time t = absl::Now();
  ASSERT_EQ(Restore(backup, &err), 0) << err;
  const absl::Duration restore_took = absl::Now() - t;
  // What the restored server holds: fewer records than the devices acknowledged.
  const int64_t records_in_backup = FacilityRecords();
  ASSERT_GE(records_in_backup, 0);
  ASSERT_TRUE(server_->Start().ok()) << ReadFile(tmp_.File("server.log"));

  // Every device writes and syncs against the restored server, which is killed (kill -9)
  // a few times while the devices recover: hand-backs and renumbered pushes whose
  // acknowledgement never left are pushed again. Then two final rounds.
  int kills = 0;
  WriteAndSync(absl::Seconds(3), [&] {
    for (; kills < kServerKills; ++kills) {
      server_->Kill9();
      ASSERT_TRUE(server_->Start().ok()) << "restart " << kills;
      absl::SleepFor(absl::Milliseconds(absl::Uniform(rng_, 50, 300)));
    }
  });
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < kDevices; ++i) RunDevice(i, "final");
  }
  ASSERT_TRUE(server_->Stop().ok()) << ReadFile(tmp_.File("server.log"));

  std::vector<DeviceUnderCheck> checked;
  DeviceLog total;
  for (int i = 0; i < kDevices; ++i) {
    absl::StatusOr<DeviceLog> log = ReadDeviceLog(DeviceFile(i, "log"));
    ASSERT_TRUE(log.ok()) << log.status();
    checked.push_back({DeviceId(i), DeviceFile(i, "db"), i, accounts_[i], *log});
    total.acked_writes += log->acked_writes;
    total.applied += log->applied;
    total.duplicate += log->duplicate;
    total.refused += log->refused;
    total.conflict += log->conflict;
    total.out_of_order += log->out_of_order;
    total.push_acks += log->push_acks;
    total.syncs_ok += log->syncs_ok;
    total.syncs_failed += log->syncs_failed;
    total.recoveries += log->recoveries;
    total.handbacks += log->handbacks;
    total.renumbered += log->renumbered;
    // Every device recovered exactly once: it saw the new incarnation once.
    EXPECT_EQ(log->recoveries, 1) << "device " << i;
  }
  CheckReport report;
  if (conninfo_.empty()) {
    report = CheckConvergence(data_dir_, checked, /*server_restored=*/true);
  } else {
    absl::StatusOr<std::unique_ptr<pgstore::PgServerStore>> store =
        pgstore::PgServerStore::Open(conninfo_, &model::KcnetSchema());
    ASSERT_TRUE(store.ok()) << store.status();
    report = CheckConvergence(**store, checked, /*server_restored=*/true);
  }
  std::printf(
      "restore: seed=%llu devices=%d server_kills_after_restore=%d runtime=%.1fs backup=%.2fs "
      "restore=%.2fs "
      "acknowledged_writes=%lld server_records=%lld push_acks=%lld applied=%lld "
      "duplicate=%lld refused=%lld conflict=%lld out_of_order=%lld syncs_ok=%lld "
      "syncs_failed=%lld records_in_backup=%lld recoveries=%lld handbacks=%lld renumbered=%lld "
      "buckets_checked=%lld problems=%zu\n",
      static_cast<unsigned long long>(seed_), kDevices, kills,
      absl::ToDoubleSeconds(absl::Now() - started), absl::ToDoubleSeconds(backup_took),
      absl::ToDoubleSeconds(restore_took), static_cast<long long>(total.acked_writes),
      static_cast<long long>(report.server_records), static_cast<long long>(total.push_acks),
      static_cast<long long>(total.applied), static_cast<long long>(total.duplicate),
      static_cast<long long>(total.refused), static_cast<long long>(total.conflict),
      static_cast<long long>(total.out_of_order), static_cast<long long>(total.syncs_ok),
      static_cast<long long>(total.syncs_failed), static_cast<long long>(records_in_backup),
      static_cast<long long>(total.recoveries), static_cast<long long>(total.handbacks),
      static_cast<long long>(total.renumbered), static_cast<long long>(report.checked_buckets),
      report.problems.size());
  std::fflush(stdout);
  EXPECT_TRUE(report.problems.empty()) << absl::StrJoin(report.problems, "\n");
  EXPECT_GT(total.acked_writes, 0);
  EXPECT_GT(report.server_records, records_in_backup);  // the restore lost writes...
  EXPECT_GT(total.handbacks, 0);                        // ...that the devices handed back
  EXPECT_GT(total.renumbered, 0);                       // and the offline writes went too
  EXPECT_EQ(total.out_of_order, 0);
  EXPECT_EQ(total.refused, 0);
  EXPECT_EQ(total.conflict, 0);
}

INSTANTIATE_TEST_SUITE_P(Stores, RestoreTest,
                         ::testing::Values(StoreKind::kSqlite, StoreKind::kPostgres),
                         [](const ::testing::TestParamInfo<StoreKind>& info) {
                           return info.param == StoreKind::kSqlite ? "Sqlite" : "Postgres";
                         });

}  // namespace
}  // namespace kcnet::fault
