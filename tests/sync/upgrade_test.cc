// Upgrades in both directions (docs/SYNC.md, "Upgrades") at the sync-core level: a device
// whose schema is older than the server's (schema N-1: the test schema without item.blob
// and without the "note" type) keeps what it does not know with its stamps, merges it
// last-writer-wins, purges it with its bucket, never pushes it, keeps its checksums equal
// to the server's, and on upgrade (reopened with schema N) folds it into the real columns
// without downloading again. Store migrations: a store newer than the code is refused.
#include <sqlite3.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sync/device_store.h"
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
constexpr uint32_t kItem = 1;
constexpr uint32_t kNote = 2;
constexpr uint32_t kBlob = 7;  // item.blob: unknown to schema N-1

kcnet::v1::Value BytesValue(const std::string& v) {
  kcnet::v1::Value out;
  out.set_bytes_value(v);
  return out;
}

// The test schema as an older app had it: no item.blob, no "note" type.
Schema PreviousSchema() {
  Schema full = kcnet::testing::TestSchema();
  RecordTypeSpec item = *full.Find(kItem);
  item.fields.pop_back();  // blob, the last field
  return *Schema::Create({item});
}

class UpgradeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerStoreOptions so;
    so.clock = &wall_;
    server_ = *ServerStore::Open(dir_.File("server.db"), &schema_, so);
  }

  std::unique_ptr<DeviceStore> Open(const std::string& device, const Schema* schema,
                                    const std::string& file) {
    DeviceStoreOptions options;
    options.clock = &wall_;
    auto store = DeviceStore::Open(dir_.File(file), schema, device, options);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? std::move(*store) : nullptr;
  }

  // Pushes everything pending, then downloads until complete; the download must apply
  // and every checkpoint must match.
  void Sync(DeviceStore* d) {
    auto batch = d->PendingBatch();
    ASSERT_TRUE(batch.ok()) << batch.status();
    if (batch->mutations_size() > 0) {
      auto ack = server_->Apply(Writer{d->device_id(), d->node()}, *batch);
      ASSERT_TRUE(ack.ok()) << ack.status();
      ASSERT_TRUE(d->Acknowledge(*ack).ok());
    }
    for (int i = 0; i < 100; ++i) {
      auto down = server_->ChangesSince(*d->Cursors());
      ASSERT_TRUE(down.ok()) << down.status();
      auto result = d->ApplyDownload(*down);
      ASSERT_TRUE(result.ok()) << result.status();
      EXPECT_TRUE(result->mismatched.empty());
      if (!down->more()) break;
    }
  }

  void ExpectSameChecksum(DeviceStore* d) {
    auto mine = d->Checkpoint(kUnit);
    auto recomputed = d->RecomputeCheckpoint(kUnit);
    auto theirs = server_->Checkpoint(kUnit);
    ASSERT_TRUE(mine.ok() && recomputed.ok() && theirs.ok());
    EXPECT_EQ(mine->checksum(), theirs->checksum());
    EXPECT_EQ(mine->records(), theirs->records());
    EXPECT_EQ(recomputed->checksum(), theirs->checksum());
    EXPECT_EQ(recomputed->records(), theirs->records());
  }

  kcnet::testing::TempDir dir_;
  FakeClock wall_{kT0};
  Schema schema_ = kcnet::testing::TestSchema();
  Schema previous_ = PreviousSchema();
  std::unique_ptr<ServerStore> server_;
};

TEST_F(UpgradeTest, ADownloadWithAnUnknownFieldAndAnUnknownTypeIsKept) {
  // Today's device writes an item with a blob and a note; the older device downloads them.
  auto today = Open("tablet-new", &schema_, "new.db");
  ASSERT_TRUE(today->Subscribe(kUnit).ok());
  ASSERT_TRUE(
      today
          ->Write({Change(kItem, Id(1),
                          {{2, IntValue(kUnit)}, {3, IntValue(5)}, {kBlob, BytesValue("ảnh")}}),
                   Change(kNote, Id(2), {{2, IntValue(kUnit)}, {3, StringValue("ghi chú")}})})
          .ok());
  Sync(today.get());

  auto old = Open("tablet-old", &previous_, "old.db");
  ASSERT_TRUE(old->Subscribe(kUnit).ok());
  Sync(old.get());
  auto item = old->Read(kItem, Id(1));
  ASSERT_TRUE(item.ok() && item->has_value()) << item.status();
  EXPECT_EQ(FieldOf(**item, 3).int_value(), 5);
  EXPECT_EQ(FieldOf(**item, kBlob).kind_case(), kcnet::v1::Value::KIND_NOT_SET);  // not shown
  ExpectSameChecksum(old.get());
  auto cursors = old->Cursors();
  ASSERT_TRUE(cursors.ok());
  ASSERT_EQ(cursors->size(), 1u);
  EXPECT_EQ((*cursors)[0].op(), server_->Checkpoint(kUnit)->op());
}

TEST_F(UpgradeTest, KeptValuesMergeLastWriterWinsAreNeverPushedAndGoWithTheirBucket) {
  auto today = Open("tablet-new", &schema_, "new.db");
  auto old = Open("tablet-old", &previous_, "old.db");
  ASSERT_TRUE(today->Subscribe(kUnit).ok());
  ASSERT_TRUE(old->Subscribe(kUnit).ok());
  ASSERT_TRUE(
      today
          ->Write({Change(kItem, Id(1),
                          {{2, IntValue(kUnit)}, {3, IntValue(5)}, {kBlob, BytesValue("v1")}}),
                   Change(kNote, Id(2), {{2, IntValue(kUnit)}, {3, StringValue("một")}}),
                   Change(kNote, Id(3), {{2, IntValue(kUnit)}, {3, StringValue("hai")}})})
          .ok());
  Sync(today.get());
  Sync(old.get());
  // Today's device changes the kept values (and deletes a note); the old one edits a
  // known field of the same item, offline.
  wall_.Advance(1000);
  ASSERT_TRUE(
      today
          ->Write({Change(kItem, Id(1), {{kBlob, BytesValue("v2")}}),
                   Change(kNote, Id(2), {{3, StringValue("một, sửa")}}), Deletion(kNote, Id(3))})
          .ok());
  Sync(today.get());
  wall_.Advance(1000);
  ASSERT_TRUE(old->Write({Change(kItem, Id(1), {{3, IntValue(6)}})}).ok());
  auto batch = old->PendingBatch();
  ASSERT_TRUE(batch.ok());
  ASSERT_EQ(batch->mutations_size(), 1);
  ASSERT_EQ(batch->mutations(0).changes_size(), 1);
  for (const auto& f : batch->mutations(0).changes(0).fields()) EXPECT_NE(f.field(), kBlob);
  Sync(old.get());
  ExpectSameChecksum(old.get());
  Sync(today.get());
  ExpectSameChecksum(today.get());
  auto item = today->Read(kItem, Id(1));
  ASSERT_TRUE(item.ok() && item->has_value());
  EXPECT_EQ(FieldOf(**item, 3).int_value(), 6);           // the old device's edit
  EXPECT_EQ(FieldOf(**item, kBlob).bytes_value(), "v2");  // today's, never overwritten

  // A bucket the old device leaves takes its kept values with it.
  ASSERT_TRUE(old->Unsubscribe(kUnit).ok());
  old.reset();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(dir_.File("old.db").c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT count(*) FROM _unknown", -1, &stmt, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(stmt, 0), 0);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
}

TEST_F(UpgradeTest, AnUpgradedDeviceHasTheKeptValuesInItsColumnsWithoutDownloadingAgain) {
  auto today = Open("tablet-new", &schema_, "new.db");
  ASSERT_TRUE(today->Subscribe(kUnit).ok());
  ASSERT_TRUE(
      today
          ->Write({Change(kItem, Id(1),
                          {{2, IntValue(kUnit)}, {3, IntValue(5)}, {kBlob, BytesValue("ảnh")}}),
                   Change(kNote, Id(2), {{2, IntValue(kUnit)}, {3, StringValue("ghi chú")}}),
                   Change(kNote, Id(3), {{2, IntValue(kUnit)}, {3, StringValue("xoá")}})})
          .ok());
  Sync(today.get());
  ASSERT_TRUE(today->Write({Deletion(kNote, Id(3))}).ok());
  Sync(today.get());
  auto old = Open("tablet-old", &previous_, "old.db");
  ASSERT_TRUE(old->Subscribe(kUnit).ok());
  Sync(old.get());
  ExpectSameChecksum(old.get());
  old.reset();

  // The app upgrades: the same file, today's schema.
  auto upgraded = Open("tablet-old", &schema_, "old.db");
  ASSERT_NE(upgraded, nullptr);
  auto item = upgraded->Read(kItem, Id(1), /*confirmed_only=*/true);
  ASSERT_TRUE(item.ok() && item->has_value()) << item.status();
  EXPECT_EQ(FieldOf(**item, kBlob).bytes_value(), "ảnh");
  EXPECT_EQ(FieldOf(**item, 3).int_value(), 5);
  auto note = upgraded->Read(kNote, Id(2), /*confirmed_only=*/true);
  ASSERT_TRUE(note.ok() && note->has_value()) << note.status();
  EXPECT_EQ(FieldOf(**note, 3).string_value(), "ghi chú");
  auto gone = upgraded->Read(kNote, Id(3), /*confirmed_only=*/true);
  ASSERT_TRUE(gone.ok());
  EXPECT_TRUE(!gone->has_value() || (*gone)->deleted());
  ListFilter notes;
  notes.type = kNote;
  EXPECT_EQ(upgraded->List(notes)->size(), 1u);
  ExpectSameChecksum(upgraded.get());
  EXPECT_TRUE(upgraded->VerifyBuckets()->empty());
  // Nothing to download again: the next page from the device's cursor is empty and its
  // checkpoint matches.
  auto down = server_->ChangesSince(*upgraded->Cursors());
  ASSERT_TRUE(down.ok());
  EXPECT_EQ(down->changes_size(), 0);
  auto result = upgraded->ApplyDownload(*down);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->mismatched.empty());
  // And it edits the new field like any other.
  ASSERT_TRUE(upgraded->Write({Change(kItem, Id(1), {{kBlob, BytesValue("ảnh mới")}})}).ok());
  Sync(upgraded.get());
  Sync(today.get());
  EXPECT_EQ(FieldOf(**today->Read(kItem, Id(1)), kBlob).bytes_value(), "ảnh mới");
  ExpectSameChecksum(today.get());
  ExpectSameChecksum(upgraded.get());
}

TEST_F(UpgradeTest, AStoreWrittenByANewerKcnetIsRefusedWithWhatToDo) {
  Open("tablet", &schema_, "a.db").reset();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(dir_.File("a.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version = 99", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  DeviceStoreOptions options;
  options.clock = &wall_;
  auto store = DeviceStore::Open(dir_.File("a.db"), &schema_, "tablet", options);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(), HasSubstr("newer kcnet"));
  EXPECT_THAT(store.status().message(), HasSubstr("cập nhật ứng dụng"));
}

TEST_F(UpgradeTest, ANewStoreHasEveryMigrationAndASchemaMayOnlyAddFieldsAtTheEnd) {
  Open("tablet", &schema_, "a.db").reset();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(dir_.File("a.db").c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &stmt, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(stmt, 0), kDeviceStoreFormatVersion);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  // A schema whose fields are not in ascending number order is refused (the checksum
  // hashes fields by number).
  RecordTypeSpec item = *schema_.Find(kItem);
  std::swap(item.fields[1], item.fields[2]);
  EXPECT_FALSE(Schema::Create({item}).ok());
  // A store whose columns are not the schema's first fields (a field removed) is refused.
  RecordTypeSpec shorter = *schema_.Find(kItem);
  shorter.fields.erase(shorter.fields.begin() + 1);
  Schema removed = *Schema::Create({shorter});
  DeviceStoreOptions options;
  options.clock = &wall_;
  auto store = DeviceStore::Open(dir_.File("a.db"), &removed, "tablet", options);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(), HasSubstr("only add fields"));
}

}  // namespace
}  // namespace kcnet::sync
