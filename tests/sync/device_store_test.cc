#include "sync/device_store.h"

#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sync/cursor.h"
#include "sync/server_store.h"
#include "tests/testing/test_util.h"

namespace kcnet::sync {
namespace {

using ::kcnet::testing::Change;
using ::kcnet::testing::Deletion;
using ::kcnet::testing::FieldOf;
using ::kcnet::testing::Id;
using ::kcnet::testing::IntValue;
using ::kcnet::testing::StringValue;
using ::testing::HasSubstr;

constexpr int64_t kT0 = 1764000000000;
constexpr int64_t kUnit = 42;

class DeviceStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerStoreOptions so;
    so.clock = &wall_;
    server_ = *ServerStore::Open(dir_.File("server.db"), &schema_, so);
    device_ = Open("tablet-a");
    ASSERT_TRUE(device_->Subscribe(kUnit).ok());
  }

  std::unique_ptr<DeviceStore> Open(const std::string& id, const std::string& file = "a.db") {
    DeviceStoreOptions options;
    options.clock = &wall_;
    auto store = DeviceStore::Open(dir_.File(file), &schema_, id, options);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? std::move(*store) : nullptr;
  }

  // Push everything pending, then download until complete. Returns the last ack.
  kcnet::v1::PushAck Sync(DeviceStore* d) {
    kcnet::v1::PushAck ack;
    auto batch = d->PendingBatch();
    if (batch->mutations_size() > 0) {
      ack = *server_->Apply(Writer{d->device_id(), d->node()}, *batch);
      EXPECT_TRUE(d->Acknowledge(ack).ok());
    }
    for (int i = 0; i < 100; ++i) {
      auto down = server_->ChangesSince(*d->Cursors());
      auto result = d->ApplyDownload(*down);
      EXPECT_TRUE(result.ok()) << result.status();
      EXPECT_TRUE(result->mismatched.empty());
      if (!down->more()) break;
    }
    return ack;
  }

  kcnet::testing::TempDir dir_;
  Schema schema_ = kcnet::testing::TestSchema();
  FakeClock wall_{kT0};
  std::unique_ptr<ServerStore> server_;
  std::unique_ptr<DeviceStore> device_;
};

TEST_F(DeviceStoreTest, AWriteIsQueuedAndVisibleBeforeSync) {
  auto seq = device_->Write({Change(1, Id(1), {{2, IntValue(kUnit)}, {3, IntValue(5)}})});
  ASSERT_TRUE(seq.ok()) << seq.status();
  EXPECT_EQ(*seq, 1u);
  EXPECT_EQ(*device_->PendingCount(), 1);
  auto read = device_->Read(1, Id(1));
  ASSERT_TRUE(read.ok() && read->has_value());
  EXPECT_EQ(FieldOf(**read, 3).int_value(), 5);
  EXPECT_FALSE(device_->Read(1, Id(1), /*confirmed_only=*/true)->has_value());
  auto batch = device_->PendingBatch();
  ASSERT_EQ(batch->mutations_size(), 1);
  EXPECT_EQ(batch->mutations(0).changes(0).hlc(), HlcPack(kT0, 0));
  EXPECT_EQ(batch->mutations(0).changes(0).base_op(), 0u);
}

TEST_F(DeviceStoreTest, SyncConfirmsTheWriteAndChecksumsAgree) {
  ASSERT_TRUE(device_->Write({Change(1, Id(1), {{2, IntValue(kUnit)}, {3, IntValue(5)}})}).ok());
  auto ack = Sync(device_.get());
  EXPECT_EQ(ack.results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_APPLIED);
  EXPECT_EQ(*device_->PendingCount(), 0);
  auto confirmed = device_->Read(1, Id(1), true);
  ASSERT_TRUE(confirmed->has_value());
  EXPECT_EQ(FieldOf(**confirmed, 3).int_value(), 5);
  EXPECT_EQ(device_->Checkpoint(kUnit)->checksum(), server_->Checkpoint(kUnit)->checksum());
  EXPECT_EQ(device_->RecomputeCheckpoint(kUnit)->checksum(),
            server_->Checkpoint(kUnit)->checksum());
  // The next edit is based on the confirmed op.
  ASSERT_TRUE(device_->Write({Change(1, Id(1), {{3, IntValue(6)}})}).ok());
  EXPECT_EQ(device_->PendingBatch()->mutations(0).changes(0).base_op(), 1u);
}

TEST_F(DeviceStoreTest, AnAcknowledgedWriteStaysVisibleUntilItsDownloadArrives) {
  ASSERT_TRUE(device_->Write({Change(1, Id(1), {{2, IntValue(kUnit)}, {3, IntValue(5)}})}).ok());
  auto ack = server_->Apply(Writer{"tablet-a", device_->node()}, *device_->PendingBatch());
  ASSERT_TRUE(device_->Acknowledge(*ack).ok());
  EXPECT_EQ(*device_->PendingCount(), 0);  // nothing left to push...
  auto read = device_->Read(1, Id(1));     // ...but still visible
  ASSERT_TRUE(read->has_value());
  EXPECT_EQ(FieldOf(**read, 3).int_value(), 5);
  ASSERT_TRUE(device_->ApplyDownload(*server_->ChangesSince(*device_->Cursors())).ok());
  EXPECT_EQ(FieldOf(**device_->Read(1, Id(1), true), 3).int_value(), 5);
}

TEST_F(DeviceStoreTest, ARefusedWriteBecomesAReportAndLeavesTheOverlay) {
  ASSERT_TRUE(device_->Write({Change(1, Id(1), {{2, IntValue(kUnit)}, {3, IntValue(5)}})}).ok());
  Sync(device_.get());
  ASSERT_TRUE(device_->Write({Change(1, Id(1), {{5, StringValue("secret")}})}).ok());
  MutationValidator no_labels = [](const kcnet::v1::Mutation& m, RecordReader&) {
    for (const auto& f : m.changes(0).fields()) {
      if (f.field() == 5) return absl::PermissionDeniedError("label: not allowed for your role");
    }
    return absl::OkStatus();
  };
  auto ack =
      server_->Apply(Writer{"tablet-a", device_->node()}, *device_->PendingBatch(), no_labels);
  auto reports = device_->Acknowledge(*ack);
  ASSERT_TRUE(reports.ok());
  ASSERT_EQ(reports->size(), 1u);
  EXPECT_EQ((*reports)[0].result.outcome(), kcnet::v1::MUTATION_OUTCOME_REFUSED);
  EXPECT_THAT((*reports)[0].result.reason(), HasSubstr("not allowed for your role"));
  EXPECT_FALSE(FieldOf(**device_->Read(1, Id(1)), 5).has_string_value());
  // Reports survive a restart until taken.
  device_.reset();
  device_ = Open("tablet-a");
  EXPECT_EQ(device_->ListReports()->size(), 1u);
  EXPECT_EQ(device_->TakeReports()->size(), 1u);
  EXPECT_TRUE(device_->ListReports()->empty());
}

TEST_F(DeviceStoreTest, DownloadsAreIdempotentAndReorderSafe) {
  ASSERT_TRUE(server_
                  ->Apply(Writer{"other", NodeIdFor("other")},
                          [] {
                            kcnet::v1::MutationBatch b;
                            auto* m = b.add_mutations();
                            m->set_seq(1);
                            auto c = Change(1, Id(1), {{2, IntValue(kUnit)}, {3, IntValue(1)}});
                            c.set_hlc(HlcPack(kT0, 0));
                            *m->add_changes() = c;
                            return b;
                          }())
                  .ok());
  auto first = *server_->ChangesSince(*device_->Cursors());
  ASSERT_TRUE(device_->ApplyDownload(first).ok());
  const uint64_t sum = device_->Checkpoint(kUnit)->checksum();
  auto again = device_->ApplyDownload(first);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->applied, 0u);
  EXPECT_TRUE(again->mismatched.empty());
  EXPECT_EQ(device_->Checkpoint(kUnit)->checksum(), sum);
}

TEST_F(DeviceStoreTest, ACorruptedBucketIsDetectedAndRepairedByReset) {
  ASSERT_TRUE(device_->Write({Change(1, Id(1), {{2, IntValue(kUnit)}, {3, IntValue(5)}})}).ok());
  ASSERT_TRUE(device_->Write({Change(2, Id(2), {{2, IntValue(kUnit)}})}).ok());
  Sync(device_.get());
  EXPECT_TRUE(device_->VerifyBuckets()->empty());
  device_.reset();
  {
    // Silent local damage: a value changed and a row lost behind the store's back.
    auto db = Db::Open(dir_.File("a.db"));
    ASSERT_TRUE((*db)->Exec("UPDATE item SET count = 666; DELETE FROM note").ok());
  }
  device_ = Open("tablet-a");
  auto bad = device_->VerifyBuckets();
  ASSERT_TRUE(bad.ok());
  EXPECT_THAT(*bad, ::testing::ElementsAre(kUnit));
  ASSERT_TRUE(device_->ResetBucket(kUnit).ok());
  Sync(device_.get());
  EXPECT_EQ(FieldOf(**device_->Read(1, Id(1), true), 3).int_value(), 5);
  EXPECT_TRUE(device_->Read(2, Id(2), true)->has_value());
  EXPECT_TRUE(device_->VerifyBuckets()->empty());
  EXPECT_EQ(device_->Checkpoint(kUnit)->checksum(), server_->Checkpoint(kUnit)->checksum());
}

TEST_F(DeviceStoreTest, ADivergedRunningSumIsAMismatchAtTheNextCheckpoint) {
  ASSERT_TRUE(device_->Write({Change(1, Id(1), {{2, IntValue(kUnit)}, {3, IntValue(5)}})}).ok());
  Sync(device_.get());
  device_.reset();
  {
    auto db = Db::Open(dir_.File("a.db"));
    ASSERT_TRUE((*db)->Exec("UPDATE _buckets SET checksum = checksum + 1").ok());
  }
  device_ = Open("tablet-a");
  ASSERT_TRUE(device_->Write({Change(1, Id(1), {{3, IntValue(6)}})}).ok());
  auto ack = server_->Apply(Writer{"tablet-a", device_->node()}, *device_->PendingBatch());
  ASSERT_TRUE(device_->Acknowledge(*ack).ok());
  auto result = device_->ApplyDownload(*server_->ChangesSince(*device_->Cursors()));
  ASSERT_TRUE(result.ok());
  EXPECT_THAT(result->mismatched, ::testing::ElementsAre(kUnit));
}

// Found by the property test: a record updated while a device pages through its bucket
// moves ahead of the device's cursor; the fields the device skipped must still arrive.
TEST_F(DeviceStoreTest, ARecordThatMovesAheadDuringPagingArrivesWhole) {
  Writer other{"other", NodeIdFor("other")};
  uint64_t seq = 0;
  auto push = [&](kcnet::v1::RecordChange c, uint64_t hlc, uint64_t base_op) {
    kcnet::v1::MutationBatch b;
    auto* m = b.add_mutations();
    m->set_seq(++seq);
    c.set_hlc(HlcPack(kT0, hlc));
    c.set_base_op(base_op);
    *m->add_changes() = c;
    ASSERT_TRUE(server_->Apply(other, b).ok());
  };
  push(Change(1, Id(1), {{2, IntValue(kUnit)}, {3, IntValue(1)}, {5, StringValue("old")}}), 1,
       0);                                                  // op 1
  push(Change(2, Id(2), {{2, IntValue(kUnit)}}), 2, 0);     // op 2
  push(Change(1, Id(1), {{5, StringValue("new")}}), 3, 1);  // op 3: label
  // The device reads one change: the note at op 2. Its cursor passes op 1, where item 1
  // was created, but item 1 now sits at op 3.
  auto page = server_->ChangesSince(*device_->Cursors(), DownloadLimits{.max_changes = 1});
  ASSERT_EQ(page->changes_size(), 1);
  ASSERT_EQ(page->changes(0).type(), 2u);
  ASSERT_TRUE(device_->ApplyDownload(*page).ok());
  push(Change(1, Id(1), {{3, IntValue(9)}}), 4, 3);  // op 4: count
  Sync(device_.get());
  auto item = device_->Read(1, Id(1), true);
  ASSERT_TRUE(item.ok() && item->has_value());
  EXPECT_EQ(FieldOf(**item, 2).int_value(), kUnit);
  EXPECT_EQ(FieldOf(**item, 3).int_value(), 9);
  EXPECT_EQ(FieldOf(**item, 5).string_value(), "new");
  EXPECT_EQ(device_->RecomputeCheckpoint(kUnit)->checksum(),
            server_->Checkpoint(kUnit)->checksum());
  // Once complete, the floor is the cursor: the next update sends one field only.
  push(Change(1, Id(1), {{3, IntValue(10)}}), 5, 4);
  auto delta = server_->ChangesSince(*device_->Cursors());
  ASSERT_EQ(delta->changes_size(), 1);
  EXPECT_EQ(delta->changes(0).fields_size(), 1);
}

TEST_F(DeviceStoreTest, BadLocalWritesAreRefusedAndNothingIsStored) {
  EXPECT_THAT(device_->Write({}).status().message(), HasSubstr("at least one change"));
  EXPECT_THAT(device_->Write({Change(1, Id(1), {{3, IntValue(1)}})}).status().message(),
              HasSubstr("needs its unit"));
  EXPECT_EQ(device_->Write({Deletion(1, Id(1))}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(device_->Write({Change(1, Id(1), {{2, IntValue(kUnit)}, {3, IntValue(-4)}})})
                  .status()
                  .message(),
              HasSubstr("item.count: -4 is outside"));
  ASSERT_TRUE(device_->Write({Change(1, Id(1), {{2, IntValue(kUnit)}})}).ok());
  EXPECT_THAT(device_->Write({Change(1, Id(1), {{2, IntValue(7)}})}).status().message(),
              HasSubstr("bucket cannot change"));
  EXPECT_EQ(*device_->PendingCount(), 1);
}

TEST_F(DeviceStoreTest, OpeningAnotherDevicesOrAServerStoreFails) {
  device_.reset();
  auto other = DeviceStore::Open(dir_.File("a.db"), &schema_, "tablet-b");
  EXPECT_THAT(other.status().message(), HasSubstr("belongs to another device"));
  server_.reset();
  auto server_file = DeviceStore::Open(dir_.File("server.db"), &schema_, "tablet-a");
  EXPECT_THAT(server_file.status().message(), HasSubstr("server store, not a device store"));
  EXPECT_THAT(DeviceStore::Open(dir_.File("x.db"), &schema_, "").status().message(),
              HasSubstr("device_id"));
}

TEST_F(DeviceStoreTest, UnsubscribePurgesTheBucket) {
  ASSERT_TRUE(device_->Write({Change(1, Id(1), {{2, IntValue(kUnit)}, {3, IntValue(5)}})}).ok());
  Sync(device_.get());
  // An acknowledged write still waiting for its download goes with the bucket.
  ASSERT_TRUE(device_->Write({Change(1, Id(1), {{3, IntValue(6)}})}).ok());
  auto ack = server_->Apply(Writer{"tablet-a", device_->node()}, *device_->PendingBatch());
  ASSERT_TRUE(device_->Acknowledge(*ack).ok());
  EXPECT_EQ(*device_->UnconfirmedCount(), 1);
  ASSERT_TRUE(device_->Unsubscribe(kUnit).ok());
  EXPECT_FALSE(device_->Read(1, Id(1), true)->has_value());
  EXPECT_TRUE(device_->Cursors()->empty());
  EXPECT_EQ(*device_->UnconfirmedCount(), 0);
}

// Pushes `changes` (one mutation) as another device would.
void PushAsOther(ServerStore* server, uint64_t seq, std::vector<kcnet::v1::RecordChange> changes,
                 uint64_t hlc_counter) {
  kcnet::v1::MutationBatch b;
  auto* m = b.add_mutations();
  m->set_seq(seq);
  for (auto& c : changes) {
    c.set_hlc(HlcPack(kT0, hlc_counter));
    *m->add_changes() = std::move(c);
  }
  auto ack = server->Apply(Writer{"other", NodeIdFor("other")}, b);
  ASSERT_TRUE(ack.ok()) << ack.status();
  ASSERT_EQ(ack->results(0).outcome(), kcnet::v1::MUTATION_OUTCOME_APPLIED);
}

// The pages a server sends ahead to a device with a download window: each read from the
// cursor the previous one leads to, and saying so in `from`.
std::vector<kcnet::v1::ChangeBatch> PagesAhead(ServerStore* server,
                                               std::vector<kcnet::v1::BucketCursor> cursors,
                                               size_t per_page) {
  std::vector<kcnet::v1::ChangeBatch> pages;
  for (int guard = 0; guard < 100; ++guard) {
    auto page = server->ChangesSince(cursors, DownloadLimits{.max_changes = per_page});
    EXPECT_TRUE(page.ok()) << page.status();
    if (!page.ok()) break;
    for (const auto& c : page->cursors()) {
      for (auto& mine : cursors) {
        if (mine.bucket() != c.bucket()) continue;
        *page->add_from() = mine;
        AdvanceCursor(c, &mine);
      }
    }
    pages.push_back(*std::move(page));
    if (!pages.back().more()) break;
  }
  return pages;
}

// A record written, then updated while the device is still in its bucket's first pass,
// arrives twice with whole-record fields: the second time the store finds the row it
// tried to insert and merges instead.
TEST_F(DeviceStoreTest, ARecordSeenTwiceInTheFirstPassIsMerged) {
  PushAsOther(server_.get(), 1, {Change(1, Id(1), {{2, IntValue(kUnit)}, {3, IntValue(1)}})}, 1);
  PushAsOther(server_.get(), 2, {Change(2, Id(2), {{2, IntValue(kUnit)}})}, 2);
  auto page = server_->ChangesSince(*device_->Cursors(), DownloadLimits{.max_changes = 1});
  ASSERT_EQ(page->changes_size(), 1);
  ASSERT_TRUE(device_->ApplyDownload(*page).ok());
  ASSERT_EQ(device_->Cursors()->at(0).floor(), 0u);  // still the first pass
  auto update = Change(1, Id(1), {{5, StringValue("later")}});
  update.set_base_op(1);
  PushAsOther(server_.get(), 3, {update}, 3);
  Sync(device_.get());
  auto item = device_->Read(1, Id(1), true);
  ASSERT_TRUE(item.ok() && item->has_value());
  EXPECT_EQ(FieldOf(**item, 3).int_value(), 1);
  EXPECT_EQ(FieldOf(**item, 5).string_value(), "later");
  EXPECT_EQ(device_->Checkpoint(kUnit)->records(), 2u);
  EXPECT_EQ(device_->Checkpoint(kUnit)->checksum(), server_->Checkpoint(kUnit)->checksum());
  EXPECT_EQ(device_->RecomputeCheckpoint(kUnit)->checksum(),
            server_->Checkpoint(kUnit)->checksum());
}

// Pages stored together (one transaction) end where the same pages stored one by one end.
TEST_F(DeviceStoreTest, PagesStoredTogetherEqualPagesStoredOneByOne) {
  for (int i = 1; i <= 7; ++i) {
    PushAsOther(server_.get(), static_cast<uint64_t>(i),
                {Change(1, Id(i), {{2, IntValue(kUnit)}, {3, IntValue(i)}})},
                static_cast<uint64_t>(i));
  }
  const auto pages = PagesAhead(server_.get(), *device_->Cursors(), 2);
  ASSERT_EQ(pages.size(), 4u);
  std::vector<const kcnet::v1::ChangeBatch*> all;
  for (const auto& p : pages) all.push_back(&p);
  auto together = device_->ApplyDownload(all);
  ASSERT_TRUE(together.ok()) << together.status();
  EXPECT_EQ(together->applied, 7u);
  EXPECT_EQ(together->skipped, 0u);
  EXPECT_TRUE(together->mismatched.empty());
  EXPECT_THAT(together->moved, ::testing::ElementsAre(kUnit));
  EXPECT_THAT(together->completed, ::testing::ElementsAre(kUnit));

  auto other = Open("tablet-b", "b.db");
  ASSERT_TRUE(other->Subscribe(kUnit).ok());
  for (const auto& p : pages) ASSERT_TRUE(other->ApplyDownload(p).ok());
  EXPECT_EQ(device_->Cursors()->at(0).DebugString(), other->Cursors()->at(0).DebugString());
  EXPECT_EQ(device_->Checkpoint(kUnit)->checksum(), other->Checkpoint(kUnit)->checksum());
  EXPECT_EQ(device_->Checkpoint(kUnit)->checksum(), server_->Checkpoint(kUnit)->checksum());
  EXPECT_EQ(device_->Cursors()->at(0).op(), server_->Checkpoint(kUnit)->op());
  EXPECT_EQ(device_->Cursors()->at(0).floor(), server_->Checkpoint(kUnit)->op());
}

// A new device's first download drops the secondary indexes while more pages follow and
// builds them once with the last page; a crash in between ends with them back at the next
// open; a device that already holds records keeps them throughout.
TEST_F(DeviceStoreTest, AFirstDownloadBuildsSecondaryIndexesOnceAtTheEnd) {
  for (int i = 1; i <= 7; ++i) {
    PushAsOther(server_.get(), static_cast<uint64_t>(i),
                {Change(1, Id(i), {{2, IntValue(kUnit)}, {5, StringValue(absl::StrCat("l", i))}})},
                static_cast<uint64_t>(i));
  }
  auto has_index = [&](const std::string& file) {
    auto db = Db::Open(dir_.File(file), {.read_only = true});
    EXPECT_TRUE(db.ok()) << db.status();
    auto n = (*db)->QueryInt(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND name = 'item_label'");
    EXPECT_TRUE(n.ok()) << n.status();
    return n.ok() && *n == 1;
  };
  ASSERT_TRUE(has_index("a.db"));
  const auto pages = PagesAhead(server_.get(), *device_->Cursors(), 2);
  ASSERT_EQ(pages.size(), 4u);
  for (size_t p = 0; p < pages.size(); ++p) {
    ASSERT_TRUE(device_->ApplyDownload(pages[p]).ok()) << p;
    EXPECT_EQ(has_index("a.db"), p + 1 == pages.size()) << "after page " << p;
  }
  EXPECT_EQ(device_->Checkpoint(kUnit)->checksum(), server_->Checkpoint(kUnit)->checksum());

  // Interrupted after the first page: the next open builds the index.
  {
    auto crashed = Open("tablet-c", "c.db");
    ASSERT_TRUE(crashed->Subscribe(kUnit).ok());
    ASSERT_TRUE(crashed->ApplyDownload(pages[0]).ok());
    EXPECT_FALSE(has_index("c.db"));
  }
  auto reopened = Open("tablet-c", "c.db");
  EXPECT_TRUE(has_index("c.db"));
  for (size_t p = 1; p < pages.size(); ++p) ASSERT_TRUE(reopened->ApplyDownload(pages[p]).ok());
  EXPECT_EQ(reopened->Checkpoint(kUnit)->checksum(), server_->Checkpoint(kUnit)->checksum());

  // A device that holds records gets a new bucket's first pages with the index kept.
  for (int i = 1; i <= 5; ++i) {
    PushAsOther(server_.get(), static_cast<uint64_t>(7 + i),
                {Change(1, Id(100 + i), {{2, IntValue(43)}, {5, StringValue("x")}})},
                static_cast<uint64_t>(10 + i));
  }
  ASSERT_TRUE(device_->Subscribe(43).ok());
  auto all = device_->Cursors();
  ASSERT_TRUE(all.ok()) << all.status();
  std::vector<kcnet::v1::BucketCursor> cursors;
  for (const auto& c : *all) {
    if (c.bucket() == 43) cursors.push_back(c);
  }
  const auto more = PagesAhead(server_.get(), cursors, 2);
  ASSERT_EQ(more.size(), 3u);
  for (const auto& page : more) {
    ASSERT_TRUE(device_->ApplyDownload(page).ok());
    EXPECT_TRUE(has_index("a.db"));
  }
  EXPECT_EQ(device_->Checkpoint(43)->checksum(), server_->Checkpoint(43)->checksum());
}

// A page read from a cursor the device is not at (sent ahead before the server learned
// of a reset) is skipped for that bucket: no change, cursor or checkpoint of it applies.
TEST_F(DeviceStoreTest, APageFromAnotherCursorIsSkipped) {
  for (int i = 1; i <= 4; ++i) {
    PushAsOther(server_.get(), static_cast<uint64_t>(i),
                {Change(1, Id(i), {{2, IntValue(kUnit)}, {3, IntValue(i)}})},
                static_cast<uint64_t>(i));
  }
  const auto pages = PagesAhead(server_.get(), *device_->Cursors(), 2);
  ASSERT_EQ(pages.size(), 2u);
  // The second page alone: it continues from where the first ends, not from 0.
  auto stale = device_->ApplyDownload(pages[1]);
  ASSERT_TRUE(stale.ok()) << stale.status();
  EXPECT_EQ(stale->applied, 0u);
  EXPECT_EQ(stale->skipped, 2u);
  EXPECT_TRUE(stale->moved.empty());
  EXPECT_TRUE(stale->completed.empty());
  EXPECT_EQ(device_->Cursors()->at(0).op(), 0u);
  EXPECT_EQ(device_->Checkpoint(kUnit)->records(), 0u);
  // In order, both apply.
  ASSERT_TRUE(device_->ApplyDownload(pages[0]).ok());
  auto second = device_->ApplyDownload(pages[1]);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->applied, 2u);
  EXPECT_THAT(second->completed, ::testing::ElementsAre(kUnit));
  EXPECT_EQ(device_->Checkpoint(kUnit)->checksum(), server_->Checkpoint(kUnit)->checksum());
  // After a reset the old second page is stale again, within one call too.
  ASSERT_TRUE(device_->ResetBucket(kUnit).ok());
  std::vector<const kcnet::v1::ChangeBatch*> reversed = {&pages[1], &pages[0]};
  auto mixed = device_->ApplyDownload(reversed);
  ASSERT_TRUE(mixed.ok());
  EXPECT_EQ(mixed->applied, 2u);
  EXPECT_EQ(mixed->skipped, 2u);
  EXPECT_EQ(device_->Checkpoint(kUnit)->records(), 2u);
}

// The server's Welcome as the sync stream builds it (sync_service.cc, HandleHello).
kcnet::v1::Welcome WelcomeFrom(ServerStore& server, const DeviceStore& device) {
  kcnet::v1::Welcome welcome;
  welcome.set_server_op(server.last_op());
  welcome.set_incarnation(server.incarnation().id);
  welcome.set_incarnation_op(server.incarnation().base_op);
  welcome.set_last_applied_seq(*server.LastAppliedSeq(device.device_id()));
  return welcome;
}

TEST_F(DeviceStoreTest, AfterARestoreTheDeviceRenumbersHandsBackAndReverifies) {
  std::unique_ptr<DeviceStore> b = Open("tablet-b", "b.db");
  ASSERT_TRUE(b->Subscribe(kUnit).ok());
  auto observe = [&](DeviceStore* d) {
    absl::StatusOr<Recovery> r = d->ObserveServer(WelcomeFrom(*server_, *d));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : Recovery();
  };
  ASSERT_TRUE(
      device_->Write({Change(1, Id(1), {{2, IntValue(kUnit)}, {5, StringValue("a1")}})}).ok());
  Sync(device_.get());
  EXPECT_FALSE(observe(device_.get()).recovered);  // first sight of the incarnation
  Sync(b.get());
  EXPECT_FALSE(observe(b.get()).recovered);

  // The backup: the server's file as it is now.
  server_.reset();
  ASSERT_TRUE(std::filesystem::copy_file(dir_.File("server.db"), dir_.File("backup.db")));
  ServerStoreOptions so;
  so.clock = &wall_;
  server_ = *ServerStore::Open(dir_.File("server.db"), &schema_, so);

  // After it: a rename and a new record by tablet-a, a record by tablet-b, all synced by
  // both (acknowledged and pruned), then tablet-a writes offline and reports a refusal.
  wall_.Advance(1000);
  ASSERT_TRUE(device_->Write({Change(1, Id(1), {{5, StringValue("a1-renamed")}})}).ok());
  ASSERT_TRUE(
      device_->Write({Change(1, Id(2), {{2, IntValue(kUnit)}, {5, StringValue("a2")}})}).ok());
  Sync(device_.get());
  ASSERT_TRUE(b->Write({Change(1, Id(3), {{2, IntValue(kUnit)}, {5, StringValue("b3")}})}).ok());
  Sync(b.get());
  Sync(device_.get());
  ASSERT_EQ(*device_->UnconfirmedCount(), 0);
  ASSERT_TRUE(
      device_->Write({Change(1, Id(4), {{2, IntValue(kUnit)}, {5, StringValue("a4")}})}).ok());
  const uint64_t written = *device_->Write({Change(1, Id(4), {{5, StringValue("a4-renamed")}})});
  const kcnet::v1::BucketCheckpoint before = *device_->Checkpoint(kUnit);

  // The restore: the backup's file, as a new incarnation.
  server_.reset();
  std::filesystem::remove(dir_.File("server.db-wal"));
  std::filesystem::remove(dir_.File("server.db-shm"));
  std::filesystem::copy_file(dir_.File("backup.db"), dir_.File("server.db"),
                             std::filesystem::copy_options::overwrite_existing);
  ASSERT_TRUE(ServerStore::BeginIncarnation(dir_.File("server.db"), true, &wall_).ok());
  server_ = *ServerStore::Open(dir_.File("server.db"), &schema_, so);
  ASSERT_EQ(*server_->LastAppliedSeq("tablet-a"), 1u);
  ASSERT_FALSE(server_->ReadRecord(1, Id(2))->has_value());

  // Today's protocol would push sequences 4.. after 1: OUT_OF_ORDER forever.
  const Recovery recovery = observe(device_.get());
  EXPECT_TRUE(recovery.recovered);
  EXPECT_THAT(recovery.why, HasSubstr("incarnation"));
  EXPECT_EQ(recovery.handbacks, 3u);   // Id(1)'s rename, Id(2), tablet-b's Id(3)
  EXPECT_EQ(recovery.renumbered, 2u);  // the two offline writes
  EXPECT_EQ(recovery.first_seq, 2u);
  // Nothing the user sees changed; the cursor starts again at 0.
  EXPECT_EQ(device_->Checkpoint(kUnit)->checksum(), before.checksum());
  EXPECT_EQ(FieldOf(**device_->Read(1, Id(4)), 5).string_value(), "a4-renamed");
  EXPECT_EQ((*device_->Cursors())[0].op(), 0u);
  auto batch = *device_->PendingBatch();
  ASSERT_EQ(batch.mutations_size(), 3);  // one hand-back mutation, then the two writes
  EXPECT_TRUE(batch.mutations(0).handback());
  EXPECT_EQ(batch.mutations(0).seq(), 2u);
  EXPECT_EQ(batch.mutations(0).changes_size(), 3);
  EXPECT_FALSE(batch.mutations(1).handback());
  EXPECT_EQ(batch.mutations(2).seq(), 4u);
  // A second Welcome of the same incarnation changes nothing.
  EXPECT_FALSE(observe(device_.get()).recovered);
  // New writes follow the new numbering.
  EXPECT_EQ(*device_->Write({Change(1, Id(5), {{2, IntValue(kUnit)}})}), 5u);
  EXPECT_EQ(written, 5u);  // the same number a lost sequence had: the server never saw it

  kcnet::v1::PushAck ack = Sync(device_.get());
  for (const auto& r : ack.results()) {
    EXPECT_EQ(r.outcome(), kcnet::v1::MUTATION_OUTCOME_APPLIED) << r.reason();
  }
  EXPECT_EQ(FieldOf(*std::move(*server_->ReadRecord(1, Id(1))), 5).string_value(), "a1-renamed");
  const auto b3 = **server_->ReadRecord(1, Id(3));
  EXPECT_EQ(FieldOf(b3, 5).string_value(), "b3");
  EXPECT_EQ(b3.node(), b->node());  // handed back with its writer's stamp
  EXPECT_EQ(FieldOf(**server_->ReadRecord(1, Id(4)), 5).string_value(), "a4-renamed");

  // tablet-b sees the new incarnation too; its hand-back of its own record is a no-op.
  EXPECT_TRUE(observe(b.get()).recovered);
  Sync(b.get());
  Sync(device_.get());
  for (DeviceStore* d : {device_.get(), b.get()}) {
    EXPECT_EQ(*d->UnconfirmedCount(), 0);
    EXPECT_EQ(d->Checkpoint(kUnit)->checksum(), server_->Checkpoint(kUnit)->checksum());
    EXPECT_EQ(d->Checkpoint(kUnit)->records(), 5u);
    EXPECT_TRUE(d->VerifyBuckets()->empty());
    EXPECT_TRUE(d->ListReports()->empty());
  }
}

TEST_F(DeviceStoreTest, ACursorAheadOfTheServerOrALostSequenceMeansRecovery) {
  ASSERT_TRUE(device_->Write({Change(1, Id(1), {{2, IntValue(kUnit)}})}).ok());
  Sync(device_.get());
  kcnet::v1::Welcome welcome = WelcomeFrom(*server_, *device_);
  EXPECT_FALSE(device_->ObserveServer(welcome)->recovered);
  // The same incarnation (a copy put back by hand), but behind the device.
  kcnet::v1::Welcome behind = welcome;
  behind.set_server_op(0);
  behind.set_last_applied_seq(1);
  EXPECT_THAT(device_->ObserveServer(behind)->why, HasSubstr("ahead of the server"));
  behind = welcome;
  behind.set_last_applied_seq(0);
  EXPECT_THAT(device_->ObserveServer(behind)->why, HasSubstr("answered"));
  // An older server (no incarnation) is taken at its word.
  kcnet::v1::Welcome old;
  EXPECT_FALSE(device_->ObserveServer(old)->recovered);
}

}  // namespace
}  // namespace kcnet::sync
