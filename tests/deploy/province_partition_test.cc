// province_partition_test (issue 18, point 2 through kcnet-server): on PostgreSQL the
// record tables are partitioned by province (LIST), and kcnet-server takes a bucket's
// province from the directory (the province above the commune).
//
// A real PostgreSQL (tests/testing/pg_instance.h) and a real kcnet-server process on it,
// whose directory holds two provinces: seed-demo's "90" and "91" added with kcnet-admin
// import-org-units, with a collaborator in each (seed-demo's collab1 in 90101, one made by
// kcnet-admin create-user in 91001). Each collaborator's tablet (the SDK) registers a
// facility and syncs; each row must then be in its own province's partition
// (kcnet_records_p<province org unit id>), and each bucket head must name its province.
// Skipped when PostgreSQL is absent.
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "client_sdk/cli/child_process.h"
#include "gtest/gtest.h"
#include "kcnet/client.h"
#include "server/directory/directory.h"
#include "server/pgstore/pg_conn.h"
#include "server/pgstore/pg_directory_store.h"
#include "tests/testing/pg_instance.h"
#include "tests/testing/test_util.h"

namespace kcnet::deploy {
namespace {

using ::kcnet::cli::ChildProcess;
using ::kcnet::cli::RunOutput;
using ::kcnet::cli::RunProgram;
using ::kcnet::testing::PgInstance;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(ProvincePartitionTest, EachProvincesRowsLandInTheirOwnPartitionThroughKcnetServer) {
  auto pg = PgInstance::Start();
  if (absl::IsNotFound(pg.status())) GTEST_SKIP() << pg.status();
  ASSERT_TRUE(pg.ok()) << pg.status();
  kcnet::testing::TempDir dir;
  const std::string data = dir.File("data");
  auto admin = [&](std::vector<std::string> args) {
    args.insert(args.begin(),
                {KCNET_ADMIN_PATH, "--data_dir=" + data, "--store=postgres:" + (*pg)->conninfo()});
    RunOutput run = RunProgram(args, dir.File("admin.err"), absl::Seconds(60));
    EXPECT_EQ(run.exit_code, 0) << run.output << ReadFile(dir.File("admin.err"));
  };
  RunOutput seed = RunProgram({KCNET_ADMIN_PATH, "seed-demo", "--data_dir=" + data,
                               "--store=postgres:" + (*pg)->conninfo()},
                              dir.File("seed.err"), absl::Seconds(60));
  ASSERT_EQ(seed.exit_code, 0) << ReadFile(dir.File("seed.err"));
  std::ofstream(dir.File("units.csv")) << "code,name,level,parent_code\n"
                                          "91,Tỉnh Thử Hai,province,\n"
                                          "91001,Xã Một Tỉnh Hai,commune,91\n";
  admin({"import-org-units", dir.File("units.csv")});
  std::ofstream(dir.File("password")) << "mat-khau-tinh-hai\n";
  admin({"create-user", "--username=ctv91", "--display_name=Cộng tác viên tỉnh 91",
         "--role=commune_collaborator", "--org_units=91001",
         "--password-file=" + dir.File("password")});
  ASSERT_FALSE(::testing::Test::HasFailure());

  // The org unit ids the server will key the partitions by.
  std::map<std::string, int64_t> ids;
  {
    auto shared = pgstore::OpenPgDirectoryStore((*pg)->conninfo());
    ASSERT_TRUE(shared.ok()) << shared.status();
    auto directory = server::Directory::Open(*std::move(shared));
    ASSERT_TRUE(directory.ok()) << directory.status();
    for (const char* code : {"90", "91", "90101", "91001"}) {
      auto unit = (*directory)->FindByCode(code);
      ASSERT_TRUE(unit.ok()) << unit.status();
      ids[code] = unit->id();
    }
  }

  auto server =
      ChildProcess::Start({KCNET_SERVER_PATH, "--data_dir=" + data,
                           "--store=postgres:" + (*pg)->conninfo(), "--listen=127.0.0.1:0"},
                          dir.File("server.err"));
  ASSERT_TRUE(server.ok()) << server.status();
  std::optional<std::string> line = (*server)->ReadLine(absl::Seconds(60));
  ASSERT_TRUE(line.has_value()) << ReadFile(dir.File("server.err"));
  const std::string prefix = "kcnet-server listening on ";
  ASSERT_TRUE(absl::StartsWith(*line, prefix)) << *line;
  const std::string address = line->substr(prefix.size());

  struct Writer {
    std::string user, password, commune;
  };
  for (const Writer& w : {Writer{"collab1", "demo-collab1-pass", "90101"},
                          Writer{"ctv91", "mat-khau-tinh-hai", "91001"}}) {
    sdk::ClientOptions options;
    options.path = dir.File(w.user + ".db");
    options.device_id = "tablet-" + w.user;
    options.server_address = address;
    options.durable = false;
    auto client = sdk::Client::Open(options);
    ASSERT_TRUE(client.ok()) << client.status();
    ASSERT_TRUE((*client)->SignIn(w.user, w.password).ok());
    v1::Facility f;
    f.set_commune_id(ids[w.commune]);
    f.set_name(absl::StrCat("Cơ sở của ", w.user));
    f.set_owner_name("Lê Thị Hoa");
    f.set_kind(v1::FACILITY_KIND_HOUSEHOLD_BUSINESS);
    f.set_sector(v1::SECTOR_HANDICRAFTS);
    f.set_latitude(20.5);
    f.set_longitude(105.5);
    f.set_workers(4);
    auto made = (*client)->RegisterFacility(f);
    ASSERT_TRUE(made.ok()) << made.status();
    auto synced = (*client)->SyncNow();
    ASSERT_TRUE(synced.ok()) << synced.status();
    EXPECT_EQ((*client)->Status().pending_uploads, 0);
  }

  auto conn = pgstore::PgConn::Connect((*pg)->conninfo());
  ASSERT_TRUE(conn.ok()) << conn.status();
  auto rows = (*conn)->Query(
      "SELECT r.tableoid::regclass::text, r.bucket, h.province FROM kcnet_records r "
      "JOIN kcnet_bucket_head h ON h.bucket = r.bucket ORDER BY r.bucket");
  ASSERT_TRUE(rows.ok()) << rows.status();
  // The two tablets' facilities, and seed-demo's facilities and visits (in province 90).
  ASSERT_GE(rows->rows(), 2);
  std::map<int64_t, std::string> partition_of_bucket;
  for (int r = 0; r < rows->rows(); ++r) {
    partition_of_bucket[rows->GetInt(r, 1)] = std::string(rows->Get(r, 0));
    // The head names the province its rows are in.
    EXPECT_EQ(std::string(rows->Get(r, 0)), absl::StrCat("kcnet_records_p", rows->GetInt(r, 2)));
  }
  EXPECT_EQ(partition_of_bucket[ids["90101"]], absl::StrCat("kcnet_records_p", ids["90"]));
  EXPECT_EQ(partition_of_bucket[ids["91001"]], absl::StrCat("kcnet_records_p", ids["91"]));
  EXPECT_NE(ids["90"], ids["91"]);
  EXPECT_EQ((*server)->Stop(absl::Seconds(15)), 0);
}

}  // namespace
}  // namespace kcnet::deploy
