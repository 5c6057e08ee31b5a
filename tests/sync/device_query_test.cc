// DeviceStore's local queries: List() over confirmed state with pending writes laid over
// it, the full-text search index kept in step with writes, downloads and refusals, and the
// app's key/value state.
#include <algorithm>

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
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

constexpr int64_t kT0 = 1764000000000;
constexpr int64_t kUnit = 42;
constexpr int64_t kOtherUnit = 43;

class DeviceQueryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerStoreOptions so;
    so.clock = &wall_;
    server_ = *ServerStore::Open(dir_.File("server.db"), &schema_, so);
    DeviceStoreOptions options;
    options.clock = &wall_;
    options.search = {{.type = 1, .fields = {5}, .weights = {1.0}}};
    auto store = DeviceStore::Open(dir_.File("a.db"), &schema_, "tablet-a", options);
    ASSERT_TRUE(store.ok()) << store.status();
    device_ = *std::move(store);
    ASSERT_TRUE(device_->Subscribe(kUnit).ok());
    ASSERT_TRUE(device_->Subscribe(kOtherUnit).ok());
  }

  void Sync() {
    auto batch = device_->PendingBatch();
    if (batch->mutations_size() > 0) {
      auto ack = server_->Apply(Writer{device_->device_id(), device_->node()}, *batch);
      ASSERT_TRUE(ack.ok()) << ack.status();
      ASSERT_TRUE(device_->Acknowledge(*ack).ok());
    }
    for (int i = 0; i < 100; ++i) {
      auto down = server_->ChangesSince(*device_->Cursors());
      ASSERT_TRUE(device_->ApplyDownload(*down).ok());
      if (!down->more()) break;
    }
  }

  void Item(int n, int64_t unit, const std::string& label, int64_t count = 1) {
    ASSERT_TRUE(
        device_
            ->Write({Change(1, Id(n),
                            {{2, IntValue(unit)}, {3, IntValue(count)}, {5, StringValue(label)}})})
            .ok());
  }

  std::vector<std::string> Labels(const ListFilter& filter) {
    auto list = device_->List(filter);
    EXPECT_TRUE(list.ok()) << list.status();
    std::vector<std::string> out;
    for (const auto& r : *list) out.push_back(FieldOf(r, 5).string_value());
    std::sort(out.begin(), out.end());
    return out;
  }

  std::vector<std::string> Found(const std::string& query) {
    auto hits = device_->Search(1, query, 10);
    EXPECT_TRUE(hits.ok()) << hits.status();
    std::vector<std::string> out;
    for (const SearchHit& h : *hits) {
      out.push_back(FieldOf(**device_->Read(1, h.id), 5).string_value());
    }
    return out;
  }

  kcnet::testing::TempDir dir_;
  Schema schema_ = kcnet::testing::TestSchema();
  FakeClock wall_{kT0};
  std::unique_ptr<ServerStore> server_;
  std::unique_ptr<DeviceStore> device_;
};

TEST_F(DeviceQueryTest, ListSeesPendingAndConfirmedRecordsByBucketAndField) {
  Item(1, kUnit, "gốm Bát Tràng", 3);
  Item(2, kUnit, "mây tre đan", 5);
  Item(3, kOtherUnit, "chiếu cói", 3);
  EXPECT_THAT(Labels({.type = 1, .buckets = {kUnit}}), ElementsAre("gốm Bát Tràng", "mây tre đan"));
  Sync();  // now confirmed
  EXPECT_EQ(*device_->UnconfirmedCount(), 0);
  Item(4, kUnit, "nón lá", 3);  // pending only
  EXPECT_THAT(Labels({.type = 1, .buckets = {kUnit}}),
              ElementsAre("gốm Bát Tràng", "mây tre đan", "nón lá"));
  EXPECT_THAT(Labels({.type = 1, .equals = {{3, IntValue(3)}}}),
              ElementsAre("chiếu cói", "gốm Bát Tràng", "nón lá"));
  // A pending edit moves a confirmed record out of the filter; a pending delete hides it.
  ASSERT_TRUE(device_->Write({Change(1, Id(1), {{3, IntValue(9)}})}).ok());
  ASSERT_TRUE(device_->Write({Deletion(1, Id(3))}).ok());
  EXPECT_THAT(Labels({.type = 1, .equals = {{3, IntValue(3)}}}), ElementsAre("nón lá"));
  EXPECT_THAT(Labels({.type = 1, .equals = {{3, IntValue(9)}}}), ElementsAre("gốm Bát Tràng"));
}

TEST_F(DeviceQueryTest, ListRefusesUnknownTypeAndBadFilter) {
  EXPECT_THAT(device_->List({.type = 9}).status().message(), HasSubstr("type"));
  auto bad = device_->List({.type = 1, .equals = {{99, IntValue(1)}}});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("99"));
  bad = device_->List({.type = 1, .equals = {{3, IntValue(-1)}}});  // count has min 0
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("count"));
}

TEST_F(DeviceQueryTest, SearchIgnoresDiacriticsCaseAndDBar) {
  Item(1, kUnit, "Cơ sở gốm Hà Nội");
  Item(2, kUnit, "Hợp tác xã mây tre đan Đông Anh");
  Item(3, kOtherUnit, "Làng nghề Hà Đông");
  EXPECT_THAT(Found("ha noi"), ElementsAre("Cơ sở gốm Hà Nội"));
  EXPECT_THAT(Found("HA NOI"), ElementsAre("Cơ sở gốm Hà Nội"));
  EXPECT_THAT(Found("Hà Nội"), ElementsAre("Cơ sở gốm Hà Nội"));
  EXPECT_THAT(Found("dong"),
              UnorderedElementsAre("Hợp tác xã mây tre đan Đông Anh", "Làng nghề Hà Đông"));
  EXPECT_THAT(Found("Đan"), ElementsAre("Hợp tác xã mây tre đan Đông Anh"));
  EXPECT_THAT(Found("tre da"), ElementsAre("Hợp tác xã mây tre đan Đông Anh"));  // prefix
  EXPECT_TRUE(Found("xyz").empty());
  EXPECT_EQ(device_->Search(1, " ,; ", 10).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(device_->Search(2, "x", 10).status().code(), absl::StatusCode::kInvalidArgument);
  // Quotes and FTS5 operators in a query are words, not syntax.
  EXPECT_TRUE(device_->Search(1, "\"gom\" OR NEAR(", 10).ok());
}

TEST_F(DeviceQueryTest, SearchFollowsEditsDeletesDownloadsAndPurges) {
  Item(1, kUnit, "gốm");
  ASSERT_TRUE(device_->Write({Change(1, Id(1), {{5, StringValue("lụa Vạn Phúc")}})}).ok());
  EXPECT_TRUE(Found("gom").empty());
  EXPECT_THAT(Found("lua van phuc"), ElementsAre("lụa Vạn Phúc"));
  Sync();
  EXPECT_THAT(Found("lua"), ElementsAre("lụa Vạn Phúc"));
  // A change from elsewhere arrives by download.
  kcnet::v1::MutationBatch other;
  auto* m = other.add_mutations();
  m->set_seq(1);
  auto change = Change(1, Id(1), {{5, StringValue("lụa Hà Đông")}});
  change.set_hlc(HlcPack(kT0 + 1000, 0));
  change.set_base_op(0);
  *m->add_changes() = change;
  ASSERT_TRUE(server_->Apply(Writer{"tablet-b", NodeIdFor("tablet-b")}, other).ok());
  Sync();
  EXPECT_THAT(Found("ha dong"), ElementsAre("lụa Hà Đông"));
  ASSERT_TRUE(device_->Write({Deletion(1, Id(1))}).ok());
  EXPECT_TRUE(Found("lua").empty());
  Item(2, kOtherUnit, "chiếu cói");
  ASSERT_TRUE(device_->Unsubscribe(kOtherUnit).ok());
  Sync();
  EXPECT_TRUE(Found("chieu").empty());
}

TEST_F(DeviceQueryTest, ARefusedWriteLeavesTheSearchIndex) {
  Item(1, kUnit, "gốm");
  auto batch = device_->PendingBatch();
  kcnet::v1::PushAck ack;
  auto* r = ack.add_results();
  r->set_seq(batch->mutations(0).seq());
  r->set_outcome(kcnet::v1::MUTATION_OUTCOME_REFUSED);
  r->set_reason("not allowed");
  ASSERT_TRUE(device_->Acknowledge(ack).ok());
  EXPECT_TRUE(Found("gom").empty());
  EXPECT_TRUE(Labels({.type = 1}).empty());
}

TEST_F(DeviceQueryTest, KeyValueStateRoundTripsAndSurvivesReopen) {
  EXPECT_FALSE(device_->GetValue("account")->has_value());
  ASSERT_TRUE(device_->SetValue("account", std::string("a\0b", 3)).ok());
  EXPECT_EQ(**device_->GetValue("account"), std::string("a\0b", 3));
  EXPECT_EQ(device_->SetValue("", "x").code(), absl::StatusCode::kInvalidArgument);
  device_.reset();
  DeviceStoreOptions options;
  options.clock = &wall_;
  auto reopened = DeviceStore::Open(dir_.File("a.db"), &schema_, "tablet-a", options);
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ(**(*reopened)->GetValue("account"), std::string("a\0b", 3));
  ASSERT_TRUE((*reopened)->SetValue("account", std::nullopt).ok());
  EXPECT_FALSE((*reopened)->GetValue("account")->has_value());
}

}  // namespace
}  // namespace kcnet::sync
