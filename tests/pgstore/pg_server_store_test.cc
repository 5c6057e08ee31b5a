// PgServerStore against a PostgreSQL of its own: the same answers as the SQLite store for
// the same batches, exactly once across instances, and two instances on one database
// telling each other of their commits (NOTIFY, and the poll when no notification came).
#include "server/pgstore/pg_server_store.h"

#include <atomic>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "server/pgstore/pg_conn.h"
#include "server/pgstore/pg_schema.h"
#include "sync/page_codec.h"
#include "sync/server_store.h"
#include "tests/testing/pg_instance.h"
#include "tests/testing/test_util.h"

namespace kcnet::pgstore {
namespace {

using ::kcnet::testing::Change;
using ::kcnet::testing::Deletion;
using ::kcnet::testing::Id;
using ::kcnet::testing::IntValue;
using ::kcnet::testing::StringValue;
using ::kcnet::v1::MutationBatch;
using ::kcnet::v1::PushAck;
using ::kcnet::v1::RecordChange;

constexpr int64_t kT0 = 1764000000000;
constexpr int64_t kUnit = 42;
constexpr int64_t kOtherUnit = 43;

sync::Writer Device(const std::string& name) { return sync::Writer{name, sync::NodeIdFor(name)}; }

MutationBatch One(uint64_t seq, std::vector<RecordChange> changes, uint64_t hlc,
                  uint64_t base_op = 0) {
  MutationBatch batch;
  auto* m = batch.add_mutations();
  m->set_seq(seq);
  for (auto& c : changes) {
    c.set_hlc(hlc);
    c.set_base_op(base_op);
    *m->add_changes() = c;
  }
  return batch;
}

class PgServerStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pg = kcnet::testing::PgInstance::Start();
    if (absl::IsNotFound(pg.status())) GTEST_SKIP() << pg.status();
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = std::move(*pg);
  }

  std::unique_ptr<PgServerStore> OpenPg(absl::Duration poll = absl::Seconds(1)) {
    sync::ServerStoreOptions options;
    options.clock = &wall_;
    PgServerStoreOptions pg_options;
    pg_options.poll_interval = poll;
    // Two provinces: units 42 and 43 in partitions of their own.
    pg_options.province_of = [](int64_t bucket) { return static_cast<int32_t>(bucket % 2); };
    auto store = PgServerStore::Open(pg_->conninfo(), &schema_, options, pg_options);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? std::move(*store) : nullptr;
  }

  std::unique_ptr<sync::ServerStore> OpenSqlite() {
    sync::ServerStoreOptions options;
    options.clock = &wall_;
    auto store = sync::ServerStore::Open(dir_.File("server.db"), &schema_, options);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? std::move(*store) : nullptr;
  }

  kcnet::testing::TempDir dir_;
  sync::FakeClock wall_{kT0};
  sync::Schema schema_ = kcnet::testing::TestSchema();
  std::unique_ptr<kcnet::testing::PgInstance> pg_;
};

// A record's state without its op ids (the stores draw them differently).
std::string WithoutOps(RecordChange change) {
  change.clear_op();
  return change.DebugString();
}

TEST_F(PgServerStoreTest, SameBatchesGiveTheSameRecordsChecksumsAndConflictsAsSqlite) {
  auto pg = OpenPg();
  auto lite = OpenSqlite();
  ASSERT_TRUE(pg && lite);
  const sync::Writer a = Device("tablet-a"), b = Device("tablet-b");
  const uint64_t t = sync::HlcPack(kT0, 0);
  std::vector<std::pair<sync::Writer, MutationBatch>> script = {
      {a, One(1, {Change(1, Id(1), {{2, IntValue(kUnit)}, {5, StringValue("Cơ sở một")}})}, t + 1)},
      {a, One(2, {Change(1, Id(2), {{2, IntValue(kOtherUnit)}, {3, IntValue(7)}})}, t + 2)},
      // b edits record 1 without having seen a's version (base 0): a concurrent edit.
      {b, One(1, {Change(1, Id(1), {{5, StringValue("Cơ sở hai")}})}, t + 5)},
      {a, One(3, {Change(1, Id(1), {{5, StringValue("cũ")}})}, t + 3)},
      {b, One(2, {Deletion(1, Id(2))}, t + 6)},
      // A refusal (a count below its minimum), remembered for a replay.
      {a, One(4, {Change(1, Id(1), {{3, IntValue(-1)}})}, t + 7)},
  };
  for (const auto& step : script) {
    auto on_pg = pg->Apply(step.first, step.second);
    auto on_lite = lite->Apply(step.first, step.second);
    ASSERT_TRUE(on_pg.ok()) << on_pg.status();
    ASSERT_TRUE(on_lite.ok()) << on_lite.status();
    ASSERT_EQ(on_pg->results_size(), on_lite->results_size());
    for (int i = 0; i < on_pg->results_size(); ++i) {
      EXPECT_EQ(on_pg->results(i).outcome(), on_lite->results(i).outcome());
      EXPECT_EQ(on_pg->results(i).reason(), on_lite->results(i).reason());
      EXPECT_EQ(on_pg->results(i).conflicts_size(), on_lite->results(i).conflicts_size());
    }
  }
  // The replay of the refused push gets the same refusal back, and nothing changes.
  auto replay = pg->Apply(a, script[5].second);
  ASSERT_TRUE(replay.ok()) << replay.status();
  EXPECT_EQ(replay->results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_REFUSED);
  EXPECT_EQ(replay->results(0).field(), "changes[0].fields[0]");
  for (uint64_t n : {1, 2}) {
    auto x = pg->ReadRecord(1, Id(n));
    auto y = lite->ReadRecord(1, Id(n));
    ASSERT_TRUE(x.ok() && y.ok());
    ASSERT_TRUE(x->has_value() && y->has_value()) << n;
    EXPECT_EQ(WithoutOps(**x), WithoutOps(**y)) << n;
  }
  for (int64_t unit : {kUnit, kOtherUnit}) {
    auto x = pg->Checkpoint(unit);
    auto y = lite->Checkpoint(unit);
    ASSERT_TRUE(x.ok() && y.ok());
    EXPECT_EQ(x->checksum(), y->checksum()) << unit;
    EXPECT_EQ(x->records(), y->records()) << unit;
    EXPECT_NE(x->checksum(), 0u) << unit;
  }
  auto pg_conflicts = pg->ListConflicts({}, true, 0, 100);
  auto lite_conflicts = lite->ListConflicts({}, true, 0, 100);
  ASSERT_TRUE(pg_conflicts.ok() && lite_conflicts.ok());
  ASSERT_EQ(pg_conflicts->size(), lite_conflicts->size());
  EXPECT_GE(pg_conflicts->size(), 1u);
  // A download from scratch carries every record of the bucket, up to its checkpoint.
  kcnet::v1::BucketCursor from_zero;
  from_zero.set_bucket(kUnit);
  auto page = pg->ChangesSince({from_zero});
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->changes_size(), 1);
  EXPECT_EQ(page->changes(0).id(), Id(1));
  ASSERT_EQ(page->checkpoints_size(), 1);
  EXPECT_EQ(page->cursors(0).op(), page->checkpoints(0).op());
  // Each province has its partition.
  auto conn = PgConn::Connect(pg_->conninfo());
  ASSERT_TRUE(conn.ok());
  auto partitions = (*conn)->Query(
      "SELECT count(*) FROM pg_inherits WHERE inhparent = 'kcnet_records'::regclass");
  ASSERT_TRUE(partitions.ok()) << partitions.status();
  EXPECT_EQ(partitions->GetInt(0, 0), 2);
  EXPECT_EQ(*SchemaVersion(**conn), kPgSchemaVersion);
}

TEST_F(PgServerStoreTest, APushIsAppliedOnceWhicheverInstanceItReaches) {
  auto first = OpenPg();
  auto second = OpenPg();
  ASSERT_TRUE(first && second);
  const sync::Writer a = Device("tablet-a");
  const MutationBatch batch =
      One(1, {Change(1, Id(1), {{2, IntValue(kUnit)}, {3, IntValue(1)}})}, sync::HlcPack(kT0, 0));
  auto applied = first->Apply(a, batch);
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(applied->results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_APPLIED);
  // The device lost the acknowledgement and reconnected to the other instance.
  auto again = second->Apply(a, batch);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_DUPLICATE);
  EXPECT_EQ(again->last_applied_seq(), 1u);
  EXPECT_EQ(*second->LastAppliedSeq("tablet-a"), 1u);
  // Device registrations are shared too.
  ASSERT_TRUE(first->RegisterDevice("tablet-a", 7).ok());
  EXPECT_TRUE(absl::IsPermissionDenied(second->RegisterDevice("tablet-a", 8).status()));
}

// Waits until `seen` holds `bucket` (at most 10 s).
bool WaitFor(absl::Mutex& mu, const std::set<int64_t>& seen, int64_t bucket) {
  absl::MutexLock lock(&mu);
  auto has = [&seen, bucket]() { return seen.count(bucket) > 0; };
  return mu.AwaitWithTimeout(absl::Condition(&has), absl::Seconds(10));
}

TEST_F(PgServerStoreTest, ACommitOnOneInstanceReachesTheOthersListenerAndDownloads) {
  auto writer = OpenPg();
  auto reader = OpenPg();
  ASSERT_TRUE(writer && reader);
  absl::Mutex mu;
  std::set<int64_t> seen;
  reader->SetCommitListener([&](const std::vector<int64_t>& buckets, uint64_t) {
    absl::MutexLock lock(&mu);
    seen.insert(buckets.begin(), buckets.end());
  });
  auto ack = writer->Apply(Device("tablet-a"), One(1, {Change(1, Id(1), {{2, IntValue(kUnit)}})},
                                                   sync::HlcPack(kT0, 0)));
  ASSERT_TRUE(ack.ok()) << ack.status();
  ASSERT_TRUE(WaitFor(mu, seen, kUnit)) << "the other instance was never told";
  kcnet::v1::BucketCursor cursor;
  cursor.set_bucket(kUnit);
  auto page = reader->ChangesSince({cursor});
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->changes_size(), 1);
  EXPECT_EQ(page->changes(0).op(), ack->results(0).op());
}

TEST_F(PgServerStoreTest, ThePollFindsACommitThatSentNoNotification) {
  auto reader = OpenPg(absl::Milliseconds(300));
  ASSERT_TRUE(reader);
  absl::Mutex mu;
  std::set<int64_t> seen;
  reader->SetCommitListener([&](const std::vector<int64_t>& buckets, uint64_t) {
    absl::MutexLock lock(&mu);
    seen.insert(buckets.begin(), buckets.end());
  });
  // A head moved by hand, as a commit whose NOTIFY was lost would leave it.
  auto conn = PgConn::Connect(pg_->conninfo());
  ASSERT_TRUE(conn.ok());
  ASSERT_TRUE((*conn)
                  ->Exec("INSERT INTO kcnet_bucket_head(bucket, province, last_op) "
                         "VALUES (43, 1, 5)")
                  .ok());
  EXPECT_TRUE(WaitFor(mu, seen, kOtherUnit)) << "the poll never looked";
}

// A download's server_op promises that every op up to it in the buckets it completes is
// in it (the device then forgets its acknowledged writes up to it). Op ids come from a
// sequence, so a writer can hold an id below a later writer's committed one: the download
// must wait for it. Before the fix, a tablet's own acknowledged record vanished from its
// view until its next sync (sync_stream_test's OversizedPush.../Postgres, 1 run in 6).
TEST_F(PgServerStoreTest, ADownloadWaitsForWritersInFlightBelowItsServerOp) {
  auto store = OpenPg();
  ASSERT_TRUE(store);
  const sync::Writer a = Device("tablet-a");
  const uint64_t t = sync::HlcPack(kT0, 0);
  ASSERT_TRUE(store->Apply(a, One(1, {Change(1, Id(1), {{2, IntValue(kUnit)}})}, t + 1)).ok());
  // A writer in flight in kUnit: its head row locked, an op id drawn, not committed.
  auto writer = PgConn::Connect(pg_->conninfo());
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Exec("BEGIN").ok());
  ASSERT_TRUE((*writer)->Exec("SELECT 1 FROM kcnet_bucket_head WHERE bucket = 42 FOR UPDATE").ok());
  auto drawn = (*writer)->Query("SELECT nextval('kcnet_op_seq')");
  ASSERT_TRUE(drawn.ok());
  const uint64_t in_flight = static_cast<uint64_t>(drawn->GetInt(0, 0));
  // A later writer in another bucket commits with a higher id.
  auto later = store->Apply(Device("tablet-b"),
                            One(1, {Change(1, Id(2), {{2, IntValue(kOtherUnit)}})}, t + 2));
  ASSERT_TRUE(later.ok());
  ASSERT_GT(later->results(0).op(), in_flight);

  std::atomic<bool> writer_ended{false};
  std::atomic<bool> ended_at_return{false};
  kcnet::v1::ChangeBatch batch;
  std::thread download([&] {
    kcnet::v1::BucketCursor cursor;
    cursor.set_bucket(kUnit);
    absl::Status status = store->ChangesSince({cursor}, sync::DownloadLimits{}, &batch);
    EXPECT_TRUE(status.ok()) << status;
    ended_at_return = writer_ended.load();
  });
  absl::SleepFor(absl::Milliseconds(500));
  writer_ended = true;
  ASSERT_TRUE((*writer)->Exec("ROLLBACK").ok());
  download.join();
  EXPECT_GE(batch.server_op(), in_flight);
  EXPECT_TRUE(ended_at_return) << "the download answered server_op " << batch.server_op()
                               << " while op " << in_flight << " of its bucket was in flight";
}

// A new device's download (from op 0) sends each record's stored change with its id
// instead of decoding and rebuilding it (pgperf): the pages must be what SQLite sends for
// the same writes (records written by two devices, with per-field stamps, deletions,
// every field type), and a resumed download (cursor above 0, floor 0) the same again.
TEST_F(PgServerStoreTest, ADownloadFromScratchCarriesWhatSqliteSends) {
  auto pg = OpenPg();
  auto lite = OpenSqlite();
  ASSERT_TRUE(pg && lite);
  const sync::Writer a = Device("tablet-a"), b = Device("tablet-b");
  const uint64_t t = sync::HlcPack(kT0, 0);
  kcnet::v1::Value flag, blob;
  flag.set_bool_value(true);
  blob.set_bytes_value(std::string("\x00\x01\xff", 3));
  std::vector<std::pair<sync::Writer, MutationBatch>> script = {
      {a, One(1, {Change(1, Id(1), {{2, IntValue(kUnit)}, {5, StringValue("Cơ sở một")}})}, t + 1)},
      {b, One(1, {Change(1, Id(1), {{3, IntValue(7)}})}, t + 2)},
      {a, One(2, {Change(1, Id(2), {{2, IntValue(kUnit)}, {4, kcnet::testing::DoubleValue(-1.5)}})},
              t + 3)},
      {b, One(2, {Deletion(1, Id(2))}, t + 4)},
      {a, One(3,
              {Change(1, Id(3),
                      {{2, IntValue(kUnit)},
                       {3, IntValue(1)},
                       {4, kcnet::testing::DoubleValue(2)},
                       {5, StringValue("Máy sấy")},
                       {6, flag},
                       {7, blob}})},
              t + 5)},
      {b, One(3, {Change(2, Id(4), {{2, IntValue(kUnit)}, {3, StringValue("ghi chú")}})}, t + 6)},
      {a, One(4, {Change(1, Id(3), {{5, StringValue("Máy sấy mới")}})}, t + 7)},
  };
  for (const auto& step : script) {
    auto on_pg = pg->Apply(step.first, step.second);
    auto on_lite = lite->Apply(step.first, step.second);
    ASSERT_TRUE(on_pg.ok() && on_lite.ok());
  }
  auto download = [](sync::ServerStore* store, size_t page_size) {
    std::map<std::string, std::string> out;  // id -> change without its op
    kcnet::v1::BucketCursor cursor;
    cursor.set_bucket(kUnit);
    std::vector<kcnet::v1::BucketCursor> cursors = {cursor};
    for (int pages = 0; pages < 20; ++pages) {
      kcnet::v1::ChangeBatch page;
      sync::DownloadLimits limits;
      limits.max_changes = page_size;
      EXPECT_TRUE(store->ChangesSince(cursors, limits, &page).ok());
      for (const RecordChange& c : page.changes()) out[c.id()] = WithoutOps(c);
      if (page.checkpoints_size() > 0 || page.cursors_size() == 0) break;
      cursors.assign(page.cursors().begin(), page.cursors().end());
    }
    return out;
  };
  for (size_t page_size : {1000, 1}) {
    const auto from_pg = download(pg.get(), page_size);
    const auto from_lite = download(lite.get(), page_size);
    EXPECT_EQ(from_pg.size(), 4u) << page_size;
    EXPECT_EQ(from_pg, from_lite) << page_size;
  }
}

// The page as the stream sends it (SerializedChangesSince, pgsync18b): PostgreSQL splices
// each record's stored bytes in from op 0 instead of parsing them. Its bytes must parse as
// the ChangeBatch ChangesSince() gives, field for field, on both stores: from scratch
// (spliced), resumed from a cursor (built and serialized), one record a page, with a
// deletion, every kind of value, a second type, and a row written before a field was
// added to its type (field_ops one field short: not spliced, built as before).
TEST_F(PgServerStoreTest, ASerializedPageParsesAsTheChangesSincePage) {
  auto pg = OpenPg();
  auto lite = OpenSqlite();
  ASSERT_TRUE(pg && lite);
  const sync::Writer a = Device("tablet-a"), b = Device("tablet-b");
  const uint64_t t = sync::HlcPack(kT0, 0);
  kcnet::v1::Value flag, blob;
  flag.set_bool_value(true);
  blob.set_bytes_value(std::string("\x00\x01\xff", 3));
  std::vector<std::pair<sync::Writer, MutationBatch>> script = {
      {a, One(1, {Change(1, Id(1), {{2, IntValue(kUnit)}, {5, StringValue("Cơ sở một")}})}, t + 1)},
      {b, One(1, {Change(1, Id(1), {{3, IntValue(7)}})}, t + 2)},
      {a, One(2, {Change(1, Id(2), {{2, IntValue(kUnit)}, {4, kcnet::testing::DoubleValue(-1.5)}})},
              t + 3)},
      {b, One(2, {Deletion(1, Id(2))}, t + 4)},
      {a, One(3,
              {Change(1, Id(3),
                      {{2, IntValue(kUnit)},
                       {3, IntValue(1)},
                       {4, kcnet::testing::DoubleValue(2)},
                       {5, StringValue("Máy sấy")},
                       {6, flag},
                       {7, blob}})},
              t + 5)},
      {b, One(3, {Change(2, Id(4), {{2, IntValue(kUnit)}, {3, StringValue("ghi chú")}})}, t + 6)},
      {a, One(4, {Change(1, Id(3), {{5, StringValue("Máy sấy mới")}})}, t + 7)},
      {a, One(5, {Change(1, Id(5), {{2, IntValue(kUnit)}, {3, IntValue(9)}})}, t + 8)},
  };
  for (const auto& step : script) {
    auto on_pg = pg->Apply(step.first, step.second);
    auto on_lite = lite->Apply(step.first, step.second);
    ASSERT_TRUE(on_pg.ok() && on_lite.ok());
  }
  // Record 5 as if written before its type's last field existed.
  auto conn = PgConn::Connect(pg_->conninfo());
  ASSERT_TRUE(conn.ok()) << conn.status();
  auto cut = (*conn)->Query(absl::StrCat(
      "UPDATE kcnet_records SET field_ops = substring(field_ops from 1 for length(field_ops) - 8) "
      "WHERE id = '",
      *sync::UuidToText(Id(5)), "'"));
  ASSERT_TRUE(cut.ok()) << cut.status();
  ASSERT_EQ(cut->affected(), 1);
  for (sync::ServerStore* store : {static_cast<sync::ServerStore*>(pg.get()), lite.get()}) {
    const std::string name = store == lite.get() ? "sqlite" : "postgres";
    for (size_t page_size : {1000, 1}) {
      kcnet::v1::BucketCursor start;
      start.set_bucket(kUnit);
      std::vector<kcnet::v1::BucketCursor> cursors = {start};
      int changes = 0;
      for (int pages = 0; pages < 20; ++pages) {
        sync::DownloadLimits limits;
        limits.max_changes = page_size;
        kcnet::v1::ChangeBatch expected;
        ASSERT_TRUE(store->ChangesSince(cursors, limits, &expected).ok());
        kcnet::v1::ChangeBatch head;
        sync::SerializedPage wire(&head);
        ASSERT_TRUE(store->SerializedChangesSince(cursors, limits, &wire).ok());
        EXPECT_EQ(wire.changes_size(), expected.changes_size()) << name;
        kcnet::v1::ChangeBatch parsed;
        ASSERT_TRUE(parsed.ParseFromString(wire.Serialize())) << name;
        EXPECT_EQ(parsed.DebugString(), expected.DebugString()) << name << " " << page_size;
        // PostgreSQL's changes from op 0 were spliced: each id follows the stored fields,
        // where protobuf itself would write it second, so the bytes are not SQLite's
        // canonical ones (this fails if nothing is spliced).
        if (store == lite.get()) {
          EXPECT_EQ(wire.Serialize(), expected.SerializeAsString()) << name;
        } else if (pages == 0) {
          EXPECT_NE(wire.Serialize(), expected.SerializeAsString()) << name;
        }
        // And what the stream sends: deflated, then inflated by the device.
        kcnet::v1::ChangeBatch inflated;
        ASSERT_TRUE(sync::InflatePage(sync::DeflatePage(wire), &inflated).ok());
        EXPECT_EQ(inflated.DebugString(), expected.DebugString()) << name;
        changes += expected.changes_size();
        if (expected.checkpoints_size() > 0 || expected.cursors_size() == 0) break;
        cursors.assign(expected.cursors().begin(), expected.cursors().end());
      }
      EXPECT_EQ(changes, 5) << name << " " << page_size;
      // Resumed: the changes after the second record's op (built, not spliced).
      kcnet::v1::ChangeBatch all;
      ASSERT_TRUE(store->ChangesSince({start}, {}, &all).ok());
      ASSERT_EQ(all.changes_size(), 5);
      kcnet::v1::BucketCursor resumed = start;
      resumed.set_op(all.changes(1).op());
      resumed.set_floor(all.changes(1).op());
      kcnet::v1::ChangeBatch expected;
      ASSERT_TRUE(store->ChangesSince({resumed}, {}, &expected).ok());
      kcnet::v1::ChangeBatch head;
      sync::SerializedPage wire(&head);
      ASSERT_TRUE(store->SerializedChangesSince({resumed}, {}, &wire).ok());
      kcnet::v1::ChangeBatch parsed;
      ASSERT_TRUE(parsed.ParseFromString(wire.Serialize()));
      EXPECT_EQ(expected.changes_size(), 3) << name;
      EXPECT_EQ(parsed.DebugString(), expected.DebugString()) << name;
    }
  }
}

// A full page of one bucket makes the store read the next page ahead (pgsync18). A write
// to the bucket between the two pages, through this instance or another, must not be
// hidden by that read: the second page is what a fresh read gives (record 3, updated,
// has moved behind record 5). Fails when a read-ahead is used without its epoch check.
TEST_F(PgServerStoreTest, APageReadAheadIsNotServedAfterAWriteToItsBucket) {
  for (const bool other_instance : {false, true}) {
    SCOPED_TRACE(other_instance ? "written through another instance" : "written through this one");
    const int64_t unit = other_instance ? kOtherUnit : kUnit;
    const sync::Writer device = Device(other_instance ? "tablet-b" : "tablet-a");
    const uint64_t base = other_instance ? 100 : 0;  // other records in the second round
    auto reader = OpenPg();
    auto other = other_instance ? OpenPg() : nullptr;
    ASSERT_TRUE(reader && (other || !other_instance));
    sync::ServerStore* writer = other_instance ? other.get() : reader.get();
    absl::Mutex mu;
    std::set<int64_t> seen;
    reader->SetCommitListener([&](const std::vector<int64_t>& buckets, uint64_t) {
      absl::MutexLock lock(&mu);
      seen.insert(buckets.begin(), buckets.end());
    });
    const uint64_t t = sync::HlcPack(kT0, 0);
    for (uint64_t i = 1; i <= 5; ++i) {
      ASSERT_TRUE(
          writer
              ->Apply(
                  device,
                  One(i, {Change(1, Id(base + i), {{2, IntValue(unit)}, {3, IntValue(1)}})}, t + i))
              .ok());
    }
    ASSERT_TRUE(WaitFor(mu, seen, unit));
    sync::DownloadLimits limits;
    limits.max_changes = 2;
    kcnet::v1::BucketCursor start;
    start.set_bucket(unit);
    kcnet::v1::ChangeBatch first;
    ASSERT_TRUE(reader->ChangesSince({start}, limits, &first).ok());
    ASSERT_EQ(first.changes_size(), 2);
    EXPECT_EQ(first.changes(1).id(), Id(base + 2));
    // Time for PostgreSQL to answer the page read ahead before the write begins (else
    // the read waits for the write's head lock and sees it anyway).
    absl::SleepFor(absl::Milliseconds(100));
    {
      absl::MutexLock lock(&mu);
      seen.clear();
    }
    ASSERT_TRUE(
        writer->Apply(device, One(6, {Change(1, Id(base + 3), {{3, IntValue(9)}})}, t + 10)).ok());
    // Another instance's write is known once the watcher has told of it; this instance's
    // before Apply returns.
    if (other_instance) {
      ASSERT_TRUE(WaitFor(mu, seen, unit));
    }
    kcnet::v1::ChangeBatch second;
    std::vector<kcnet::v1::BucketCursor> cursors(first.cursors().begin(), first.cursors().end());
    ASSERT_TRUE(reader->ChangesSince(cursors, limits, &second).ok());
    ASSERT_EQ(second.changes_size(), 2);
    EXPECT_EQ(second.changes(0).id(), Id(base + 4));
    EXPECT_EQ(second.changes(1).id(), Id(base + 5));
  }
}

// With one reader connection, whatever else reads between two pages (a list, a
// checkpoint) uses the connection that holds the page read ahead: it must get its own
// answers, and the next page must still be right.
TEST_F(PgServerStoreTest, ReadsBetweenTwoPagesShareTheConnectionOfThePageReadAhead) {
  sync::ServerStoreOptions options;
  options.clock = &wall_;
  options.reader_connections = 1;
  auto opened = PgServerStore::Open(pg_->conninfo(), &schema_, options, PgServerStoreOptions{});
  ASSERT_TRUE(opened.ok()) << opened.status();
  PgServerStore& store = **opened;
  const uint64_t t = sync::HlcPack(kT0, 0);
  for (uint64_t i = 1; i <= 6; ++i) {
    ASSERT_TRUE(
        store
            .Apply(Device("tablet-a"),
                   One(i, {Change(1, Id(i), {{2, IntValue(kUnit)}, {3, IntValue(1)}})}, t + i))
            .ok());
  }
  sync::DownloadLimits limits;
  limits.max_changes = 2;
  kcnet::v1::BucketCursor cursor;
  cursor.set_bucket(kUnit);
  std::vector<kcnet::v1::BucketCursor> cursors = {cursor};
  std::vector<std::string> ids;
  for (int pages = 0; pages < 5; ++pages) {
    kcnet::v1::ChangeBatch page;
    ASSERT_TRUE(store.ChangesSince(cursors, limits, &page).ok());
    for (const RecordChange& c : page.changes()) ids.push_back(c.id());
    if (page.checkpoints_size() > 0) break;
    cursors.assign(page.cursors().begin(), page.cursors().end());
    // Between the pages, on the same (only) connection.
    sync::ListQuery query;
    query.type = 1;
    query.buckets = {kUnit};
    auto listed = store.List(query);
    ASSERT_TRUE(listed.ok()) << listed.status();
    EXPECT_EQ(listed->size(), 6u);
    auto checkpoint = store.Checkpoint(kUnit);
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
    EXPECT_EQ(checkpoint->records(), 6u);
  }
  std::vector<std::string> expected;
  for (uint64_t i = 1; i <= 6; ++i) expected.push_back(Id(i));
  EXPECT_EQ(ids, expected);
}

TEST_F(PgServerStoreTest, AStoreWithoutTheProvinceMapListsAndReadsEveryPartition) {
  // kcnet-server writes with the directory's province map; a store opened without it
  // (an admin tool, an instance whose directory is behind) must still find the rows: the
  // bucket head says which partition holds a bucket.
  auto writer = OpenPg();
  ASSERT_TRUE(writer);
  const uint64_t t = sync::HlcPack(kT0, 0);
  ASSERT_TRUE(writer
                  ->Apply(Device("tablet-a"),
                          One(1, {Change(1, Id(7), {{2, IntValue(kOtherUnit)}})}, t + 1))
                  .ok());
  sync::ServerStoreOptions options;
  options.clock = &wall_;
  auto reader = PgServerStore::Open(pg_->conninfo(), &schema_, options, PgServerStoreOptions{});
  ASSERT_TRUE(reader.ok()) << reader.status();
  sync::ListQuery query;
  query.type = 1;
  query.buckets = {kOtherUnit};
  auto listed = (*reader)->List(query);
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->size(), 1u) << "the row in province 1's partition was not listed";
  EXPECT_EQ((*listed)[0].id(), Id(7));
  auto read = (*reader)->ReadRecord(1, Id(7));
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(read->has_value());
  // And its writes land where the head says: the province-aware store downloads them.
  ASSERT_TRUE((*reader)
                  ->Apply(Device("tablet-b"),
                          One(1, {Change(1, Id(8), {{2, IntValue(kOtherUnit)}})}, t + 2))
                  .ok());
  kcnet::v1::BucketCursor cursor;
  cursor.set_bucket(kOtherUnit);
  kcnet::v1::ChangeBatch batch;
  ASSERT_TRUE(writer->ChangesSince({cursor}, sync::DownloadLimits{}, &batch).ok());
  std::set<std::string> ids;
  for (const RecordChange& change : batch.changes()) ids.insert(change.id());
  EXPECT_EQ(ids, (std::set<std::string>{Id(7), Id(8)}));
}

// What the plans' ApprovalGuard asks before it trusts a request's state: which buckets
// another instance is writing right now (head row held FOR UPDATE by an open transaction).
// The group's own buckets and buckets without a head row are never reported.
TEST_F(PgServerStoreTest, AValidatorSeesWhichBucketsAnotherWriterHoldsInFlight) {
  auto store = OpenPg();
  ASSERT_TRUE(store);
  const uint64_t t = sync::HlcPack(kT0, 0);
  ASSERT_TRUE(
      store->Apply(Device("tablet-a"), One(1, {Change(1, Id(1), {{2, IntValue(kUnit)}})}, t + 1))
          .ok());
  // Another instance's group in flight in kUnit.
  auto writer = PgConn::Connect(pg_->conninfo());
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Exec("BEGIN").ok());
  ASSERT_TRUE((*writer)->Exec("SELECT 1 FROM kcnet_bucket_head WHERE bucket = 42 FOR UPDATE").ok());
  std::vector<int64_t> seen;
  absl::Status asked;
  auto ask = [&](const kcnet::v1::Mutation&, sync::RecordReader& reader) -> absl::Status {
    absl::StatusOr<std::vector<int64_t>> busy =
        reader.BucketsWrittenElsewhere({kUnit, kOtherUnit, 99});
    if (!busy.ok()) {
      asked = busy.status();
      return busy.status();
    }
    seen = *busy;
    return absl::OkStatus();
  };
  auto ack = store->Apply(Device("tablet-b"),
                          One(1, {Change(1, Id(2), {{2, IntValue(kOtherUnit)}})}, t + 2), ask);
  ASSERT_TRUE(ack.ok()) << ack.status();
  ASSERT_TRUE(asked.ok()) << asked;
  EXPECT_EQ(seen, std::vector<int64_t>({kUnit}));
  // Once that writer ends, nothing is in flight.
  ASSERT_TRUE((*writer)->Exec("ROLLBACK").ok());
  seen = {-1};
  ack = store->Apply(Device("tablet-b"),
                     One(2, {Change(1, Id(2), {{2, IntValue(kOtherUnit)}})}, t + 3), ask);
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_TRUE(seen.empty());
  // And the SQLite store, one writer, never reports any.
  auto lite = OpenSqlite();
  ASSERT_TRUE(lite);
  seen = {-1};
  ack = lite->Apply(Device("tablet-b"),
                    One(1, {Change(1, Id(2), {{2, IntValue(kOtherUnit)}})}, t + 2), ask);
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_TRUE(seen.empty());
}

}  // namespace
}  // namespace kcnet::pgstore

namespace kcnet::pgstore {
namespace {

// Migration 6: a database written by a kcnet before it (schema version 4, the primary key
// (province, type, id) and the index (type, id)) upgrades when a newer store opens it: the
// records are all there, the index is gone, the primary key is (type, id, province) and
// reads by (type, id) use it, and writing an existing record updates it in place.
TEST_F(PgServerStoreTest, AVersion4DatabaseUpgradesToOneIndexFewerAndKeepsItsRecords) {
  // The rows to carry over, written by today's store in a database of their own.
  ASSERT_TRUE(pg_->CreateDatabase("source").ok());
  sync::ServerStoreOptions options;
  options.clock = &wall_;
  PgServerStoreOptions pg_options;
  pg_options.province_of = [](int64_t bucket) { return static_cast<int32_t>(bucket % 2); };
  const uint64_t t = sync::HlcPack(kT0, 0);
  {
    auto source = PgServerStore::Open(pg_->conninfo("source"), &schema_, options, pg_options);
    ASSERT_TRUE(source.ok()) << source.status();
    MutationBatch batch = One(1, {Change(1, Id(1), {{2, IntValue(kUnit)}})}, t + 1);
    *batch.add_mutations() =
        One(2, {Change(1, Id(2), {{2, IntValue(kOtherUnit)}, {3, IntValue(4)}})}, t + 2)
            .mutations(0);
    *batch.add_mutations() = One(3, {Change(1, Id(3), {{2, IntValue(kUnit)}})}, t + 3).mutations(0);
    auto ack = (*source)->Apply(Device("tablet-a"), batch);
    ASSERT_TRUE(ack.ok()) << ack.status();
  }
  // A version-4 database: the migrations up to 4 by hand, then the same rows.
  auto old_db = PgConn::Connect(pg_->conninfo());
  auto source_db = PgConn::Connect(pg_->conninfo("source"));
  ASSERT_TRUE(old_db.ok() && source_db.ok());
  PgConn& db = **old_db;
  ASSERT_TRUE(db.Exec("CREATE TABLE kcnet_schema(version integer PRIMARY KEY)").ok());
  for (int v = 0; v < 4; ++v) {
    ASSERT_TRUE(db.Exec(kPgMigrations[v]).ok()) << v;
    ASSERT_TRUE(db.Exec(absl::StrCat("INSERT INTO kcnet_schema VALUES (", v + 1, ")")).ok());
  }
  ASSERT_TRUE(EnsureRecordsPartition(db, 0).ok());
  ASSERT_TRUE(EnsureRecordsPartition(db, 1).ok());
  auto rows = (*source_db)
                  ->QueryBinary(
                      "SELECT province, bucket, type, id, op, deleted::int, row, field_ops FROM "
                      "kcnet_records");
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->rows(), 3);
  for (int r = 0; r < rows->rows(); ++r) {
    ASSERT_TRUE(
        db.Query(
              "INSERT INTO kcnet_records VALUES ($1, $2, $3, $4, $5, $6::int::boolean, "
              "$7, $8)",
              {PgParam::Int(rows->GetBinaryInt(r, 0)), PgParam::Int(rows->GetBinaryInt(r, 1)),
               PgParam::Int(rows->GetBinaryInt(r, 2)), PgParam::Text(std::string(rows->Get(r, 3))),
               PgParam::Int(rows->GetBinaryInt(r, 4)), PgParam::Int(rows->GetBinaryInt(r, 5)),
               PgParam::Bytes(std::string(rows->Get(r, 6))),
               PgParam::Bytes(std::string(rows->Get(r, 7)))})
            .ok());
  }
  auto heads =
      (*source_db)
          ->Query("SELECT bucket, province, last_op, checksum, records FROM kcnet_bucket_head");
  ASSERT_TRUE(heads.ok());
  for (int r = 0; r < heads->rows(); ++r) {
    ASSERT_TRUE(db.Query("INSERT INTO kcnet_bucket_head(bucket, province, last_op, checksum, "
                         "records) VALUES ($1, $2, $3, $4, $5)",
                         {PgParam::Int(heads->GetInt(r, 0)), PgParam::Int(heads->GetInt(r, 1)),
                          PgParam::Int(heads->GetInt(r, 2)), PgParam::Int(heads->GetInt(r, 3)),
                          PgParam::Int(heads->GetInt(r, 4))})
                    .ok());
  }
  ASSERT_TRUE(db.Exec("SELECT setval('kcnet_op_seq', 1000)").ok());
  auto index_count = [&db]() {
    auto n = db.Query(
        "SELECT count(*) FROM pg_indexes WHERE tablename = 'kcnet_records' AND "
        "schemaname = current_schema()");
    return n.ok() ? n->GetInt(0, 0) : -1;
  };
  EXPECT_EQ(index_count(), 3);  // the key, the bucket's log, (type, id)

  auto store = PgServerStore::Open(pg_->conninfo(), &schema_, options, pg_options);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(*SchemaVersion(db), kPgSchemaVersion);
  EXPECT_GE(kPgSchemaVersion, 6);
  EXPECT_EQ(index_count(), 2);
  auto key = db.Query("SELECT pg_get_indexdef('kcnet_records_pkey'::regclass)");
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_NE(std::string(key->Get(0, 0)).find("(type, id, province)"), std::string::npos)
      << key->Get(0, 0);
  // A read by (type, id) is an index scan on each partition's key (sequential scans off:
  // the tables are tiny, the question is whether an index can serve it).
  ASSERT_TRUE(db.Exec("SET enable_seqscan = off").ok());
  auto plan = db.Query("EXPLAIN SELECT bucket, op FROM kcnet_records WHERE type = 1 AND id = 'x'");
  ASSERT_TRUE(plan.ok()) << plan.status();
  std::string plan_text;
  for (int r = 0; r < plan->rows(); ++r) absl::StrAppend(&plan_text, plan->Get(r, 0), "\n");
  EXPECT_NE(plan_text.find("Index"), std::string::npos) << plan_text;
  EXPECT_NE(plan_text.find("pkey"), std::string::npos) << plan_text;
  EXPECT_EQ(plan_text.find("Seq Scan"), std::string::npos) << plan_text;

  // A download's page reads the bucket's log index in the head's partition only (the
  // other province's partition is pruned at run time: "never executed").
  auto page_plan = db.Query(
      "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) "
      "SELECT h.last_op, r.op FROM kcnet_bucket_head h LEFT JOIN LATERAL (SELECT op "
      "FROM kcnet_records WHERE province = h.province AND bucket = h.bucket AND op > 0 "
      "AND op <= h.last_op ORDER BY op LIMIT 1000) r ON true WHERE h.bucket = 42 ORDER BY r.op");
  ASSERT_TRUE(page_plan.ok()) << page_plan.status();
  std::string page_text;
  for (int r = 0; r < page_plan->rows(); ++r)
    absl::StrAppend(&page_text, page_plan->Get(r, 0), "\n");
  std::cout << page_text;
  EXPECT_NE(page_text.find("kcnet_records_p0_province_bucket_op_idx"), std::string::npos)
      << page_text;
  EXPECT_NE(page_text.find("never executed"), std::string::npos) << page_text;
  // Every record is there, in its bucket.
  for (int64_t unit : {kUnit, kOtherUnit}) {
    kcnet::v1::BucketCursor cursor;
    cursor.set_bucket(unit);
    auto page = (*store)->ChangesSince({cursor});
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_EQ(page->changes_size(), unit == kUnit ? 2 : 1) << unit;
  }
  // Writing an existing record updates its row (the upsert's conflict is on the new key).
  auto ack =
      (*store)->Apply(Device("tablet-b"), One(1, {Change(1, Id(2), {{3, IntValue(9)}})}, t + 10));
  ASSERT_TRUE(ack.ok()) << ack.status();
  // (Applied with a conflict: tablet-b had not seen the record; its newer value wins.)
  ASSERT_NE(ack->results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_REFUSED)
      << ack->results(0).reason();
  auto count = db.Query("SELECT count(*) FROM kcnet_records WHERE id = $1",
                        {PgParam::Text(*sync::UuidToText(Id(2)))});
  ASSERT_TRUE(count.ok());
  EXPECT_EQ(count->GetInt(0, 0), 1);
  auto read = (*store)->ReadRecord(1, Id(2));
  ASSERT_TRUE(read.ok() && read->has_value());
  bool saw_nine = false;
  for (const auto& f : (*read)->fields())
    saw_nine = saw_nine || (f.field() == 3 && f.value().int_value() == 9);
  EXPECT_TRUE(saw_nine) << (*read)->DebugString();
}

}  // namespace
}  // namespace kcnet::pgstore
