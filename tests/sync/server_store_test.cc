#include "sync/server_store.h"

#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kcnet/v1/domain.pb.h"
#include "sync/model/record_types.h"
#include "sync/record_store.h"
#include "sync/sqlite.h"
#include "tests/testing/test_util.h"

namespace kcnet::sync {
namespace {

using ::kcnet::testing::Change;
using ::kcnet::testing::Deletion;
using ::kcnet::testing::FieldOf;
using ::kcnet::testing::Id;
using ::kcnet::testing::IntValue;
using ::kcnet::testing::StringValue;
using ::kcnet::v1::MutationBatch;
using ::kcnet::v1::PushAck;
using ::kcnet::v1::RecordChange;
using ::testing::HasSubstr;

constexpr int64_t kT0 = 1764000000000;
constexpr int64_t kUnit = 42;

class ServerStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }

  void Reopen() {
    store_.reset();
    ServerStoreOptions options;
    options.clock = &wall_;
    options.max_batch_mutations = 50;
    auto store = ServerStore::Open(dir_.File("server.db"), &schema_, options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }

  static Writer Device(const std::string& name) { return Writer{name, NodeIdFor(name)}; }

  // One mutation `seq` of `device`, its changes stamped `hlc` and based on `base_op`.
  static MutationBatch One(uint64_t seq, std::vector<RecordChange> changes, uint64_t hlc,
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

  PushAck MustApply(const Writer& w, const MutationBatch& batch) {
    auto ack = store_->Apply(w, batch);
    EXPECT_TRUE(ack.ok()) << ack.status();
    return ack.ok() ? *ack : PushAck();
  }

  RecordChange MustRead(const std::string& id) {
    auto r = store_->ReadRecord(1, id);
    EXPECT_TRUE(r.ok() && r->has_value());
    return r.ok() && r->has_value() ? **r : RecordChange();
  }

  uint64_t Checksum() { return store_->Checkpoint(kUnit)->checksum(); }

  // Holds the first batch whose validator it is inside Apply (its mutations' checks wait
  // for `release`), so that batches sent meanwhile queue up for one group commit.
  struct Gate {
    absl::Notification entered, release;
    MutationValidator validator() {
      return [this](const kcnet::v1::Mutation&, RecordReader&) {
        if (!entered.HasBeenNotified()) entered.Notify();
        release.WaitForNotification();
        return absl::OkStatus();
      };
    }
  };

  // Waits (up to 20 s) until `n` batches wait for the group being applied; returns how many.
  size_t WaitForWaitingBatches(size_t n) {
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (store_->waiting_batches() < n && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(1));
    }
    return store_->waiting_batches();
  }

  kcnet::testing::TempDir dir_;
  Schema schema_ = kcnet::testing::TestSchema();
  FakeClock wall_{kT0};
  std::unique_ptr<ServerStore> store_;
  const Writer a_ = Device("tablet-a");
  const Writer b_ = Device("tablet-b");
};

TEST_F(ServerStoreTest, CreateThenReadAssignsOpsAndChecksum) {
  PushAck ack = MustApply(
      a_, One(1, {Change(1, Id(1), {{2, IntValue(kUnit)}, {3, IntValue(5)}})}, HlcPack(kT0, 0)));
  ASSERT_EQ(ack.results_size(), 1);
  EXPECT_EQ(ack.results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_APPLIED);
  EXPECT_EQ(ack.results(0).op(), 1u);
  EXPECT_EQ(ack.last_applied_seq(), 1u);
  const RecordChange r = MustRead(Id(1));
  EXPECT_EQ(FieldOf(r, 3).int_value(), 5);
  EXPECT_EQ(r.node(), a_.node);
  auto cp = store_->Checkpoint(kUnit);
  EXPECT_EQ(cp->op(), 1u);
  EXPECT_EQ(cp->records(), 1u);
  EXPECT_NE(cp->checksum(), 0u);
}

TEST_F(ServerStoreTest, NewerWriteWinsPerFieldAndOlderLoses) {
  MustApply(
      a_,
      One(1, {Change(1, Id(1), {{2, IntValue(kUnit)}, {3, IntValue(1)}, {5, StringValue("a")}})},
          HlcPack(kT0, 0)));
  // B saw op 1 and sets count later: wins, no conflict.
  PushAck ack =
      MustApply(b_, One(1, {Change(1, Id(1), {{3, IntValue(2)}})}, HlcPack(kT0 + 10, 0), 1));
  EXPECT_EQ(ack.results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_APPLIED);
  // A (based on op 1, i.e. it never saw B's op 2) sets label later and count earlier.
  MutationBatch batch =
      One(2, {Change(1, Id(1), {{3, IntValue(3)}, {5, StringValue("b")}})}, HlcPack(kT0 + 5, 0), 1);
  ack = MustApply(a_, batch);
  EXPECT_EQ(ack.results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_APPLIED_WITH_CONFLICT);
  ASSERT_EQ(ack.results(0).conflicts_size(), 1);
  const auto& c = ack.results(0).conflicts(0);
  EXPECT_EQ(c.field(), 3u);
  EXPECT_EQ(c.winner_value().int_value(), 2);
  EXPECT_EQ(c.winner_node(), b_.node);
  EXPECT_EQ(c.loser_value().int_value(), 3);
  EXPECT_EQ(c.loser_mutation().device_id(), "tablet-a");
  const RecordChange r = MustRead(Id(1));
  EXPECT_EQ(FieldOf(r, 3).int_value(), 2);       // B's newer count kept
  EXPECT_EQ(FieldOf(r, 5).string_value(), "b");  // A's label taken
  auto listed = store_->ListConflicts({kUnit}, false, 0, 10);
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].id(), c.id());
  ASSERT_TRUE(store_->MarkConflictResolved(c.id()).ok());
  EXPECT_TRUE(store_->ListConflicts({kUnit}, false, 0, 10)->empty());
  EXPECT_EQ(store_->MarkConflictResolved(999).code(), absl::StatusCode::kNotFound);
}

TEST_F(ServerStoreTest, ANewerConcurrentWriteRecordsTheOverwrittenValue) {
  MustApply(a_,
            One(1, {Change(1, Id(1), {{2, IntValue(kUnit)}, {3, IntValue(1)}})}, HlcPack(kT0, 0)));
  MustApply(a_, One(2, {Change(1, Id(1), {{3, IntValue(7)}})}, HlcPack(kT0 + 1, 0), 1));
  // B edits from op 1 (it never saw A's 7) with a later clock: B wins, A's 7 is recorded.
  PushAck ack =
      MustApply(b_, One(1, {Change(1, Id(1), {{3, IntValue(9)}})}, HlcPack(kT0 + 2, 0), 1));
  ASSERT_EQ(ack.results(0).conflicts_size(), 1);
  EXPECT_EQ(ack.results(0).conflicts(0).loser_value().int_value(), 7);
  EXPECT_EQ(ack.results(0).conflicts(0).loser_node(), a_.node);
  EXPECT_EQ(FieldOf(MustRead(Id(1)), 3).int_value(), 9);
}

TEST_F(ServerStoreTest, DeleteWinsOverConcurrentAndLaterUpdates) {
  MustApply(a_,
            One(1, {Change(1, Id(1), {{2, IntValue(kUnit)}, {3, IntValue(1)}})}, HlcPack(kT0, 0)));
  MustApply(b_, One(1, {Deletion(1, Id(1))}, HlcPack(kT0 + 1, 0), 1));
  // A's later-clocked update of the deleted record: ignored, reported as a conflict.
  PushAck ack =
      MustApply(a_, One(2, {Change(1, Id(1), {{3, IntValue(5)}})}, HlcPack(kT0 + 9, 0), 1));
  EXPECT_EQ(ack.results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_APPLIED_WITH_CONFLICT);
  EXPECT_EQ(ack.results(0).conflicts(0).loser_value().int_value(), 5);
  EXPECT_TRUE(MustRead(Id(1)).deleted());
  EXPECT_EQ(store_->Checkpoint(kUnit)->records(), 0u);
}

TEST_F(ServerStoreTest, RetriedBatchIsADuplicateAndChangesNothing) {
  MutationBatch batch =
      One(1, {Change(1, Id(1), {{2, IntValue(kUnit)}, {3, IntValue(1)}})}, HlcPack(kT0, 0));
  MustApply(a_, batch);
  const uint64_t sum = Checksum();
  const uint64_t op = store_->last_op();
  PushAck again = MustApply(a_, batch);
  EXPECT_EQ(again.results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_DUPLICATE);
  EXPECT_EQ(again.last_applied_seq(), 1u);
  EXPECT_EQ(Checksum(), sum);
  EXPECT_EQ(store_->last_op(), op);
  // The sequence survives a restart.
  Reopen();
  EXPECT_EQ(MustApply(a_, batch).results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_DUPLICATE);
  EXPECT_EQ(*store_->LastAppliedSeq("tablet-a"), 1u);
  EXPECT_EQ(store_->last_op(), op);
}

// Found by the property test: a refusal whose acknowledgement is lost must be answered
// again on retry, not turned into DUPLICATE, until the device says it has settled it.
TEST_F(ServerStoreTest, ARetriedRefusalIsRefusedAgainUntilTheDeviceSettlesIt) {
  MutationBatch bad =
      One(1, {Change(1, Id(1), {{2, IntValue(kUnit)}, {3, IntValue(-1)}})}, HlcPack(kT0, 0));
  EXPECT_EQ(MustApply(a_, bad).results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_REFUSED);
  PushAck again = MustApply(a_, bad);  // the first acknowledgement was lost
  EXPECT_EQ(again.results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_REFUSED);
  EXPECT_THAT(again.results(0).reason(), HasSubstr("item.count: -1 is outside"));
  // A later batch that has not settled 1 keeps it; one that has settled it forgets it.
  MutationBatch next = One(2, {Change(2, Id(2), {{2, IntValue(kUnit)}})}, HlcPack(kT0, 1));
  MustApply(a_, next);
  EXPECT_EQ(MustApply(a_, bad).results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_REFUSED);
  next.set_settled_through(2);
  MustApply(a_, next);
  EXPECT_EQ(MustApply(a_, bad).results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_DUPLICATE);
}

TEST_F(ServerStoreTest, AGapInSequencesIsOutOfOrderAndNotApplied) {
  MutationBatch batch = One(2, {Change(1, Id(1), {{2, IntValue(kUnit)}})}, HlcPack(kT0, 0));
  PushAck ack = MustApply(a_, batch);
  EXPECT_EQ(ack.results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_OUT_OF_ORDER);
  EXPECT_THAT(ack.results(0).reason(), HasSubstr("push again from 1"));
  EXPECT_EQ(ack.last_applied_seq(), 0u);
  EXPECT_FALSE(store_->ReadRecord(1, Id(1))->has_value());
}

TEST_F(ServerStoreTest, ARefusedMutationChangesNothingAndTheRestOfTheBatchApplies) {
  MustApply(a_,
            One(1, {Change(1, Id(1), {{2, IntValue(kUnit)}, {3, IntValue(1)}})}, HlcPack(kT0, 0)));
  const uint64_t sum = Checksum();
  MutationBatch batch;
  auto* bad = batch.add_mutations();
  bad->set_seq(2);
  // A valid change to record 1 followed by an invalid one: all or nothing.
  auto ok_change = Change(1, Id(1), {{3, IntValue(50)}});
  ok_change.set_hlc(HlcPack(kT0 + 1, 0));
  ok_change.set_base_op(1);
  *bad->add_changes() = ok_change;
  auto bad_change = Change(1, Id(2), {{2, IntValue(kUnit)}, {4, kcnet::testing::DoubleValue(123)}});
  bad_change.set_hlc(HlcPack(kT0 + 1, 0));
  *bad->add_changes() = bad_change;
  auto* good = batch.add_mutations();
  good->set_seq(3);
  auto note = Change(2, Id(3), {{2, IntValue(kUnit)}, {3, StringValue("ok")}});
  note.set_hlc(HlcPack(kT0 + 2, 0));
  *good->add_changes() = note;

  PushAck ack = MustApply(a_, batch);
  ASSERT_EQ(ack.results_size(), 2);
  EXPECT_EQ(ack.results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_REFUSED);
  EXPECT_EQ(ack.results(0).field(), "changes[1].fields[1]");
  EXPECT_THAT(ack.results(0).reason(), HasSubstr("item.ratio: 123 is outside"));
  // The server's values come back so that the device can roll back.
  ASSERT_EQ(ack.results(0).server_values_size(), 1);
  EXPECT_EQ(FieldOf(ack.results(0).server_values(0), 3).int_value(), 1);
  EXPECT_EQ(ack.results(1).outcome(), kcnet::v1::MUTATION_OUTCOME_APPLIED);
  EXPECT_EQ(ack.last_applied_seq(), 3u);
  EXPECT_EQ(FieldOf(MustRead(Id(1)), 3).int_value(), 1);
  EXPECT_FALSE(store_->ReadRecord(1, Id(2))->has_value());
  EXPECT_NE(Checksum(), sum);  // the note was added...
  auto recomputed = [&] {
    return ServerStore::Open(dir_.File("server.db"), &schema_)
        .value()
        ->Checkpoint(kUnit)
        ->checksum();
  };
  EXPECT_EQ(Checksum(), recomputed());
}

TEST_F(ServerStoreTest, BadInputIsRefusedWithTheFieldAndNothingChanges) {
  MustApply(a_,
            One(1, {Change(1, Id(1), {{2, IntValue(kUnit)}, {3, IntValue(1)}})}, HlcPack(kT0, 0)));
  const uint64_t sum = Checksum();
  const uint64_t op = store_->last_op();
  struct Case {
    RecordChange change;
    uint64_t hlc;
    std::string field;
    std::string reason;
  };
  const uint64_t ok_hlc = HlcPack(kT0 + 1, 0);
  std::vector<Case> cases = {
      {Change(7, Id(1), {}), ok_hlc, "changes[0].type", "unknown record type 7"},
      {Change(1, Id(1), {{99, IntValue(1)}}), ok_hlc, "changes[0].fields[0]", "unknown field 99"},
      {Change(1, Id(1), {{3, StringValue("x")}}), ok_hlc, "changes[0].fields[0]",
       "expected a value of type int"},
      {Change(1, "bad-id", {{3, IntValue(1)}}), ok_hlc, "changes[0].id", "16-byte UUID"},
      {Change(1, Id(1), {{3, IntValue(2)}}), 0, "changes[0].hlc", "missing clock"},
      {Change(1, Id(1), {{2, IntValue(7)}}), ok_hlc, "changes[0].fields[0]",
       "bucket cannot change"},
      {Change(1, Id(5), {{3, IntValue(2)}}), ok_hlc, "changes[0].fields", "needs its unit"},
      {Deletion(1, Id(6)), ok_hlc, "changes[0].id", "does not exist"},
  };
  uint64_t seq = 1;
  for (const Case& c : cases) {
    PushAck ack = MustApply(b_, One(seq, {c.change}, c.hlc, 1));
    ASSERT_EQ(ack.results_size(), 1);
    EXPECT_EQ(ack.results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_REFUSED) << c.reason;
    EXPECT_EQ(ack.results(0).field(), c.field) << c.reason;
    EXPECT_THAT(ack.results(0).reason(), HasSubstr(c.reason));
    // A refusal is final: the sequence moves on.
    EXPECT_EQ(ack.last_applied_seq(), seq) << c.reason;
    seq = ack.last_applied_seq() + 1;
  }
  EXPECT_EQ(Checksum(), sum);
  EXPECT_EQ(store_->last_op(), op);
}

// A clock an hour ahead of the server's (beyond the 5-minute bound) is re-stamped with the
// server's clock, not refused: the write is kept and the result says so; the next change
// of the batch keeps its order after it.
TEST_F(ServerStoreTest, AClockBeyondTheSkewBoundIsRestamped) {
  const uint64_t future = HlcPack(kT0 + 3600 * 1000, 0);
  MutationBatch batch =
      One(1, {Change(1, Id(1), {{2, IntValue(kUnit)}, {3, IntValue(2)}})}, future);
  *batch.add_mutations() = One(2, {Change(1, Id(1), {{3, IntValue(3)}})}, future + 1).mutations(0);
  PushAck ack = MustApply(b_, batch);
  ASSERT_EQ(ack.results_size(), 2);
  for (const auto& r : ack.results()) {
    EXPECT_EQ(r.outcome(), kcnet::v1::MUTATION_OUTCOME_APPLIED) << r.reason();
    EXPECT_NE(r.restamped_hlc(), 0u);
  }
  absl::StatusOr<std::optional<RecordChange>> stored = store_->ReadRecord(1, Id(1));
  ASSERT_TRUE(stored.ok() && stored->has_value());
  EXPECT_LE(HlcWallMs((*stored)->hlc()), kT0 + 1);
  EXPECT_EQ(kcnet::testing::FieldOf(**stored, 3).int_value(), 3);  // the later change won
  EXPECT_LE(HlcWallMs(store_->clock().Now()), kT0 + 1);            // the server's clock stayed put
}

TEST_F(ServerStoreTest, ABatchOverTheLimitsIsRefusedWhole) {
  MutationBatch batch;
  for (int i = 1; i <= 51; ++i) {
    auto* m = batch.add_mutations();
    m->set_seq(i);
    auto c = Change(2, Id(i), {{2, IntValue(kUnit)}});
    c.set_hlc(HlcPack(kT0, 0));
    *m->add_changes() = c;
  }
  auto ack = store_->Apply(a_, batch);
  EXPECT_EQ(ack.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ack.status().message(), HasSubstr("batch.mutations: 51 mutations, at most 50"));
  EXPECT_EQ(store_->last_op(), 0u);
  EXPECT_EQ(*store_->LastAppliedSeq("tablet-a"), 0u);
}

TEST_F(ServerStoreTest, ChangesSincePagesPerBucketInOpOrderWithCheckpoints) {
  // 5 items and 3 notes in bucket 42, interleaved; 2 items in bucket 43.
  uint64_t seq = 0;
  for (int i = 0; i < 8; ++i) {
    const uint32_t type = i % 3 == 2 ? 2 : 1;
    MustApply(a_, One(++seq, {Change(type, Id(i), {{2, IntValue(kUnit)}})}, HlcPack(kT0, i)));
  }
  for (int i = 0; i < 2; ++i) {
    MustApply(a_, One(++seq, {Change(1, Id(100 + i), {{2, IntValue(43)}})}, HlcPack(kT0, 20 + i)));
  }
  // Update item 0 last: it moves to the end of bucket 42's log.
  MustApply(a_, One(++seq, {Change(1, Id(0), {{3, IntValue(9)}})}, HlcPack(kT0, 30), 1));

  kcnet::v1::BucketCursor cursor;
  cursor.set_bucket(kUnit);
  std::vector<uint64_t> ops;
  int pages = 0;
  while (true) {
    auto batch = store_->ChangesSince({cursor}, DownloadLimits{.max_changes = 3});
    ASSERT_TRUE(batch.ok()) << batch.status();
    ++pages;
    for (const auto& c : batch->changes()) {
      EXPECT_EQ(c.bucket(), kUnit);
      ops.push_back(c.op());
    }
    ASSERT_EQ(batch->cursors_size(), 1);
    cursor.set_op(batch->cursors(0).op());
    if (!batch->more()) {
      ASSERT_EQ(batch->checkpoints_size(), 1);
      EXPECT_EQ(batch->checkpoints(0).checksum(), Checksum());
      EXPECT_EQ(batch->checkpoints(0).op(), cursor.op());
      break;
    }
    ASSERT_LT(pages, 10);
  }
  EXPECT_EQ(pages, 3);
  ASSERT_EQ(ops.size(), 8u);  // each record once, at its latest op
  EXPECT_TRUE(std::is_sorted(ops.begin(), ops.end()));
  EXPECT_EQ(ops.back(), store_->last_op());

  // From a complete cursor (floor = op) after the creation, only the changed field comes
  // down; with floor 0, the whole record.
  kcnet::v1::BucketCursor late;
  late.set_bucket(kUnit);
  late.set_op(ops[ops.size() - 2]);
  late.set_floor(late.op());
  auto tail = store_->ChangesSince({late});
  ASSERT_EQ(tail->changes_size(), 1);
  ASSERT_EQ(tail->changes(0).fields_size(), 1);
  EXPECT_EQ(tail->changes(0).fields(0).field(), 3u);
}

TEST_F(ServerStoreTest, ValidatorRefusalsComeBackAsReasons) {
  MutationValidator no_labels = [](const kcnet::v1::Mutation& m, RecordReader&) {
    for (const auto& c : m.changes()) {
      for (const auto& f : c.fields()) {
        if (f.field() == 5)
          return absl::PermissionDeniedError("label: collaborators may not set it");
      }
    }
    return absl::OkStatus();
  };
  auto ack = store_->Apply(
      a_,
      One(1, {Change(1, Id(1), {{2, IntValue(kUnit)}, {5, StringValue("x")}})}, HlcPack(kT0, 0)),
      no_labels);
  ASSERT_TRUE(ack.ok());
  EXPECT_EQ(ack->results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_REFUSED);
  EXPECT_THAT(ack->results(0).reason(), HasSubstr("may not set it"));
  EXPECT_FALSE(store_->ReadRecord(1, Id(1))->has_value());
}

TEST_F(ServerStoreTest, RefusesToOpenAForeignOrNewerFile) {
  store_.reset();
  {
    auto db = Db::Open(dir_.File("other.db"));
    ASSERT_TRUE((*db)->Exec("CREATE TABLE photos(x)").ok());
  }
  auto foreign = ServerStore::Open(dir_.File("other.db"), &schema_);
  EXPECT_EQ(foreign.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(foreign.status().message(), HasSubstr("not a kcnet store"));
  {
    auto db = Db::Open(dir_.File("server.db"));
    ASSERT_TRUE((*db)->Exec("PRAGMA user_version = 99").ok());
  }
  auto newer = ServerStore::Open(dir_.File("server.db"), &schema_);
  EXPECT_THAT(newer.status().message(), HasSubstr("newer kcnet"));
}

// Batches that arrive while one is being applied wait and are then committed together, in
// arrival order, each answered as if alone (a retried batch in the group is a DUPLICATE).
TEST_F(ServerStoreTest, WaitingBatchesAreCommittedTogetherAndEachAnsweredAsIfAlone) {
  Gate gate;
  const ServerStore::WriteStats before = store_->write_stats();
  const MutationBatch first =
      One(1, {Change(1, Id(1), {{2, IntValue(kUnit)}, {3, IntValue(1)}})}, HlcPack(kT0, 0));
  std::vector<absl::StatusOr<PushAck>> acks(6, absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  threads.emplace_back([&] { acks[0] = store_->Apply(a_, first, gate.validator()); });
  gate.entered.WaitForNotification();
  for (int i = 1; i <= 4; ++i) {
    threads.emplace_back([&, i] {
      acks[i] =
          store_->Apply(Device(absl::StrCat("tablet-", i)),
                        One(1, {Change(1, Id(10 + i), {{2, IntValue(kUnit)}, {3, IntValue(i)}})},
                            HlcPack(kT0, i)));
    });
  }
  threads.emplace_back([&] { acks[5] = store_->Apply(a_, first); });  // a retry
  EXPECT_EQ(WaitForWaitingBatches(5), 5u);
  gate.release.Notify();
  for (std::thread& t : threads) t.join();

  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(acks[i].ok()) << i << ": " << acks[i].status();
    EXPECT_EQ(acks[i]->last_applied_seq(), 1u) << i;
    EXPECT_EQ(acks[i]->results(0).outcome(),
              i == 5 ? kcnet::v1::MUTATION_OUTCOME_DUPLICATE : kcnet::v1::MUTATION_OUTCOME_APPLIED)
        << i;
  }
  // The first batch alone, then the five that waited in one transaction.
  const ServerStore::WriteStats after = store_->write_stats();
  EXPECT_EQ(after.batches - before.batches, 6u);
  EXPECT_EQ(after.transactions - before.transactions, 2u);
  EXPECT_EQ(acks[1]->server_op(), store_->last_op());
  EXPECT_EQ(acks[4]->server_op(), store_->last_op());
  for (int i = 1; i <= 4; ++i) EXPECT_EQ(FieldOf(MustRead(Id(10 + i)), 3).int_value(), i);
}

// When storage fails inside a group, nothing of the group stays; each batch is applied
// again alone and only the failing one gets the error.
TEST_F(ServerStoreTest, AStorageFailureInAGroupFailsOnlyItsOwnBatch) {
  Gate gate;
  MutationValidator broken = [](const kcnet::v1::Mutation&, RecordReader&) {
    return absl::InternalError("disk I/O error");
  };
  const ServerStore::WriteStats before = store_->write_stats();
  std::vector<absl::StatusOr<PushAck>> acks(4, absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  threads.emplace_back([&] {
    acks[0] = store_->Apply(a_, One(1, {Change(1, Id(1), {{2, IntValue(kUnit)}})}, HlcPack(kT0, 0)),
                            gate.validator());
  });
  gate.entered.WaitForNotification();
  for (int i = 1; i <= 3; ++i) {
    threads.emplace_back([&, i] {
      acks[i] =
          store_->Apply(Device(absl::StrCat("tablet-", i)),
                        One(1, {Change(1, Id(10 + i), {{2, IntValue(kUnit)}})}, HlcPack(kT0, i)),
                        i == 2 ? broken : MutationValidator());
    });
    WaitForWaitingBatches(static_cast<size_t>(i));  // one at a time: the group's order is known
  }
  gate.release.Notify();
  for (std::thread& t : threads) t.join();

  ASSERT_TRUE(acks[0].ok()) << acks[0].status();
  ASSERT_TRUE(acks[1].ok()) << acks[1].status();
  ASSERT_TRUE(acks[3].ok()) << acks[3].status();
  EXPECT_EQ(acks[1]->results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_APPLIED);
  EXPECT_EQ(acks[3]->results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_APPLIED);
  EXPECT_EQ(acks[2].status().code(), absl::StatusCode::kInternal);
  EXPECT_FALSE(store_->ReadRecord(1, Id(12))->has_value());
  EXPECT_EQ(*store_->LastAppliedSeq("tablet-2"), 0u);
  EXPECT_TRUE(store_->ReadRecord(1, Id(11))->has_value());
  EXPECT_TRUE(store_->ReadRecord(1, Id(13))->has_value());
  const ServerStore::WriteStats after = store_->write_stats();
  EXPECT_EQ(after.batches - before.batches, 3u);
  EXPECT_EQ(after.transactions - before.transactions, 3u);  // the first, then two alone
}

// Downloads read on their own connections: they see every commit, including records of
// writers the connection had never seen.
TEST_F(ServerStoreTest, DownloadsSeeEveryCommitAndNewWriters) {
  MustApply(a_, One(1, {Change(1, Id(1), {{2, IntValue(kUnit)}})}, HlcPack(kT0, 0)));
  kcnet::v1::BucketCursor cursor;
  cursor.set_bucket(kUnit);
  auto page = store_->ChangesSince({cursor});
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->changes_size(), 1);
  cursor.set_op(page->cursors(0).op());
  for (int i = 0; i < 3; ++i) {
    const Writer w = Device(absl::StrCat("new-tablet-", i));
    MustApply(w, One(1, {Change(1, Id(20 + i), {{2, IntValue(kUnit)}})}, HlcPack(kT0, 1 + i)));
    page = store_->ChangesSince({cursor});
    ASSERT_TRUE(page.ok()) << page.status();
    ASSERT_EQ(page->changes_size(), 1);
    EXPECT_EQ(page->changes(0).node(), w.node);
    EXPECT_EQ(page->server_op(), store_->last_op());
    ASSERT_EQ(page->checkpoints_size(), 1);
    EXPECT_EQ(page->checkpoints(0).checksum(), Checksum());
    cursor.set_op(page->cursors(0).op());
  }
}

}  // namespace
}  // namespace kcnet::sync

namespace kcnet::sync {
namespace {

TEST_F(ServerStoreTest, ListPagesNewestFirstWithinBucketsAndFilters) {
  uint64_t seq = 0;
  for (int i = 0; i < 10; ++i) {
    const int64_t unit = i % 2 == 0 ? kUnit : 43;
    MustApply(a_, One(++seq, {Change(1, Id(i), {{2, IntValue(unit)}, {3, IntValue(i % 3)}})},
                      HlcPack(kT0, i)));
  }
  MustApply(a_, One(++seq, {Deletion(1, Id(0))}, HlcPack(kT0, 20), 1));
  ListQuery q{.type = 1, .buckets = {kUnit, 43}, .limit = 4};
  auto page = store_->List(q);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->size(), 4u);
  EXPECT_EQ((*page)[0].id(), Id(9));
  EXPECT_GT((*page)[0].op(), (*page)[1].op());
  std::vector<std::string> seen;
  while (!page->empty()) {
    for (const auto& r : *page) seen.push_back(r.id());
    q.after = page->back().op();
    page = store_->List(q);
  }
  EXPECT_EQ(seen.size(), 9u);  // the deleted record is not listed
  // One bucket, filtered on a field, oldest first.
  ListQuery f{.type = 1, .buckets = {43}, .equals = {{3, IntValue(0)}}, .newest_first = false};
  auto filtered = store_->List(f);
  ASSERT_EQ(filtered->size(), 2u);  // ids 3 and 9
  EXPECT_EQ((*filtered)[0].id(), Id(3));
  EXPECT_EQ((*filtered)[1].id(), Id(9));
  ListQuery bad{.type = 1, .buckets = {43}, .equals = {{99, IntValue(0)}}};
  EXPECT_EQ(store_->List(bad).status().code(), absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------
// Incarnations and hand-backs after a restore (docs/SYNC.md, "Server restore")

TEST_F(ServerStoreTest, TheIncarnationIsKeptAcrossReopensAndNewAfterARestore) {
  const ServerStore::Incarnation first = store_->incarnation();
  EXPECT_NE(first.id, 0u);
  EXPECT_EQ(first.base_op, 0u);
  EXPECT_EQ(first.restored_ms, 0);
  MustApply(a_,
            One(1, {Change(1, Id(1), {{2, IntValue(kUnit)}, {3, IntValue(1)}})}, HlcPack(kT0, 0)));
  Reopen();
  EXPECT_EQ(store_->incarnation().id, first.id);
  EXPECT_EQ(store_->incarnation().base_op, 0u);

  // A restore (kcnet-admin restore) makes the closed store a new incarnation based at its
  // last op; a second one another again.
  store_.reset();
  wall_.Advance(60'000);
  ASSERT_TRUE(
      ServerStore::BeginIncarnation(dir_.File("server.db"), /*restored=*/true, &wall_).ok());
  Reopen();
  const ServerStore::Incarnation restored = store_->incarnation();
  EXPECT_NE(restored.id, 0u);
  EXPECT_NE(restored.id, first.id);
  EXPECT_EQ(restored.base_op, store_->last_op());
  EXPECT_EQ(restored.restored_ms, kT0 + 60'000);
  store_.reset();
  ASSERT_TRUE(
      ServerStore::BeginIncarnation(dir_.File("server.db"), /*restored=*/true, &wall_).ok());
  Reopen();
  EXPECT_NE(store_->incarnation().id, restored.id);
  // A new store is an incarnation of its own.
  auto other = ServerStore::Open(dir_.File("other.db"), &schema_);
  ASSERT_TRUE(other.ok());
  EXPECT_NE((*other)->incarnation().id, store_->incarnation().id);
  EXPECT_FALSE(ServerStore::BeginIncarnation(dir_.File("missing-dir/x.db"), true).ok());
}

// A hand-back of one item with the writer `node`'s stamp `hlc`.
MutationBatch Handback(uint64_t seq, uint64_t node, uint64_t hlc, int64_t count) {
  MutationBatch batch;
  auto* m = batch.add_mutations();
  m->set_seq(seq);
  m->set_handback(true);
  RecordChange c = Change(1, Id(7), {{2, IntValue(kUnit)}, {3, IntValue(count)}});
  c.set_hlc(hlc);
  c.set_node(node);
  c.set_bucket(kUnit);
  *m->add_changes() = c;
  return batch;
}

TEST_F(ServerStoreTest, HandbacksAreTakenOnlyFromARecoveringDeviceOfARestoredStore) {
  const uint64_t b_node = b_.node;
  // Never restored: no hand-back, ever.
  PushAck ack = MustApply(a_, Handback(1, b_node, HlcPack(kT0, 0), 5));
  ASSERT_EQ(ack.results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_REFUSED);
  EXPECT_THAT(ack.results(0).reason(), HasSubstr("not restored"));
  EXPECT_FALSE(store_->ReadRecord(1, Id(7))->has_value());

  store_.reset();
  wall_.Advance(3'600'000);
  ASSERT_TRUE(ServerStore::BeginIncarnation(dir_.File("server.db"), true, &wall_).ok());
  Reopen();
  // Restored: tablet-a hands back tablet-b's write with tablet-b's stamp.
  ack = MustApply(a_, Handback(2, b_node, HlcPack(kT0, 0), 5));
  ASSERT_EQ(ack.results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_APPLIED)
      << ack.results(0).reason();
  RecordChange r = MustRead(Id(7));
  EXPECT_EQ(FieldOf(r, 3).int_value(), 5);
  EXPECT_EQ(r.node(), b_node);
  EXPECT_EQ(r.hlc(), HlcPack(kT0, 0));
  // An older copy changes nothing (the server's stamp is higher); a newer one wins.
  ack = MustApply(a_, Handback(3, b_node, HlcPack(kT0 - 10, 0), 4));
  EXPECT_EQ(ack.results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_APPLIED);
  EXPECT_EQ(FieldOf(MustRead(Id(7)), 3).int_value(), 5);
  ack = MustApply(a_, Handback(4, b_node, HlcPack(kT0 + 10, 0), 6));
  EXPECT_EQ(FieldOf(MustRead(Id(7)), 3).int_value(), 6);
  // A clock from after the restore cannot be a lost write.
  ack = MustApply(a_, Handback(5, b_node, HlcPack(kT0 + 3'600'000 + 6 * 60'000, 0), 9));
  EXPECT_EQ(ack.results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_REFUSED);
  EXPECT_THAT(ack.results(0).reason(), HasSubstr("before the restore"));
  // A hand-back names its writer.
  ack = MustApply(a_, Handback(6, 0, HlcPack(kT0 + 20, 0), 9));
  EXPECT_EQ(ack.results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_REFUSED);
  EXPECT_EQ(FieldOf(MustRead(Id(7)), 3).int_value(), 6);

  // An ordinary push still may not stamp another node; and the device's first ordinary
  // mutation, even a refused one, ends its hand-backs for good.
  RecordChange forged = Change(1, Id(7), {{3, IntValue(8)}});
  forged.set_node(b_node);
  ack = MustApply(a_, One(7, {forged}, HlcPack(kT0 + 30, 0)));
  EXPECT_EQ(ack.results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_REFUSED);
  ack = MustApply(a_, Handback(8, b_node, HlcPack(kT0 + 40, 0), 9));
  EXPECT_EQ(ack.results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_REFUSED);
  EXPECT_THAT(ack.results(0).reason(), HasSubstr("hand-backs are over"));
  ack = MustApply(a_, Handback(9, b_node, HlcPack(kT0 + 50, 0), 9));
  EXPECT_EQ(ack.results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_REFUSED);
  EXPECT_THAT(ack.results(0).reason(), HasSubstr("hand-backs are over"));
  Reopen();
  ack = MustApply(a_, Handback(10, b_node, HlcPack(kT0 + 50, 0), 9));
  EXPECT_EQ(ack.results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_REFUSED);
  EXPECT_EQ(FieldOf(MustRead(Id(7)), 3).int_value(), 6);
  // Another device still recovering may hand back.
  ack = MustApply(b_, Handback(1, a_.node, HlcPack(kT0 + 60, 0), 10));
  EXPECT_EQ(ack.results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_APPLIED);
  EXPECT_EQ(FieldOf(MustRead(Id(7)), 3).int_value(), 10);
}

// A list filtered on an indexed field (a facility's visits: ListVisits, the facility page,
// the registry's exports) reads that field's index, not every row of the bucket: with the
// bucket's (bucket, op) index a facility page at 50,000 visits per commune read them all.
TEST(RecordStorePlanTest, AnEqualityOnAnIndexedFieldUsesItsIndex) {
  kcnet::testing::TempDir dir;
  absl::StatusOr<std::unique_ptr<Db>> db = Db::Open(dir.File("kcnet.db"));
  ASSERT_TRUE(db.ok()) << db.status();
  const Schema& schema = model::KcnetSchema();
  absl::StatusOr<std::unique_ptr<RecordStore>> store =
      RecordStore::Open(db->get(), &schema, "server");
  ASSERT_TRUE(store.ok()) << store.status();
  const RecordTypeSpec* visit = schema.Find(model::kVisitType);
  ASSERT_NE(visit, nullptr);
  auto plan = [&](const std::vector<uint32_t>& fields) {
    absl::StatusOr<std::string> sql = (*store)->OrderedScanSql(*visit, fields, true);
    EXPECT_TRUE(sql.ok()) << sql.status();
    absl::StatusOr<Statement*> explain = (*db)->Prepare("EXPLAIN QUERY PLAN " + *sql);
    EXPECT_TRUE(explain.ok()) << explain.status();
    std::string out;
    while (true) {
      absl::StatusOr<bool> row = (*explain)->Step();
      if (!row.ok() || !*row) break;
      absl::StrAppend(&out, (*explain)->ColumnText(3), "\n");
    }
    (*explain)->Reset();
    return out;
  };
  EXPECT_THAT(plan({kcnet::v1::Visit::kFacilityIdFieldNumber}), HasSubstr("visit_facility_id"));
  EXPECT_THAT(plan({}), HasSubstr("visit_bucket_op"));
  // A field with no index of its own keeps the bucket's.
  EXPECT_THAT(plan({kcnet::v1::Visit::kPurposeFieldNumber}), HasSubstr("visit_bucket_op"));
  EXPECT_FALSE((*store)->OrderedScanSql(*visit, {999}, true).ok());
}

}  // namespace
}  // namespace kcnet::sync
