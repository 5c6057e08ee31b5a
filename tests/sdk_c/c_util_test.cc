// Unit tests of the C ABI's helpers (client_sdk/c_api/c_util.h): errors cut at a UTF-8
// boundary, UTF-8 checks, protobuf arguments refused with the argument or field named,
// owned buffers.
//
// Thread-safety: single-threaded tests.
#include "client_sdk/c_api/c_util.h"

#include <cstring>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kcnet/v1/domain.pb.h"
#include "kcnet/v1/sdk.pb.h"

namespace kcnet::capi {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

kcnet_bytes Bytes(const std::string& s) {
  return kcnet_bytes{reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

TEST(CUtilTest, ErrorsCarryCodeAndMessageAndCutAtCharacterBoundary) {
  kcnet_error error;
  SetError(&error, absl::InvalidArgumentError("facility.name: too long"));
  EXPECT_EQ(error.code, 3);
  EXPECT_STREQ(error.message, "facility.name: too long");
  SetOk(&error);
  EXPECT_EQ(error.code, 0);
  EXPECT_STREQ(error.message, "");

  // "ộ" is 3 bytes: a message of them cannot be cut inside one.
  std::string long_message;
  while (long_message.size() < 2 * KCNET_ERROR_MESSAGE_SIZE) long_message += "ộ";
  SetError(&error, absl::StatusCode::kNotFound, long_message);
  EXPECT_EQ(error.code, 5);
  const size_t size = std::strlen(error.message);
  EXPECT_LT(size, static_cast<size_t>(KCNET_ERROR_MESSAGE_SIZE));
  EXPECT_EQ(size % 3, 0u);
  EXPECT_TRUE(IsValidUtf8(error.message));

  SetError(nullptr, absl::InternalError("x"));  // a NULL error is fine
  SetOk(nullptr);
}

TEST(CUtilTest, Utf8) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("Hà Nội, Đồng Tháp 😀"));
  EXPECT_FALSE(IsValidUtf8("\xc3\x28"));          // bad continuation
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xe0\x80\xaf"));      // overlong, 3 bytes
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(IsValidUtf8("abc\xe1\xbb"));       // truncated
  EXPECT_FALSE(IsValidUtf8("\x80"));

  EXPECT_TRUE(CheckString("ok", "query").ok());
  EXPECT_TRUE(CheckString(nullptr, "note", /*nullable=*/true).ok());
  absl::Status status = CheckString(nullptr, "username");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "username: must not be NULL");
  EXPECT_EQ(CheckString("\xff", "query").message(), "query: not valid UTF-8");
  EXPECT_EQ(CheckString("", "id", false, /*non_empty=*/true).message(), "id: must not be empty");
}

TEST(CUtilTest, ParsesAWellFormedMessage) {
  kcnet::v1::Facility facility;
  facility.set_name("Cơ sở Hà Nội");
  facility.set_kind(kcnet::v1::FACILITY_KIND_COOPERATIVE);
  facility.set_latitude(21.0);
  facility.set_workers(12);
  kcnet::v1::Facility parsed;
  const std::string wire = facility.SerializeAsString();
  ASSERT_TRUE(ParseMessage(Bytes(wire), "facility", &parsed).ok());
  EXPECT_EQ(parsed.name(), "Cơ sở Hà Nội");
  EXPECT_EQ(parsed.workers(), 12);
  // Empty bytes are the empty message; NULL data with size 0 too.
  EXPECT_TRUE(ParseMessage(kcnet_bytes{nullptr, 0}, "facility", &parsed).ok());
  EXPECT_EQ(parsed.name(), "");

  kcnet::v1::Visit visit;
  visit.add_needs(kcnet::v1::SUPPORT_CATEGORY_TRAINING);
  visit.add_needs(kcnet::v1::SUPPORT_CATEGORY_OTHER);
  kcnet::v1::Visit parsed_visit;
  ASSERT_TRUE(ParseMessage(Bytes(visit.SerializeAsString()), "visit", &parsed_visit).ok());
  EXPECT_EQ(parsed_visit.needs_size(), 2);
}

TEST(CUtilTest, RefusesBadBytesNamingTheArgumentOrField) {
  kcnet::v1::Facility out;
  absl::Status status = ParseMessage(Bytes("\xff\xff\xff\xff"), "facility", &out);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()),
              StartsWith("facility: not a serialized kcnet.v1.Facility"));

  status = ParseMessage(kcnet_bytes{nullptr, 3}, "facility", &out);
  EXPECT_THAT(std::string(status.message()), StartsWith("facility: data is NULL"));

  // A field number Facility does not have (99, varint 1).
  status = ParseMessage(Bytes(std::string("\x98\x06\x01", 3)), "facility", &out);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()),
              StartsWith("facility: field number 99 is not a field"));

  // name (3) sent as a varint.
  status = ParseMessage(Bytes(std::string("\x18\x01", 2)), "facility", &out);
  EXPECT_THAT(std::string(status.message()), StartsWith("facility.name: wrong wire type"));

  // name with invalid UTF-8.
  status = ParseMessage(Bytes(std::string("\x1a\x02\xc3\x28", 4)), "facility", &out);
  EXPECT_EQ(status.message(), "facility.name: not valid UTF-8");

  // An unknown enum value.
  kcnet::v1::Facility bad_kind;
  bad_kind.set_kind(static_cast<kcnet::v1::FacilityKind>(99));
  status = ParseMessage(Bytes(bad_kind.SerializeAsString()), "facility", &out);
  EXPECT_EQ(status.message(), "facility.kind: 99 is not a kcnet.v1.FacilityKind value");

  kcnet::v1::Visit bad_needs;
  bad_needs.add_needs(kcnet::v1::SUPPORT_CATEGORY_TRAINING);
  bad_needs.add_needs(static_cast<kcnet::v1::SupportCategory>(42));
  kcnet::v1::Visit visit;
  status = ParseMessage(Bytes(bad_needs.SerializeAsString()), "visit", &visit);
  EXPECT_EQ(status.message(), "visit.needs[1]: 42 is not a kcnet.v1.SupportCategory value");

  // Truncated length-delimited field.
  status = ParseMessage(Bytes(std::string("\x1a\x10\x41", 3)), "facility", &out);
  EXPECT_THAT(std::string(status.message()), HasSubstr("malformed protobuf wire data"));
}

TEST(CUtilTest, PutMessageGivesAnOwnedBuffer) {
  kcnet::v1::FacilityList list;
  list.add_facilities()->set_name("Xưởng mộc");
  kcnet_buffer buffer{nullptr, 0};
  ASSERT_TRUE(PutMessage(list, &buffer).ok());
  ASSERT_NE(buffer.data, nullptr);
  kcnet::v1::FacilityList back;
  ASSERT_TRUE(back.ParseFromArray(buffer.data, static_cast<int>(buffer.size)));
  EXPECT_EQ(back.facilities(0).name(), "Xưởng mộc");
  std::free(buffer.data);

  // An empty message: a zero-length buffer whose data is not NULL.
  ASSERT_TRUE(PutMessage(kcnet::v1::FacilityList(), &buffer).ok());
  EXPECT_NE(buffer.data, nullptr);
  EXPECT_EQ(buffer.size, 0u);
  std::free(buffer.data);

  EXPECT_TRUE(PutMessage(list, nullptr).ok());
}

}  // namespace
}  // namespace kcnet::capi
