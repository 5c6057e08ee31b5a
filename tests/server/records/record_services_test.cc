// The record services against a real kcnet-server on port 0 over a real channel: the
// authorization matrix (every record RPC x every role x in scope / out of scope), the
// request life cycle end to end with its audit trail, and bad input.
#include <algorithm>
#include <functional>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kcnet/v1/services.grpc.pb.h"
#include "server/app/kcnet_server.h"
#include "tests/testing/test_plans.h"
#include "tests/testing/test_util.h"

namespace kcnet::server {
namespace {

using ::testing::HasSubstr;
using namespace ::kcnet::v1;  // NOLINT: messages and enum constants

class RecordServicesTest : public ::testing::Test {
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
    // Province 90 (districts 901: communes 90101, 90102; 902: commune 90201); province 91.
    auto p = *d->CreateOrgUnit("90", "Tỉnh Demo", ORG_UNIT_LEVEL_PROVINCE, 0);
    auto d1 = *d->CreateOrgUnit("901", "Huyện Một", ORG_UNIT_LEVEL_DISTRICT, p.id());
    auto d2 = *d->CreateOrgUnit("902", "Huyện Hai", ORG_UNIT_LEVEL_DISTRICT, p.id());
    c1_ = d->CreateOrgUnit("90101", "Xã Một", ORG_UNIT_LEVEL_COMMUNE, d1.id())->id();
    c2_ = d->CreateOrgUnit("90102", "Xã Hai", ORG_UNIT_LEVEL_COMMUNE, d1.id())->id();
    c3_ = d->CreateOrgUnit("90201", "Xã Ba", ORG_UNIT_LEVEL_COMMUNE, d2.id())->id();
    auto p2 = *d->CreateOrgUnit("91", "Tỉnh Khác", ORG_UNIT_LEVEL_PROVINCE, 0);
    auto d9 = *d->CreateOrgUnit("911", "Huyện Chín", ORG_UNIT_LEVEL_DISTRICT, p2.id());
    c9_ = d->CreateOrgUnit("91101", "Xã Chín", ORG_UNIT_LEVEL_COMMUNE, d9.id())->id();
    struct U {
      const char* name;
      Role role;
      int64_t unit;
    };
    for (const U& u :
         {U{"collab1", ROLE_COMMUNE_COLLABORATOR, c1_},
          U{"collab3", ROLE_COMMUNE_COLLABORATOR, c3_},
          U{"coord1", ROLE_DISTRICT_COORDINATOR, d1.id()},
          U{"officer1", ROLE_PROVINCE_OFFICER, p.id()}, U{"admin1", ROLE_ADMINISTRATOR, p.id()},
          U{"collab9", ROLE_COMMUNE_COLLABORATOR, c9_},
          U{"coord9", ROLE_DISTRICT_COORDINATOR, d9.id()},
          U{"officer9", ROLE_PROVINCE_OFFICER, p2.id()}}) {
      auto user = d->CreateUser(u.name, u.name, "password-123", u.role, {u.unit});
      ASSERT_TRUE(user.ok()) << user.status();
      users_[u.name] = user->id();
    }
    // Approvals draw on the province's plan (server/plans).
    ASSERT_TRUE(kcnet::testing::SeedPlan(*server_, p.id()).ok());
    channel_ = new std::shared_ptr<grpc::Channel>(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", server_->port()), grpc::InsecureChannelCredentials()));
    auto auth = AuthService::NewStub(*channel_);
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
  }

  static void TearDownTestSuite() {
    server_->Shutdown(absl::Seconds(2));
    delete server_;
    delete channel_;
    delete dir_;
  }

  std::unique_ptr<grpc::ClientContext> As(const std::string& user) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    if (!user.empty()) ctx->AddMetadata("authorization", "Bearer " + tokens_[user]);
    return ctx;
  }

  Facility MakeFacility(const std::string& user, int64_t commune) {
    Facility f;
    f.set_commune_id(commune);
    f.set_name("Cơ sở mây tre đan");
    f.set_owner_name("Nguyễn Văn A");
    f.set_kind(FACILITY_KIND_HOUSEHOLD_BUSINESS);
    f.set_latitude(21.0);
    f.set_longitude(105.8);
    CreateFacilityRequest req;
    *req.mutable_facility() = f;
    Facility out;
    grpc::Status s = facilities_->CreateFacility(As(user).get(), req, &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  }

  SupportRequest MakeRequest(const std::string& user, const Facility& f) {
    CreateSupportRequestRequest req;
    req.mutable_support_request()->set_facility_id(f.id());
    req.mutable_support_request()->set_category(SUPPORT_CATEGORY_MACHINERY_TECHNOLOGY);
    req.mutable_support_request()->set_description("Máy sấy nông sản");
    req.mutable_support_request()->set_requested_amount_vnd(80000000);
    req.mutable_support_request()->set_proposed_funding(FUNDING_SOURCE_LOCAL);
    SupportRequest out;
    grpc::Status s = requests_->CreateSupportRequest(As(user).get(), req, &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  }

  grpc::Status Transition(const std::string& user, const std::string& action, const std::string& id,
                          SupportRequest* out = nullptr) {
    SupportRequest ignored;
    if (out == nullptr) out = &ignored;
    TransitionRequest req;
    req.set_id(id);
    req.set_note("ghi chú " + action);
    auto ctx = As(user);
    if (action == "submit") return requests_->SubmitSupportRequest(ctx.get(), req, out);
    if (action == "endorse") return requests_->EndorseSupportRequest(ctx.get(), req, out);
    if (action == "return") return requests_->ReturnSupportRequest(ctx.get(), req, out);
    if (action == "reject") return requests_->RejectSupportRequest(ctx.get(), req, out);
    if (action == "start") return requests_->StartSupportRequest(ctx.get(), req, out);
    if (action == "complete") return requests_->CompleteSupportRequest(ctx.get(), req, out);
    if (action == "cancel") return requests_->CancelSupportRequest(ctx.get(), req, out);
    ApproveRequest approve;
    approve.set_id(id);
    approve.set_approved_amount_vnd(60000000);
    approve.set_funding(FUNDING_SOURCE_NATIONAL);
    approve.set_note("duyệt");
    return requests_->ApproveSupportRequest(ctx.get(), approve, out);
  }

  static kcnet::testing::TempDir* dir_;
  static KcnetServer* server_;
  static std::shared_ptr<grpc::Channel>* channel_;
  static std::map<std::string, int64_t> users_;
  static std::map<std::string, std::string> tokens_;
  static int64_t c1_, c2_, c3_, c9_;
  std::unique_ptr<FacilityService::Stub> facilities_ = FacilityService::NewStub(*channel_);
  std::unique_ptr<VisitService::Stub> visits_ = VisitService::NewStub(*channel_);
  std::unique_ptr<SupportRequestService::Stub> requests_ =
      SupportRequestService::NewStub(*channel_);
};

kcnet::testing::TempDir* RecordServicesTest::dir_ = nullptr;
KcnetServer* RecordServicesTest::server_ = nullptr;
std::shared_ptr<grpc::Channel>* RecordServicesTest::channel_ = nullptr;
std::map<std::string, int64_t> RecordServicesTest::users_;
std::map<std::string, std::string> RecordServicesTest::tokens_;
int64_t RecordServicesTest::c1_ = 0, RecordServicesTest::c2_ = 0, RecordServicesTest::c3_ = 0,
        RecordServicesTest::c9_ = 0;

// The matrix. Each row: an operation on records of commune c1 (in scope for collab1,
// coord1, officer1, admin1) made by every role, and by the same roles of province 91 (out
// of scope: they must get NOT_FOUND, or PERMISSION_DENIED where the role forbids it anyway).
TEST_F(RecordServicesTest, AuthorizationMatrix) {
  using Op = std::function<grpc::StatusCode(const std::string& user)>;
  const Facility f = MakeFacility("collab1", c1_);
  std::map<std::string, Op> ops;
  ops["GetFacility"] = [&](const std::string& u) {
    GetRecordRequest r;
    r.set_id(f.id());
    Facility out;
    return facilities_->GetFacility(As(u).get(), r, &out).error_code();
  };
  ops["UpdateFacility"] = [&](const std::string& u) {
    UpdateFacilityRequest r;
    r.mutable_facility()->set_id(f.id());
    r.mutable_facility()->set_workers(12);
    r.mutable_update_mask()->add_paths("workers");
    Facility out;
    return facilities_->UpdateFacility(As(u).get(), r, &out).error_code();
  };
  ops["CreateFacility"] = [&](const std::string& u) {
    CreateFacilityRequest r;
    r.mutable_facility()->set_commune_id(c1_);
    r.mutable_facility()->set_name("Xưởng gỗ");
    Facility out;
    return facilities_->CreateFacility(As(u).get(), r, &out).error_code();
  };
  ops["ListFacilities(c1)"] = [&](const std::string& u) {
    ListFacilitiesRequest r;
    r.set_org_unit_id(c1_);
    ListFacilitiesResponse out;
    return facilities_->ListFacilities(As(u).get(), r, &out).error_code();
  };
  ops["CreateVisit"] = [&](const std::string& u) {
    CreateVisitRequest r;
    r.mutable_visit()->set_facility_id(f.id());
    r.mutable_visit()->set_purpose(VISIT_PURPOSE_SURVEY);
    Visit out;
    return visits_->CreateVisit(As(u).get(), r, &out).error_code();
  };
  ops["ListVisits(facility)"] = [&](const std::string& u) {
    ListVisitsRequest r;
    r.set_facility_id(f.id());
    ListVisitsResponse out;
    return visits_->ListVisits(As(u).get(), r, &out).error_code();
  };
  ops["CreateSupportRequest"] = [&](const std::string& u) {
    CreateSupportRequestRequest r;
    r.mutable_support_request()->set_facility_id(f.id());
    r.mutable_support_request()->set_requested_amount_vnd(1000);
    SupportRequest out;
    return requests_->CreateSupportRequest(As(u).get(), r, &out).error_code();
  };
  const SupportRequest req = MakeRequest("collab1", f);
  ops["GetSupportRequest"] = [&](const std::string& u) {
    GetRecordRequest r;
    r.set_id(req.id());
    SupportRequest out;
    return requests_->GetSupportRequest(As(u).get(), r, &out).error_code();
  };
  ops["ListRequestEvents"] = [&](const std::string& u) {
    ListRequestEventsRequest r;
    r.set_request_id(req.id());
    ListRequestEventsResponse out;
    return requests_->ListRequestEvents(As(u).get(), r, &out).error_code();
  };
  ops["ListSupportRequests(c1)"] = [&](const std::string& u) {
    ListSupportRequestsRequest r;
    r.set_org_unit_id(c1_);
    ListSupportRequestsResponse out;
    return requests_->ListSupportRequests(As(u).get(), r, &out).error_code();
  };

  using grpc::StatusCode;
  const StatusCode kOk = StatusCode::OK, kDenied = StatusCode::PERMISSION_DENIED,
                   kNotFound = StatusCode::NOT_FOUND, kUnauth = StatusCode::UNAUTHENTICATED;
  // In scope: what each role may do.
  const std::map<std::string, std::map<std::string, StatusCode>> in_scope = {
      {"GetFacility", {{"collab1", kOk}, {"coord1", kOk}, {"officer1", kOk}, {"admin1", kOk}}},
      {"UpdateFacility",
       {{"collab1", kOk}, {"coord1", kOk}, {"officer1", kOk}, {"admin1", kDenied}}},
      {"CreateFacility",
       {{"collab1", kOk}, {"coord1", kOk}, {"officer1", kOk}, {"admin1", kDenied}}},
      {"ListFacilities(c1)",
       {{"collab1", kOk}, {"coord1", kOk}, {"officer1", kOk}, {"admin1", kOk}}},
      {"CreateVisit",
       {{"collab1", kOk}, {"coord1", kOk}, {"officer1", kDenied}, {"admin1", kDenied}}},
      {"ListVisits(facility)",
       {{"collab1", kOk}, {"coord1", kOk}, {"officer1", kOk}, {"admin1", kOk}}},
      {"CreateSupportRequest",
       {{"collab1", kOk}, {"coord1", kOk}, {"officer1", kDenied}, {"admin1", kDenied}}},
      {"GetSupportRequest",
       {{"collab1", kOk}, {"coord1", kOk}, {"officer1", kOk}, {"admin1", kOk}}},
      {"ListRequestEvents",
       {{"collab1", kOk}, {"coord1", kOk}, {"officer1", kOk}, {"admin1", kOk}}},
      {"ListSupportRequests(c1)",
       {{"collab1", kOk}, {"coord1", kOk}, {"officer1", kOk}, {"admin1", kOk}}},
  };
  int checked = 0;
  for (const auto& [name, op] : ops) {
    for (const auto& [user, want] : in_scope.at(name)) {
      EXPECT_EQ(op(user), want) << name << " by " << user << " (in scope)";
      ++checked;
    }
    // Out of scope: a collaborator of a sibling commune, and every role of province 91.
    for (const std::string user : {"collab3", "collab9", "coord9", "officer9"}) {
      EXPECT_EQ(op(user), kNotFound) << name << " by " << user << " (out of scope)";
      ++checked;
    }
    EXPECT_EQ(op(""), kUnauth) << name << " without a token";
  }
  EXPECT_EQ(checked, 80);
}

TEST_F(RecordServicesTest, NoListReturnsARecordOutsideTheCallersSubtree) {
  const Facility in = MakeFacility("collab1", c1_);
  const Facility sibling = MakeFacility("collab3", c3_);
  const Facility other = MakeFacility("collab9", c9_);
  for (const std::string user : {"collab1", "collab3", "coord1", "officer1", "collab9"}) {
    std::vector<std::string> seen;
    ListFacilitiesRequest r;
    r.set_page_size(2);
    while (true) {
      ListFacilitiesResponse out;
      grpc::Status s = facilities_->ListFacilities(As(user).get(), r, &out);
      ASSERT_TRUE(s.ok()) << s.error_message();
      for (const Facility& f : out.facilities()) seen.push_back(f.id());
      if (out.next_page_token().empty()) break;
      r.set_page_token(out.next_page_token());
    }
    auto has = [&](const Facility& f) {
      return std::find(seen.begin(), seen.end(), f.id()) != seen.end();
    };
    const bool sees_c1 = user == "collab1" || user == "coord1" || user == "officer1";
    const bool sees_c3 = user == "collab3" || user == "officer1";
    EXPECT_EQ(has(in), sees_c1) << user;
    EXPECT_EQ(has(sibling), sees_c3) << user;
    EXPECT_EQ(has(other), user == "collab9") << user;
  }
}

// ListFacilities' `query`: folded as the SDK's search (no case, no diacritics, đ = d), every
// word in the name, owner, address or products; within the caller's scope; paged.
TEST_F(RecordServicesTest, FacilitySearchIsDiacriticInsensitiveScopedAndPaged) {
  auto make = [&](const std::string& user, int64_t commune, const std::string& name,
                  const std::string& owner) {
    CreateFacilityRequest req;
    req.mutable_facility()->set_commune_id(commune);
    req.mutable_facility()->set_name(name);
    req.mutable_facility()->set_owner_name(owner);
    req.mutable_facility()->set_kind(FACILITY_KIND_HOUSEHOLD_BUSINESS);
    Facility out;
    grpc::Status s = facilities_->CreateFacility(As(user).get(), req, &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out.id();
  };
  const std::string duc = make("collab1", c1_, "Xưởng đúc đồng Đại Bái", "Trần Văn Đức");
  const std::string duc2 = make("collab1", c1_, "Lò ĐÚC ĐỒNG Ý Yên", "Lê Thị Hoa");
  const std::string rice = make("collab1", c1_, "Cơ sở bún khô", "Nguyễn Đức Anh");
  const std::string far = make("collab9", c9_, "Xưởng đúc đồng tỉnh khác", "Phạm Văn B");
  // Every id coord1 finds for `query`, walking all pages of `page_size`.
  auto search = [&](const std::string& user, const std::string& query, int page_size) {
    std::vector<std::string> found;
    ListFacilitiesRequest r;
    r.set_query(query);
    r.set_page_size(page_size);
    for (int pages = 0; pages < 100; ++pages) {
      ListFacilitiesResponse out;
      grpc::Status s = facilities_->ListFacilities(As(user).get(), r, &out);
      EXPECT_TRUE(s.ok()) << s.error_message();
      if (!s.ok()) break;
      EXPECT_LE(out.facilities_size(), page_size);
      for (const Facility& f : out.facilities()) found.push_back(f.id());
      if (out.next_page_token().empty()) break;
      r.set_page_token(out.next_page_token());
    }
    std::sort(found.begin(), found.end());
    return found;
  };
  auto sorted = [](std::vector<std::string> v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  EXPECT_EQ(search("coord1", "duc dong", 50), sorted({duc, duc2}));
  EXPECT_EQ(search("coord1", "ĐÚC   đồng", 1), sorted({duc, duc2}));  // paged one by one
  EXPECT_EQ(search("coord1", "duc", 50), sorted({duc, duc2, rice}));  // the owner's name too
  EXPECT_EQ(search("coord1", "dong y ye", 50), sorted({duc2}));       // the last word as a prefix
  EXPECT_TRUE(search("coord1", "uc dong", 50).empty());               // whole words, not parts
  EXPECT_TRUE(search("coord1", "dong bun", 50).empty());              // every word must match
  // Scope: another province's facility is found by its own collaborator only.
  EXPECT_EQ(search("collab9", "duc dong", 50), sorted({far}));
  for (const std::string& id : search("officer1", "duc dong", 50)) EXPECT_NE(id, far);
  // An empty query lists everything, as before.
  EXPECT_GE(search("coord1", "", 50).size(), 3u);
  // Bad input names the field.
  ListFacilitiesRequest bad;
  bad.set_query(std::string(201, 'a'));
  ListFacilitiesResponse out;
  grpc::Status s = facilities_->ListFacilities(As("coord1").get(), bad, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("query"), std::string::npos) << s.error_message();
  // A page token of one query does not continue another.
  ListFacilitiesRequest first;
  first.set_query("duc");
  first.set_page_size(1);
  ListFacilitiesResponse page;
  ASSERT_TRUE(facilities_->ListFacilities(As("coord1").get(), first, &page).ok());
  ASSERT_FALSE(page.next_page_token().empty());
  ListFacilitiesRequest other;
  other.set_query("dong");
  other.set_page_token(page.next_page_token());
  EXPECT_EQ(facilities_->ListFacilities(As("coord1").get(), other, &out).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

// The search goes through the reports' index (reports.db): a write is found by the next
// search (the search brings the index up to the store first; well within 1 s), an edit
// too, and names that begin with the query come first.
TEST_F(RecordServicesTest, FacilitySearchFindsAWriteAtOnceAndPutsNamesBeginningWithTheQueryFirst) {
  auto search = [&](const std::string& query) {
    ListFacilitiesRequest r;
    r.set_query(query);
    ListFacilitiesResponse out;
    grpc::Status s = facilities_->ListFacilities(As("coord1").get(), r, &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
    std::vector<std::string> names;
    for (const Facility& f : out.facilities()) names.push_back(f.name());
    return names;
  };
  CreateFacilityRequest req;
  req.mutable_facility()->set_commune_id(c1_);
  req.mutable_facility()->set_name("Bánh cuốn Thanh Trì Hà Nội");
  req.mutable_facility()->set_kind(FACILITY_KIND_HOUSEHOLD_BUSINESS);
  Facility later;
  ASSERT_TRUE(facilities_->CreateFacility(As("collab1").get(), req, &later).ok());
  const absl::Time written = absl::Now();
  EXPECT_THAT(search("ha noi"), ::testing::ElementsAre("Bánh cuốn Thanh Trì Hà Nội"));
  EXPECT_LT(absl::Now() - written, absl::Seconds(1));
  req.mutable_facility()->set_name("Hà Nội Mứt Sen");
  Facility first;
  ASSERT_TRUE(facilities_->CreateFacility(As("collab1").get(), req, &first).ok());
  EXPECT_THAT(search("HA NOI"),
              ::testing::ElementsAre("Hà Nội Mứt Sen", "Bánh cuốn Thanh Trì Hà Nội"));
  // An edit: the new name is found, the old one no longer.
  UpdateFacilityRequest update;
  update.mutable_facility()->set_id(first.id());
  update.mutable_facility()->set_name("Hải Phòng Mứt Sen");
  update.mutable_update_mask()->add_paths("name");
  Facility updated;
  grpc::Status s = facilities_->UpdateFacility(As("collab1").get(), update, &updated);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_THAT(search("ha noi"), ::testing::ElementsAre("Bánh cuốn Thanh Trì Hà Nội"));
  EXPECT_THAT(search("hai phong mut"), ::testing::ElementsAre("Hải Phòng Mứt Sen"));
}

// ListFacilities' ids: the names of a list of requests in one call; an id outside the
// caller's scope is left out exactly as one that does not exist.
TEST_F(RecordServicesTest, FacilitiesByIdsAreScopedAndInTheOrderAsked) {
  const Facility a = MakeFacility("collab1", c1_);
  const Facility b = MakeFacility("collab1", c1_);
  const Facility far = MakeFacility("collab9", c9_);
  auto by_ids = [&](const std::string& user, std::vector<std::string> ids) {
    ListFacilitiesRequest r;
    for (const std::string& id : ids) r.add_ids(id);
    ListFacilitiesResponse out;
    grpc::Status s = facilities_->ListFacilities(As(user).get(), r, &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
    std::vector<std::string> found;
    for (const Facility& f : out.facilities()) found.push_back(f.id());
    return found;
  };
  const std::string absent = "00000000-0000-4000-8000-000000000000";
  EXPECT_THAT(by_ids("coord1", {b.id(), a.id()}), ::testing::ElementsAre(b.id(), a.id()));
  EXPECT_THAT(by_ids("coord1", {far.id(), a.id(), absent}), ::testing::ElementsAre(a.id()));
  EXPECT_THAT(by_ids("collab9", {far.id(), a.id()}), ::testing::ElementsAre(far.id()));
  // Bad input names the field.
  ListFacilitiesRequest bad;
  bad.add_ids(a.id());
  bad.add_ids("not-a-uuid");
  ListFacilitiesResponse out;
  grpc::Status s = facilities_->ListFacilities(As("coord1").get(), bad, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("ids[1]"), std::string::npos) << s.error_message();
  ListFacilitiesRequest many;
  for (int i = 0; i < 501; ++i) many.add_ids(a.id());
  s = facilities_->ListFacilities(As("coord1").get(), many, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("ids"), std::string::npos) << s.error_message();
}

TEST_F(RecordServicesTest, ARequestWalksItsWholeLifeCycleWithAnAuditTrail) {
  const Facility f = MakeFacility("collab1", c1_);
  const SupportRequest r = MakeRequest("collab1", f);
  EXPECT_EQ(r.status(), REQUEST_STATUS_DRAFT);
  EXPECT_EQ(r.author_id(), users_["collab1"]);
  // Forbidden steps on the way, each answered with the right code.
  EXPECT_EQ(Transition("coord1", "endorse", r.id()).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);  // still a draft
  EXPECT_EQ(Transition("coord1", "submit", r.id()).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);  // not the author
  ASSERT_TRUE(Transition("collab1", "submit", r.id()).ok());
  EXPECT_EQ(Transition("collab1", "endorse", r.id()).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Transition("officer1", "approve", r.id()).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);  // not endorsed yet
  ASSERT_TRUE(Transition("coord1", "return", r.id()).ok());
  ASSERT_TRUE(Transition("collab1", "submit", r.id()).ok());
  ASSERT_TRUE(Transition("coord1", "endorse", r.id()).ok());
  EXPECT_EQ(Transition("collab1", "cancel", r.id()).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);  // decided: too late to cancel
  EXPECT_EQ(Transition("coord1", "approve", r.id()).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  SupportRequest approved;
  ASSERT_TRUE(Transition("officer1", "approve", r.id(), &approved).ok());
  EXPECT_EQ(approved.status(), REQUEST_STATUS_APPROVED);
  EXPECT_EQ(approved.approved_amount_vnd(), 60000000);
  EXPECT_EQ(approved.approved_funding(), FUNDING_SOURCE_NATIONAL);
  ASSERT_TRUE(Transition("officer1", "start", r.id()).ok());
  SupportRequest done;
  ASSERT_TRUE(Transition("officer1", "complete", r.id(), &done).ok());
  EXPECT_EQ(done.status(), REQUEST_STATUS_COMPLETED);

  ListRequestEventsRequest lr;
  lr.set_request_id(r.id());
  ListRequestEventsResponse events;
  ASSERT_TRUE(requests_->ListRequestEvents(As("coord1").get(), lr, &events).ok());
  std::vector<RequestAction> actions;
  for (const RequestEvent& e : events.events()) actions.push_back(e.action());
  EXPECT_THAT(actions, ::testing::ElementsAre(REQUEST_ACTION_CREATE, REQUEST_ACTION_SUBMIT,
                                              REQUEST_ACTION_RETURN, REQUEST_ACTION_SUBMIT,
                                              REQUEST_ACTION_ENDORSE, REQUEST_ACTION_APPROVE,
                                              REQUEST_ACTION_START, REQUEST_ACTION_COMPLETE));
  EXPECT_EQ(events.events(5).actor_id(), users_["officer1"]);
  EXPECT_EQ(events.events(5).amount_vnd(), 60000000);
  EXPECT_EQ(events.events(2).note(), "ghi chú return");
}

TEST_F(RecordServicesTest, RejectAndCancelEndTheRequest) {
  const Facility f = MakeFacility("collab1", c1_);
  const SupportRequest a = MakeRequest("collab1", f);
  ASSERT_TRUE(Transition("collab1", "submit", a.id()).ok());
  ASSERT_TRUE(Transition("coord1", "reject", a.id()).ok());
  EXPECT_EQ(Transition("collab1", "submit", a.id()).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  const SupportRequest b = MakeRequest("collab1", f);
  EXPECT_EQ(Transition("coord1", "cancel", b.id()).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  SupportRequest cancelled;
  ASSERT_TRUE(Transition("collab1", "cancel", b.id(), &cancelled).ok());
  EXPECT_EQ(cancelled.status(), REQUEST_STATUS_CANCELLED);
}

TEST_F(RecordServicesTest, BadInputNamesTheFieldAndStoresNothing) {
  const Facility f = MakeFacility("collab1", c1_);
  const uint64_t before = server_->store()->last_op();
  struct Case {
    std::function<grpc::Status()> call;
    grpc::StatusCode code;
    std::string text;
  };
  std::vector<Case> cases;
  cases.push_back({[&] {
                     CreateFacilityRequest r;
                     r.mutable_facility()->set_commune_id(c1_);
                     r.mutable_facility()->set_name("x");
                     r.mutable_facility()->set_latitude(95);
                     Facility out;
                     return facilities_->CreateFacility(As("collab1").get(), r, &out);
                   },
                   grpc::StatusCode::INVALID_ARGUMENT, "facility.latitude: 95 is outside"});
  cases.push_back({[&] {
                     CreateFacilityRequest r;
                     r.mutable_facility()->set_commune_id(c1_);
                     r.mutable_facility()->set_name("x");
                     r.mutable_facility()->set_workers(-3);
                     Facility out;
                     return facilities_->CreateFacility(As("collab1").get(), r, &out);
                   },
                   grpc::StatusCode::INVALID_ARGUMENT, "facility.workers: -3 is outside"});
  cases.push_back({[&] {
                     CreateFacilityRequest r;
                     r.mutable_facility()->set_commune_id(c1_);
                     r.mutable_facility()->set_name("x");
                     r.mutable_facility()->set_kind(static_cast<FacilityKind>(77));
                     Facility out;
                     return facilities_->CreateFacility(As("collab1").get(), r, &out);
                   },
                   grpc::StatusCode::INVALID_ARGUMENT, "facility.kind: unknown enum value 77"});
  cases.push_back({[&] {
                     GetRecordRequest r;
                     r.set_id("not-a-uuid");
                     Facility out;
                     return facilities_->GetFacility(As("collab1").get(), r, &out);
                   },
                   grpc::StatusCode::INVALID_ARGUMENT, "id: 'not-a-uuid' is not a UUID"});
  cases.push_back({[&] {
                     UpdateFacilityRequest r;
                     r.mutable_facility()->set_id(f.id());
                     r.mutable_update_mask()->add_paths("colour");
                     Facility out;
                     return facilities_->UpdateFacility(As("collab1").get(), r, &out);
                   },
                   grpc::StatusCode::INVALID_ARGUMENT, "update_mask.paths[0]: 'colour'"});
  cases.push_back({[&] {
                     UpdateFacilityRequest r;
                     r.mutable_facility()->set_id(f.id());
                     r.mutable_update_mask()->add_paths("commune_id");
                     Facility out;
                     return facilities_->UpdateFacility(As("collab1").get(), r, &out);
                   },
                   grpc::StatusCode::INVALID_ARGUMENT, "commune_id cannot be changed"});
  cases.push_back({[&] {
                     CreateSupportRequestRequest r;
                     r.mutable_support_request()->set_facility_id(f.id());
                     r.mutable_support_request()->set_requested_amount_vnd(-5);
                     SupportRequest out;
                     return requests_->CreateSupportRequest(As("collab1").get(), r, &out);
                   },
                   grpc::StatusCode::INVALID_ARGUMENT,
                   "support_request.requested_amount_vnd: -5 is outside"});
  cases.push_back({[&] {
                     ListFacilitiesRequest r;
                     r.set_page_size(1000);
                     ListFacilitiesResponse out;
                     return facilities_->ListFacilities(As("collab1").get(), r, &out);
                   },
                   grpc::StatusCode::INVALID_ARGUMENT, "page_size"});
  // A visit's facility indicators (the outcomes report's before/after) are never negative.
  cases.push_back({[&] {
                     CreateVisitRequest r;
                     r.mutable_visit()->set_facility_id(f.id());
                     r.mutable_visit()->set_workers(-1);
                     Visit out;
                     return visits_->CreateVisit(As("collab1").get(), r, &out);
                   },
                   grpc::StatusCode::INVALID_ARGUMENT, "visit.workers: -1 is outside"});
  cases.push_back({[&] {
                     CreateVisitRequest r;
                     r.mutable_visit()->set_facility_id(f.id());
                     r.mutable_visit()->set_product_lines(-2);
                     Visit out;
                     return visits_->CreateVisit(As("collab1").get(), r, &out);
                   },
                   grpc::StatusCode::INVALID_ARGUMENT, "visit.product_lines: -2 is outside"});
  cases.push_back({[&] {
                     CreateVisitRequest r;
                     r.mutable_visit()->set_facility_id(f.id());
                     r.mutable_visit()->set_annual_output_vnd(-7);
                     Visit out;
                     return visits_->CreateVisit(As("collab1").get(), r, &out);
                   },
                   grpc::StatusCode::INVALID_ARGUMENT, "visit.annual_output_vnd: -7 is outside"});
  cases.push_back({[&] {
                     ListSupportRequestsRequest r;
                     r.set_status(static_cast<RequestStatus>(42));
                     ListSupportRequestsResponse out;
                     return requests_->ListSupportRequests(As("collab1").get(), r, &out);
                   },
                   grpc::StatusCode::INVALID_ARGUMENT, "status: unknown request status 42"});
  for (const Case& c : cases) {
    grpc::Status s = c.call();
    EXPECT_EQ(s.error_code(), c.code) << c.text << " got: " << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(c.text));
  }
  EXPECT_EQ(server_->store()->last_op(), before);
}

// A stock C++ client cannot even serialize invalid UTF-8 into a string field, so this one
// sends raw bytes: the server refuses the message before any handler runs.
TEST_F(RecordServicesTest, InvalidUtf8OnTheWireIsRefusedAndStoresNothing) {
  CreateFacilityRequest r;
  r.mutable_facility()->set_commune_id(c1_);
  r.mutable_facility()->set_name("AA");
  std::string bytes = r.SerializeAsString();
  const size_t at = bytes.find("AA");
  ASSERT_NE(at, std::string::npos);
  bytes[at] = '\xc3';
  bytes[at + 1] = '\x28';
  const uint64_t before = server_->store()->last_op();
  grpc::GenericStub stub(*channel_);
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", "Bearer " + tokens_["collab1"]);
  grpc::Slice slice(bytes);
  grpc::ByteBuffer request(&slice, 1), response;
  grpc::Status status;
  absl::Notification done;
  stub.UnaryCall(&ctx, "/kcnet.v1.FacilityService/CreateFacility", grpc::StubOptions(), &request,
                 &response, [&](grpc::Status s) {
                   status = s;
                   done.Notify();
                 });
  done.WaitForNotification();
  // protobuf refuses to parse it and gRPC 1.51's callback handler answers a bare
  // UNIMPLEMENTED; the server's interceptor turns that into a clear INVALID_ARGUMENT.
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("invalid UTF-8"));
  EXPECT_EQ(server_->store()->last_op(), before);

  // A method that does not exist still answers UNIMPLEMENTED.
  grpc::ClientContext ctx2;
  grpc::Slice slice2(bytes);
  grpc::ByteBuffer request2(&slice2, 1), response2;
  absl::Notification done2;
  stub.UnaryCall(&ctx2, "/kcnet.v1.FacilityService/NoSuchMethod", grpc::StubOptions(), &request2,
                 &response2, [&](grpc::Status s) {
                   status = s;
                   done2.Notify();
                 });
  done2.WaitForNotification();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
}

TEST_F(RecordServicesTest, APageTokenFromAnotherQueryIsRefused) {
  MakeFacility("collab1", c1_);
  MakeFacility("collab1", c1_);
  ListFacilitiesRequest r;
  r.set_page_size(1);
  ListFacilitiesResponse first;
  ASSERT_TRUE(facilities_->ListFacilities(As("coord1").get(), r, &first).ok());
  ASSERT_FALSE(first.next_page_token().empty());
  ListFacilitiesRequest other;
  other.set_page_size(1);
  other.set_org_unit_id(c1_);
  other.set_page_token(first.next_page_token());
  ListFacilitiesResponse out;
  grpc::Status s = facilities_->ListFacilities(As("coord1").get(), other, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("page_token:"));
  other.set_page_token("garbage!");
  s = facilities_->ListFacilities(As("coord1").get(), other, &out);
  EXPECT_THAT(s.error_message(), HasSubstr("page_token"));
}

}  // namespace
}  // namespace kcnet::server
