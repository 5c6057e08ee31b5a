// Extension plans, the approvals' draw on them, disbursements and the budget figures,
// against a real kcnet-server on port 0 over a real channel, with small hand-computed data
// sets: on SQLite files in a temp dir (plans_test), or on PostgreSQL (plans_pg_test: its
// own server, one database per test, skipped without the PostgreSQL binaries), where
// further tests start a second instance on the same database. The servers' clock is a
// FakeClock so that the year of an approval (Vietnam's local date) is known.
#include <atomic>
#include <map>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kcnet/v1/plans.grpc.pb.h"
#include "kcnet/v1/services.grpc.pb.h"
#include "server/admin/backup.h"
#include "server/app/kcnet_server.h"
#include "server/plans/budget.h"
#include "sync/model/record_types.h"
#include "tests/testing/test_server.h"
#include "tests/testing/test_util.h"
#if KCNET_PLANS_TEST_PG
#include "server/pgstore/pg_conn.h"
#include "tests/testing/pg_instance.h"
#endif

namespace kcnet::server {
namespace {

using ::testing::HasSubstr;
using namespace ::kcnet::v1;  // NOLINT: messages and enum constants

// Unix ms of a UTC date and time.
int64_t Ms(int y, int m, int d, int h, int min) {
  return absl::ToUnixMillis(
      absl::FromCivil(absl::CivilMinute(y, m, d, h, min), absl::UTCTimeZone()));
}

enum class StoreKind { kSqlite, kPostgres };

std::string StoreName(const ::testing::TestParamInfo<StoreKind>& info) {
  return info.param == StoreKind::kSqlite ? "Sqlite" : "Postgres";
}

class PlansTest : public ::testing::TestWithParam<StoreKind> {
 protected:
#if KCNET_PLANS_TEST_PG
  static void SetUpTestSuite() {
    auto pg = kcnet::testing::PgInstance::Start();
    if (!pg.ok()) {
      pg_status_ = new absl::Status(pg.status());
      return;
    }
    pg_ = pg->release();
  }
  static void TearDownTestSuite() {
    delete pg_;
    pg_ = nullptr;
  }
  static inline kcnet::testing::PgInstance* pg_ = nullptr;
  static inline absl::Status* pg_status_ = nullptr;
  static inline int databases_ = 0;
#endif
  std::string store_;  // ServerOptions::store: empty (SQLite in the data dir) or postgres:

  // The options of a server of this test (`data_dir`: the first server's by default).
  ServerOptions Options(const std::string& data_dir = "") {
    ServerOptions options =
        kcnet::testing::TestServerOptions(data_dir.empty() ? dir_.path() : data_dir);
    options.clock = &clock_;
    options.store = store_;
    return options;
  }

  void SetUp() override {
#if KCNET_PLANS_TEST_PG
    if (GetParam() == StoreKind::kPostgres) {
      if (pg_ == nullptr && pg_status_ != nullptr && absl::IsNotFound(*pg_status_)) {
        GTEST_SKIP() << "no PostgreSQL binaries: " << *pg_status_;
      }
      ASSERT_NE(pg_, nullptr) << (pg_status_ ? *pg_status_ : absl::UnknownError("no server"));
      const std::string name = "plans" + std::to_string(++databases_);
      ASSERT_TRUE(pg_->CreateDatabase(name).ok());
      store_ = "postgres:" + pg_->conninfo(name);
    }
#endif
    ServerOptions options = Options();
    auto server = KcnetServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    Directory* d = server_->directory();
    // Province 90 (district 901: communes 90101, 90102; district 902: commune 90201);
    // province 91 (district 911: commune 91101).
    p_ = d->CreateOrgUnit("90", "Tỉnh Demo", ORG_UNIT_LEVEL_PROVINCE, 0)->id();
    d1_ = d->CreateOrgUnit("901", "Huyện Một", ORG_UNIT_LEVEL_DISTRICT, p_)->id();
    d2_ = d->CreateOrgUnit("902", "Huyện Hai", ORG_UNIT_LEVEL_DISTRICT, p_)->id();
    c1_ = d->CreateOrgUnit("90101", "Xã Một", ORG_UNIT_LEVEL_COMMUNE, d1_)->id();
    c3_ = d->CreateOrgUnit("90201", "Xã Ba", ORG_UNIT_LEVEL_COMMUNE, d2_)->id();
    p9_ = d->CreateOrgUnit("91", "Tỉnh Khác", ORG_UNIT_LEVEL_PROVINCE, 0)->id();
    const int64_t d9 = d->CreateOrgUnit("911", "Huyện Chín", ORG_UNIT_LEVEL_DISTRICT, p9_)->id();
    c9_ = d->CreateOrgUnit("91101", "Xã Chín", ORG_UNIT_LEVEL_COMMUNE, d9)->id();
    struct U {
      const char* name;
      Role role;
      int64_t unit;
    };
    for (const U& u :
         {U{"collab1", ROLE_COMMUNE_COLLABORATOR, c1_},
          U{"collab3", ROLE_COMMUNE_COLLABORATOR, c3_}, U{"coord1", ROLE_DISTRICT_COORDINATOR, d1_},
          U{"coord2", ROLE_DISTRICT_COORDINATOR, d2_}, U{"officer1", ROLE_PROVINCE_OFFICER, p_},
          U{"admin1", ROLE_ADMINISTRATOR, p_}, U{"officer9", ROLE_PROVINCE_OFFICER, p9_}}) {
      auto user = d->CreateUser(u.name, u.name, "password-123", u.role, {u.unit});
      ASSERT_TRUE(user.ok()) << user.status();
      users_[u.name] = user->id();
    }
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    auto auth = AuthService::NewStub(channel_);
    for (const auto& [name, id] : users_) {
      grpc::ClientContext ctx;
      LoginRequest req;
      req.set_username(name);
      req.set_password("password-123");
      LoginResponse resp;
      grpc::Status s = auth->Login(&ctx, req, &resp);
      ASSERT_TRUE(s.ok()) << s.error_message();
      tokens_[name] = resp.token();
    }
    plans_ = PlanService::NewStub(channel_);
    facilities_ = FacilityService::NewStub(channel_);
    requests_ = SupportRequestService::NewStub(channel_);
  }

  void TearDown() override {
    if (other_ != nullptr) other_->Shutdown(absl::Seconds(2));
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(2));
  }

  // A second kcnet-server on the same database (PostgreSQL only), its own data dir; the
  // tokens of the first work on it (the directory is shared).
  void StartOther() {
    auto other = KcnetServer::Start(Options(other_dir_.path()));
    ASSERT_TRUE(other.ok()) << other.status();
    other_ = *std::move(other);
    other_channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", other_->port()),
                                         grpc::InsecureChannelCredentials());
    other_plans_ = PlanService::NewStub(other_channel_);
    other_requests_ = SupportRequestService::NewStub(other_channel_);
  }

  std::unique_ptr<grpc::ClientContext> As(const std::string& user) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->AddMetadata("authorization", "Bearer " + tokens_[user]);
    return ctx;
  }

  static PlanLine Line(SupportCategory category, FundingSource funding, int64_t amount,
                       int64_t facilities) {
    PlanLine line;
    line.set_category(category);
    line.set_funding(funding);
    line.set_planned_amount_vnd(amount);
    line.set_planned_facilities(facilities);
    return line;
  }

  grpc::Status CreatePlan(const std::string& user, int64_t province, int32_t year,
                          const std::vector<PlanLine>& lines, Plan* out = nullptr) {
    CreatePlanRequest req;
    req.mutable_plan()->set_province_id(province);
    req.mutable_plan()->set_year(year);
    for (const PlanLine& l : lines) *req.mutable_plan()->add_lines() = l;
    req.set_note("kế hoạch đầu năm");
    Plan ignored;
    return plans_->CreatePlan(As(user).get(), req, out != nullptr ? out : &ignored);
  }

  // A request of `amount` (own contribution `own`) in `commune`, walked to ENDORSED.
  SupportRequest Endorsed(int64_t commune, int64_t amount, int64_t own = 0,
                          SupportCategory category = SUPPORT_CATEGORY_MACHINERY_TECHNOLOGY) {
    const bool first = commune == c1_;
    const std::string collab = first ? "collab1" : "collab3";
    const std::string coord = first ? "coord1" : "coord2";
    CreateFacilityRequest fr;
    fr.mutable_facility()->set_commune_id(commune);
    fr.mutable_facility()->set_name("Cơ sở mây tre đan");
    Facility f;
    grpc::Status s = facilities_->CreateFacility(As(collab).get(), fr, &f);
    EXPECT_TRUE(s.ok()) << s.error_message();
    CreateSupportRequestRequest rr;
    rr.mutable_support_request()->set_facility_id(f.id());
    rr.mutable_support_request()->set_category(category);
    rr.mutable_support_request()->set_description("Máy sấy nông sản");
    rr.mutable_support_request()->set_requested_amount_vnd(amount);
    rr.mutable_support_request()->set_own_contribution_vnd(own);
    rr.mutable_support_request()->set_proposed_funding(FUNDING_SOURCE_NATIONAL);
    SupportRequest r;
    s = requests_->CreateSupportRequest(As(collab).get(), rr, &r);
    EXPECT_TRUE(s.ok()) << s.error_message();
    TransitionRequest t;
    t.set_id(r.id());
    s = requests_->SubmitSupportRequest(As(collab).get(), t, &r);
    EXPECT_TRUE(s.ok()) << s.error_message();
    s = requests_->EndorseSupportRequest(As(coord).get(), t, &r);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return r;
  }

  grpc::Status Approve(const std::string& id, int64_t amount, FundingSource funding,
                       const std::string& over_plan_reason = "", SupportRequest* out = nullptr,
                       SupportRequestService::Stub* on = nullptr) {
    ApproveRequest req;
    req.set_id(id);
    req.set_approved_amount_vnd(amount);
    req.set_funding(funding);
    req.set_note("duyệt");
    req.set_over_plan_reason(over_plan_reason);
    SupportRequest ignored;
    return (on != nullptr ? on : requests_.get())
        ->ApproveSupportRequest(As("officer1").get(), req, out != nullptr ? out : &ignored);
  }

  grpc::Status Start(const std::string& id) {
    TransitionRequest t;
    t.set_id(id);
    SupportRequest ignored;
    return requests_->StartSupportRequest(As("officer1").get(), t, &ignored);
  }

  grpc::Status Pay(const std::string& user, const std::string& id, int64_t amount,
                   const std::string& date = "2026-06-10", const std::string& reference = "UNC-01",
                   Disbursement* out = nullptr) {
    RecordDisbursementRequest req;
    req.mutable_disbursement()->set_request_id(id);
    req.mutable_disbursement()->set_amount_vnd(amount);
    req.mutable_disbursement()->set_paid_date(date);
    req.mutable_disbursement()->set_reference(reference);
    Disbursement ignored;
    return plans_->RecordDisbursement(As(user).get(), req, out != nullptr ? out : &ignored);
  }

  SupportRequest Get(const std::string& id) {
    GetRecordRequest req;
    req.set_id(id);
    SupportRequest r;
    grpc::Status s = requests_->GetSupportRequest(As("officer1").get(), req, &r);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return r;
  }

  BudgetFigures Budget(int64_t unit, int32_t year, const std::string& user = "officer1",
                       KcnetServer* on = nullptr) {
    KcnetServer* server = on != nullptr ? on : server_.get();
    absl::StatusOr<Principal> p = server->directory()->Authenticate(tokens_[user]);
    EXPECT_TRUE(p.ok()) << p.status();
    absl::StatusOr<BudgetFigures> b =
        BudgetFor(*server->directory(), *server->plans(), *server->store(), *p, unit, year);
    EXPECT_TRUE(b.ok()) << b.status();
    return b.ok() ? *b : BudgetFigures();
  }

  static const BudgetRow* Row(const BudgetFigures& b, FundingSource f, SupportCategory c) {
    for (const BudgetRow& r : b.rows) {
      if (r.funding == f && r.category == c) return &r;
    }
    return nullptr;
  }

  kcnet::testing::TempDir dir_;
  sync::FakeClock clock_{Ms(2026, 6, 15, 12, 0)};
  std::unique_ptr<KcnetServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<PlanService::Stub> plans_;
  std::unique_ptr<FacilityService::Stub> facilities_;
  std::unique_ptr<SupportRequestService::Stub> requests_;
  // The second instance (StartOther).
  kcnet::testing::TempDir other_dir_;
  std::unique_ptr<KcnetServer> other_;
  std::shared_ptr<grpc::Channel> other_channel_;
  std::unique_ptr<PlanService::Stub> other_plans_;
  std::unique_ptr<SupportRequestService::Stub> other_requests_;
  std::map<std::string, int64_t> users_;
  std::map<std::string, std::string> tokens_;
  int64_t p_ = 0, d1_ = 0, d2_ = 0, c1_ = 0, c3_ = 0, p9_ = 0, c9_ = 0;
};

constexpr auto kMachinery = SUPPORT_CATEGORY_MACHINERY_TECHNOLOGY;
constexpr auto kTraining = SUPPORT_CATEGORY_TRAINING;

TEST_P(PlansTest, AnOfficerCreatesAndRevisesAPlanAndEveryRevisionIsAudited) {
  Plan created;
  ASSERT_TRUE(CreatePlan("officer1", p_, 2026,
                         {Line(kTraining, FUNDING_SOURCE_LOCAL, 50'000'000, 10),
                          Line(kMachinery, FUNDING_SOURCE_NATIONAL, 100'000'000, 2)},
                         &created)
                  .ok());
  EXPECT_EQ(created.revision(), 1);
  EXPECT_EQ(created.created_by(), users_["officer1"]);
  // Stored in (funding, category) order.
  ASSERT_EQ(created.lines_size(), 2);
  EXPECT_EQ(created.lines(0).funding(), FUNDING_SOURCE_LOCAL);
  EXPECT_EQ(CreatePlan("officer1", p_, 2026, {}).error_code(), grpc::StatusCode::ALREADY_EXISTS);

  clock_.Advance(60'000);
  RevisePlanRequest rev;
  rev.mutable_plan()->set_province_id(p_);
  rev.mutable_plan()->set_year(2026);
  *rev.mutable_plan()->add_lines() = Line(kMachinery, FUNDING_SOURCE_NATIONAL, 150'000'000, 3);
  rev.set_expected_revision(1);
  Plan revised;
  // A revision needs its reason.
  EXPECT_EQ(plans_->RevisePlan(As("officer1").get(), rev, &revised).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  rev.set_note("bổ sung vốn trung ương");
  ASSERT_TRUE(plans_->RevisePlan(As("officer1").get(), rev, &revised).ok());
  EXPECT_EQ(revised.revision(), 2);
  ASSERT_EQ(revised.lines_size(), 1);
  EXPECT_EQ(revised.lines(0).planned_amount_vnd(), 150'000'000);
  EXPECT_EQ(revised.updated_ms(), Ms(2026, 6, 15, 12, 1));
  // A revision made on a stale copy is refused.
  grpc::Status stale = plans_->RevisePlan(As("officer1").get(), rev, &revised);
  EXPECT_EQ(stale.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(stale.error_message(), HasSubstr("expected_revision"));

  GetPlanRequest get;
  get.set_province_id(p_);
  get.set_year(2026);
  Plan read;
  ASSERT_TRUE(plans_->GetPlan(As("collab1").get(), get, &read).ok());
  EXPECT_EQ(read.revision(), 2);

  ListPlanRevisionsRequest lr;
  lr.set_province_id(p_);
  lr.set_year(2026);
  ListPlanRevisionsResponse trail;
  ASSERT_TRUE(plans_->ListPlanRevisions(As("coord1").get(), lr, &trail).ok());
  ASSERT_EQ(trail.revisions_size(), 2);
  EXPECT_EQ(trail.revisions(0).revision(), 1);
  EXPECT_EQ(trail.revisions(0).before_size(), 0);
  EXPECT_EQ(trail.revisions(0).after_size(), 2);
  EXPECT_EQ(trail.revisions(1).actor(), "officer1");
  EXPECT_EQ(trail.revisions(1).actor_id(), users_["officer1"]);
  EXPECT_EQ(trail.revisions(1).note(), "bổ sung vốn trung ương");
  EXPECT_EQ(trail.revisions(1).at_ms(), Ms(2026, 6, 15, 12, 1));
  ASSERT_EQ(trail.revisions(1).before_size(), 2);
  EXPECT_EQ(trail.revisions(1).before(1).planned_amount_vnd(), 100'000'000);
  ASSERT_EQ(trail.revisions(1).after_size(), 1);
  EXPECT_EQ(trail.revisions(1).after(0).planned_amount_vnd(), 150'000'000);
  // Paged one by one, the same trail.
  lr.set_page_size(1);
  ListPlanRevisionsResponse page;
  ASSERT_TRUE(plans_->ListPlanRevisions(As("coord1").get(), lr, &page).ok());
  ASSERT_EQ(page.revisions_size(), 1);
  lr.set_page_token(page.next_page_token());
  ListPlanRevisionsResponse second;
  ASSERT_TRUE(plans_->ListPlanRevisions(As("coord1").get(), lr, &second).ok());
  ASSERT_EQ(second.revisions_size(), 1);
  EXPECT_EQ(second.revisions(0).revision(), 2);
}

TEST_P(PlansTest, PlansAreScopedAndOnlyTheProvinceOfficerWritesThem) {
  ASSERT_TRUE(CreatePlan("officer1", p_, 2026, {Line(kTraining, FUNDING_SOURCE_LOCAL, 1, 1)}).ok());
  ASSERT_TRUE(
      CreatePlan("officer9", p9_, 2026, {Line(kTraining, FUNDING_SOURCE_LOCAL, 2, 1)}).ok());
  // Another province's plan is "not found", word for word as a plan that does not exist.
  GetPlanRequest get;
  get.set_province_id(p_);
  get.set_year(2026);
  Plan out;
  grpc::Status hidden = plans_->GetPlan(As("officer9").get(), get, &out);
  EXPECT_EQ(hidden.error_code(), grpc::StatusCode::NOT_FOUND);
  get.set_year(2027);
  grpc::Status missing = plans_->GetPlan(As("officer1").get(), get, &out);
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(hidden.error_message(), absl::StrCat("plan: no plan of province ", p_, " for 2026"));
  EXPECT_EQ(missing.error_message(), absl::StrCat("plan: no plan of province ", p_, " for 2027"));

  RevisePlanRequest rev;
  rev.mutable_plan()->set_province_id(p_);
  rev.mutable_plan()->set_year(2026);
  rev.set_note("sửa");
  EXPECT_EQ(plans_->RevisePlan(As("officer9").get(), rev, &out).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(CreatePlan("officer9", p_, 2027, {}).error_code(), grpc::StatusCode::NOT_FOUND);
  for (const char* user : {"collab1", "coord1", "admin1"}) {
    EXPECT_EQ(CreatePlan(user, p_, 2027, {}).error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << user;
    EXPECT_EQ(plans_->RevisePlan(As(user).get(), rev, &out).error_code(),
              grpc::StatusCode::PERMISSION_DENIED)
        << user;
  }
  // Lists hold only what the caller may see.
  ListPlansRequest lr;
  ListPlansResponse list;
  ASSERT_TRUE(plans_->ListPlans(As("officer9").get(), lr, &list).ok());
  ASSERT_EQ(list.plans_size(), 1);
  EXPECT_EQ(list.plans(0).province_id(), p9_);
  ASSERT_TRUE(plans_->ListPlans(As("collab1").get(), lr, &list).ok());
  ASSERT_EQ(list.plans_size(), 1);
  EXPECT_EQ(list.plans(0).province_id(), p_);
  lr.set_province_id(p_);
  EXPECT_EQ(plans_->ListPlans(As("officer9").get(), lr, &list).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_P(PlansTest, BadPlansAreRefusedNamingTheFieldAndNothingIsStored) {
  struct Case {
    int64_t province;
    int32_t year;
    std::vector<PlanLine> lines;
    grpc::StatusCode code;
    std::string field;
  };
  const std::vector<Case> cases = {
      {p_, 1999, {}, grpc::StatusCode::INVALID_ARGUMENT, "plan.year"},
      {p_, 2101, {}, grpc::StatusCode::INVALID_ARGUMENT, "plan.year"},
      {p_,
       2026,
       {Line(kTraining, FUNDING_SOURCE_LOCAL, -1, 0)},
       grpc::StatusCode::INVALID_ARGUMENT,
       "plan.lines[0].planned_amount_vnd"},
      {p_,
       2026,
       {Line(kTraining, FUNDING_SOURCE_LOCAL, 1, -3)},
       grpc::StatusCode::INVALID_ARGUMENT,
       "plan.lines[0].planned_facilities"},
      {p_,
       2026,
       {Line(kTraining, FUNDING_SOURCE_LOCAL, 1, 0),
        Line(static_cast<SupportCategory>(99), FUNDING_SOURCE_LOCAL, 1, 0)},
       grpc::StatusCode::INVALID_ARGUMENT,
       "plan.lines[1].category"},
      {p_,
       2026,
       {Line(kTraining, FUNDING_SOURCE_UNSPECIFIED, 1, 0)},
       grpc::StatusCode::INVALID_ARGUMENT,
       "plan.lines[0].funding"},
      {p_,
       2026,
       {Line(kTraining, static_cast<FundingSource>(7), 1, 0)},
       grpc::StatusCode::INVALID_ARGUMENT,
       "plan.lines[0].funding"},
      {p_,
       2026,
       {Line(kTraining, FUNDING_SOURCE_LOCAL, 1, 0), Line(kTraining, FUNDING_SOURCE_LOCAL, 2, 0)},
       grpc::StatusCode::INVALID_ARGUMENT,
       "plan.lines[1]"},
      // A commune is no province: it holds no plan.
      {c1_, 2026, {}, grpc::StatusCode::NOT_FOUND, "plan.province_id"},
      {0, 2026, {}, grpc::StatusCode::INVALID_ARGUMENT, "plan.province_id"},
  };
  for (const Case& c : cases) {
    grpc::Status s = CreatePlan("officer1", c.province, c.year, c.lines);
    EXPECT_EQ(s.error_code(), c.code) << c.field << ": " << s.error_message();
    EXPECT_THAT(s.error_message(), ::testing::StartsWith(c.field + ":")) << s.error_message();
  }
  ListPlansRequest lr;
  ListPlansResponse list;
  ASSERT_TRUE(plans_->ListPlans(As("officer1").get(), lr, &list).ok());
  EXPECT_EQ(list.plans_size(), 0);
  // A bad revision changes nothing either.
  Plan plan;
  ASSERT_TRUE(
      CreatePlan("officer1", p_, 2026, {Line(kTraining, FUNDING_SOURCE_LOCAL, 5, 1)}, &plan).ok());
  RevisePlanRequest rev;
  *rev.mutable_plan() = plan;
  rev.mutable_plan()->mutable_lines(0)->set_planned_amount_vnd(-5);
  rev.set_note("sai");
  Plan out;
  EXPECT_EQ(plans_->RevisePlan(As("officer1").get(), rev, &out).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  GetPlanRequest get;
  get.set_province_id(p_);
  get.set_year(2026);
  ASSERT_TRUE(plans_->GetPlan(As("officer1").get(), get, &out).ok());
  EXPECT_EQ(out.revision(), 1);
  EXPECT_EQ(out.lines(0).planned_amount_vnd(), 5);
}

TEST_P(PlansTest, ApprovalDrawsOnItsLineAndBeyondItOnlyWithAnAuditedReason) {
  ASSERT_TRUE(CreatePlan("officer1", p_, 2026,
                         {Line(kMachinery, FUNDING_SOURCE_NATIONAL, 100'000'000, 2),
                          Line(kMachinery, FUNDING_SOURCE_LOCAL, 10'000'000, 1)})
                  .ok());
  const SupportRequest a = Endorsed(c1_, 80'000'000);
  const SupportRequest b = Endorsed(c3_, 80'000'000);
  ASSERT_TRUE(Approve(a.id(), 60'000'000, FUNDING_SOURCE_NATIONAL).ok());
  // 40,000,000 remain on the national line: 50,000,000 is refused, in both languages.
  grpc::Status over = Approve(b.id(), 50'000'000, FUNDING_SOURCE_NATIONAL);
  EXPECT_EQ(over.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(over.error_message(),
              HasSubstr("support_request.approved_amount_vnd: Vượt kế hoạch"));
  EXPECT_THAT(over.error_message(), HasSubstr("còn lại 40.000.000 ₫"));
  EXPECT_THAT(over.error_message(), HasSubstr("40,000,000 VND remain"));
  EXPECT_EQ(Get(b.id()).status(), REQUEST_STATUS_ENDORSED);
  // The local line is another line: 10,000,000 there.
  grpc::Status local = Approve(b.id(), 20'000'000, FUNDING_SOURCE_LOCAL);
  EXPECT_THAT(local.error_message(), HasSubstr("còn lại 10.000.000 ₫"));
  // With a reason the officer goes beyond the plan, and the draw keeps the reason.
  clock_.Advance(1000);
  ASSERT_TRUE(Approve(b.id(), 50'000'000, FUNDING_SOURCE_NATIONAL, "thiên tai, cần gấp").ok());
  EXPECT_EQ(Get(b.id()).status(), REQUEST_STATUS_APPROVED);
  ListDisbursementsRequest lr;
  lr.set_request_id(b.id());
  ListDisbursementsResponse money;
  ASSERT_TRUE(plans_->ListDisbursements(As("coord2").get(), lr, &money).ok());
  ASSERT_TRUE(money.has_draw());
  EXPECT_EQ(money.draw().over_plan_reason(), "thiên tai, cần gấp");
  EXPECT_EQ(money.draw().remaining_before_vnd(), 40'000'000);
  EXPECT_EQ(money.draw().amount_vnd(), 50'000'000);
  EXPECT_EQ(money.draw().year(), 2026);
  EXPECT_EQ(money.draw().province_id(), p_);
  EXPECT_EQ(money.draw().commune_id(), c3_);
  EXPECT_EQ(money.draw().actor_id(), users_["officer1"]);
  EXPECT_EQ(money.draw().at_ms(), Ms(2026, 6, 15, 12, 0) + 1000);
  EXPECT_TRUE(money.draw().has_plan());

  // Budget: national machinery 100,000,000 planned, 60 + 50 approved, -10 remaining.
  const BudgetFigures budget = Budget(p_, 2026);
  EXPECT_TRUE(budget.has_plan);
  const BudgetRow* row = Row(budget, FUNDING_SOURCE_NATIONAL, kMachinery);
  ASSERT_NE(row, nullptr);
  EXPECT_EQ(row->planned_vnd, 100'000'000);
  EXPECT_EQ(row->approved_vnd, 110'000'000);
  EXPECT_EQ(row->remaining_vnd, -10'000'000);
  EXPECT_EQ(row->approved_requests, 2);
  EXPECT_EQ(row->planned_facilities, 2);
  const BudgetRow* local_row = Row(budget, FUNDING_SOURCE_LOCAL, kMachinery);
  ASSERT_NE(local_row, nullptr);
  EXPECT_EQ(local_row->approved_vnd, 0);
  EXPECT_EQ(local_row->remaining_vnd, 10'000'000);
}

TEST_P(PlansTest, WithoutAPlanApprovalNeedsAReason) {
  const SupportRequest a = Endorsed(c1_, 30'000'000);
  grpc::Status s = Approve(a.id(), 30'000'000, FUNDING_SOURCE_LOCAL);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("Chưa có kế hoạch khuyến công năm 2026"));
  EXPECT_THAT(s.error_message(), HasSubstr("over_plan_reason"));
  EXPECT_EQ(Get(a.id()).status(), REQUEST_STATUS_ENDORSED);
  // An over-long reason is refused naming it.
  grpc::Status long_reason =
      Approve(a.id(), 30'000'000, FUNDING_SOURCE_LOCAL, std::string(1001, 'x'));
  EXPECT_EQ(long_reason.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(long_reason.error_message(), ::testing::StartsWith("over_plan_reason:"));
  ASSERT_TRUE(
      Approve(a.id(), 30'000'000, FUNDING_SOURCE_LOCAL, "chưa có kế hoạch, đã xin ý kiến").ok());
  const BudgetFigures budget = Budget(p_, 2026);
  EXPECT_FALSE(budget.has_plan);
  const BudgetRow* row = Row(budget, FUNDING_SOURCE_LOCAL, kMachinery);
  ASSERT_NE(row, nullptr);
  EXPECT_EQ(row->planned_vnd, 0);
  EXPECT_EQ(row->approved_vnd, 30'000'000);
  EXPECT_EQ(row->remaining_vnd, -30'000'000);
}

TEST_P(PlansTest, TheYearOfAnApprovalIsVietnamsLocalDate) {
  // 2025-12-31 16:59 UTC is 23:59 in Vietnam: still 2025, which has no plan.
  clock_.Set(Ms(2025, 12, 31, 16, 59));
  ASSERT_TRUE(
      CreatePlan("officer1", p_, 2026, {Line(kMachinery, FUNDING_SOURCE_LOCAL, 5'000'000, 1)})
          .ok());
  const SupportRequest a = Endorsed(c1_, 5'000'000);
  grpc::Status s = Approve(a.id(), 5'000'000, FUNDING_SOURCE_LOCAL);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("năm 2025"));
  // 2025-12-31 17:30 UTC is 2026-01-01 00:30 in Vietnam: the 2026 plan pays.
  clock_.Set(Ms(2025, 12, 31, 17, 30));
  ASSERT_TRUE(Approve(a.id(), 5'000'000, FUNDING_SOURCE_LOCAL).ok());
  EXPECT_EQ(Row(Budget(p_, 2026), FUNDING_SOURCE_LOCAL, kMachinery)->approved_vnd, 5'000'000);
  EXPECT_TRUE(Budget(p_, 2025).rows.empty());
}

TEST_P(PlansTest, TwoApprovalsRacingForTheLastMoneyDoNotBothPass) {
  ASSERT_TRUE(
      CreatePlan("officer1", p_, 2026, {Line(kMachinery, FUNDING_SOURCE_NATIONAL, 100'000'000, 2)})
          .ok());
  const SupportRequest first = Endorsed(c1_, 40'000'000);
  ASSERT_TRUE(Approve(first.id(), 40'000'000, FUNDING_SOURCE_NATIONAL).ok());
  // 60,000,000 remain; eight approvals of 40,000,000 at once: exactly one fits.
  constexpr int kRacers = 8;
  std::vector<SupportRequest> racers;
  for (int i = 0; i < kRacers; ++i) racers.push_back(Endorsed(i % 2 == 0 ? c1_ : c3_, 40'000'000));
  std::atomic<int> passed{0}, refused{0}, other{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < kRacers; ++i) {
    threads.emplace_back([&, i] {
      while (!go.load()) std::this_thread::yield();
      grpc::Status s = Approve(racers[i].id(), 40'000'000, FUNDING_SOURCE_NATIONAL);
      if (s.ok()) {
        ++passed;
      } else if (s.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
        ++refused;
      } else {
        ++other;
      }
    });
  }
  go = true;
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(passed.load(), 1);
  EXPECT_EQ(refused.load(), kRacers - 1);
  EXPECT_EQ(other.load(), 0);
  int approved = 0;
  for (const SupportRequest& r : racers)
    approved += Get(r.id()).status() == REQUEST_STATUS_APPROVED;
  EXPECT_EQ(approved, 1);
  const BudgetFigures budget = Budget(p_, 2026);  // kept: `row` points into it
  const BudgetRow* row = Row(budget, FUNDING_SOURCE_NATIONAL, kMachinery);
  ASSERT_NE(row, nullptr);
  EXPECT_EQ(row->approved_vnd, 80'000'000);
  EXPECT_EQ(row->approved_requests, 2);
  EXPECT_EQ(row->remaining_vnd, 20'000'000);
}

TEST_P(PlansTest, DisbursementsAreInstalmentsNeverAboveTheApprovedAmount) {
  ASSERT_TRUE(
      CreatePlan("officer1", p_, 2026, {Line(kMachinery, FUNDING_SOURCE_NATIONAL, 100'000'000, 2)})
          .ok());
  const SupportRequest a = Endorsed(c1_, 60'000'000);
  ASSERT_TRUE(Approve(a.id(), 60'000'000, FUNDING_SOURCE_NATIONAL).ok());
  // Approved but not started: no payment yet.
  grpc::Status early = Pay("officer1", a.id(), 10'000'000);
  EXPECT_EQ(early.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(early.error_message(), ::testing::StartsWith("disbursement.request_id:"));
  ASSERT_TRUE(Start(a.id()).ok());
  Disbursement first;
  ASSERT_TRUE(Pay("officer1", a.id(), 20'000'000, "2026-03-01", "UNC-01", &first).ok());
  EXPECT_GT(first.id(), 0);
  EXPECT_EQ(first.actor_id(), users_["officer1"]);
  ASSERT_TRUE(Pay("officer1", a.id(), 30'000'000, "2026-06-15", "UNC-02").ok());
  // 10,000,000 remain.
  grpc::Status above = Pay("officer1", a.id(), 15'000'000);
  EXPECT_EQ(above.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(above.error_message(), ::testing::StartsWith("disbursement.amount_vnd:"));
  EXPECT_THAT(above.error_message(), HasSubstr("còn lại 10.000.000 ₫"));
  EXPECT_THAT(above.error_message(), HasSubstr("10,000,000 VND"));
  // Bad input, each naming its field.
  struct Bad {
    int64_t amount;
    std::string date, reference, field;
  };
  for (const Bad& bad : {Bad{0, "2026-06-01", "R", "disbursement.amount_vnd"},
                         Bad{-5, "2026-06-01", "R", "disbursement.amount_vnd"},
                         Bad{1, "2026-02-30", "R", "disbursement.paid_date"},
                         Bad{1, "15/06/2026", "R", "disbursement.paid_date"},
                         Bad{1, "2026-06-16", "R", "disbursement.paid_date"},  // tomorrow
                         Bad{1, "2026-06-01", "", "disbursement.reference"}}) {
    grpc::Status s = Pay("officer1", a.id(), bad.amount, bad.date, bad.reference);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad.field;
    EXPECT_THAT(s.error_message(), ::testing::StartsWith(bad.field + ":")) << s.error_message();
  }
  // Who: a coordinator may not; another province does not see the request.
  EXPECT_EQ(Pay("coord1", a.id(), 1).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  grpc::Status hidden = Pay("officer9", a.id(), 1);
  EXPECT_EQ(hidden.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(hidden.error_message(), ::testing::StartsWith("disbursement.request_id:"));
  // The last 10,000,000 after completion.
  TransitionRequest t;
  t.set_id(a.id());
  SupportRequest done;
  ASSERT_TRUE(requests_->CompleteSupportRequest(As("officer1").get(), t, &done).ok());
  ASSERT_TRUE(Pay("officer1", a.id(), 10'000'000, "2026-06-15", "UNC-03").ok());
  EXPECT_EQ(Pay("officer1", a.id(), 1).error_code(), grpc::StatusCode::FAILED_PRECONDITION);

  ListDisbursementsRequest lr;
  lr.set_request_id(a.id());
  ListDisbursementsResponse list;
  ASSERT_TRUE(plans_->ListDisbursements(As("collab1").get(), lr, &list).ok());
  ASSERT_EQ(list.disbursements_size(), 3);
  EXPECT_EQ(list.disbursements(0).paid_date(), "2026-03-01");
  EXPECT_EQ(list.disbursements(2).reference(), "UNC-03");
  EXPECT_EQ(list.approved_amount_vnd(), 60'000'000);
  EXPECT_EQ(list.disbursed_vnd(), 60'000'000);
  EXPECT_EQ(list.remaining_vnd(), 0);
  EXPECT_EQ(plans_->ListDisbursements(As("officer9").get(), lr, &list).error_code(),
            grpc::StatusCode::NOT_FOUND);

  const BudgetFigures budget = Budget(p_, 2026);  // kept: `row` points into it
  const BudgetRow* row = Row(budget, FUNDING_SOURCE_NATIONAL, kMachinery);
  ASSERT_NE(row, nullptr);
  EXPECT_EQ(row->disbursed_vnd, 60'000'000);
}

TEST_P(PlansTest, BudgetFiguresByScopeWithCounterpartFunds) {
  ASSERT_TRUE(CreatePlan("officer1", p_, 2026,
                         {Line(kMachinery, FUNDING_SOURCE_NATIONAL, 100'000'000, 4),
                          Line(kMachinery, FUNDING_SOURCE_COUNTERPART, 30'000'000, 4),
                          Line(kTraining, FUNDING_SOURCE_LOCAL, 20'000'000, 10)})
                  .ok());
  // Commune 1: 30,000,000 national with 10,000,000 own contribution, started, 12,000,000
  // paid. Commune 3: 25,000,000 national with 5,000,000 own, and 8,000,000 local training.
  const SupportRequest a = Endorsed(c1_, 30'000'000, 10'000'000);
  const SupportRequest b = Endorsed(c3_, 25'000'000, 5'000'000);
  const SupportRequest c = Endorsed(c3_, 8'000'000, 0, kTraining);
  ASSERT_TRUE(Approve(a.id(), 30'000'000, FUNDING_SOURCE_NATIONAL).ok());
  ASSERT_TRUE(Approve(b.id(), 25'000'000, FUNDING_SOURCE_NATIONAL).ok());
  ASSERT_TRUE(Approve(c.id(), 8'000'000, FUNDING_SOURCE_LOCAL).ok());
  ASSERT_TRUE(Start(a.id()).ok());
  ASSERT_TRUE(Pay("officer1", a.id(), 12'000'000).ok());

  const BudgetFigures all = Budget(p_, 2026);
  EXPECT_EQ(all.plan_revision, 1);
  ASSERT_EQ(all.rows.size(), 3u);
  // Ordered by funding (LOCAL, NATIONAL, COUNTERPART) then category.
  EXPECT_EQ(all.rows[0].funding, FUNDING_SOURCE_LOCAL);
  EXPECT_EQ(all.rows[0].approved_vnd, 8'000'000);
  EXPECT_EQ(all.rows[0].remaining_vnd, 12'000'000);
  EXPECT_EQ(all.rows[1].funding, FUNDING_SOURCE_NATIONAL);
  EXPECT_EQ(all.rows[1].approved_vnd, 55'000'000);
  EXPECT_EQ(all.rows[1].disbursed_vnd, 12'000'000);
  EXPECT_EQ(all.rows[1].remaining_vnd, 45'000'000);
  EXPECT_EQ(all.rows[1].approved_requests, 2);
  EXPECT_EQ(all.rows[2].funding, FUNDING_SOURCE_COUNTERPART);
  EXPECT_EQ(all.rows[2].approved_vnd, 15'000'000);
  EXPECT_EQ(all.rows[2].remaining_vnd, 15'000'000);
  EXPECT_EQ(all.rows[2].approved_requests, 2);

  // District 1 (commune 1 only): its approvals, the province's plan.
  const BudgetFigures district = Budget(d1_, 2026);
  const BudgetRow* national = Row(district, FUNDING_SOURCE_NATIONAL, kMachinery);
  ASSERT_NE(national, nullptr);
  EXPECT_EQ(national->planned_vnd, 100'000'000);
  EXPECT_EQ(national->approved_vnd, 30'000'000);
  EXPECT_EQ(national->disbursed_vnd, 12'000'000);
  EXPECT_EQ(national->approved_requests, 1);
  EXPECT_EQ(Row(district, FUNDING_SOURCE_LOCAL, kTraining)->approved_vnd, 0);
  // The change counter grows with every write it counts; the answer is complete up to the
  // record store's op when it began.
  EXPECT_GT(all.as_of_change, 0);
  EXPECT_EQ(all.as_of_op, server_->store()->last_op());
  ASSERT_TRUE(Pay("officer1", a.id(), 1'000'000).ok());
  EXPECT_GT(Budget(p_, 2026).as_of_change, all.as_of_change);

  // Out of scope: NOT_FOUND, as a unit that does not exist.
  absl::StatusOr<Principal> officer9 = server_->directory()->Authenticate(tokens_["officer9"]);
  ASSERT_TRUE(officer9.ok());
  absl::StatusOr<BudgetFigures> hidden =
      BudgetFor(*server_->directory(), *server_->plans(), *server_->store(), *officer9, p_, 2026);
  EXPECT_EQ(hidden.status().code(), absl::StatusCode::kNotFound);
  absl::StatusOr<BudgetFigures> none = BudgetFor(*server_->directory(), *server_->plans(),
                                                 *server_->store(), *officer9, 999999, 2026);
  EXPECT_EQ(none.status().message(), absl::StrCat("org_unit_id: no org unit 999999"));
  EXPECT_EQ(hidden.status().message(), absl::StrCat("org_unit_id: no org unit ", p_));
  absl::StatusOr<BudgetFigures> bad_year =
      BudgetFor(*server_->directory(), *server_->plans(), *server_->store(), *officer9, p9_, 1999);
  EXPECT_EQ(bad_year.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(PlansTest, ThePlansSurviveARestart) {
  ASSERT_TRUE(CreatePlan("officer1", p_, 2026, {Line(kTraining, FUNDING_SOURCE_LOCAL, 7, 1)}).ok());
  server_->Shutdown(absl::Seconds(1));
  server_.reset();
  auto again = KcnetServer::Start(Options());
  ASSERT_TRUE(again.ok()) << again.status();
  server_ = *std::move(again);
  absl::StatusOr<Plan> plan = server_->plans()->GetPlan(p_, 2026);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->lines(0).planned_amount_vnd(), 7);
}

// kcnet-admin backup while the server approves and pays: the copies of kcnet.db and
// plans.db are taken one after the other, so approvals, starts and payments land between
// them here on purpose. After the restore every approved request has its draw, of its
// approved amount, and no draw or payment belongs to a request the restored records do not
// show approved (or started).
TEST_P(PlansTest, ABackupRestoresToOneConsistentPointOfRecordsAndPlans) {
  if (GetParam() == StoreKind::kPostgres) {
    GTEST_SKIP() << "a data-dir backup copies SQLite files; on PostgreSQL records and plans "
                    "are one database (pg_dump: RestoreTest, pg_pitr_test)";
  }
  ASSERT_TRUE(
      CreatePlan("officer1", p_, 2026, {Line(kMachinery, FUNDING_SOURCE_NATIONAL, 100'000'000, 5)})
          .ok());
  const SupportRequest a = Endorsed(c1_, 30'000'000);
  ASSERT_TRUE(Approve(a.id(), 30'000'000, FUNDING_SOURCE_NATIONAL).ok());
  ASSERT_TRUE(Start(a.id()).ok());
  ASSERT_TRUE(Pay("officer1", a.id(), 10'000'000).ok());
  const SupportRequest c = Endorsed(c1_, 20'000'000);
  ASSERT_TRUE(Approve(c.id(), 20'000'000, FUNDING_SOURCE_NATIONAL).ok());
  const SupportRequest b = Endorsed(c3_, 25'000'000);

  kcnet::testing::TempDir backup;
  std::vector<std::string> order;
  absl::StatusOr<std::vector<CopiedDatabase>> copied =
      BackupDataDir(dir_.path(), backup.File("b"), [&](const std::string& name) {
        order.push_back(name);
        if (name != "kcnet.db") return;
        // After the record store's copy, before the plans': B approved, started and paid;
        // C started and paid; A paid again.
        EXPECT_TRUE(Approve(b.id(), 25'000'000, FUNDING_SOURCE_NATIONAL).ok());
        EXPECT_TRUE(Start(b.id()).ok());
        EXPECT_TRUE(Pay("officer1", b.id(), 5'000'000).ok());
        EXPECT_TRUE(Start(c.id()).ok());
        EXPECT_TRUE(Pay("officer1", c.id(), 1'000'000).ok());
        EXPECT_TRUE(Pay("officer1", a.id(), 4'000'000, "2026-06-11", "UNC-02").ok());
      });
  ASSERT_TRUE(copied.ok()) << copied.status();
  ASSERT_FALSE(order.empty());
  EXPECT_EQ(order.front(), "kcnet.db");
  server_->Shutdown(absl::Seconds(2));
  server_.reset();

  kcnet::testing::TempDir target;
  const std::string restored = target.File("data");
  ASSERT_TRUE(RestoreDataDir(restored, backup.File("b")).ok());
  auto records = sync::ServerStore::Open(restored + "/kcnet.db", &model::KcnetSchema());
  ASSERT_TRUE(records.ok()) << records.status();
  auto plans = PlanStore::Open(restored + "/plans.db");
  ASSERT_TRUE(plans.ok()) << plans.status();
  auto status_of = [&](const std::string& id) {
    auto rec = (*records)->ReadRecord(model::kSupportRequestType, *sync::UuidFromText(id));
    EXPECT_TRUE(rec.ok() && rec->has_value());
    SupportRequest r;
    if (rec.ok() && rec->has_value()) {
      EXPECT_TRUE(model::FromChange(**rec, &r).ok());
    }
    return r;
  };
  EXPECT_EQ(status_of(a.id()).status(), REQUEST_STATUS_IN_PROGRESS);
  EXPECT_EQ(status_of(b.id()).status(), REQUEST_STATUS_ENDORSED);  // its approval came later
  EXPECT_EQ(status_of(c.id()).status(), REQUEST_STATUS_APPROVED);  // its start came later
  // Every approved request's draw matches its approval; nothing else has a draw.
  for (const SupportRequest& r : {a, b, c}) {
    const SupportRequest now = status_of(r.id());
    absl::StatusOr<std::optional<PlanDraw>> draw = (*plans)->GetDraw(r.id());
    ASSERT_TRUE(draw.ok());
    if (now.status() == REQUEST_STATUS_ENDORSED) {
      EXPECT_FALSE(draw->has_value()) << "a draw without its approval: " << r.id();
    } else {
      ASSERT_TRUE(draw->has_value()) << "an approval without its draw: " << r.id();
      EXPECT_EQ((*draw)->amount_vnd(), now.approved_amount_vnd());
    }
  }
  EXPECT_TRUE((*plans)->ListDisbursements(b.id())->empty());
  EXPECT_TRUE((*plans)->ListDisbursements(c.id())->empty());   // paid after a start it lost
  EXPECT_EQ((*plans)->ListDisbursements(a.id())->size(), 2u);  // A was started in the copy
  EXPECT_TRUE((*plans)->UnconfirmedDraws()->empty());
  absl::StatusOr<BudgetFigures> budget = (*plans)->Budget({.province_id = p_, .year = 2026});
  ASSERT_TRUE(budget.ok()) << budget.status();
  const BudgetRow* row = Row(*budget, FUNDING_SOURCE_NATIONAL, kMachinery);
  ASSERT_NE(row, nullptr);
  EXPECT_EQ(row->approved_vnd, 50'000'000);  // A and C
  EXPECT_EQ(row->approved_requests, 2);
  EXPECT_EQ(row->disbursed_vnd, 14'000'000);
  EXPECT_EQ(row->remaining_vnd, 50'000'000);
}

// ---- Two instances on one PostgreSQL database (plans_pg_test only) ----

// Approvals on two instances race for a plan line's last money: exactly one passes, every
// other is refused with what remains, and both instances report the same budget.
TEST_P(PlansTest, TwoInstancesRacingForALinesLastMoneyPassOnlyOne) {
  if (GetParam() != StoreKind::kPostgres) GTEST_SKIP() << "one SQLite store per instance";
  StartOther();
  ASSERT_TRUE(
      CreatePlan("officer1", p_, 2026, {Line(kMachinery, FUNDING_SOURCE_NATIONAL, 100'000'000, 2)})
          .ok());
  const SupportRequest first = Endorsed(c1_, 40'000'000);
  ASSERT_TRUE(Approve(first.id(), 40'000'000, FUNDING_SOURCE_NATIONAL).ok());
  // 60,000,000 remain; eight approvals of 40,000,000 at once, half on each instance, in
  // two communes: exactly one fits.
  constexpr int kRacers = 8;
  std::vector<SupportRequest> racers;
  for (int i = 0; i < kRacers; ++i) racers.push_back(Endorsed(i % 2 == 0 ? c1_ : c3_, 40'000'000));
  std::atomic<int> passed{0}, refused{0}, other{0};
  std::atomic<bool> go{false};
  std::vector<std::string> refusals(kRacers);
  std::vector<std::thread> threads;
  for (int i = 0; i < kRacers; ++i) {
    threads.emplace_back([&, i] {
      while (!go.load()) std::this_thread::yield();
      grpc::Status s = Approve(racers[i].id(), 40'000'000, FUNDING_SOURCE_NATIONAL, "", nullptr,
                               i < kRacers / 2 ? requests_.get() : other_requests_.get());
      if (s.ok()) {
        ++passed;
      } else if (s.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
        ++refused;
        refusals[i] = s.error_message();
      } else {
        ++other;
        refusals[i] = s.error_message();
      }
    });
  }
  go = true;
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(passed.load(), 1);
  EXPECT_EQ(refused.load(), kRacers - 1);
  EXPECT_EQ(other.load(), 0);
  for (const std::string& refusal : refusals) {
    if (refusal.empty()) continue;
    // The remaining amount, Vietnamese first: 100,000,000 - 40,000,000 - the winner's.
    EXPECT_THAT(refusal, HasSubstr("còn lại 20.000.000 ₫")) << refusal;
    EXPECT_THAT(refusal, HasSubstr("20,000,000 VND remain")) << refusal;
  }
  int approved = 0;
  for (const SupportRequest& r : racers)
    approved += Get(r.id()).status() == REQUEST_STATUS_APPROVED;
  EXPECT_EQ(approved, 1);
  const BudgetFigures on_a = Budget(p_, 2026);
  const BudgetFigures on_b = Budget(p_, 2026, "officer1", other_.get());
  const BudgetRow* row = Row(on_a, FUNDING_SOURCE_NATIONAL, kMachinery);
  ASSERT_NE(row, nullptr);
  EXPECT_EQ(row->approved_vnd, 80'000'000);
  EXPECT_EQ(row->approved_requests, 2);
  EXPECT_EQ(row->remaining_vnd, 20'000'000);
  ASSERT_EQ(on_a.rows.size(), on_b.rows.size());
  for (size_t i = 0; i < on_a.rows.size(); ++i) {
    EXPECT_EQ(on_a.rows[i].funding, on_b.rows[i].funding);
    EXPECT_EQ(on_a.rows[i].category, on_b.rows[i].category);
    EXPECT_EQ(on_a.rows[i].planned_vnd, on_b.rows[i].planned_vnd);
    EXPECT_EQ(on_a.rows[i].approved_vnd, on_b.rows[i].approved_vnd);
    EXPECT_EQ(on_a.rows[i].remaining_vnd, on_b.rows[i].remaining_vnd);
    EXPECT_EQ(on_a.rows[i].approved_requests, on_b.rows[i].approved_requests);
  }
  EXPECT_EQ(on_a.as_of_change, on_b.as_of_change);
}

// A plan made or revised on one instance is the other's at once (no cache); a second
// creation of it on the other is ALREADY_EXISTS; payments on both never pass the approved
// amount.
TEST_P(PlansTest, APlanRevisedOnOneInstanceIsSeenOnTheOtherAtOnce) {
  if (GetParam() != StoreKind::kPostgres) GTEST_SKIP() << "one SQLite store per instance";
  StartOther();
  ASSERT_TRUE(
      CreatePlan("officer1", p_, 2026, {Line(kMachinery, FUNDING_SOURCE_NATIONAL, 50'000'000, 2)})
          .ok());
  {
    CreatePlanRequest again;
    again.mutable_plan()->set_province_id(p_);
    again.mutable_plan()->set_year(2026);
    *again.mutable_plan()->add_lines() = Line(kTraining, FUNDING_SOURCE_LOCAL, 1, 1);
    Plan ignored;
    grpc::Status s = other_plans_->CreatePlan(As("officer1").get(), again, &ignored);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS) << s.error_message();
  }
  RevisePlanRequest revise;
  revise.mutable_plan()->set_province_id(p_);
  revise.mutable_plan()->set_year(2026);
  *revise.mutable_plan()->add_lines() = Line(kMachinery, FUNDING_SOURCE_NATIONAL, 70'000'000, 3);
  *revise.mutable_plan()->add_lines() = Line(kTraining, FUNDING_SOURCE_LOCAL, 9'000'000, 4);
  revise.set_expected_revision(1);
  revise.set_note("bổ sung kinh phí");
  Plan revised;
  grpc::Status s = plans_->RevisePlan(As("officer1").get(), revise, &revised);
  ASSERT_TRUE(s.ok()) << s.error_message();
  GetPlanRequest get;
  get.set_province_id(p_);
  get.set_year(2026);
  Plan seen;
  s = other_plans_->GetPlan(As("officer1").get(), get, &seen);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(seen.revision(), 2);
  ASSERT_EQ(seen.lines_size(), 2);
  EXPECT_EQ(seen.lines(0).planned_amount_vnd(), 9'000'000);   // LOCAL first
  EXPECT_EQ(seen.lines(1).planned_amount_vnd(), 70'000'000);  // then NATIONAL
  ListPlanRevisionsRequest list;
  list.set_province_id(p_);
  list.set_year(2026);
  ListPlanRevisionsResponse revisions;
  s = other_plans_->ListPlanRevisions(As("officer1").get(), list, &revisions);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(revisions.revisions_size(), 2);
  EXPECT_EQ(revisions.revisions(1).note(), "bổ sung kinh phí");
  // A revision from B that read revision 1 comes second: refused, nothing changes.
  s = other_plans_->RevisePlan(As("officer1").get(), revise, &revised);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  // The revised line's money is B's at once: 70,000,000 approved there.
  const SupportRequest a = Endorsed(c1_, 70'000'000);
  ASSERT_TRUE(
      Approve(a.id(), 70'000'000, FUNDING_SOURCE_NATIONAL, "", nullptr, other_requests_.get())
          .ok());
  ASSERT_TRUE(Start(a.id()).ok());
  // Payments of 30,000,000 on both at once, four each: at most 70,000,000 in all.
  std::atomic<int> paid{0};
  std::vector<std::thread> payers;
  for (int i = 0; i < 8; ++i) {
    payers.emplace_back([&, i] {
      RecordDisbursementRequest req;
      req.mutable_disbursement()->set_request_id(a.id());
      req.mutable_disbursement()->set_amount_vnd(30'000'000);
      req.mutable_disbursement()->set_paid_date("2026-06-10");
      req.mutable_disbursement()->set_reference(absl::StrCat("UNC-", i));
      Disbursement ignored;
      grpc::Status st = (i % 2 == 0 ? plans_ : other_plans_)
                            ->RecordDisbursement(As("officer1").get(), req, &ignored);
      if (st.ok()) ++paid;
    });
  }
  for (std::thread& t : payers) t.join();
  EXPECT_EQ(paid.load(), 2);
  const BudgetFigures on_b = Budget(p_, 2026, "officer1", other_.get());
  const BudgetRow* row = Row(on_b, FUNDING_SOURCE_NATIONAL, kMachinery);
  ASSERT_NE(row, nullptr);
  EXPECT_EQ(row->planned_vnd, 70'000'000);
  EXPECT_EQ(row->approved_vnd, 70'000'000);
  EXPECT_EQ(row->disbursed_vnd, 60'000'000);
}

#if KCNET_PLANS_TEST_PG
// Another instance is approving in commune 1: its draw is committed in the plans, its
// record store transaction (holding commune 1's bucket head) not yet. An approval here in
// commune 3 counts that draw (refused with what remains, never over-committed); once that
// transaction rolls back, the draw holds nothing and the same approval passes.
TEST_P(PlansTest, AnApprovalInFlightOnAnotherInstanceHoldsItsMoney) {
  ASSERT_TRUE(
      CreatePlan("officer1", p_, 2026, {Line(kMachinery, FUNDING_SOURCE_NATIONAL, 100'000'000, 2)})
          .ok());
  const SupportRequest first = Endorsed(c1_, 40'000'000);  // commune 1's bucket exists
  ASSERT_TRUE(Approve(first.id(), 40'000'000, FUNDING_SOURCE_NATIONAL).ok());
  const SupportRequest here = Endorsed(c3_, 40'000'000);
  const std::string conninfo = store_.substr(std::string("postgres:").size());
  auto other = pgstore::PgConn::Connect(conninfo);
  ASSERT_TRUE(other.ok()) << other.status();
  // The other instance's draw (committed before its approval, as ApprovalGuard does).
  ASSERT_TRUE(
      (*other)
          ->Exec(absl::StrCat(
              "INSERT INTO kcnet_plans.draws VALUES ('7f000000-0000-4000-8000-000000000001', ", p_,
              ", ", c1_, ", 2026, ", static_cast<int>(kMachinery), ", ",
              static_cast<int>(FUNDING_SOURCE_NATIONAL),
              ", 40000000, 0, 60000000, 1, '', 1, 0, 0)"))
          .ok());
  // Its record store transaction, still open.
  ASSERT_TRUE((*other)->Exec("BEGIN").ok());
  ASSERT_TRUE((*other)
                  ->Exec(absl::StrCat("SELECT 1 FROM kcnet_bucket_head WHERE bucket = ", c1_,
                                      " FOR UPDATE"))
                  .ok());
  grpc::Status s = Approve(here.id(), 40'000'000, FUNDING_SOURCE_NATIONAL);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("còn lại 20.000.000 ₫"));
  EXPECT_NE(Get(here.id()).status(), REQUEST_STATUS_APPROVED);
  // It rolled back: its approval never happened, its draw holds nothing.
  ASSERT_TRUE((*other)->Exec("ROLLBACK").ok());
  s = Approve(here.id(), 40'000'000, FUNDING_SOURCE_NATIONAL);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(Get(here.id()).status(), REQUEST_STATUS_APPROVED);
}
#endif

#if KCNET_PLANS_TEST_PG
INSTANTIATE_TEST_SUITE_P(Stores, PlansTest, ::testing::Values(StoreKind::kPostgres), StoreName);
#else
INSTANTIATE_TEST_SUITE_P(Stores, PlansTest, ::testing::Values(StoreKind::kSqlite), StoreName);
#endif

}  // namespace
}  // namespace kcnet::server
