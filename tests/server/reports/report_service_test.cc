// ReportService against a real kcnet-server on port 0: scope (another province's org unit
// is NOT_FOUND, word for word as one that does not exist), bad input naming the field,
// freshness (a write is counted within 1 s of its commit), the budget from the plans, and the
// exports streamed in chunks: CSV with a BOM, XLSX read back through LibreOffice headless.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kcnet/v1/reports.grpc.pb.h"
#include "kcnet/v1/services.grpc.pb.h"
#include "kcnet/v1/sync_service.grpc.pb.h"
#include "server/app/kcnet_server.h"
#include "server/plans/plan_store.h"
#include "tests/server/reports/report_fixture.h"

namespace kcnet::server::reports {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using namespace ::kcnet::v1;  // NOLINT: messages and enum constants

class ReportServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new kcnet::testing::TempDir();
    ServerOptions options;
    options.data_dir = dir_->path();
    options.listen = "127.0.0.1:0";
    options.directory.password_ops_limit = kArgon2OpsLimitMin;
    options.directory.password_mem_limit = kArgon2MemLimitMin;
    auto server = KcnetServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
    Directory* d = server_->directory();
    auto p = *d->CreateOrgUnit("90", "Tỉnh Demo", ORG_UNIT_LEVEL_PROVINCE, 0);
    province_ = p.id();
    c1_ = d->CreateOrgUnit("90001", "Xã Một", ORG_UNIT_LEVEL_COMMUNE, p.id())->id();
    c2_ = d->CreateOrgUnit("90002", "Xã Hai", ORG_UNIT_LEVEL_COMMUNE, p.id())->id();
    auto p2 = *d->CreateOrgUnit("91", "Tỉnh Khác", ORG_UNIT_LEVEL_PROVINCE, 0);
    other_province_ = p2.id();
    c9_ = d->CreateOrgUnit("91001", "Xã Chín", ORG_UNIT_LEVEL_COMMUNE, p2.id())->id();
    ASSERT_TRUE(
        d->CreateUser("officer", "Cán bộ", "password-123", ROLE_PROVINCE_OFFICER, {p.id()}).ok());
    ASSERT_TRUE(
        d->CreateUser("collab", "Cộng tác viên", "password-123", ROLE_COMMUNE_COLLABORATOR, {c1_})
            .ok());
    channel_ = new std::shared_ptr<grpc::Channel>(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", server_->port()), grpc::InsecureChannelCredentials()));
    auto auth = AuthService::NewStub(*channel_);
    for (const char* name : {"officer", "collab"}) {
      grpc::ClientContext ctx;
      LoginRequest req;
      req.set_username(name);
      req.set_password("password-123");
      LoginResponse resp;
      ASSERT_TRUE(auth->Login(&ctx, req, &resp).ok());
      (*tokens_)[name] = resp.token();
    }
    RecordWriter writer(server_->store());
    // Province 90: two facilities in commune 1 (one visited), one in commune 2.
    // Province 91: one facility.
    const int64_t now = absl::ToUnixMillis(absl::Now());
    for (auto [commune, name] : {std::pair{c1_, "Mây tre"}, std::pair{c1_, "Gỗ"},
                                 std::pair{c2_, "Lụa"}, std::pair{c9_, "Gốm"}}) {
      Facility f;
      f.set_id(model::NewRecordId());
      f.set_commune_id(commune);
      f.set_name(name);
      f.set_created_ms(now - 86400000LL * 40);
      ASSERT_TRUE(writer.Put(f).ok());
      if (std::string(name) == "Mây tre") {
        Visit v;
        v.set_id(model::NewRecordId());
        v.set_commune_id(commune);
        v.set_facility_id(f.id());
        v.set_collaborator_id(1);
        v.set_visited_ms(now - 86400000LL * 2);
        ASSERT_TRUE(writer.Put(v).ok());
      }
    }
  }

  static void TearDownTestSuite() {
    server_->Shutdown(absl::Seconds(2));
    delete server_;
    delete channel_;
    delete dir_;
  }

  std::unique_ptr<grpc::ClientContext> As(const std::string& user) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    if (!user.empty()) ctx->AddMetadata("authorization", "Bearer " + (*tokens_)[user]);
    return ctx;
  }

  CoverageReport Coverage(const std::string& user, const CoverageRequest& req,
                          grpc::Status* status) {
    auto stub = ReportService::NewStub(*channel_);
    CoverageReport report;
    *status = stub->GetCoverage(As(user).get(), req, &report);
    return report;
  }

  // Waits (up to 5 s) until a coverage answer counts op `op`; returns the time it took.
  absl::Duration WaitCounted(uint64_t op) {
    const absl::Time start = absl::Now();
    while (absl::Now() - start < absl::Seconds(5)) {
      grpc::Status status;
      CoverageReport report = Coverage("officer", CoverageRequest(), &status);
      if (status.ok() && report.as_of_op() >= op) break;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return absl::Now() - start;
  }

  std::string Export(const std::string& user, const ExportRequest& req, grpc::Status* status,
                     std::string* file_name, int* chunks) {
    auto stub = ReportService::NewStub(*channel_);
    auto ctx = As(user);
    auto reader = stub->ExportReport(ctx.get(), req);
    ExportChunk chunk;
    std::string bytes;
    *chunks = 0;
    while (reader->Read(&chunk)) {
      if (*chunks == 0) *file_name = chunk.file_name();
      bytes += chunk.data();
      ++*chunks;
    }
    *status = reader->Finish();
    return bytes;
  }

  // `xlsx` converted to CSV by LibreOffice headless (cells as shown: a number formatted
  // "#,##0" comes back "1,234", quoted); empty when the conversion failed.
  static std::string XlsxAsCsv(const std::string& xlsx, const std::string& name) {
    kcnet::testing::TempDir out;
    {
      std::ofstream file(out.File(name + ".xlsx"), std::ios::binary);
      file << xlsx;
    }
    const std::string command = absl::StrCat(
        "cd ", out.path(), " && HOME=", out.path(),
        " soffice --headless --convert-to csv:\"Text - txt - csv (StarCalc)\":44,34,76 ", name,
        ".xlsx > soffice.log 2>&1");
    if (std::system(command.c_str()) != 0) return "";
    std::ifstream csv_file(out.File(name + ".csv"));
    std::stringstream csv;
    csv << csv_file.rdbuf();
    return csv.str();
  }
  static bool HasSoffice() { return std::system("command -v soffice > /dev/null 2>&1") == 0; }

  static kcnet::testing::TempDir* dir_;
  static KcnetServer* server_;
  static std::shared_ptr<grpc::Channel>* channel_;
  static inline auto* tokens_ = new std::map<std::string, std::string>();
  static inline int64_t province_ = 0, other_province_ = 0, c1_ = 0, c2_ = 0, c9_ = 0;
};

kcnet::testing::TempDir* ReportServiceTest::dir_ = nullptr;
KcnetServer* ReportServiceTest::server_ = nullptr;
std::shared_ptr<grpc::Channel>* ReportServiceTest::channel_ = nullptr;

TEST_F(ReportServiceTest, CoverageIsScopedToTheCallersSubtree) {
  WaitCounted(server_->store()->last_op());
  grpc::Status status;
  CoverageReport report = Coverage("officer", CoverageRequest(), &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_GE(report.as_of_op(), 1u);
  EXPECT_EQ(report.total().registered_facilities(), 3);  // not province 91's
  EXPECT_EQ(report.total().visited_facilities(), 1);
  ASSERT_EQ(report.communes_size(), 2);
  EXPECT_EQ(report.communes(0).commune_name(), "Xã Một");

  CoverageRequest one;
  one.mutable_filter()->set_org_unit_id(c2_);
  report = Coverage("officer", one, &status);
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(report.total().registered_facilities(), 1);

  // The collaborator of commune 1 sees commune 1 only.
  report = Coverage("collab", CoverageRequest(), &status);
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(report.total().registered_facilities(), 2);
}

TEST_F(ReportServiceTest, AnOrgUnitOutOfScopeIsNotFoundLikeOneThatDoesNotExist) {
  CoverageRequest other;
  other.mutable_filter()->set_org_unit_id(other_province_);
  grpc::Status out_of_scope;
  Coverage("officer", other, &out_of_scope);
  EXPECT_EQ(out_of_scope.error_code(), grpc::StatusCode::NOT_FOUND);
  CoverageRequest missing;
  missing.mutable_filter()->set_org_unit_id(other_province_ + 100000);
  grpc::Status absent;
  Coverage("officer", missing, &absent);
  EXPECT_EQ(absent.error_code(), grpc::StatusCode::NOT_FOUND);
  const std::string expected = absl::StrCat(other_province_);
  EXPECT_EQ(out_of_scope.error_message(),
            absl::StrReplaceAll(absent.error_message(),
                                {{absl::StrCat(other_province_ + 100000), expected}}));
}

TEST_F(ReportServiceTest, BadInputNamesTheField) {
  CoverageRequest bad;
  bad.mutable_filter()->set_from_date("2026-13-01");
  grpc::Status status;
  Coverage("officer", bad, &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), StartsWith("filter.from_date:"));
  bad.mutable_filter()->set_from_date("2026-05-01");
  bad.mutable_filter()->set_to_date("2026-04-01");
  Coverage("officer", bad, &status);
  EXPECT_THAT(status.error_message(), StartsWith("filter.to_date:"));

  auto stub = ReportService::NewStub(*channel_);
  QualityRequest quality;
  quality.set_max_gps_distance_km(-1);
  QualityReport q;
  status = stub->GetQuality(As("officer").get(), quality, &q);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), StartsWith("max_gps_distance_km:"));

  PipelineRequest pipeline;
  pipeline.add_limits()->set_status(static_cast<RequestStatus>(42));
  PipelineReport p;
  status = stub->GetPipeline(As("officer").get(), pipeline, &p);
  EXPECT_THAT(status.error_message(), StartsWith("limits[0].status:"));

  // The paged lists (docs/REPORTS.md, "Paged lists").
  quality.set_max_gps_distance_km(0);
  quality.set_page_token("not-a-token");
  status = stub->GetQuality(As("officer").get(), quality, &q);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), StartsWith("page_token:"));
  ActivityRequest activity;
  activity.set_page_size(5001);
  ActivityReport a;
  status = stub->GetActivity(As("officer").get(), activity, &a);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), StartsWith("page_size:"));
  activity.set_page_size(1);  // one row a page: the officer's page 1 goes on to page 2
  status = stub->GetActivity(As("officer").get(), activity, &a);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(a.collaborators_size(), 1);
  EXPECT_GE(a.total_collaborators(), 1);
  if (a.total_collaborators() > 1) {
    ASSERT_FALSE(a.next_page_token().empty());
    // Another caller cannot continue the officer's listing.
    activity.set_page_token(a.next_page_token());
    status = stub->GetActivity(As("collab").get(), activity, &a);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), StartsWith("page_token:"));
  }

  CoverageReport c;
  status = stub->GetCoverage(As("").get(), CoverageRequest(), &c);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(ReportServiceTest, AWriteIsCountedWithinASecondOfItsCommit) {
  RecordWriter writer(server_->store());
  Facility f;
  f.set_id(model::NewRecordId());
  f.set_commune_id(c2_);
  f.set_name("Mới");
  f.set_created_ms(absl::ToUnixMillis(absl::Now()));
  ASSERT_TRUE(writer.Put(f).ok());
  const uint64_t op = server_->store()->last_op();
  const absl::Duration took = WaitCounted(op);
  grpc::Status status;
  CoverageRequest two;
  two.mutable_filter()->set_org_unit_id(c2_);
  CoverageReport report = Coverage("officer", two, &status);
  EXPECT_GE(report.as_of_op(), op);
  EXPECT_EQ(report.total().registered_facilities(), 2);
  // Not a speed assertion: the follower's promise (docs/REPORTS.md) with a wide margin.
  EXPECT_LT(took, absl::Seconds(5));
}

TEST_F(ReportServiceTest, ActivityShowsEachDevicesLastSyncAndItsWaitingWrites) {
  {
    auto sync_stub = SyncService::NewStub(*channel_);
    auto ctx = As("collab");
    auto stream = sync_stub->Sync(ctx.get());
    SyncClientMessage hello;
    hello.mutable_hello()->set_device_id("tablet-activity");
    hello.mutable_hello()->set_schema_version(SCHEMA_VERSION_1);
    hello.mutable_hello()->set_pending_writes(3);
    ASSERT_TRUE(stream->Write(hello));
    SyncServerMessage welcome;
    ASSERT_TRUE(stream->Read(&welcome));
    ASSERT_TRUE(welcome.has_welcome());
    stream->WritesDone();
    ctx->TryCancel();
    stream->Finish();
  }
  auto stub = ReportService::NewStub(*channel_);
  ActivityRequest req;
  req.set_inactive_days(1);
  ActivityReport report;
  grpc::Status status = stub->GetActivity(As("officer").get(), req, &report);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const CollaboratorActivity* collab = nullptr;
  for (const auto& a : report.collaborators()) {
    if (a.display_name() == "Cộng tác viên") collab = &a;
  }
  ASSERT_NE(collab, nullptr);
  ASSERT_EQ(collab->devices_size(), 1);
  EXPECT_EQ(collab->devices(0).device_id(), "tablet-activity");
  EXPECT_EQ(collab->devices(0).pending_writes(), 3u);
  EXPECT_GT(collab->devices(0).last_sync_ms(), 0);
  EXPECT_TRUE(collab->inactive());  // no visit or request of its own
}

// The budget report is the plans' BudgetFor (server/plans/budget.h) through the service:
// the plan's figures, scoped like every report.
TEST_F(ReportServiceTest, BudgetComesFromThePlan) {
  auto stub = ReportService::NewStub(*channel_);
  const int32_t year = VietnamYear(absl::ToUnixMillis(absl::Now()));
  Plan plan;
  plan.set_province_id(province_);
  plan.set_year(year);
  PlanLine* line = plan.add_lines();
  line->set_category(SUPPORT_CATEGORY_TRAINING);
  line->set_funding(FUNDING_SOURCE_LOCAL);
  line->set_planned_amount_vnd(45'000'000);
  line->set_planned_facilities(3);
  ASSERT_TRUE(server_->plans()->CreatePlan(plan, {0, "test"}, "").ok());

  BudgetRequest req;
  req.set_year(year);  // the officer's one org unit: the province
  BudgetReport budget;
  grpc::Status status = stub->GetBudget(As("officer").get(), req, &budget);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(budget.has_plan());
  EXPECT_EQ(budget.province_id(), province_);
  EXPECT_EQ(budget.year(), year);
  ASSERT_EQ(budget.rows_size(), 1);
  EXPECT_EQ(budget.rows(0).funding_source(), FUNDING_SOURCE_LOCAL);
  EXPECT_EQ(budget.rows(0).category(), SUPPORT_CATEGORY_TRAINING);
  EXPECT_EQ(budget.rows(0).planned_vnd(), 45'000'000);
  EXPECT_EQ(budget.rows(0).remaining_vnd(), 45'000'000);
  EXPECT_EQ(budget.rows(0).planned_facilities(), 3);
  EXPECT_EQ(budget.rows(0).approved_requests(), 0);

  // Another province's unit reads like one that does not exist; a bad year names it.
  req.mutable_filter()->set_org_unit_id(other_province_);
  grpc::Status foreign = stub->GetBudget(As("officer").get(), req, &budget);
  req.mutable_filter()->set_org_unit_id(other_province_ + 100000);
  grpc::Status absent = stub->GetBudget(As("officer").get(), req, &budget);
  EXPECT_EQ(foreign.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(absent.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(foreign.error_message(),
            absl::StrReplaceAll(absent.error_message(), {{absl::StrCat(other_province_ + 100000),
                                                          absl::StrCat(other_province_)}}));
  req.mutable_filter()->set_org_unit_id(province_);
  req.set_year(1999);
  status = stub->GetBudget(As("officer").get(), req, &budget);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), StartsWith("year:"));
}

TEST_F(ReportServiceTest, ExportsCsvWithBomInChunks) {
  WaitCounted(server_->store()->last_op());
  ExportRequest req;
  req.set_report("coverage");
  req.set_format(EXPORT_FORMAT_CSV);
  grpc::Status status;
  std::string name;
  int chunks = 0;
  const std::string csv = Export("officer", req, &status, &name, &chunks);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(name, "coverage.csv");
  EXPECT_GE(chunks, 1);
  ASSERT_THAT(csv, StartsWith("\xEF\xBB\xBF"));
  EXPECT_THAT(csv, HasSubstr("Xã / Commune"));
  EXPECT_THAT(csv, HasSubstr(absl::StrCat(c1_, ",Xã Một,2,1,0.5000\r\n")));

  req.set_report("budgets");
  Export("officer", req, &status, &name, &chunks);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), StartsWith("report:"));
  req.set_report("coverage");
  req.mutable_filter()->set_org_unit_id(other_province_);
  Export("officer", req, &status, &name, &chunks);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  Export("", req, &status, &name, &chunks);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(ReportServiceTest, XlsxOpensInLibreOfficeWithTheNumbers) {
  if (std::system("command -v soffice > /dev/null 2>&1") != 0) {
    GTEST_SKIP()
        << "LibreOffice (soffice) is not installed: apt-get install libreoffice-calc-nogui";
  }
  WaitCounted(server_->store()->last_op());
  ExportRequest req;
  req.set_report("coverage");
  req.set_format(EXPORT_FORMAT_XLSX);
  grpc::Status status;
  std::string name;
  int chunks = 0;
  const std::string xlsx = Export("officer", req, &status, &name, &chunks);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(name, "coverage.xlsx");
  kcnet::testing::TempDir out;
  {
    std::ofstream file(out.File("coverage.xlsx"), std::ios::binary);
    file << xlsx;
  }
  const std::string command =
      absl::StrCat("cd ", out.path(), " && HOME=", out.path(),
                   " soffice --headless --convert-to csv:\"Text - txt - csv (StarCalc)\":44,34,76 "
                   "coverage.xlsx > soffice.log 2>&1");
  ASSERT_EQ(std::system(command.c_str()), 0);
  std::ifstream csv_file(out.File("coverage.csv"));
  std::stringstream csv;
  csv << csv_file.rdbuf();
  // Numbers came back as numbers (no quotes, no separators): "id,name,2,1,50.00%" rendered
  // by the cell formats LibreOffice applied.
  EXPECT_THAT(csv.str(), HasSubstr(absl::StrCat(c1_, ",Xã Một,2,1,")));
  EXPECT_THAT(csv.str(), HasSubstr("Tổng / Total,"));
}

// Budget exports: a plan of its own year (2030), as CSV (plain digits) and as XLSX whose
// VND cells LibreOffice reads back as numbers with thousands separators.
TEST_F(ReportServiceTest, ExportsTheBudgetAsCsvAndXlsx) {
  Plan plan;
  plan.set_province_id(province_);
  plan.set_year(2030);
  PlanLine* line = plan.add_lines();
  line->set_category(SUPPORT_CATEGORY_MACHINERY_TECHNOLOGY);
  line->set_funding(FUNDING_SOURCE_NATIONAL);
  line->set_planned_amount_vnd(1'234'567'000);
  line->set_planned_facilities(7);
  ASSERT_TRUE(server_->plans()->CreatePlan(plan, {0, "test"}, "").ok());
  ExportRequest req;
  req.set_report("budget");
  req.set_format(EXPORT_FORMAT_CSV);
  req.set_year(2030);
  grpc::Status status;
  std::string name;
  int chunks = 0;
  const std::string csv = Export("officer", req, &status, &name, &chunks);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(name, "budget.csv");
  ASSERT_THAT(csv, StartsWith("\xEF\xBB\xBF"
                              "Năm / Year,"));
  // Enum values as Vietnamese labels (issue 16), English on request.
  EXPECT_THAT(csv, HasSubstr("2030,Ngân sách trung ương,\"Máy móc, công nghệ\","));
  EXPECT_THAT(csv, HasSubstr(",1234567000,0,0,1234567000,7,0\r\n"));
  req.set_language("en");
  const std::string en = Export("officer", req, &status, &name, &chunks);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_THAT(en, HasSubstr("2030,National budget,Machinery and technology,1234567000,"));
  req.set_language("xx");
  Export("officer", req, &status, &name, &chunks);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), StartsWith("language:"));
  req.set_language("");

  // Scoped like the RPC: another province is NOT_FOUND; a bad year names the field.
  req.mutable_filter()->set_org_unit_id(other_province_);
  Export("officer", req, &status, &name, &chunks);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  req.mutable_filter()->set_org_unit_id(0);
  req.set_year(1999);
  Export("officer", req, &status, &name, &chunks);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), StartsWith("year:"));

  if (!HasSoffice()) GTEST_SKIP() << "LibreOffice (soffice) is not installed";
  req.set_year(2030);
  req.set_format(EXPORT_FORMAT_XLSX);
  const std::string xlsx = Export("officer", req, &status, &name, &chunks);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(name, "budget.xlsx");
  const std::string back = XlsxAsCsv(xlsx, "budget");
  EXPECT_THAT(back, HasSubstr("2030,Ngân sách trung ương,"));
  // Money reads back as numbers in the đồng format.
  EXPECT_THAT(back, HasSubstr("\"1,234,567,000 ₫\",0 ₫,0 ₫,\"1,234,567,000 ₫\",7,0"));
}

// Last: it adds records the other tests' figures do not expect.
TEST_F(ReportServiceTest, OutcomesAreServedAndScoped) {
  // A completed request of commune 1 with a visit recording the indicators before its
  // approval and one after its completion (docs/REPORTS.md defines the figures;
  // reports_store_test checks them on a hand-computed example).
  RecordWriter writer(server_->store());
  const int64_t now = absl::ToUnixMillis(absl::Now());
  const int64_t day = 86400000LL;
  Facility f;
  f.set_id(model::NewRecordId());
  f.set_commune_id(c1_);
  f.set_name("Nón lá");
  f.set_created_ms(now - 30 * day);
  ASSERT_TRUE(writer.Put(f).ok());
  for (auto [ms, workers] : {std::pair{now - 20 * day, 4}, std::pair{now - day, 6}}) {
    Visit v;
    v.set_id(model::NewRecordId());
    v.set_commune_id(c1_);
    v.set_facility_id(f.id());
    v.set_collaborator_id(1);
    v.set_visited_ms(ms);
    v.set_workers(workers);
    ASSERT_TRUE(writer.Put(v).ok());
  }
  SupportRequest r;
  r.set_id(model::NewRecordId());
  r.set_commune_id(c1_);
  r.set_facility_id(f.id());
  r.set_author_id(1);
  r.set_status(REQUEST_STATUS_COMPLETED);
  r.set_created_ms(now - 19 * day);
  r.set_updated_ms(now - 2 * day);
  ASSERT_TRUE(writer.Put(r).ok());
  WaitCounted(server_->store()->last_op());

  auto stub = ReportService::NewStub(*channel_);
  OutcomesReport outcomes;
  grpc::Status status = stub->GetOutcomes(As("officer").get(), OutcomesRequest(), &outcomes);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(outcomes.rows_size(), 1);
  EXPECT_EQ(outcomes.rows(0).request_id(), r.id());
  EXPECT_TRUE(outcomes.rows(0).measured());
  EXPECT_EQ(outcomes.total().workers_before(), 4);
  EXPECT_EQ(outcomes.total().workers_after(), 6);
  ASSERT_EQ(outcomes.communes_size(), 1);
  EXPECT_EQ(outcomes.communes(0).commune_name(), "Xã Một");

  // Exported: one row per request, then the commune and the total.
  ExportRequest req;
  req.set_report("outcomes");
  req.set_format(EXPORT_FORMAT_CSV);
  std::string name;
  int chunks = 0;
  const std::string csv = Export("officer", req, &status, &name, &chunks);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(name, "outcomes.csv");
  ASSERT_THAT(csv, StartsWith("\xEF\xBB\xBF"
                              "Yêu cầu / Request,"));
  EXPECT_THAT(csv, HasSubstr(absl::StrCat(r.id(), ",", c1_, ",", f.id(), ",")));
  EXPECT_THAT(csv, HasSubstr(",4,6,2,0,0,0,0,0,0,x\r\n"));
  EXPECT_THAT(csv, HasSubstr("Tổng / Total,0,,,,,,4,6,2,"));
  if (HasSoffice()) {
    req.set_format(EXPORT_FORMAT_XLSX);
    const std::string xlsx = Export("officer", req, &status, &name, &chunks);
    ASSERT_TRUE(status.ok()) << status.error_message();
    const std::string back = XlsxAsCsv(xlsx, "outcomes");
    EXPECT_THAT(back, HasSubstr(absl::StrCat(r.id(), ",", c1_, ",", f.id(), ",")));
    // Numbers read back as numbers, money in the đồng format, dates as dd/mm/yyyy dates.
    EXPECT_THAT(back, HasSubstr(",4,6,2,0,0,0,0 ₫,0 ₫,0 ₫,x"));
    EXPECT_THAT(back, ::testing::ContainsRegex(",[0-9][0-9]/[0-9][0-9]/20[0-9][0-9],"));
  }

  // Another province's unit reads like one that does not exist; bad dates name the field.
  OutcomesRequest foreign;
  foreign.mutable_filter()->set_org_unit_id(other_province_);
  status = stub->GetOutcomes(As("officer").get(), foreign, &outcomes);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  OutcomesRequest bad;
  bad.mutable_filter()->set_from_date("2026-13-01");
  status = stub->GetOutcomes(As("officer").get(), bad, &outcomes);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), StartsWith("filter.from_date:"));
}

}  // namespace
}  // namespace kcnet::server::reports
