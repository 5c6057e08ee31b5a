// Issue 13 (parts 5 and 6) in the sync core: repeated enums checked value by value, a
// List over many buckets that reads a bounded number of rows and still returns the
// global order, and conflicts resolved atomically, once.
#include <algorithm>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kcnet/v1/domain.pb.h"
#include "sync/model/record_types.h"
#include "sync/model/requests.h"
#include "sync/schema.h"
#include "sync/server_store.h"
#include "tests/testing/test_util.h"

namespace kcnet::sync {
namespace {

using ::testing::HasSubstr;

std::string Packed(const std::vector<uint64_t>& values) {
  std::string out;
  for (uint64_t v : values) {
    do {
      unsigned char byte = v & 0x7f;
      v >>= 7;
      if (v != 0) byte |= 0x80;
      out.push_back(static_cast<char>(byte));
    } while (v != 0);
  }
  return out;
}

const FieldSpec& NeedsField() {
  const RecordTypeSpec* visit = model::KcnetSchema().Find(model::kVisitType);
  return *visit->Field(kcnet::v1::Visit::kNeedsFieldNumber);
}

TEST(RepeatedEnumTest, KnownValuesPass) {
  kcnet::v1::Value v;
  v.set_bytes_value(Packed({kcnet::v1::SUPPORT_CATEGORY_MACHINERY_TECHNOLOGY}));
  const RecordTypeSpec& visit = *model::KcnetSchema().Find(model::kVisitType);
  EXPECT_TRUE(Schema::ValidateValue(visit, NeedsField(), v).ok());
  v.set_bytes_value("");
  EXPECT_TRUE(Schema::ValidateValue(visit, NeedsField(), v).ok());
}

TEST(RepeatedEnumTest, UnknownValuesAndGarbageAreRefusedNamingTheField) {
  const RecordTypeSpec& visit = *model::KcnetSchema().Find(model::kVisitType);
  kcnet::v1::Value v;
  v.set_bytes_value(Packed({kcnet::v1::SUPPORT_CATEGORY_MACHINERY_TECHNOLOGY, 999}));
  absl::Status status = Schema::ValidateValue(visit, NeedsField(), v);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("visit.needs"));
  EXPECT_THAT(status.message(), HasSubstr("999"));
  v.set_bytes_value("\x01\xff");  // a truncated varint
  EXPECT_EQ(Schema::ValidateValue(visit, NeedsField(), v).code(),
            absl::StatusCode::kInvalidArgument);
  v.set_bytes_value(Packed({0}));  // "unspecified" is no need
  EXPECT_EQ(Schema::ValidateValue(visit, NeedsField(), v).code(),
            absl::StatusCode::kInvalidArgument);
  v.set_string_value("machinery");
  EXPECT_EQ(Schema::ValidateValue(visit, NeedsField(), v).code(),
            absl::StatusCode::kInvalidArgument);
}

class StoreTrustTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerStoreOptions options;
    options.durable = false;
    auto store = ServerStore::Open(dir_.File("s.db"), &model::KcnetSchema(), options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  // One facility in `bucket`; returns its op.
  uint64_t AddFacility(int64_t bucket, const std::string& name) {
    kcnet::v1::Facility f;
    f.set_id(model::NewRecordId());
    f.set_commune_id(bucket);
    f.set_name(name);
    auto change = model::ToChange(f);
    EXPECT_TRUE(change.ok());
    change->set_hlc(store_->clock().Now());
    kcnet::v1::MutationBatch batch;
    *batch.add_mutations()->add_changes() = *change;
    auto ack = store_->Apply(Writer{"", NodeIdFor("test")}, batch);
    EXPECT_TRUE(ack.ok());
    return ack->results(0).op();
  }

  kcnet::testing::TempDir dir_;
  std::unique_ptr<ServerStore> store_;
};

TEST_F(StoreTrustTest, ListMergesManyBucketsInGlobalOrderWithAGlobalLimit) {
  std::vector<uint64_t> ops;
  for (int round = 0; round < 7; ++round) {
    for (int64_t bucket = 1; bucket <= 40; ++bucket) {
      // Uneven buckets: some have many facilities, some one.
      if (round > 0 && bucket % (round + 1) != 0) continue;
      ops.push_back(AddFacility(bucket, "f"));
    }
  }
  std::vector<int64_t> buckets;
  for (int64_t b = 1; b <= 40; ++b) buckets.push_back(b);
  for (bool newest_first : {true, false}) {
    std::vector<uint64_t> want = ops;
    std::sort(want.begin(), want.end());
    if (newest_first) std::reverse(want.begin(), want.end());
    std::vector<uint64_t> got;
    ListQuery query;
    query.type = model::kFacilityType;
    query.buckets = buckets;
    query.newest_first = newest_first;
    query.limit = 9;
    while (true) {
      auto page = store_->List(query);
      ASSERT_TRUE(page.ok()) << page.status();
      ASSERT_LE(page->size(), 9u);
      for (const auto& c : *page) got.push_back(c.op());
      if (page->size() < query.limit) break;
      query.after = page->back().op();
    }
    EXPECT_EQ(got, want);
  }
}

}  // namespace
}  // namespace kcnet::sync
