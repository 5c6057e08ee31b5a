#include "sync/schema.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kcnet/v1/domain.pb.h"
#include "sync/model/record_types.h"
#include "tests/testing/test_util.h"

namespace kcnet::sync {
namespace {

using ::kcnet::testing::Change;
using ::kcnet::testing::DoubleValue;
using ::kcnet::testing::Id;
using ::kcnet::testing::IntValue;
using ::kcnet::testing::StringValue;
using ::testing::HasSubstr;

TEST(SchemaTest, CreateRejectsBadSpecs) {
  RecordTypeSpec t{
      .type = 1, .name = "thing", .bucket_field = 2, .fields = {{.number = 2, .name = "unit"}}};
  EXPECT_TRUE(Schema::Create({t}).ok());
  RecordTypeSpec dup = t;
  EXPECT_THAT(Schema::Create({t, dup}).status().message(), HasSubstr("duplicate"));
  RecordTypeSpec no_bucket = t;
  no_bucket.bucket_field = 9;
  EXPECT_THAT(Schema::Create({no_bucket}).status().message(), HasSubstr("bucket field"));
  RecordTypeSpec bad_name = t;
  bad_name.name = "Robert'); DROP TABLE";
  EXPECT_THAT(Schema::Create({bad_name}).status().message(), HasSubstr("bad table name"));
  RecordTypeSpec id_field = t;
  id_field.fields.push_back({.number = 1, .name = "other"});
  EXPECT_THAT(Schema::Create({id_field}).status().message(), HasSubstr("reserved"));
}

TEST(SchemaTest, ValidateChangeNamesTheFieldAndTheReason) {
  const Schema schema = kcnet::testing::TestSchema();
  std::string path;
  EXPECT_TRUE(schema.ValidateChange(Change(1, Id(1), {{3, IntValue(4)}}), "c").ok());

  absl::Status s = schema.ValidateChange(Change(9, Id(1), {}), "changes[0]", &path);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("unknown record type 9"));
  EXPECT_EQ(path, "changes[0].type");

  s = schema.ValidateChange(Change(1, "short", {}), "c", &path);
  EXPECT_THAT(s.message(), HasSubstr("16-byte UUID"));
  EXPECT_EQ(path, "c.id");

  s = schema.ValidateChange(Change(1, Id(1), {{42, IntValue(1)}}), "c", &path);
  EXPECT_THAT(s.message(), HasSubstr("unknown field 42 of item"));
  EXPECT_EQ(path, "c.fields[0]");

  s = schema.ValidateChange(Change(1, Id(1), {{3, StringValue("x")}}), "c", &path);
  EXPECT_THAT(s.message(), HasSubstr("item.count: expected a value of type int"));

  s = schema.ValidateChange(Change(1, Id(1), {{3, IntValue(-1)}}), "c", &path);
  EXPECT_THAT(s.message(), HasSubstr("item.count: -1 is outside"));

  s = schema.ValidateChange(Change(1, Id(1), {{4, DoubleValue(95)}}), "c", &path);
  EXPECT_THAT(s.message(), HasSubstr("item.ratio: 95 is outside"));

  s = schema.ValidateChange(Change(1, Id(1), {{5, StringValue("\xc3\x28")}}), "c", &path);
  EXPECT_THAT(s.message(), HasSubstr("not valid UTF-8"));

  s = schema.ValidateChange(Change(1, Id(1), {{5, StringValue(std::string(65, 'a'))}}), "c");
  EXPECT_THAT(s.message(), HasSubstr("65 bytes, at most 64"));

  s = schema.ValidateChange(Change(1, Id(1), {{3, IntValue(1)}, {3, IntValue(2)}}), "c", &path);
  EXPECT_THAT(s.message(), HasSubstr("appears twice"));
  EXPECT_EQ(path, "c.fields[1]");

  auto del = kcnet::testing::Deletion(1, Id(1));
  del.add_fields()->set_field(3);
  EXPECT_THAT(schema.ValidateChange(del, "c").message(), HasSubstr("deletion carries no fields"));
}

TEST(SchemaTest, UuidTextRoundTripsAndRejectsMalformedIds) {
  const std::string text = "0f8c2a64-5d1e-4b7a-9c3e-2a1b0c9d8e7f";
  auto bytes = UuidFromText(text);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(bytes->size(), 16u);
  EXPECT_EQ(*UuidToText(*bytes), text);
  EXPECT_FALSE(UuidFromText("0f8c2a64-5d1e-4b7a-9c3e-2a1b0c9d8e7").ok());
  EXPECT_FALSE(UuidFromText("0f8c2a64x5d1e-4b7a-9c3e-2a1b0c9d8e7f").ok());
  EXPECT_FALSE(UuidFromText("zf8c2a64-5d1e-4b7a-9c3e-2a1b0c9d8e7f").ok());
  // Every digit is checked, the low one of each byte too; upper case is read.
  EXPECT_FALSE(UuidFromText("0f8c2a64-5d1e-4b7a-9c3e-2a1b0c9d8e7g").ok());
  EXPECT_FALSE(UuidFromText("0f8c2a64-5d1e-4b7a-9c3e-2a1b0c9d8-7f").ok());
  EXPECT_EQ(*UuidFromText("0F8C2A64-5D1E-4B7A-9C3E-2A1B0C9D8E7F"), *bytes);
  char raw[16];
  ASSERT_TRUE(UuidTextToBytes(text, raw));
  EXPECT_EQ(std::string(raw, 16), *bytes);
  EXPECT_FALSE(UuidTextToBytes("0f8c2a64-5d1e-4b7a-9c3e-2a1b0c9d8e7", raw));
  EXPECT_THAT(UuidToText("abc").status().message(), HasSubstr("expected 16 bytes"));
}

TEST(SchemaTest, Utf8Validation) {
  EXPECT_TRUE(IsValidUtf8("Hà Nội, Đắk Lắk"));
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // > U+10FFFF
  EXPECT_FALSE(IsValidUtf8("abc\xe1\x80"));       // truncated
}

TEST(KcnetSchemaTest, RecordTypesComeFromTheDescriptors) {
  const Schema& schema = model::KcnetSchema();
  ASSERT_EQ(schema.types().size(), 5u);  // facility, visit, request, event, attachment
  const RecordTypeSpec* visit = schema.Find(model::kVisitType);
  ASSERT_NE(visit, nullptr);
  EXPECT_EQ(visit->name, "visit");
  EXPECT_EQ(visit->fields.size(),
            static_cast<size_t>(kcnet::v1::Visit::descriptor()->field_count() - 1));
  const FieldSpec* purpose = visit->Field(kcnet::v1::Visit::kPurposeFieldNumber);
  ASSERT_NE(purpose, nullptr);
  EXPECT_TRUE(purpose->enum_values.contains(kcnet::v1::VISIT_PURPOSE_SURVEY));
  EXPECT_FALSE(purpose->enum_values.contains(99));
  EXPECT_EQ(visit->Field(kcnet::v1::Visit::kNeedsFieldNumber)->type, FieldType::kBytes);
  EXPECT_EQ(schema.FindByName("support_request")->type, model::kSupportRequestType);
  const FieldSpec* lat = schema.Find(model::kFacilityType)->Field(8);
  EXPECT_EQ(lat->name, "latitude");
  EXPECT_EQ(lat->max_double, 90);
}

TEST(KcnetSchemaTest, DomainMessagesRoundTripThroughChanges) {
  kcnet::v1::Visit visit;
  visit.set_id("0f8c2a64-5d1e-4b7a-9c3e-2a1b0c9d8e7f");
  visit.set_commune_id(42);
  visit.set_facility_id("1f8c2a64-5d1e-4b7a-9c3e-2a1b0c9d8e7f");
  visit.set_latitude(21.03);
  visit.set_longitude(105.85);
  visit.set_purpose(kcnet::v1::VISIT_PURPOSE_FOLLOW_UP);
  visit.set_findings("Máy sấy hỏng");
  visit.add_needs(kcnet::v1::SUPPORT_CATEGORY_TRAINING);
  visit.add_needs(kcnet::v1::SUPPORT_CATEGORY_TRADE_PROMOTION);
  auto change = model::ToChange(visit);
  ASSERT_TRUE(change.ok()) << change.status();
  EXPECT_TRUE(model::KcnetSchema().ValidateChange(*change, "c").ok());
  kcnet::v1::Visit back;
  ASSERT_TRUE(model::FromChange(*change, &back).ok());
  EXPECT_EQ(back.SerializeAsString(), visit.SerializeAsString());

  visit.set_id("not-a-uuid");
  EXPECT_THAT(model::ToChange(visit).status().message(), HasSubstr("id:"));
}

}  // namespace
}  // namespace kcnet::sync
