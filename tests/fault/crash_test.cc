// Crash tests with real processes (issue 6, part 1): the real kcnet-server and fault_device
// processes (one per tablet, each on its own store file) are killed with SIGKILL at random
// points and started again on the same files. (a) The server is killed at least 50 times
// while the devices write and sync. (b) Devices are killed at least 50 times, half of the
// kills right after the device committed a download page or a push acknowledgement (in the
// middle of a multi-page download or a multi-batch upload), the others at random times.
// (c) Both in turns, with the devices behind FaultProxy (fault_proxy.h).
// After a final clean sync of every device, CheckConvergence: every acknowledged write is
// on the server exactly once with its latest value, and every replica's buckets have the
// server's checksums.
//
// Every test runs on both server stores (value-parameterized, issue 18): the embedded
// SQLite files under --data_dir, and PostgreSQL (`--store=postgres:CONNINFO` on a
// PostgreSQL of the test's own, a new database per test; skipped with a message when the
// PostgreSQL binaries are absent). PostgreSQL itself is not killed here: the standby test
// (tests/pgstore/pg_failover_test) kills the primary.
//
// Seeded: KCNET_FAULT_SEED (printed as seed=N). Counts: KCNET_FAULT_SERVER_KILLS,
// KCNET_FAULT_DEVICE_KILLS, KCNET_FAULT_MIXED_KILLS, KCNET_FAULT_CRASH_DEVICES.
#include <signal.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "server/pgstore/pg_server_store.h"
#include "sync/model/record_types.h"
#include "tests/fault/fault_proxy.h"
#include "tests/fault/fault_util.h"
#include "tests/testing/pg_instance.h"
#include "tests/testing/test_util.h"

#ifndef KCNET_SERVER_PATH
#error "KCNET_SERVER_PATH must name the kcnet-server binary"
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

class CrashTest : public ::testing::TestWithParam<StoreKind> {
 protected:
  static void TearDownTestSuite() { pg_.reset(); }

  void SetUp() override {
    if (GetParam() == StoreKind::kPostgres) {
      if (pg_ == nullptr) {
        absl::StatusOr<std::unique_ptr<kcnet::testing::PgInstance>> pg =
            kcnet::testing::PgInstance::Start();
        if (absl::IsNotFound(pg.status())) GTEST_SKIP() << pg.status();
        ASSERT_TRUE(pg.ok()) << pg.status();
        pg_ = *std::move(pg);
      }
      static int databases = 0;
      const std::string name = absl::StrCat("crash", ++databases);
      ASSERT_TRUE(pg_->CreateDatabase(name).ok());
      conninfo_ = pg_->conninfo(name);
    }
    seed_ = FaultSeed();
    std::printf("seed=%llu (replay: KCNET_FAULT_SEED=%llu)\n",
                static_cast<unsigned long long>(seed_), static_cast<unsigned long long>(seed_));
    std::fflush(stdout);
    rng_ = absl::BitGen(std::seed_seq{seed_});
    devices_ = EnvInt("KCNET_FAULT_CRASH_DEVICES", 4);
    data_dir_ = tmp_.File("server");
    absl::StatusOr<std::vector<Account>> accounts =
        SetUpDirectory(data_dir_, devices_, /*coordinators=*/1, conninfo_);
    ASSERT_TRUE(accounts.ok()) << accounts.status();
    accounts_ = *std::move(accounts);
    server_ =
        std::make_unique<ServerProcess>(KCNET_SERVER_PATH, data_dir_, tmp_.File("server.log"));
    if (!conninfo_.empty()) server_->set_extra_args({"--store=postgres:" + conninfo_});
    ASSERT_TRUE(server_->Start().ok()) << ReadFile(tmp_.File("server.log"));
    procs_.resize(devices_);
  }

  void TearDown() override {
    for (auto& p : procs_) p.reset();
    if (server_ != nullptr) server_->Kill9();
    if (HasFailure()) {
      std::printf("seed=%llu failed; server log tail:\n%s\n",
                  static_cast<unsigned long long>(seed_),
                  ReadFile(tmp_.File("server.log")).substr(0, 4000).c_str());
      for (int i = 0; i < devices_; ++i) {
        std::printf("device %d stderr:\n%s\n", i, ReadFile(DeviceFile(i, "err")).c_str());
      }
    }
  }

  std::string DeviceFile(int i, const std::string& ext) const {
    return tmp_.File(absl::StrCat("dev", i, ".", ext));
  }
  std::string DeviceId(int i) const { return absl::StrCat("fault-dev-", i); }

  std::vector<std::string> DeviceArgs(int i, const std::string& mode) {
    const Account& a = accounts_[i];
    return {FAULT_DEVICE_PATH,
            "--store=" + DeviceFile(i, "db"),
            "--device_id=" + DeviceId(i),
            absl::StrCat("--index=", i),
            "--token=" + a.token,
            "--target=" + (device_target_.empty() ? server_->target() : device_target_),
            "--log=" + DeviceFile(i, "log"),
            absl::StrCat("--seed=", seed_),
            "--mode=" + mode,
            "--stop_file=" + tmp_.File("stop"),
            absl::StrCat("--commune=", a.commune),
            absl::StrCat("--user_id=", a.user_id)};
  }

  void StartDevice(int i, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = DeviceArgs(i, "loop");
    argv.insert(argv.end(), extra.begin(), extra.end());
    procs_[i] = std::make_unique<Process>(argv, DeviceFile(i, "err"));
    ASSERT_TRUE(procs_[i]->started());
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

  // Device 0 writes `count` facilities first, so that a new or reset bucket takes several
  // download pages (1000 changes a page).
  void Seed(int count) { RunDevice(0, "seed", {absl::StrCat("--count=", count)}); }

  // Stops the loops, then two rounds of final syncs (the first pushes everything, the
  // second brings everyone what the others pushed), stops the server and checks.
  void FinishAndCheck(const std::string& what, int64_t kills, absl::Time started) {
    { std::ofstream(tmp_.File("stop")) << "stop\n"; }
    for (int i = 0; i < devices_; ++i) {
      if (procs_[i] == nullptr) continue;
      // 0 once it sees the stop file, or -SIGKILL when it killed itself (--die_on) first.
      const std::optional<int> code = procs_[i]->Wait(absl::Seconds(60));
      EXPECT_TRUE(code == std::optional<int>(0) || code == std::optional<int>(-SIGKILL))
          << "device " << i << " exit " << code.value_or(-1000) << ": "
          << ReadFile(DeviceFile(i, "err"));
      procs_[i].reset();
    }
    for (int round = 0; round < 2; ++round) {
      for (int i = 0; i < devices_; ++i) RunDevice(i, "final");
    }
    ASSERT_TRUE(server_->Stop().ok()) << ReadFile(tmp_.File("server.log"));
    std::vector<DeviceUnderCheck> checked;
    DeviceLog total;
    for (int i = 0; i < devices_; ++i) {
      absl::StatusOr<DeviceLog> log = ReadDeviceLog(DeviceFile(i, "log"));
      ASSERT_TRUE(log.ok()) << log.status();
      checked.push_back({DeviceId(i), DeviceFile(i, "db"), i, accounts_[i], *log});
      total.acked_writes += log->acked_writes;
      total.unacked_writes += log->unacked_writes;
      total.applied += log->applied;
      total.duplicate += log->duplicate;
      total.refused += log->refused;
      total.conflict += log->conflict;
      total.out_of_order += log->out_of_order;
      total.push_acks += log->push_acks;
      total.change_batches += log->change_batches;
      total.syncs_ok += log->syncs_ok;
      total.syncs_failed += log->syncs_failed;
      total.starts += log->starts;
    }
    CheckReport report;
    if (conninfo_.empty()) {
      report = CheckConvergence(data_dir_, checked);
    } else {
      absl::StatusOr<std::unique_ptr<pgstore::PgServerStore>> store =
          pgstore::PgServerStore::Open(conninfo_, &model::KcnetSchema());
      ASSERT_TRUE(store.ok()) << store.status();
      report = CheckConvergence(**store, checked);
    }
    std::printf(
        "%s: seed=%llu devices=%d kills=%lld runtime=%.1fs device_starts=%lld "
        "acknowledged_writes=%lld server_records=%lld unacked_but_stored=%lld "
        "push_acks=%lld applied=%lld duplicate=%lld refused=%lld conflict=%lld "
        "out_of_order=%lld change_batches=%lld syncs_ok=%lld syncs_failed=%lld "
        "buckets_checked=%lld problems=%zu\n",
        what.c_str(), static_cast<unsigned long long>(seed_), devices_,
        static_cast<long long>(kills), absl::ToDoubleSeconds(absl::Now() - started),
        static_cast<long long>(total.starts), static_cast<long long>(total.acked_writes),
        static_cast<long long>(report.server_records),
        static_cast<long long>(report.unacked_but_stored), static_cast<long long>(total.push_acks),
        static_cast<long long>(total.applied), static_cast<long long>(total.duplicate),
        static_cast<long long>(total.refused), static_cast<long long>(total.conflict),
        static_cast<long long>(total.out_of_order), static_cast<long long>(total.change_batches),
        static_cast<long long>(total.syncs_ok), static_cast<long long>(total.syncs_failed),
        static_cast<long long>(report.checked_buckets), report.problems.size());
    std::fflush(stdout);
    EXPECT_TRUE(report.problems.empty()) << absl::StrJoin(report.problems, "\n");
    EXPECT_GT(total.acked_writes, 0);
    EXPECT_EQ(total.refused, 0);
    EXPECT_EQ(total.conflict, 0);
    // A write is answered APPLIED once; a second APPLIED would be a second application.
    // A write begun before a kill may be APPLIED too: a creation (counted in
    // unacked_but_stored when the server has it) or a rename (the server's name may since
    // have been renamed again, so only the begun count bounds it).
    EXPECT_LE(total.applied, total.acked_writes + total.unacked_writes)
        << "unacked_but_stored=" << report.unacked_but_stored;
  }

  // Fails when a device process ended by itself other than by its own SIGKILL.
  void ExpectAlive(int i) {
    if (procs_[i] == nullptr) return;
    const std::optional<int> code = procs_[i]->Poll();
    ASSERT_FALSE(code.has_value() && *code != -SIGKILL)
        << "device " << i << " exited " << *code << ": " << ReadFile(DeviceFile(i, "err"));
  }

  static inline std::unique_ptr<kcnet::testing::PgInstance> pg_;
  std::string conninfo_;  // the PostgreSQL variant's database; empty on SQLite
  kcnet::testing::TempDir tmp_;
  uint64_t seed_ = 0;
  absl::BitGen rng_;
  int devices_ = 0;
  std::string data_dir_;
  std::string device_target_;  // empty: the server itself
  std::vector<Account> accounts_;
  std::unique_ptr<ServerProcess> server_;
  std::vector<std::unique_ptr<Process>> procs_;
};

TEST_P(CrashTest, ServerKilledRepeatedlyWhileDevicesSync) {
  const absl::Time started = absl::Now();
  const int kills = EnvInt("KCNET_FAULT_SERVER_KILLS", 50);
  Seed(1200);
  for (int i = 0; i < devices_; ++i) StartDevice(i);
  for (int k = 0; k < kills; ++k) {
    // Mostly while devices push and download; sometimes right after start-up, while the
    // server recovers its write-ahead logs and the devices reconnect.
    absl::SleepFor(absl::Milliseconds(absl::Bernoulli(rng_, 0.15) ? absl::Uniform(rng_, 0, 20)
                                                                  : absl::Uniform(rng_, 30, 400)));
    for (int i = 0; i < devices_; ++i) ExpectAlive(i);
    if (HasFatalFailure()) return;
    server_->Kill9();
    ASSERT_TRUE(server_->Start().ok()) << "restart " << k;
  }
  absl::SleepFor(absl::Milliseconds(300));
  FinishAndCheck("server-kill9", kills, started);
}

TEST_P(CrashTest, DevicesKilledMidUploadAndDownload) {
  const absl::Time started = absl::Now();
  const int kills = EnvInt("KCNET_FAULT_DEVICE_KILLS", 50);
  Seed(2500);
  auto start = [&](int i) {
    std::vector<std::string> extra = {"--reset_prob=0.3"};
    if (absl::Bernoulli(rng_, 0.5)) {
      extra.push_back(absl::Bernoulli(rng_, 0.5) ? "--die_on=changes" : "--die_on=push_ack");
      extra.push_back(absl::StrCat("--die_at=", absl::Uniform(rng_, 1, 4)));
    }
    StartDevice(i, extra);
  };
  for (int i = 0; i < devices_; ++i) start(i);
  int external = 0, self = 0;
  while (external + self < kills) {
    absl::SleepFor(absl::Milliseconds(absl::Uniform(rng_, 20, 200)));
    for (int i = 0; i < devices_; ++i) {
      ExpectAlive(i);
      if (HasFatalFailure()) return;
      if (procs_[i]->Poll().has_value()) {  // killed itself after a page or an ack
        ++self;
        start(i);
      }
    }
    if (absl::Bernoulli(rng_, 0.6)) {
      const int i = absl::Uniform(rng_, 0, devices_);
      procs_[i]->Kill9();
      ++external;
      start(i);
    }
  }
  std::printf(
      "device kills: %d external kill -9 at random times, %d right after a "
      "download page or push ack\n",
      external, self);
  FinishAndCheck("device-kill9", external + self, started);
}

// Everything at once: devices sync through FaultProxy (refusals, delays, drops, cuts)
// while the server and the devices are killed in turns.
TEST_P(CrashTest, ServerAndDevicesKilledBehindAFaultyNetwork) {
  const absl::Time started = absl::Now();
  const int kills = EnvInt("KCNET_FAULT_MIXED_KILLS", 30);
  Seed(1500);
  FaultProxyOptions faults;
  faults.seed = seed_;
  faults.refuse = 0.05;
  faults.delay = 0.1;
  faults.drop = 0.01;
  faults.cut = 0.01;
  absl::StatusOr<std::unique_ptr<FaultProxy>> proxy = FaultProxy::Start(server_->port(), faults);
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  device_target_ = absl::StrCat("127.0.0.1:", (*proxy)->port());
  auto start = [&](int i) {
    std::vector<std::string> extra = {"--reset_prob=0.2"};
    if (absl::Bernoulli(rng_, 0.3)) {
      extra.push_back(absl::Bernoulli(rng_, 0.5) ? "--die_on=changes" : "--die_on=push_ack");
      extra.push_back(absl::StrCat("--die_at=", absl::Uniform(rng_, 1, 4)));
    }
    StartDevice(i, extra);
  };
  for (int i = 0; i < devices_; ++i) start(i);
  int server_kills = 0, device_kills = 0;
  while (server_kills + device_kills < kills) {
    absl::SleepFor(absl::Milliseconds(absl::Uniform(rng_, 20, 300)));
    for (int i = 0; i < devices_; ++i) {
      ExpectAlive(i);
      if (HasFatalFailure()) return;
      if (procs_[i]->Poll().has_value()) {
        ++device_kills;
        start(i);
      }
    }
    if (absl::Bernoulli(rng_, 0.5)) {
      server_->Kill9();
      ++server_kills;
      ASSERT_TRUE(server_->Start().ok()) << "restart " << server_kills;
    } else {
      const int i = absl::Uniform(rng_, 0, devices_);
      procs_[i]->Kill9();
      ++device_kills;
      start(i);
    }
  }
  const FaultProxyStats stats = (*proxy)->stats();
  std::printf(
      "mixed kills: %d server, %d device; proxy: %lld connections, %lld refused, "
      "%lld delayed, %lld dropped, %lld cut\n",
      server_kills, device_kills, static_cast<long long>(stats.connections),
      static_cast<long long>(stats.refused), static_cast<long long>(stats.delayed),
      static_cast<long long>(stats.dropped), static_cast<long long>(stats.cut));
  (*proxy)->SetFaultsEnabled(false);
  FinishAndCheck("mixed", server_kills + device_kills, started);
}

INSTANTIATE_TEST_SUITE_P(Stores, CrashTest,
                         ::testing::Values(StoreKind::kSqlite, StoreKind::kPostgres),
                         [](const ::testing::TestParamInfo<StoreKind>& info) {
                           return info.param == StoreKind::kSqlite ? "Sqlite" : "Postgres";
                         });

}  // namespace
}  // namespace kcnet::fault
