// A real kcnet-server on PostgreSQL (--store=postgres:, its own PostgreSQL on 127.0.0.1): the
// reports, the console's facility search and the attachment collector follow the records in
// PostgreSQL (docs/POSTGRES.md, "What follows PostgreSQL"). A visit written to the store is
// counted by the coverage report within 1 s; ListFacilities' search is answered by the
// index (names that begin with the query first); the collector never removes a blob an
// attachment record on PostgreSQL references, and removes one nothing references;
// `kcnet-admin rebuild-reports --store=postgres:` recounts them from PostgreSQL; every
// kcnet-admin command that reads or writes the server's data works with --store=postgres:
// (exports, the budget from the plans in PostgreSQL, the blob commands against the records
// in PostgreSQL), and backup/restore say they are SQLite's only.
// Skipped, saying so, when the PostgreSQL binaries are absent.
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kcnet/v1/reports.grpc.pb.h"
#include "kcnet/v1/services.grpc.pb.h"
#include "server/app/kcnet_server.h"
#include "server/attachments/blob_store.h"
#include "server/pgstore/pg_attachments.h"
#include "server/pgstore/pg_server_store.h"
#include "tests/server/reports/report_fixture.h"
#include "tests/testing/pg_instance.h"

#ifndef KCNET_ADMIN_PATH
#error "KCNET_ADMIN_PATH must name the kcnet-admin binary"
#endif

namespace kcnet::server::reports {
namespace {

using namespace ::kcnet::v1;  // NOLINT: messages and enum constants

class PgReportsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pg = kcnet::testing::PgInstance::Start();
    if (absl::IsNotFound(pg.status())) GTEST_SKIP() << "no PostgreSQL binaries: " << pg.status();
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = *std::move(pg);
    ServerOptions options;
    options.data_dir = dir_.File("data");
    options.store = "postgres:" + pg_->conninfo();
    options.listen = "127.0.0.1:0";
    options.directory.password_ops_limit = kArgon2OpsLimitMin;
    options.directory.password_mem_limit = kArgon2MemLimitMin;
    // A collector that removes an unreferenced blob at its second pass.
    options.attachments.gc_grace = absl::ZeroDuration();
    options.attachments.gc_interval = absl::Hours(24);  // passes run by the test
    auto server = KcnetServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    Directory* d = server_->directory();
    auto p = d->CreateOrgUnit("90", "Tỉnh Demo", ORG_UNIT_LEVEL_PROVINCE, 0);
    ASSERT_TRUE(p.ok()) << p.status();
    auto c = d->CreateOrgUnit("90001", "Xã Một", ORG_UNIT_LEVEL_COMMUNE, p->id());
    ASSERT_TRUE(c.ok()) << c.status();
    commune_ = c->id();
    ASSERT_TRUE(
        d->CreateUser("officer", "Cán bộ", "password-123", ROLE_PROVINCE_OFFICER, {p->id()}).ok());
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    grpc::ClientContext ctx;
    LoginRequest req;
    req.set_username("officer");
    req.set_password("password-123");
    LoginResponse resp;
    grpc::Status status = AuthService::NewStub(channel_)->Login(&ctx, req, &resp);
    ASSERT_TRUE(status.ok()) << status.error_message();
    token_ = resp.token();
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(2));
  }

  std::unique_ptr<grpc::ClientContext> Officer() {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->AddMetadata("authorization", "Bearer " + token_);
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    return ctx;
  }

  CoverageReport Coverage(grpc::Status* status) {
    CoverageReport report;
    *status =
        ReportService::NewStub(channel_)->GetCoverage(Officer().get(), CoverageRequest(), &report);
    return report;
  }

  Facility PutFacility(const std::string& name) {
    Facility f;
    f.set_id(model::NewRecordId());
    f.set_commune_id(commune_);
    f.set_name(name);
    f.set_created_ms(absl::ToUnixMillis(absl::Now()) - 86400000LL);
    EXPECT_TRUE(RecordWriter(server_->store()).Put(f).ok());
    return f;
  }

  kcnet::testing::TempDir dir_;
  std::unique_ptr<kcnet::testing::PgInstance> pg_;
  std::unique_ptr<KcnetServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::string token_;
  int64_t commune_ = 0;
};

TEST_F(PgReportsTest, AVisitOnPostgresIsCountedWithinASecond) {
  const Facility f = PutFacility("Mây tre Phú Vinh");
  Visit v;
  v.set_id(model::NewRecordId());
  v.set_commune_id(commune_);
  v.set_facility_id(f.id());
  v.set_collaborator_id(1);
  v.set_visited_ms(absl::ToUnixMillis(absl::Now()) - 3600000);
  ASSERT_TRUE(RecordWriter(server_->store()).Put(v).ok());
  const uint64_t op = server_->store()->last_op();
  ASSERT_GT(op, 0u);

  const absl::Time start = absl::Now();
  CoverageReport report;
  grpc::Status status;
  while (absl::Now() - start < absl::Seconds(5)) {
    report = Coverage(&status);
    ASSERT_TRUE(status.ok()) << status.error_message();
    if (report.as_of_op() >= op && report.total().visited_facilities() > 0) break;
    absl::SleepFor(absl::Milliseconds(10));
  }
  const absl::Duration took = absl::Now() - start;
  EXPECT_GE(report.as_of_op(), op);
  EXPECT_EQ(report.total().registered_facilities(), 1);
  EXPECT_EQ(report.total().visited_facilities(), 1);
  // The follower's promise (docs/REPORTS.md), with a wide margin: not a speed assertion.
  EXPECT_LT(took, absl::Seconds(5));
}

TEST_F(PgReportsTest, FacilitySearchIsAnsweredByTheIndex) {
  // Written in this order; the index answers names that begin with the query first (a
  // scan of the records, its fallback, answers the newest first).
  const Facility begins = PutFacility("Mây tre Phú Vinh");
  const Facility inside = PutFacility("Gỗ Mây Hà");
  PutFacility("Lụa Vạn Phúc");
  ListFacilitiesRequest req;
  req.set_query("may");
  req.set_page_size(10);
  ListFacilitiesResponse resp;
  grpc::Status status =
      FacilityService::NewStub(channel_)->ListFacilities(Officer().get(), req, &resp);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(resp.facilities_size(), 2);
  EXPECT_EQ(resp.facilities(0).id(), begins.id());
  EXPECT_EQ(resp.facilities(1).id(), inside.id());
}

TEST_F(PgReportsTest, TheCollectorKeepsABlobARecordOnPostgresReferences) {
  // Two blobs in the server's store (in PostgreSQL, shared by every instance); an
  // attachment record on PostgreSQL names one.
  BlobStore* blobs = &server_->attachments()->blobs();
  auto kept = blobs->Put("\xFF\xD8\xFF ảnh cơ sở");
  auto loose = blobs->Put("\xFF\xD8\xFF không ai dùng");
  ASSERT_TRUE(kept.ok() && loose.ok());
  const Facility f = PutFacility("Mây tre Phú Vinh");
  Attachment a;
  a.set_id(model::NewRecordId());
  a.set_commune_id(commune_);
  a.set_owner_type(ATTACHMENT_OWNER_TYPE_FACILITY);
  a.set_owner_id(f.id());
  a.set_sha256(*kept);
  a.set_size_bytes(20);
  a.set_media_type("image/jpeg");
  a.set_created_ms(absl::ToUnixMillis(absl::Now()));
  ASSERT_TRUE(RecordWriter(server_->store()).Put(a).ok());
  // At once (no wait for the mirror's thread): a pass with no grace removes what nothing
  // references and keeps what the record on PostgreSQL references.
  auto report = server_->attachments()->CollectGarbage();
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->blobs_removed, 1);
  EXPECT_TRUE(blobs->Size(*kept).ok());
  EXPECT_TRUE(absl::IsNotFound(blobs->Size(*loose).status()));
  // The record deleted: the blob goes at the next pass.
  ASSERT_TRUE(RecordWriter(server_->store()).Delete(model::kAttachmentType, a.id()).ok());
  report = server_->attachments()->CollectGarbage();
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->blobs_removed, 1);
  EXPECT_TRUE(absl::IsNotFound(blobs->Size(*kept).status()));
}

TEST_F(PgReportsTest, AdminRebuildsTheReportsFromPostgres) {
  const Facility f = PutFacility("Gốm Bát Tràng");
  const uint64_t op = server_->store()->last_op();
  server_->Shutdown(absl::Seconds(2));
  server_.reset();
  // From nothing: no summaries, no mirror in the data dir.
  for (const char* file : {"reports.db", "pg_mirror.db"}) {
    std::filesystem::remove(dir_.File("data") + "/" + file);
  }
  const std::string out = dir_.File("admin.out");
  const std::string command =
      absl::StrCat(KCNET_ADMIN_PATH, " --data_dir=", dir_.File("data"),
                   " '--store=postgres:", pg_->conninfo(), "' rebuild-reports > ", out, " 2>&1");
  const int code = std::system(command.c_str());
  std::ifstream file(out);
  std::stringstream printed;
  printed << file.rdbuf();
  ASSERT_EQ(code, 0) << printed.str();
  EXPECT_NE(printed.str().find("rebuilt the report summaries up to op"), std::string::npos)
      << printed.str();
  auto reports =
      ReportsStore::Open(dir_.File("data") + "/reports.db", dir_.File("data") + "/pg_mirror.db");
  ASSERT_TRUE(reports.ok()) << reports.status();
  auto cursor = (*reports)->Cursor();
  ASSERT_TRUE(cursor.ok()) << cursor.status();
  EXPECT_GE(*cursor, op);
  auto dump = (*reports)->Dump();
  ASSERT_TRUE(dump.ok()) << dump.status();
  EXPECT_NE(dump->find(f.id()), std::string::npos) << *dump;
}

// kcnet-admin with --store=postgres: on a database seeded by `seed-demo --store=postgres:`:
// the exports read the directory, the records (through the data dir's mirror) and, for the
// budget, the plans in PostgreSQL (nothing of them is in the data dir); the blob commands
// judge the blobs in PostgreSQL by the attachment records there; backup and restore
// refuse, naming PostgreSQL's tools. Failed before: `export` refused --store ("unknown
// flag") and read the budget from DATA_DIR/plans.db; gc-blobs and verify-blobs wanted a
// kcnet.db.
TEST(PgAdminTest, EveryDataCommandWorksOnPostgres) {
  auto pg = kcnet::testing::PgInstance::Start();
  if (absl::IsNotFound(pg.status())) GTEST_SKIP() << "no PostgreSQL binaries: " << pg.status();
  ASSERT_TRUE(pg.ok()) << pg.status();
  kcnet::testing::TempDir dir;
  const std::string data = dir.File("data");
  struct Result {
    int exit_code = -1;
    std::string out, err;
  };
  auto read = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  };
  auto admin = [&](const std::vector<std::string>& args) {
    std::string command = absl::StrCat(KCNET_ADMIN_PATH, " --data_dir=", data,
                                       " '--store=postgres:", (*pg)->conninfo(), "'");
    for (const std::string& arg : args) absl::StrAppend(&command, " '", arg, "'");
    absl::StrAppend(&command, " >", dir.File("out"), " 2>", dir.File("err"));
    const int status = std::system(command.c_str());
    Result r;
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = read(dir.File("out"));
    r.err = read(dir.File("err"));
    return r;
  };
  Result seeded = admin({"seed-demo"});
  ASSERT_EQ(seeded.exit_code, 0) << seeded.err;

  Result coverage = admin({"export", "coverage", "--format=csv"});
  ASSERT_EQ(coverage.exit_code, 0) << coverage.err;
  EXPECT_NE(coverage.out.find("Tổng / Total,"), std::string::npos) << coverage.out;
  // The seeded plan, read from kcnet_plans: 500,000,000 planned on the line.
  Result budget = admin({"export", "budget", "--format=csv", "--org_unit=90"});
  ASSERT_EQ(budget.exit_code, 0) << budget.err;
  EXPECT_NE(budget.out.find("Ngân sách địa phương,Đào tạo nghề,500000000,0,0,500000000,5,0"),
            std::string::npos)
      << budget.out;
  for (const char* report : {"pipeline", "activity", "quality", "outcomes"}) {
    Result r = admin({"export", report, "--format=xlsx", "--out=" + dir.File("r.xlsx")});
    EXPECT_EQ(r.exit_code, 0) << report << ": " << r.err;
  }
  Result rebuilt = admin({"rebuild-reports"});
  EXPECT_EQ(rebuilt.exit_code, 0) << rebuilt.err;
  for (const char* file : {"kcnet.db", "plans.db", "directory.db"}) {
    EXPECT_FALSE(std::filesystem::exists(data + "/" + file)) << file;
  }

  // Two blobs in PostgreSQL (where every instance keeps them); an attachment record names
  // one of them and a hash with no blob.
  auto storage = pgstore::OpenPgBlobStorage((*pg)->conninfo());
  ASSERT_TRUE(storage.ok()) << storage.status();
  BlobStore* blobs = storage->blobs.get();
  auto kept = blobs->Put("\xFF\xD8\xFF ảnh cơ sở");
  auto loose = blobs->Put("\xFF\xD8\xFF không ai dùng");
  ASSERT_TRUE(kept.ok() && loose.ok());
  const std::string absent(64, 'a');
  {
    auto store = pgstore::PgServerStore::Open((*pg)->conninfo(), &model::KcnetSchema());
    ASSERT_TRUE(store.ok()) << store.status();
    for (const std::string& sha : {*kept, absent}) {
      Attachment a;
      a.set_id(model::NewRecordId());
      a.set_commune_id(999);
      a.set_owner_type(ATTACHMENT_OWNER_TYPE_FACILITY);
      a.set_owner_id(model::NewRecordId());
      a.set_sha256(sha);
      a.set_size_bytes(20);
      a.set_media_type("image/jpeg");
      a.set_created_ms(absl::ToUnixMillis(absl::Now()));
      ASSERT_TRUE(RecordWriter(store->get()).Put(a).ok());
    }
  }
  Result verified = admin({"verify-blobs"});
  ASSERT_EQ(verified.exit_code, 0) << verified.err;
  EXPECT_NE(verified.out.find("missing " + absent), std::string::npos) << verified.out;
  EXPECT_NE(verified.out.find("verified 2 blobs"), std::string::npos) << verified.out;
  // With no grace: the first pass marks the unreferenced blob, the second removes it.
  for (int pass = 0; pass < 2; ++pass) {
    Result gc = admin({"gc-blobs", "--grace=0s"});
    ASSERT_EQ(gc.exit_code, 0) << gc.err;
  }
  EXPECT_TRUE(blobs->Size(*kept).ok());
  EXPECT_TRUE(absl::IsNotFound(blobs->Size(*loose).status()));

  for (const char* command : {"backup", "restore"}) {
    Result r = admin({command, std::string(command) == "backup" ? "--to=" + dir.File("b")
                                                                : "--from=" + dir.File("b")});
    EXPECT_EQ(r.exit_code, 1) << command;
    EXPECT_NE(r.err.find("pg_basebackup"), std::string::npos) << r.err;
  }
  EXPECT_FALSE(std::filesystem::exists(dir.File("b")));
}

}  // namespace
}  // namespace kcnet::server::reports
