#include "sync/page_codec.h"

#include <zlib.h>

#include <string>

#include "gmock/gmock.h"
#include "google/protobuf/arena.h"
#include "gtest/gtest.h"

namespace kcnet::sync {
namespace {

using ::testing::HasSubstr;

kcnet::v1::ChangeBatch Page(int changes) {
  kcnet::v1::ChangeBatch page;
  for (int i = 0; i < changes; ++i) {
    kcnet::v1::RecordChange* c = page.add_changes();
    c->set_type(2);
    c->set_id(std::string(16, static_cast<char>(i)));
    c->set_op(static_cast<uint64_t>(i + 1));
    c->set_bucket(42);
    auto* f = c->add_fields();
    f->set_field(9);
    f->mutable_value()->set_string_value("Cơ sở cần hỗ trợ máy sấy nông sản");
  }
  page.add_cursors()->set_bucket(42);
  page.set_more(true);
  page.set_server_op(77);
  return page;
}

TEST(PageCodecTest, APageInflatesToItselfAndIsSmaller) {
  const kcnet::v1::ChangeBatch page = Page(500);
  const std::string deflated = DeflatePage(page);
  EXPECT_LT(deflated.size() * 4, page.ByteSizeLong());
  google::protobuf::Arena arena;
  auto* back = google::protobuf::Arena::CreateMessage<kcnet::v1::ChangeBatch>(&arena);
  ASSERT_TRUE(InflatePage(deflated, back).ok());
  EXPECT_EQ(back->SerializeAsString(), page.SerializeAsString());
  // A live page of one change (deflated with a small window) and an empty page too.
  const kcnet::v1::ChangeBatch small = Page(1);
  kcnet::v1::ChangeBatch small_back;
  ASSERT_TRUE(InflatePage(DeflatePage(small), &small_back).ok());
  EXPECT_EQ(small_back.SerializeAsString(), small.SerializeAsString());
  kcnet::v1::ChangeBatch empty;
  ASSERT_TRUE(InflatePage(DeflatePage(kcnet::v1::ChangeBatch()), &empty).ok());
  EXPECT_EQ(empty.ByteSizeLong(), 0u);
}

TEST(PageCodecTest, MalformedBytesAreRefusedNamingTheField) {
  const std::string deflated = DeflatePage(Page(50));
  kcnet::v1::ChangeBatch out;
  struct Case {
    const char* what;
    std::string bytes;
  };
  std::string flipped = deflated;
  flipped[flipped.size() / 2] ^= 0x5a;
  std::string not_a_page(64, '\xff');
  uLongf size = compressBound(not_a_page.size());
  std::string deflated_garbage(size, '\0');
  compress2(reinterpret_cast<Bytef*>(deflated_garbage.data()), &size,
            reinterpret_cast<const Bytef*>(not_a_page.data()), not_a_page.size(), 1);
  deflated_garbage.resize(size);
  for (const Case& c :
       {Case{"empty", ""}, Case{"not zlib", "hello, world"},
        Case{"truncated", deflated.substr(0, deflated.size() / 2)}, Case{"corrupted", flipped},
        Case{"trailing bytes", deflated + "x"}, Case{"not a ChangeBatch", deflated_garbage}}) {
    absl::Status status = InflatePage(c.bytes, &out);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.what << ": " << status;
    EXPECT_THAT(status.message(), HasSubstr("deflated_changes")) << c.what;
  }
}

TEST(PageCodecTest, APageThatInflatesPastTheLimitIsRefused) {
  // A zip bomb in miniature: 1 MiB of zeros deflates to about a kilobyte.
  const std::string zeros(1 << 20, '\0');
  uLongf size = compressBound(zeros.size());
  std::string bomb(size, '\0');
  compress2(reinterpret_cast<Bytef*>(bomb.data()), &size,
            reinterpret_cast<const Bytef*>(zeros.data()), zeros.size(), 9);
  bomb.resize(size);
  kcnet::v1::ChangeBatch out;
  absl::Status status = InflatePage(bomb, &out, /*max_bytes=*/64 << 10);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(status.message(), HasSubstr("inflates past 65536 bytes"));
  // Within the limit the same bytes inflate (and then fail to parse as a page: zeros are
  // field number 0).
  EXPECT_THAT(InflatePage(bomb, &out, 2 << 20).message(), HasSubstr("does not parse"));
}

}  // namespace
}  // namespace kcnet::sync
