// FileBlobStore on a real temp folder: content addressing, fan-out, ranges, listing,
// removal, re-hashing, and that a temp file never shows as a blob.
#include "server/attachments/blob_store.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/test_util.h"

namespace kcnet::server {
namespace {

namespace fs = std::filesystem;

TEST(BlobStoreTest, StoresByHashInFanOutFolders) {
  kcnet::testing::TempDir dir;
  auto store = FileBlobStore::Open(dir.File("blobs"));
  ASSERT_TRUE(store.ok()) << store.status();
  const std::string bytes = "ảnh xưởng sản xuất";
  absl::StatusOr<std::string> sha = (*store)->Put(bytes);
  ASSERT_TRUE(sha.ok()) << sha.status();
  EXPECT_EQ(*sha, HexOf(Sha256Of(bytes)));
  EXPECT_TRUE(IsSha256Hex(*sha));
  const fs::path path = (*store)->PathOf(*sha);
  EXPECT_EQ(path.parent_path().filename().string(), sha->substr(2, 2));
  EXPECT_EQ(path.parent_path().parent_path().filename().string(), sha->substr(0, 2));
  EXPECT_EQ(*(*store)->Size(*sha), static_cast<int64_t>(bytes.size()));
  EXPECT_EQ(*(*store)->Read(*sha, 3, 5), bytes.substr(3, 5));
  EXPECT_EQ(*(*store)->Read(*sha, 0, 1000), bytes);
  EXPECT_EQ(*(*store)->Rehash(*sha), *sha);
  EXPECT_EQ((*store)->Size(std::string(64, 'a')).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*store)->Size("not-a-hash").status().code(), absl::StatusCode::kInvalidArgument);

  // A leftover temp file is not a blob.
  std::ofstream(dir.File("blobs/.tmp/") + std::string(64, 'b')) << "partial";
  std::vector<std::string> seen;
  ASSERT_TRUE((*store)
                  ->ForEach([&](const std::string& name, int64_t) {
                    seen.push_back(name);
                    return absl::OkStatus();
                  })
                  .ok());
  EXPECT_THAT(seen, ::testing::ElementsAre(*sha));

  ASSERT_TRUE((*store)->Remove(*sha).ok());
  EXPECT_FALSE(fs::exists(path));
  EXPECT_TRUE((*store)->Remove(*sha).ok());  // already gone: fine
}

TEST(BlobStoreTest, HexRoundTrips) {
  EXPECT_EQ(HexOf(std::string("\x00\xff\x10", 3)), "00ff10");
  EXPECT_EQ(*RawFromHex("00ff10"), std::string("\x00\xff\x10", 3));
  EXPECT_FALSE(RawFromHex("0G").ok());
  EXPECT_FALSE(RawFromHex("ABCD").ok());  // uppercase is not the form records use
  EXPECT_FALSE(IsSha256Hex(std::string(63, 'a')));
}

}  // namespace
}  // namespace kcnet::server
