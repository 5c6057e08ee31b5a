// kcnet-admin backup / restore carry the attachment bytes (DATA_DIR/blobs) with the
// databases: a photo whose record is in the backup has its bytes in it, and a restore into
// a data directory that lost them puts them back, byte-identical. Real files in temp dirs.
#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "server/admin/backup.h"
#include "server/attachments/blob_store.h"
#include "sync/model/record_types.h"
#include "sync/server_store.h"
#include "tests/testing/test_util.h"

namespace kcnet::server {
namespace {

namespace fs = std::filesystem;

std::string PhotoA() { return std::string(300 * 1024, 'a') + "photo A"; }
std::string PhotoB() { return "\x89PNG photo B"; }

// A data directory with a record store and two blobs, one upload's temp file among them.
void MakeDataDir(const std::string& dir, std::string* sha_a, std::string* sha_b) {
  {
    auto store = sync::ServerStore::Open(dir + "/kcnet.db", &model::KcnetSchema());
    ASSERT_TRUE(store.ok()) << store.status();
  }
  auto blobs = FileBlobStore::Open(dir + "/blobs");
  ASSERT_TRUE(blobs.ok()) << blobs.status();
  auto a = (*blobs)->Put(PhotoA());
  auto b = (*blobs)->Put(PhotoB());
  ASSERT_TRUE(a.ok() && b.ok());
  *sha_a = *a;
  *sha_b = *b;
  // What an upload in progress or a crash may leave next to the blobs: never copied.
  std::ofstream(fs::path((*blobs)->PathOf(*a)).parent_path() / (*a + ".tmp")) << "partial";
}

TEST(BackupBlobsTest, BackupCarriesTheBlobsAndRestorePutsBackTheLostOnes) {
  kcnet::testing::TempDir tmp;
  const std::string data = tmp.File("data");
  const std::string backup = tmp.File("backup");
  fs::create_directories(data);
  std::string sha_a, sha_b;
  ASSERT_NO_FATAL_FAILURE(MakeDataDir(data, &sha_a, &sha_b));

  auto copied = BackupDataDir(data, backup);
  ASSERT_TRUE(copied.ok()) << copied.status();
  ASSERT_FALSE(copied->empty());
  EXPECT_EQ(copied->back().name, "blobs/ (2 new files)");
  EXPECT_EQ(copied->back().bytes, static_cast<int64_t>(PhotoA().size() + PhotoB().size()));

  auto in_backup = FileBlobStore::Open(backup + "/blobs");
  ASSERT_TRUE(in_backup.ok());
  for (const std::string& sha : {sha_a, sha_b}) {
    auto rehash = (*in_backup)->Rehash(sha);
    ASSERT_TRUE(rehash.ok()) << rehash.status();
    EXPECT_EQ(*rehash, sha) << "byte-identical in the backup";
  }
  EXPECT_FALSE(fs::exists(fs::path((*in_backup)->PathOf(sha_a)).parent_path() / (sha_a + ".tmp")))
      << "an upload's temp file is not a blob";

  // The data directory loses a blob (a disk replaced, a folder deleted); the restore puts it
  // back and leaves the one that is still there as it is.
  auto in_data = FileBlobStore::Open(data + "/blobs");
  ASSERT_TRUE(in_data.ok());
  ASSERT_TRUE((*in_data)->Remove(sha_a).ok());
  auto restored = RestoreDataDir(data, backup);
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ(restored->back().name, "blobs/ (1 new files)");
  for (const std::string& sha : {sha_a, sha_b}) {
    auto rehash = (*in_data)->Rehash(sha);
    ASSERT_TRUE(rehash.ok()) << rehash.status();
    EXPECT_EQ(*rehash, sha);
  }
}

TEST(BackupBlobsTest, ADataDirectoryWithoutBlobsBacksUpItsDatabasesOnly) {
  kcnet::testing::TempDir tmp;
  const std::string data = tmp.File("data");
  fs::create_directories(data);
  {
    auto store = sync::ServerStore::Open(data + "/kcnet.db", &model::KcnetSchema());
    ASSERT_TRUE(store.ok()) << store.status();
  }
  auto copied = BackupDataDir(data, tmp.File("backup"));
  ASSERT_TRUE(copied.ok()) << copied.status();
  ASSERT_EQ(copied->size(), 1u);
  EXPECT_EQ((*copied)[0].name, "kcnet.db");
  EXPECT_FALSE(fs::exists(tmp.File("backup") + "/blobs"));
}

}  // namespace
}  // namespace kcnet::server
