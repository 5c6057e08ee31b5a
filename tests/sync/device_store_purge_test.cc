// DeviceStore::PurgeAll: a sign-out or a user switch leaves nothing of the user's data
// (confirmed records, pending writes, cursors, reports), and sequences restart only when
// asked, also across a reopen.
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sync/device_store.h"
#include "sync/server_store.h"
#include "tests/testing/test_util.h"

namespace kcnet::sync {
namespace {

using ::kcnet::testing::Change;
using ::kcnet::testing::Id;
using ::kcnet::testing::IntValue;

constexpr int64_t kT0 = 1764000000000;
constexpr int64_t kUnit = 42;

class DeviceStorePurgeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerStoreOptions so;
    so.clock = &wall_;
    server_ = *ServerStore::Open(dir_.File("server.db"), &schema_, so);
    device_ = Open();
    ASSERT_TRUE(device_->Subscribe(kUnit).ok());
  }

  std::unique_ptr<DeviceStore> Open() {
    DeviceStoreOptions options;
    options.clock = &wall_;
    auto store = DeviceStore::Open(dir_.File("a.db"), &schema_, "tablet-a", options);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? std::move(*store) : nullptr;
  }

  // Pushes everything pending and downloads until complete.
  void Sync() {
    auto batch = device_->PendingBatch();
    ASSERT_TRUE(batch.ok());
    if (batch->mutations_size() > 0) {
      auto ack = server_->Apply(Writer{device_->device_id(), device_->node()}, *batch);
      ASSERT_TRUE(ack.ok());
      ASSERT_TRUE(device_->Acknowledge(*ack).ok());
    }
    for (int i = 0; i < 100; ++i) {
      auto down = server_->ChangesSince(*device_->Cursors());
      ASSERT_TRUE(down.ok());
      ASSERT_TRUE(device_->ApplyDownload(*down).ok());
      if (!down->more()) break;
    }
  }

  uint64_t NextSeq() {
    auto seq = device_->Write({Change(1, Id(9), {{2, IntValue(kUnit)}, {3, IntValue(1)}})});
    EXPECT_TRUE(seq.ok()) << seq.status();
    return seq.ok() ? *seq : 0;
  }

  kcnet::testing::TempDir dir_;
  Schema schema_ = kcnet::testing::TestSchema();
  FakeClock wall_{kT0};
  std::unique_ptr<ServerStore> server_;
  std::unique_ptr<DeviceStore> device_;
};

TEST_F(DeviceStorePurgeTest, NothingOfTheUserStays) {
  ASSERT_TRUE(device_->Write({Change(1, Id(1), {{2, IntValue(kUnit)}, {3, IntValue(5)}})}).ok());
  Sync();
  ASSERT_TRUE(device_->Write({Change(1, Id(2), {{2, IntValue(kUnit)}, {3, IntValue(7)}})}).ok());
  ASSERT_TRUE((*device_->Read(1, Id(1), true)).has_value());
  ASSERT_EQ(*device_->PendingCount(), 1);

  ASSERT_TRUE(device_->PurgeAll(/*restart_sequences=*/false).ok());
  EXPECT_FALSE((*device_->Read(1, Id(1))).has_value());
  EXPECT_FALSE((*device_->Read(1, Id(1), true)).has_value());
  EXPECT_FALSE((*device_->Read(1, Id(2))).has_value());
  EXPECT_TRUE(device_->Cursors()->empty());
  EXPECT_EQ(*device_->PendingCount(), 0);
  EXPECT_EQ(*device_->UnconfirmedCount(), 0);
  EXPECT_TRUE(device_->ListReports()->empty());
  EXPECT_TRUE(device_->Outbox()->empty());
  // Sequences continue (the same user keeps its generation on the server), also after a
  // reopen.
  EXPECT_EQ(NextSeq(), 3u);
  device_.reset();
  device_ = Open();
  ASSERT_NE(device_, nullptr);
  EXPECT_EQ(NextSeq(), 4u);
}

TEST_F(DeviceStorePurgeTest, SequencesRestartWhenAsked) {
  EXPECT_EQ(NextSeq(), 1u);
  EXPECT_EQ(NextSeq(), 2u);
  ASSERT_TRUE(device_->PurgeAll(/*restart_sequences=*/true).ok());
  EXPECT_EQ(NextSeq(), 1u);
  device_.reset();
  device_ = Open();
  ASSERT_NE(device_, nullptr);
  EXPECT_EQ(NextSeq(), 2u);
}

// The tables of the store's user (the SDK's directory copy): created by the store's
// migrations, kept across a reopen, emptied by PurgeAll in the same transaction as the rest;
// a failing WithAppTables changes nothing.
TEST(DeviceStoreAppTablesTest, CreatedAtOpenKeptAcrossReopenAndPurgedWithTheUser) {
  kcnet::testing::TempDir dir;
  Schema schema = kcnet::testing::TestSchema();
  DeviceStoreOptions options;
  options.app_tables = {"_dir_users"};
  auto count = [](DeviceStore& store) {
    int64_t n = -1;
    EXPECT_TRUE(store
                    .WithAppTables(false,
                                   [&](Db& db) -> absl::Status {
                                     absl::StatusOr<int64_t> c =
                                         db.QueryInt("SELECT count(*) FROM _dir_users");
                                     if (c.ok()) n = *c;
                                     return c.status();
                                   })
                    .ok());
    return n;
  };
  {
    auto store = DeviceStore::Open(dir.File("a.db"), &schema, "tablet-a", options);
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE(
        (*store)
            ->WithAppTables(true,
                            [](Db& db) {
                              return db.Exec(
                                  "INSERT INTO _dir_users VALUES (4, 'Nguyễn Văn An', 1, 1)");
                            })
            .ok());
    // A failing call is rolled back.
    EXPECT_FALSE((*store)
                     ->WithAppTables(true,
                                     [](Db& db) -> absl::Status {
                                       absl::Status s =
                                           db.Exec("INSERT INTO _dir_users VALUES (5, 'x', 1, 1)");
                                       if (!s.ok()) return s;
                                       return absl::InternalError("changed my mind");
                                     })
                     .ok());
    EXPECT_EQ(count(**store), 1);
  }
  auto store = DeviceStore::Open(dir.File("a.db"), &schema, "tablet-a", options);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(count(**store), 1);
  ASSERT_TRUE((*store)->PurgeAll(/*restart_sequences=*/false).ok());
  EXPECT_EQ(count(**store), 0);
}

}  // namespace
}  // namespace kcnet::sync
