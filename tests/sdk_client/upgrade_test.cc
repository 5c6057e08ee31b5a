// App and server upgrades never stop sync (docs/SYNC.md, "Upgrades"), through the SDK
// against a real KcnetServer:
//  - a store fixture written by the previous store format (tests/fixtures, made by
//    make_store_fixture before the format changed) opens (migrates) with nothing lost and
//    syncs with its server: the pending writes are uploaded exactly once, all converge;
//  - an app one release behind (model::PreviousKcnetSchema(): no RequestEvent type, no
//    Facility.created_ms) syncs with today's server and today's apps, keeps what it does
//    not know, edits what it knows, converges, and once upgraded (reopened with today's
//    schema) has the kept values in its columns without downloading them again.
// (A device speaking a higher sync schema version than the server is refused with an
// upgrade hint: SyncStreamTest.BadHelloEndsTheStream.)
#include <sqlite3.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kcnet/client.h"
#include "server/app/kcnet_server.h"
#include "sync/device_store.h"
#include "sync/model/record_types.h"
#include "tests/testing/test_server.h"
#include "tests/testing/test_util.h"

namespace kcnet::sdk {
namespace {

using namespace ::kcnet::v1;  // NOLINT: messages and enum constants

constexpr char kPassword[] = "password-123";

int64_t QueryInt(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  int64_t out = -1;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
      out = sqlite3_column_int64(stmt, 0);
    }
    sqlite3_finalize(stmt);
  }
  sqlite3_close(db);
  return out;
}

class UpgradeTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(1));
  }

  void StartServer() {
    auto server =
        server::KcnetServer::Start(kcnet::testing::TestServerOptions(dir_.File("server")));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  ClientOptions Options(const std::string& device, const sync::Schema* schema = nullptr) {
    ClientOptions o;
    o.path = dir_.File(device + ".db");
    o.device_id = device;
    o.server_address = absl::StrCat("127.0.0.1:", server_->port());
    o.durable = false;
    o.sync_timeout = absl::Seconds(20);
    o.seed = 7;
    o.schema = schema;
    return o;
  }

  std::unique_ptr<Client> Open(const std::string& device, const sync::Schema* schema = nullptr) {
    auto client = Client::Open(Options(device, schema));
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  template <typename T>
  static T Ok(absl::StatusOr<T> v) {
    EXPECT_TRUE(v.ok()) << v.status();
    return v.ok() ? *std::move(v) : T();
  }

  // Every bucket of the client has the server's checksum and record count.
  void ExpectSameAsServer(Client& client) {
    std::vector<BucketCheckpoint> mine = Ok(client.Checkpoints());
    ASSERT_FALSE(mine.empty());
    for (const BucketCheckpoint& cp : mine) {
      auto server = server_->store()->Checkpoint(cp.bucket());
      ASSERT_TRUE(server.ok());
      EXPECT_EQ(cp.checksum(), server->checksum()) << "bucket " << cp.bucket();
      EXPECT_EQ(cp.records(), server->records()) << "bucket " << cp.bucket();
    }
  }

  kcnet::testing::TempDir dir_;
  std::unique_ptr<server::KcnetServer> server_;
};

TEST_F(UpgradeTest, AStoreOfThePreviousFormatMigratesLosesNothingAndSyncsOnce) {
  namespace fs = std::filesystem;
  const fs::path fixtures(KCNET_FIXTURES_DIR);
  fs::create_directories(dir_.File("server"));
  for (const auto& entry : fs::directory_iterator(fixtures / "server_v1")) {
    fs::copy_file(entry.path(), fs::path(dir_.File("server")) / entry.path().filename());
  }
  const std::string path = dir_.File("fixture-tablet.db");
  fs::copy_file(fixtures / "device_store_v1.db", path);
  ASSERT_EQ(QueryInt(path, "PRAGMA user_version"), 1);
  ASSERT_EQ(QueryInt(path, "SELECT count(*) FROM _outbox"), 3);
  StartServer();

  std::unique_ptr<Client> tablet = Open("fixture-tablet");
  ASSERT_NE(tablet, nullptr);
  // Migrated, nothing lost: the account, the records (three synced, one pending), the
  // pending uploads, the cursors.
  ASSERT_TRUE(tablet->user().has_value());
  EXPECT_EQ(tablet->user()->username(), "ctv_an");
  ASSERT_EQ(tablet->user()->org_unit_ids_size(), 1);
  const int64_t commune = tablet->user()->org_unit_ids(0);
  std::vector<Facility> facilities = Ok(tablet->FacilitiesOfCommune(commune));
  ASSERT_EQ(facilities.size(), 4u);
  EXPECT_EQ(Ok(tablet->PendingUploads()).size(), 3u);
  EXPECT_EQ(QueryInt(path, "SELECT count(*) FROM _cursors WHERE op > 0"), 1);
  EXPECT_EQ(QueryInt(path, "PRAGMA user_version"), sync::kDeviceStoreFormatVersion);
  std::string edited_id;
  for (const Facility& f : facilities) {
    if (f.name() == "Xưởng gốm Bát Tràng") {
      EXPECT_EQ(f.workers(), 30);  // the pending edit, laid over the synced record
      edited_id = f.id();
    }
  }
  ASSERT_FALSE(edited_id.empty());

  // Signed in again (its credential may have expired since the fixture was made), it syncs.
  ASSERT_TRUE(tablet->SignIn("ctv_an", kPassword).ok());
  SyncSummary summary = Ok(tablet->SyncNow());
  EXPECT_EQ(summary.pushed_mutations, 3);
  EXPECT_TRUE(Ok(tablet->PendingUploads()).empty());
  ExpectSameAsServer(*tablet);
  Ok(tablet->SyncNow());  // again: nothing more to upload
  EXPECT_TRUE(Ok(tablet->PendingUploads()).empty());
  EXPECT_EQ(server_->store()->Checkpoint(commune)->records(), 4u + 2u);  // facilities + visits

  // A second tablet of the same user sees the same: each write once.
  std::unique_ptr<Client> other = Open("tablet-b");
  ASSERT_TRUE(other->SignIn("ctv_an", kPassword).ok());
  Ok(other->SyncNow());
  EXPECT_EQ(Ok(other->FacilitiesOfCommune(commune)).size(), 4u);
  EXPECT_EQ(Ok(other->GetFacility(edited_id)).workers(), 30);
  EXPECT_EQ(Ok(other->GetFacility(edited_id)).main_products(), "Gốm men lam");
  ExpectSameAsServer(*other);
}

class OlderAppTest : public UpgradeTest {
 protected:
  void SetUp() override {
    StartServer();
    server::Directory* d = server_->directory();
    const int64_t p = d->CreateOrgUnit("90", "Tỉnh Demo", ORG_UNIT_LEVEL_PROVINCE, 0)->id();
    const int64_t district = d->CreateOrgUnit("901", "Huyện Một", ORG_UNIT_LEVEL_DISTRICT, p)->id();
    commune_ = d->CreateOrgUnit("90101", "Xã Một", ORG_UNIT_LEVEL_COMMUNE, district)->id();
    ASSERT_TRUE(
        d->CreateUser("ctv_an", "Nguyễn Văn An", kPassword, ROLE_COMMUNE_COLLABORATOR, {commune_})
            .ok());
    ASSERT_TRUE(
        d->CreateUser("ctv_binh", "Trần Thị Bình", kPassword, ROLE_COMMUNE_COLLABORATOR, {commune_})
            .ok());
  }

  Facility NewFacility(const std::string& name) {
    Facility f;
    f.set_commune_id(commune_);
    f.set_name(name);
    f.set_owner_name("Nguyễn Văn An");
    f.set_kind(FACILITY_KIND_HOUSEHOLD_BUSINESS);
    f.set_sector(SECTOR_HANDICRAFTS);
    f.set_workers(12);
    return f;
  }

  int64_t commune_ = 0;
};

TEST_F(OlderAppTest, AnAppOneReleaseBehindSyncsConvergesAndUpgradesWithoutDownloadingAgain) {
  // Today's app writes a facility (with created_ms, unknown to the older app) and a
  // request whose life cycle makes RequestEvents (a type the older app does not know).
  std::unique_ptr<Client> today = Open("tablet-new");
  ASSERT_TRUE(today->SignIn("ctv_an", kPassword).ok());
  Facility f = Ok(today->RegisterFacility(NewFacility("Cơ sở mây tre Phú Vinh")));
  ASSERT_GT(f.created_ms(), 0);
  SupportRequest r;
  r.set_commune_id(commune_);
  r.set_facility_id(f.id());
  r.set_category(SUPPORT_CATEGORY_TRAINING);
  r.set_description("Tập huấn đan lát");
  r.set_requested_amount_vnd(45000000);
  r = Ok(today->DraftRequest(r));
  Ok(today->Submit(r.id()));
  Ok(today->SyncNow());
  const size_t events = Ok(today->RequestEvents(r.id())).size();
  ASSERT_GE(events, 2u);

  // The older app syncs: it shows what it knows and keeps the rest.
  const sync::Schema& previous = model::PreviousKcnetSchema();
  std::unique_ptr<Client> old = Open("tablet-old", &previous);
  ASSERT_TRUE(old->SignIn("ctv_binh", kPassword).ok());
  Ok(old->SyncNow());
  Facility seen = Ok(old->GetFacility(f.id()));
  EXPECT_EQ(seen.name(), f.name());
  EXPECT_EQ(seen.created_ms(), 0);  // not in its schema
  EXPECT_EQ(Ok(old->GetRequest(r.id())).description(), "Tập huấn đan lát");
  ExpectSameAsServer(*old);

  // It edits known fields of the same records and creates one of its own; today's app
  // comments on the request (one more RequestEvent).
  Facility edit = seen;
  edit.set_workers(40);
  Ok(old->UpdateFacility(edit, {"workers"}));
  Facility mine = Ok(old->RegisterFacility(NewFacility("Lò rèn Đa Sỹ")));
  Ok(today->Comment(r.id(), "Đã gửi hồ sơ"));
  Ok(old->SyncNow());
  Ok(today->SyncNow());
  Ok(old->SyncNow());
  EXPECT_TRUE(Ok(old->PendingUploads()).empty());

  // Converged: the server merged field by field; today's app keeps created_ms.
  Facility merged = Ok(today->GetFacility(f.id()));
  EXPECT_EQ(merged.workers(), 40);
  EXPECT_EQ(merged.created_ms(), f.created_ms());
  EXPECT_EQ(Ok(today->GetFacility(mine.id())).name(), "Lò rèn Đa Sỹ");
  EXPECT_EQ(Ok(today->RequestEvents(r.id())).size(), events + 1);
  ExpectSameAsServer(*today);
  ExpectSameAsServer(*old);

  // The app upgrades: the same store, today's schema. The kept values are in its columns
  // at once, before any sync.
  ASSERT_TRUE(old->Close().ok());
  old.reset();
  std::unique_ptr<Client> upgraded = Open("tablet-old");
  ASSERT_NE(upgraded, nullptr);
  EXPECT_EQ(Ok(upgraded->GetFacility(f.id())).created_ms(), f.created_ms());
  EXPECT_EQ(Ok(upgraded->GetFacility(f.id())).workers(), 40);
  EXPECT_EQ(Ok(upgraded->RequestEvents(r.id())).size(), events + 1);
  ExpectSameAsServer(*upgraded);
  // Nothing to download again.
  SyncSummary summary = Ok(upgraded->SyncNow());
  EXPECT_EQ(summary.applied_changes, 0);
  ExpectSameAsServer(*upgraded);
  EXPECT_EQ(Ok(upgraded->RequestEvents(r.id())).size(), events + 1);
}

}  // namespace
}  // namespace kcnet::sdk
