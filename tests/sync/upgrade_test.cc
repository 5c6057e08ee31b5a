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
  ASSERT_TRUE(today
                  ->Write({Change(kItem, Id(1), {{2, IntValue(kUnit)}, {3, IntValue(5)},
                                                 {kBlob, BytesValue("ảnh")}}),
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

}  // namespace
}  // namespace kcnet::sync
