// A standby that takes over (issue 18, point 5), on real PostgreSQL servers: a primary and
// a synchronous standby made by deploy/postgres/standby.sh, devices pushing through the op
// log while the primary is killed (SIGKILL: the machine is lost), the standby promoted by
// deploy/postgres/promote.sh, and the op log finding the new primary by itself through a
// multi-host conninfo with target_session_attrs=read-write. Nothing acknowledged is lost,
// and a push retried across the failover is applied exactly once.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "server/pgstore/pg_conn.h"
#include "server/pgstore/pg_op_log.h"
#include "tests/testing/pg_instance.h"

namespace kcnet::pgstore {
namespace {

using ::kcnet::testing::PgInstance;
using Clock = std::chrono::steady_clock;

// How the standby is attached, by query on the primary: "sync", "async", or "" (absent).
std::string SyncState(const PgInstance& primary, const std::string& name) {
  auto conn = PgConn::Connect(primary.conninfo("postgres"));
  if (!conn.ok()) return "";
  auto rows = (*conn)->Query(absl::StrCat(
      "SELECT sync_state FROM pg_stat_replication WHERE application_name = '", name, "'"));
  if (!rows.ok() || rows->rows() == 0) return "";
  return std::string(rows->Get(0, 0));
}

// One device pushing one op per push, forever until stopped. A push that fails (the
// primary gone, no primary yet) is retried with the same sequence: its outcome is
// unknown, and exactly-once makes the retry safe.
struct Device {
  std::string id;
  int64_t bucket = 0;
  uint64_t acknowledged = 0;  // the last seq whose Append returned OK
  int failures = 0;
};

TEST(PgFailoverTest, TheStandbyTakesOverAndNoAcknowledgedPushIsLost) {
  auto primary = PgInstance::Start();
  if (absl::IsNotFound(primary.status())) GTEST_SKIP() << primary.status();
  ASSERT_TRUE(primary.ok()) << primary.status();
  auto standby = PgInstance::StartStandby(**primary, KCNET_PG_STANDBY_SCRIPT, "standby1");
  ASSERT_TRUE(standby.ok()) << standby.status();
  // The script made the primary wait for the standby on every commit.
  const auto attached_by = Clock::now() + std::chrono::seconds(30);
  while (SyncState(**primary, "standby1") != "sync" && Clock::now() < attached_by) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(SyncState(**primary, "standby1"), "sync");

  // What every kcnet-server instance is given: both hosts, "the one that takes writes".
  const std::string conninfo =
      absl::StrCat("host=127.0.0.1,127.0.0.1 port=", (*primary)->port(), ",", (*standby)->port(),
                   " user=kcnet dbname=kcnet connect_timeout=2 target_session_attrs=read-write");
  PgOpLogOptions options;
  options.watch = false;
  auto log = PgOpLog::Open(conninfo, options);
  ASSERT_TRUE(log.ok()) << log.status();

  constexpr int kDevices = 4;
  std::vector<Device> devices(kDevices);
  for (int d = 0; d < kDevices; ++d) {
    devices[d].id = absl::StrCat("tablet-", d);
    devices[d].bucket = 100 + d;
  }
  std::atomic<bool> stop{false};
  std::atomic<int> acks{0};
  absl::Mutex mu;
  Clock::time_point first_ack_after_kill{};
  std::atomic<bool> killed{false};
  std::vector<std::thread> threads;
  for (int d = 0; d < kDevices; ++d) {
    threads.emplace_back([&, d] {
      Device& device = devices[d];
      while (!stop.load()) {
        const uint64_t seq = device.acknowledged + 1;
        PgPush push;
        push.device_id = device.id;
        push.seq = seq;
        push.ops.push_back(
            PgOp{device.bucket, 1, absl::StrCat(device.id, "/", seq), absl::StrCat("body ", seq)});
        // Only a push begun after the kill says when writes resumed (one in flight at the
        // kill may still be acknowledged by the dying primary).
        const bool after_kill = killed.load();
        absl::StatusOr<PgPushResult> result = (*log)->Append(push);
        if (!result.ok()) {
          ++device.failures;
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
          continue;
        }
        device.acknowledged = seq;
        ++acks;
        if (after_kill) {
          absl::MutexLock lock(&mu);
          if (first_ack_after_kill == Clock::time_point{}) first_ack_after_kill = Clock::now();
        }
      }
    });
  }

  auto wait_for_acks = [&](int n) {
    const auto deadline = Clock::now() + std::chrono::seconds(90);
    while (acks.load() < n && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return acks.load() >= n;
  };
  ASSERT_TRUE(wait_for_acks(200));

  // The primary's machine is lost mid-push.
  const auto kill_at = Clock::now();
  (*primary)->Kill();
  killed = true;
  const int acks_at_kill = acks.load();
  // The operator (or a watchdog) promotes the standby.
  absl::Status promoted = (*standby)->Promote(KCNET_PG_PROMOTE_SCRIPT);
  ASSERT_TRUE(promoted.ok()) << promoted;
  const double promote_s = std::chrono::duration<double>(Clock::now() - kill_at).count();
  const bool resumed = wait_for_acks(acks_at_kill + 200);
  stop = true;
  for (std::thread& t : threads) t.join();
  ASSERT_TRUE(resumed) << "the devices' pushes did not resume on the promoted standby";
  {
    absl::MutexLock lock(&mu);
    std::fprintf(stderr,
                 "failover: promote.sh done %.2f s after the kill, first push begun after the "
                 "kill acknowledged %.2f s after it\n",
                 promote_s, std::chrono::duration<double>(first_ack_after_kill - kill_at).count());
  }

  // Everything acknowledged is on the new primary, each push exactly once, in sequence.
  log->reset();
  auto check = PgOpLog::Open((*standby)->conninfo(), options);
  ASSERT_TRUE(check.ok()) << check.status();
  int failed_pushes = 0;
  for (const Device& device : devices) {
    failed_pushes += device.failures;
    auto ops = (*check)->ReadSince(device.bucket, 0, 1000000);
    ASSERT_TRUE(ops.ok()) << ops.status();
    std::map<std::string, int> seen;
    for (const PgStoredOp& op : *ops) ++seen[op.id];
    for (uint64_t seq = 1; seq <= device.acknowledged; ++seq) {
      const std::string id = absl::StrCat(device.id, "/", seq);
      ASSERT_EQ(seen[id], 1) << id << " acknowledged, found " << seen[id] << " times";
    }
    // Nothing beyond the last acknowledged push, and nothing twice.
    EXPECT_EQ(ops->size(), device.acknowledged) << device.id;
    auto last = (*check)->LastSeq(device.id);
    ASSERT_TRUE(last.ok()) << last.status();
    EXPECT_EQ(*last, device.acknowledged) << device.id;
  }
  // The failover was real: pushes failed while there was no primary.
  EXPECT_GT(failed_pushes, 0);
}

TEST(PgFailoverTest, TheScriptsRefuseWhatWouldDoHarm) {
  auto primary = PgInstance::Start();
  if (absl::IsNotFound(primary.status())) GTEST_SKIP() << primary.status();
  ASSERT_TRUE(primary.ok()) << primary.status();
  // A primary is not a standby: promote.sh says so and changes nothing.
  absl::Status promoted = (*primary)->Promote(KCNET_PG_PROMOTE_SCRIPT);
  ASSERT_FALSE(promoted.ok());
  EXPECT_NE(std::string(promoted.message()).find("is not a standby"), std::string::npos)
      << promoted;
  // A slot name that is not an identifier is refused before anything is copied.
  auto bad = PgInstance::StartStandby(**primary, KCNET_PG_STANDBY_SCRIPT, "Bad-Name");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("--name must be"), std::string::npos)
      << bad.status();
  auto conn = PgConn::Connect((*primary)->conninfo("postgres"));
  ASSERT_TRUE(conn.ok()) << conn.status();
  auto slots = (*conn)->Query("SELECT count(*) FROM pg_replication_slots");
  ASSERT_TRUE(slots.ok()) << slots.status();
  EXPECT_EQ(slots->GetInt(0, 0), 0);
}

}  // namespace
}  // namespace kcnet::pgstore
