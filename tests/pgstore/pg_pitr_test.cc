// A point-in-time restore of the PostgreSQL store with the scripts of deploy/postgres
// (docs/DEPLOY.md, section 6, "Backups"): WAL archiving turned on by archive.sh, a base
// backup by backup.sh while the store serves, writes before and after a moment T, the
// server lost, pitr.sh replaying the archive into a new server up to T, and
// `PgServerStore::BeginIncarnation` (kcnet-admin new-incarnation --restored) on it: the
// restored store holds exactly the writes committed before T, is a new incarnation marked
// restored (so devices hand back the rest), and takes new writes.
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "server/pgstore/pg_conn.h"
#include "server/pgstore/pg_server_store.h"
#include "tests/testing/pg_instance.h"
#include "tests/testing/test_util.h"

#ifndef KCNET_PG_SCRIPTS
#error "KCNET_PG_SCRIPTS must name deploy/postgres"
#endif

namespace kcnet::pgstore {
namespace {

using ::kcnet::testing::Change;
using ::kcnet::testing::Id;
using ::kcnet::testing::IntValue;
using ::kcnet::testing::PgInstance;
using ::kcnet::testing::StringValue;

constexpr int64_t kUnit = 42;

std::string Script(const std::string& name) { return std::string(KCNET_PG_SCRIPTS) + "/" + name; }

class PgPitrTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<PgInstance>> pg = PgInstance::Start();
    if (absl::IsNotFound(pg.status())) GTEST_SKIP() << pg.status();
    ASSERT_TRUE(pg.ok()) << pg.status();
    primary_ = *std::move(pg);
  }

  std::unique_ptr<PgServerStore> Open(const PgInstance& pg) {
    absl::StatusOr<std::unique_ptr<PgServerStore>> store =
        PgServerStore::Open(pg.conninfo(), &schema_);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }

  // Writes items [from, to) as one push each of tablet-a.
  void Write(PgServerStore& store, int from, int to) {
    const sync::Writer a{"tablet-a", sync::NodeIdFor("tablet-a")};
    for (int n = from; n < to; ++n) {
      kcnet::v1::MutationBatch batch;
      kcnet::v1::Mutation* m = batch.add_mutations();
      m->set_seq(static_cast<uint64_t>(n));
      kcnet::v1::RecordChange c =
          Change(1, Id(n), {{2, IntValue(kUnit)}, {5, StringValue(absl::StrCat("item ", n))}});
      c.set_hlc(sync::HlcPack(absl::ToUnixMillis(absl::Now()), 0));
      *m->add_changes() = c;
      absl::StatusOr<kcnet::v1::PushAck> ack = store.Apply(a, batch);
      ASSERT_TRUE(ack.ok()) << ack.status();
      ASSERT_EQ(ack->results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_APPLIED);
    }
  }

  // The items the store holds, by number.
  std::vector<int> Items(PgServerStore& store) {
    sync::ListQuery query;
    query.type = 1;
    query.buckets = {kUnit};
    query.limit = 1000;
    absl::StatusOr<std::vector<kcnet::v1::RecordChange>> rows = store.List(query);
    EXPECT_TRUE(rows.ok()) << rows.status();
    std::vector<int> items;
    for (int n = 1; rows.ok() && n < 1000; ++n) {
      for (const kcnet::v1::RecordChange& row : *rows) {
        if (row.id() == Id(n)) items.push_back(n);
      }
    }
    return items;
  }

  // The server's clock, as text PostgreSQL reads back ('2026-12-06 07:30:00.123+00').
  std::string ServerNow(const PgInstance& pg) {
    absl::StatusOr<std::unique_ptr<PgConn>> conn = PgConn::Connect(pg.conninfo());
    EXPECT_TRUE(conn.ok()) << conn.status();
    if (!conn.ok()) return "";
    absl::StatusOr<PgResult> now = (*conn)->Query("SELECT now()::text");
    EXPECT_TRUE(now.ok()) << now.status();
    return now.ok() ? std::string(now->Get(0, 0)) : "";
  }

  sync::Schema schema_ = kcnet::testing::TestSchema();
  std::unique_ptr<PgInstance> primary_;
};

TEST_F(PgPitrTest, RestoreToAMomentKeepsWhatCameBeforeItAndBeginsARestoredIncarnation) {
  const std::string archive = primary_->dir() + "/archive";
  ASSERT_TRUE(primary_
                  ->RunScript(Script("archive.sh"),
                              {"--conninfo", primary_->conninfo("postgres"), "--archive", archive})
                  .ok());
  ASSERT_TRUE(primary_->Restart().ok());  // archive_mode takes effect at a restart

  std::unique_ptr<PgServerStore> store = Open(*primary_);
  ASSERT_NE(store, nullptr);
  Write(*store, 1, 11);  // in the base backup
  const std::string base = primary_->dir() + "/base";
  ASSERT_TRUE(primary_
                  ->RunScript(Script("backup.sh"),
                              {"--conninfo", primary_->conninfo("postgres"), "--to", base})
                  .ok());
  Write(*store, 11, 21);  // after the backup, before T: only in the archive
  absl::SleepFor(absl::Milliseconds(1100));
  const std::string target = ServerNow(*primary_);
  ASSERT_FALSE(target.empty());
  absl::SleepFor(absl::Milliseconds(1100));
  Write(*store, 21, 31);  // after T: lost by the restore
  const uint64_t incarnation_before = store->incarnation().id;
  store.reset();
  {
    // Close the segment holding the last writes and wait until it is archived, then the
    // primary is lost.
    absl::StatusOr<std::unique_ptr<PgConn>> conn = PgConn::Connect(primary_->conninfo());
    ASSERT_TRUE(conn.ok()) << conn.status();
    absl::StatusOr<PgResult> wal = (*conn)->Query("SELECT pg_walfile_name(pg_switch_wal())");
    ASSERT_TRUE(wal.ok()) << wal.status();
    const std::string segment(wal->Get(0, 0));
    bool archived = false;
    for (int i = 0; i < 300 && !archived; ++i) {
      absl::StatusOr<PgResult> last =
          (*conn)->Query("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver");
      ASSERT_TRUE(last.ok()) << last.status();
      archived = std::string(last->Get(0, 0)) >= segment;
      if (!archived) absl::SleepFor(absl::Milliseconds(100));
    }
    ASSERT_TRUE(archived) << "segment " << segment << " not archived in 30 s";
  }
  primary_->Kill();

  // pitr.sh refuses a directory that is not a base backup.
  EXPECT_FALSE(
      PgInstance::StartCopy(*primary_, Script("pitr.sh"), {"--base", archive, "--archive", archive})
          .ok());
  absl::StatusOr<std::unique_ptr<PgInstance>> restored =
      PgInstance::StartCopy(*primary_, Script("pitr.sh"),
                            {"--base", base, "--archive", archive, "--target-time", target});
  ASSERT_TRUE(restored.ok()) << restored.status();
  bool recovering = true;
  for (int i = 0; i < 600 && recovering; ++i) {
    absl::StatusOr<bool> in_recovery = (*restored)->InRecovery();
    recovering = !in_recovery.ok() || *in_recovery;
    if (recovering) absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_FALSE(recovering) << "the restored server did not end its recovery in 60 s";

  ASSERT_TRUE(PgServerStore::BeginIncarnation((*restored)->conninfo(), /*restored=*/true).ok());
  store = Open(**restored);
  ASSERT_NE(store, nullptr);
  std::vector<int> want;
  for (int n = 1; n < 21; ++n) want.push_back(n);
  EXPECT_EQ(Items(*store), want);  // before T: all; after T: none
  EXPECT_NE(store->incarnation().id, incarnation_before);
  EXPECT_GT(store->incarnation().restored_ms, 0);
  EXPECT_GT(store->incarnation().base_op, 0u);
  // It takes writes: the lost ones handed back by their device, as new pushes.
  Write(*store, 21, 31);
  want.clear();
  for (int n = 1; n < 31; ++n) want.push_back(n);
  EXPECT_EQ(Items(*store), want);
}

}  // namespace
}  // namespace kcnet::pgstore
