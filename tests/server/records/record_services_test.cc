// The record services against a real kcnet-server on port 0 over a real channel: the
// authorization matrix (every record RPC x every role x in scope / out of scope), the
// request life cycle end to end with its audit trail, and bad input.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kcnet/v1/record_export.grpc.pb.h"
#include "kcnet/v1/services.grpc.pb.h"
#include "server/app/kcnet_server.h"
#include "sync/hlc.h"
#include "sync/model/record_types.h"
#include "sync/schema.h"
#include "sync/server_store.h"
#include "tests/testing/test_plans.h"
#include "tests/testing/test_util.h"

namespace kcnet::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
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

// The review queue's filters are the server's (issue 16): for every filter, what
// ListSupportRequests lists (walked page by page) and CountSupportRequests counts equal
// what the unfiltered list holds that matches, computed here; scope holds as for org_unit_id.
TEST_F(RecordServicesTest, RequestFiltersAreAppliedByTheServerWithAnExactCount) {
  const Facility f1 = MakeFacility("collab1", c1_);
  const Facility f2 = MakeFacility("coord1", c2_);
  // A mix: two authors, two communes, two categories, proposed and approved funding.
  std::vector<std::string> made;
  for (int i = 0; i < 6; ++i) {
    CreateSupportRequestRequest req;
    req.mutable_support_request()->set_facility_id(i % 2 == 0 ? f1.id() : f2.id());
    req.mutable_support_request()->set_category(i % 3 == 0 ? SUPPORT_CATEGORY_TRAINING
                                                           : SUPPORT_CATEGORY_MACHINERY_TECHNOLOGY);
    req.mutable_support_request()->set_requested_amount_vnd(80000000 + i);
    req.mutable_support_request()->set_proposed_funding(i < 3 ? FUNDING_SOURCE_LOCAL
                                                              : FUNDING_SOURCE_NATIONAL);
    SupportRequest out;
    const std::string author = i == 2 ? "coord1" : (i % 2 == 0 ? "collab1" : "coord1");
    ASSERT_TRUE(requests_->CreateSupportRequest(As(author).get(), req, &out).ok());
    made.push_back(out.id());
  }
  // One approved with NATIONAL though it proposed LOCAL: funding is the approved one then.
  ASSERT_TRUE(Transition("collab1", "submit", made[0]).ok());
  ASSERT_TRUE(Transition("coord1", "endorse", made[0]).ok());
  ASSERT_TRUE(Transition("officer1", "approve", made[0]).ok());

  auto list = [&](const std::string& user, ListSupportRequestsRequest r, grpc::Status* status) {
    std::vector<SupportRequest> out;
    r.set_page_size(1);  // short pages: the filtered paging must not lose or repeat one
    while (true) {
      ListSupportRequestsResponse page;
      *status = requests_->ListSupportRequests(As(user).get(), r, &page);
      if (!status->ok()) return out;
      out.insert(out.end(), page.support_requests().begin(), page.support_requests().end());
      if (page.next_page_token().empty()) return out;
      r.set_page_token(page.next_page_token());
    }
  };
  auto count = [&](const std::string& user, const ListSupportRequestsRequest& r) {
    CountSupportRequestsResponse out;
    grpc::Status s = requests_->CountSupportRequests(As(user).get(), r, &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out.count();
  };
  auto ids = [](const std::vector<SupportRequest>& v) {
    std::vector<std::string> out;
    for (const SupportRequest& r : v) out.push_back(r.id());
    std::sort(out.begin(), out.end());
    return out;
  };
  grpc::Status s;
  const std::vector<SupportRequest> everything = list("officer1", {}, &s);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_GE(everything.size(), made.size());
  EXPECT_EQ(count("officer1", {}), static_cast<int64_t>(everything.size()));

  struct Case {
    const char* name;
    std::function<void(ListSupportRequestsRequest*)> set;
    std::function<bool(const SupportRequest&)> want;
  };
  const int64_t coord1 = users_["coord1"];
  const std::vector<Case> cases = {
      {"category", [](auto* r) { r->set_category(SUPPORT_CATEGORY_TRAINING); },
       [](const SupportRequest& r) { return r.category() == SUPPORT_CATEGORY_TRAINING; }},
      {"funding national", [](auto* r) { r->set_funding(FUNDING_SOURCE_NATIONAL); },
       [](const SupportRequest& r) {
         return (r.approved_funding() ? r.approved_funding() : r.proposed_funding()) ==
                FUNDING_SOURCE_NATIONAL;
       }},
      {"funding local", [](auto* r) { r->set_funding(FUNDING_SOURCE_LOCAL); },
       [](const SupportRequest& r) {
         return (r.approved_funding() ? r.approved_funding() : r.proposed_funding()) ==
                FUNDING_SOURCE_LOCAL;
       }},
      {"author", [=](auto* r) { r->set_author_id(coord1); },
       [=](const SupportRequest& r) { return r.author_id() == coord1; }},
      {"communes", [](auto* r) { r->add_commune_ids(c2_); },
       [](const SupportRequest& r) { return r.commune_id() == c2_; }},
      {"a commune of district 902", [](auto* r) { r->add_commune_ids(c3_); },
       [](const SupportRequest& r) { return r.commune_id() == c3_; }},
      {"everything at once",
       [=](auto* r) {
         r->set_funding(FUNDING_SOURCE_NATIONAL);
         r->set_category(SUPPORT_CATEGORY_MACHINERY_TECHNOLOGY);
         r->set_author_id(coord1);
         r->add_commune_ids(c2_);
         r->set_status(REQUEST_STATUS_DRAFT);
       },
       [=](const SupportRequest& r) {
         return r.proposed_funding() == FUNDING_SOURCE_NATIONAL && r.approved_funding() == 0 &&
                r.category() == SUPPORT_CATEGORY_MACHINERY_TECHNOLOGY && r.author_id() == coord1 &&
                r.commune_id() == c2_ && r.status() == REQUEST_STATUS_DRAFT;
       }},
      {"min age 0", [](auto* r) { r->set_min_age_days(0); },
       [](const SupportRequest&) { return true; }},
      {"min age 1 (all made today)", [](auto* r) { r->set_min_age_days(1); },
       [](const SupportRequest&) { return false; }},
  };
  for (const Case& c : cases) {
    ListSupportRequestsRequest r;
    c.set(&r);
    std::vector<SupportRequest> want;
    for (const SupportRequest& x : everything) {
      if (c.want(x)) want.push_back(x);
    }
    const std::vector<SupportRequest> got = list("officer1", r, &s);
    ASSERT_TRUE(s.ok()) << c.name << ": " << s.error_message();
    EXPECT_EQ(ids(got), ids(want)) << c.name;
    EXPECT_EQ(count("officer1", r), static_cast<int64_t>(want.size())) << c.name;
  }
  // The mix is not trivial: each filter kept some of the six and dropped others.
  ListSupportRequestsRequest national;
  national.set_funding(FUNDING_SOURCE_NATIONAL);
  const std::vector<std::string> n = ids(list("officer1", national, &s));
  EXPECT_TRUE(std::binary_search(n.begin(), n.end(), made[0])) << "approved NATIONAL";
  EXPECT_TRUE(std::binary_search(n.begin(), n.end(), made[3]));
  EXPECT_FALSE(std::binary_search(n.begin(), n.end(), made[1])) << "proposed LOCAL";

  // Scope: a commune of another district, or another province, is "not found" for coord1,
  // as a unit that does not exist; the count says the same.
  for (int64_t outside : {c3_, c9_, int64_t{987654321}}) {
    ListSupportRequestsRequest r;
    r.add_commune_ids(outside);
    list("coord1", r, &s);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << outside;
    EXPECT_THAT(s.error_message(), HasSubstr("commune_ids:"));
    CountSupportRequestsResponse out;
    EXPECT_EQ(requests_->CountSupportRequests(As("coord1").get(), r, &out).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  // commune_ids narrows org_unit_id, never widens it.
  ListSupportRequestsRequest narrowed;
  narrowed.set_org_unit_id(c1_);
  narrowed.add_commune_ids(c2_);
  EXPECT_TRUE(list("officer1", narrowed, &s).empty());
  EXPECT_TRUE(s.ok()) << s.error_message();

  // Bad values name the field.
  const std::vector<std::pair<std::string, std::function<void(ListSupportRequestsRequest*)>>> bad =
      {
          {"category:", [](auto* r) { r->set_category(static_cast<SupportCategory>(999)); }},
          {"funding:", [](auto* r) { r->set_funding(static_cast<FundingSource>(77)); }},
          {"author_id:", [](auto* r) { r->set_author_id(-5); }},
          {"min_age_days:", [](auto* r) { r->set_min_age_days(-1); }},
          {"min_age_days:", [](auto* r) { r->set_min_age_days(3651); }},
          {"commune_ids:", [](auto* r) { r->add_commune_ids(0); }},
          {"commune_ids:",
           [](auto* r) {
             for (int i = 0; i < 1001; ++i) r->add_commune_ids(c1_);
           }},
      };
  for (const auto& [field, set] : bad) {
    ListSupportRequestsRequest r;
    set(&r);
    ListSupportRequestsResponse out;
    s = requests_->ListSupportRequests(As("officer1").get(), r, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << field;
    EXPECT_THAT(s.error_message(), HasSubstr(field));
    CountSupportRequestsResponse counted;
    s = requests_->CountSupportRequests(As("officer1").get(), r, &counted);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << field;
    EXPECT_THAT(s.error_message(), HasSubstr(field));
  }
}

// The map's points (issue 16): in short pages, ListMapPoints gives every facility of the
// caller's scope that ListFacilities gives for the same filter, then every visit
// ListVisits gives in the dates, each once, and nothing of another area.
TEST_F(RecordServicesTest, MapPointsAreTheScopedFacilitiesThenVisitsInLargePages) {
  const Facility f1 = MakeFacility("collab1", c1_);
  const Facility f3 = MakeFacility("collab3", c3_);
  const Facility f9 = MakeFacility("collab9", c9_);
  std::vector<std::string> visit_ids;
  for (int i = 0; i < 3; ++i) {
    CreateVisitRequest r;
    r.mutable_visit()->set_facility_id(f1.id());
    r.mutable_visit()->set_purpose(VISIT_PURPOSE_SURVEY);
    r.mutable_visit()->set_visited_ms(1'700'000'000'000 + i * 86'400'000LL);
    if (i == 0) {
      r.mutable_visit()->set_latitude(21.5);
      r.mutable_visit()->set_longitude(105.5);
    }
    Visit out;
    ASSERT_TRUE(visits_->CreateVisit(As("collab1").get(), r, &out).ok());
    visit_ids.push_back(out.id());
  }
  CreateVisitRequest far;
  far.mutable_visit()->set_facility_id(f9.id());
  far.mutable_visit()->set_purpose(VISIT_PURPOSE_SURVEY);
  Visit far_visit;
  ASSERT_TRUE(visits_->CreateVisit(As("collab9").get(), far, &far_visit).ok());

  auto points = [&](const std::string& user, ListMapPointsRequest r, grpc::Status* s) {
    std::vector<MapPoint> out;
    while (true) {
      ListMapPointsResponse page;
      *s = facilities_->ListMapPoints(As(user).get(), r, &page);
      if (!s->ok()) return out;
      out.insert(out.end(), page.points().begin(), page.points().end());
      if (page.next_page_token().empty()) return out;
      r.set_page_token(page.next_page_token());
    }
  };
  auto ids_of = [](const std::vector<MapPoint>& v, MapPointType type) {
    std::vector<std::string> out;
    for (const MapPoint& p : v) {
      if (p.type() == type) out.push_back(p.id());
    }
    std::sort(out.begin(), out.end());
    return out;
  };
  for (const std::string user : {"coord1", "officer1", "collab9"}) {
    std::vector<std::string> want_facilities, want_visits;
    ListFacilitiesRequest lf;
    while (true) {
      ListFacilitiesResponse page;
      ASSERT_TRUE(facilities_->ListFacilities(As(user).get(), lf, &page).ok());
      for (const Facility& f : page.facilities()) want_facilities.push_back(f.id());
      if (page.next_page_token().empty()) break;
      lf.set_page_token(page.next_page_token());
    }
    ListVisitsRequest lv;
    while (true) {
      ListVisitsResponse page;
      ASSERT_TRUE(visits_->ListVisits(As(user).get(), lv, &page).ok());
      for (const Visit& v : page.visits()) want_visits.push_back(v.id());
      if (page.next_page_token().empty()) break;
      lv.set_page_token(page.next_page_token());
    }
    std::sort(want_facilities.begin(), want_facilities.end());
    std::sort(want_visits.begin(), want_visits.end());
    ListMapPointsRequest r;
    r.set_page_size(2);  // pages end inside each phase and between them
    grpc::Status s;
    const std::vector<MapPoint> got = points(user, r, &s);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(ids_of(got, MAP_POINT_TYPE_FACILITY), want_facilities) << user;
    EXPECT_EQ(ids_of(got, MAP_POINT_TYPE_VISIT), want_visits) << user;
    // Facilities first, then visits.
    auto first_visit = std::find_if(
        got.begin(), got.end(), [](const MapPoint& p) { return p.type() == MAP_POINT_TYPE_VISIT; });
    EXPECT_TRUE(std::all_of(first_visit, got.end(), [](const MapPoint& p) {
      return p.type() == MAP_POINT_TYPE_VISIT;
    })) << user;
  }
  // coord1's points: its facility with its position and name, not another district's.
  grpc::Status s;
  const std::vector<MapPoint> mine = points("coord1", {}, &s);
  ASSERT_TRUE(s.ok());
  auto find = [&](const std::string& id) {
    return std::find_if(mine.begin(), mine.end(), [&](const MapPoint& p) { return p.id() == id; });
  };
  ASSERT_NE(find(f1.id()), mine.end());
  EXPECT_EQ(find(f1.id())->name(), f1.name());
  EXPECT_DOUBLE_EQ(find(f1.id())->latitude(), 21.0);
  EXPECT_EQ(find(f3.id()), mine.end());
  EXPECT_EQ(find(far_visit.id()), mine.end());
  ASSERT_NE(find(visit_ids[0]), mine.end());
  EXPECT_EQ(find(visit_ids[0])->facility_id(), f1.id());
  EXPECT_DOUBLE_EQ(find(visit_ids[0])->latitude(), 21.5);
  // The dates: [from, to) keeps the middle visit only; facilities_only has no visit.
  ListMapPointsRequest dated;
  dated.set_visited_from_ms(1'700'000'000'000 + 86'400'000LL);
  dated.set_visited_to_ms(1'700'000'000'000 + 2 * 86'400'000LL);
  const std::vector<MapPoint> middle = points("collab1", dated, &s);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(ids_of(middle, MAP_POINT_TYPE_VISIT), std::vector<std::string>{visit_ids[1]});
  ListMapPointsRequest only;
  only.set_facilities_only(true);
  EXPECT_TRUE(ids_of(points("collab1", only, &s), MAP_POINT_TYPE_VISIT).empty());
  // The search and kind filters are the registry's.
  ListMapPointsRequest kind;
  kind.set_kind(FACILITY_KIND_ENTERPRISE);
  for (const MapPoint& p : points("coord1", kind, &s)) {
    EXPECT_NE(p.id(), f1.id()) << "f1 is a household business";
  }
  // Out of scope and bad input.
  ListMapPointsRequest other;
  other.set_org_unit_id(c9_);
  points("coord1", other, &s);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  for (const auto& [field, set] :
       std::vector<std::pair<std::string, std::function<void(ListMapPointsRequest*)>>>{
           {"page_size:", [](auto* r) { r->set_page_size(20001); }},
           {"kind:", [](auto* r) { r->set_kind(static_cast<FacilityKind>(99)); }},
           {"sector:", [](auto* r) { r->set_sector(static_cast<Sector>(99)); }},
           {"visited_from_ms:", [](auto* r) { r->set_visited_from_ms(-1); }},
           {"query:", [](auto* r) { r->set_query(std::string(201, 'a')); }},
           {"page_token:", [](auto* r) { r->set_page_token("garbage"); }},
       }) {
    ListMapPointsRequest r;
    set(&r);
    ListMapPointsResponse out;
    s = facilities_->ListMapPoints(As("coord1").get(), r, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << field;
    EXPECT_THAT(s.error_message(), HasSubstr(field));
  }
}

// The map's live update (issue 16): a full read's first page carries a checkpoint; asked
// with changed_since, ListMapPoints answers only what changed since (a new facility, a
// moved one with its visits, a new visit), within the caller's scope and filter, and a
// facility that left the filter as removed. A checkpoint is its caller's and its filter's.
TEST_F(RecordServicesTest, MapChangesSinceACheckpointAreThePatchOfTheFilter) {
  const Facility f1 = MakeFacility("collab1", c1_);
  ListMapPointsRequest full;
  ListMapPointsResponse first;
  ASSERT_TRUE(facilities_->ListMapPoints(As("coord1").get(), full, &first).ok());
  ASSERT_FALSE(first.checkpoint().empty());
  ListMapPointsRequest households;
  households.set_kind(FACILITY_KIND_HOUSEHOLD_BUSINESS);
  ListMapPointsResponse first_kind;
  ASSERT_TRUE(facilities_->ListMapPoints(As("coord1").get(), households, &first_kind).ok());
  // Nothing changed: an empty patch, and a checkpoint to go on from.
  auto since = [&](const std::string& user, ListMapPointsRequest r, const std::string& cp,
                   ListMapPointsResponse* out) {
    r.set_changed_since(cp);
    return facilities_->ListMapPoints(As(user).get(), r, out);
  };
  ListMapPointsResponse none;
  ASSERT_TRUE(since("coord1", full, first.checkpoint(), &none).ok());
  EXPECT_EQ(none.points_size(), 0);
  EXPECT_EQ(none.removed_size(), 0);
  EXPECT_FALSE(none.reload());
  ASSERT_FALSE(none.checkpoint().empty());
  // A new facility here and one in another district; f1 moves; a visit of f1 without GPS.
  const Facility f2 = MakeFacility("collab1", c1_);
  MakeFacility("collab9", c9_);
  UpdateFacilityRequest move;
  move.mutable_facility()->set_id(f1.id());
  move.mutable_facility()->set_latitude(21.25);
  move.mutable_facility()->set_kind(FACILITY_KIND_ENTERPRISE);
  move.mutable_update_mask()->add_paths("latitude");
  move.mutable_update_mask()->add_paths("kind");
  Facility moved;
  ASSERT_TRUE(facilities_->UpdateFacility(As("collab1").get(), move, &moved).ok());
  CreateVisitRequest cv;
  cv.mutable_visit()->set_facility_id(f1.id());
  cv.mutable_visit()->set_purpose(VISIT_PURPOSE_SURVEY);
  Visit visit;
  ASSERT_TRUE(visits_->CreateVisit(As("collab1").get(), cv, &visit).ok());
  ListMapPointsResponse patch;
  grpc::Status s = since("coord1", full, none.checkpoint(), &patch);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_FALSE(patch.reload());
  EXPECT_EQ(patch.removed_size(), 0);
  std::map<std::string, MapPoint> got;
  for (const MapPoint& p : patch.points()) got[p.id()] = p;
  EXPECT_EQ(got.size(), 3u);  // f1, f2 and the visit: not the other district's facility
  ASSERT_TRUE(got.contains(f1.id()));
  EXPECT_DOUBLE_EQ(got[f1.id()].latitude(), 21.25);
  ASSERT_TRUE(got.contains(f2.id()));
  ASSERT_TRUE(got.contains(visit.id()));
  EXPECT_EQ(got[visit.id()].facility_id(), f1.id());
  EXPECT_EQ(patch.points(patch.points_size() - 1).type(), MAP_POINT_TYPE_VISIT);  // last
  // The same changes under a kind filter: f1 is no household business any more.
  ListMapPointsResponse kind_patch;
  ASSERT_TRUE(since("coord1", households, first_kind.checkpoint(), &kind_patch).ok());
  ASSERT_EQ(kind_patch.removed_size(), 1);
  EXPECT_EQ(kind_patch.removed(0).id(), f1.id());
  EXPECT_EQ(kind_patch.removed(0).type(), MAP_POINT_TYPE_FACILITY);
  for (const MapPoint& p : kind_patch.points()) EXPECT_NE(p.id(), f1.id());
  // Another caller's or another filter's checkpoint is refused.
  ListMapPointsResponse refused;
  s = since("officer1", full, first.checkpoint(), &refused);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("changed_since:"));
  s = since("coord1", households, first.checkpoint(), &refused);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // From the patch's checkpoint: nothing more.
  ListMapPointsResponse after;
  ASSERT_TRUE(since("coord1", full, patch.checkpoint(), &after).ok());
  EXPECT_EQ(after.points_size() + after.removed_size(), 0);
}

// A visit or a facility deleted since the checkpoint (only a tablet's sync can delete one:
// here a tombstone applied to the store as the sync stream applies it) leaves the map:
// the patch names it in `removed`, with its type, and not in `points`.
TEST_F(RecordServicesTest, MapChangesRemoveADeletedVisitAndADeletedFacility) {
  const Facility kept = MakeFacility("collab1", c1_);
  const Facility gone = MakeFacility("collab1", c1_);
  Visit visit;
  {
    CreateVisitRequest cv;
    cv.mutable_visit()->set_facility_id(kept.id());
    cv.mutable_visit()->set_purpose(VISIT_PURPOSE_SURVEY);
    cv.mutable_visit()->set_latitude(21.01);
    cv.mutable_visit()->set_longitude(105.8);
    ASSERT_TRUE(visits_->CreateVisit(As("collab1").get(), cv, &visit).ok());
  }
  ListMapPointsRequest full;
  ListMapPointsResponse first;
  ASSERT_TRUE(facilities_->ListMapPoints(As("coord1").get(), full, &first).ok());
  std::set<std::string> on_map;
  for (const MapPoint& point : first.points()) on_map.insert(point.id());
  ASSERT_TRUE(on_map.contains(visit.id()));
  ASSERT_TRUE(on_map.contains(gone.id()));

  // The tablet deletes the visit and the second facility.
  sync::ServerStore* store = server_->store();
  MutationBatch batch;
  Mutation* mutation = batch.add_mutations();
  for (const auto& [type, id] :
       {std::pair{model::kVisitType, visit.id()}, std::pair{model::kFacilityType, gone.id()}}) {
    RecordChange* tomb = mutation->add_changes();
    tomb->set_type(type);
    tomb->set_id(*sync::UuidFromText(id));
    tomb->set_deleted(true);
    tomb->set_hlc(store->clock().Now());
    auto seen = store->ReadRecord(type, tomb->id());  // the tablet had the record
    ASSERT_TRUE(seen.ok() && seen->has_value());
    tomb->set_base_op((*seen)->op());
  }
  absl::StatusOr<PushAck> ack =
      store->Apply(sync::Writer{"", sync::NodeIdFor("tablet-map")}, batch);
  ASSERT_TRUE(ack.ok()) << ack.status();
  ASSERT_EQ(ack->results_size(), 1);
  ASSERT_EQ(ack->results(0).outcome(), MUTATION_OUTCOME_APPLIED) << ack->results(0).reason();

  ListMapPointsRequest since = full;
  since.set_changed_since(first.checkpoint());
  ListMapPointsResponse patch;
  grpc::Status s = facilities_->ListMapPoints(As("coord1").get(), since, &patch);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_FALSE(patch.reload());
  std::map<std::string, MapPointType> removed;
  for (const MapPoint& point : patch.removed()) removed[point.id()] = point.type();
  EXPECT_EQ(removed.size(), 2u);
  EXPECT_EQ(removed[visit.id()], MAP_POINT_TYPE_VISIT);
  EXPECT_EQ(removed[gone.id()], MAP_POINT_TYPE_FACILITY);
  for (const MapPoint& point : patch.points()) {
    EXPECT_NE(point.id(), visit.id());
    EXPECT_NE(point.id(), gone.id());
  }
  // A full read agrees: the kept facility is there, the deleted records are not.
  ListMapPointsResponse again;
  ASSERT_TRUE(facilities_->ListMapPoints(As("coord1").get(), full, &again).ok());
  on_map.clear();
  for (const MapPoint& point : again.points()) on_map.insert(point.id());
  EXPECT_TRUE(on_map.contains(kept.id()));
  EXPECT_FALSE(on_map.contains(visit.id()));
  EXPECT_FALSE(on_map.contains(gone.id()));
}

// A coordinator whose review area changes (areas are regrouped after the 2025 reform)
// must not keep on its map the points of the communes it no longer covers: a checkpoint
// made for other communes answers `reload`, and the map is read again in the new area.
TEST_F(RecordServicesTest, MapChangesSayReloadWhenTheCallersAreaChanged) {
  Directory* d = server_->directory();
  const int64_t district1 = d->GetOrgUnit(c1_)->parent_id();
  const int64_t district2 = d->GetOrgUnit(c3_)->parent_id();
  absl::StatusOr<User> user = d->CreateUser("coord_moved", "Điều Phối Chuyển Vùng", "password-123",
                                            ROLE_DISTRICT_COORDINATOR, {district1});
  ASSERT_TRUE(user.ok()) << user.status();
  {
    auto auth = AuthService::NewStub(*channel_);
    grpc::ClientContext ctx;
    LoginRequest req;
    req.set_username("coord_moved");
    req.set_password("password-123");
    LoginResponse resp;
    ASSERT_TRUE(auth->Login(&ctx, req, &resp).ok());
    tokens_["coord_moved"] = resp.token();
  }
  const Facility here = MakeFacility("collab1", c1_);
  ListMapPointsRequest full;
  ListMapPointsResponse first;
  ASSERT_TRUE(facilities_->ListMapPoints(As("coord_moved").get(), full, &first).ok());
  bool seen = false;
  for (const MapPoint& point : first.points()) seen = seen || point.id() == here.id();
  ASSERT_TRUE(seen);
  auto since = [&](const std::string& cp, ListMapPointsResponse* out) {
    ListMapPointsRequest r = full;
    r.set_changed_since(cp);
    return facilities_->ListMapPoints(As("coord_moved").get(), r, out);
  };
  ListMapPointsResponse same_area;
  ASSERT_TRUE(since(first.checkpoint(), &same_area).ok());
  EXPECT_FALSE(same_area.reload());

  // The coordinator now reviews the other district: commune 90101 is off its map.
  ASSERT_TRUE(d->AssignUser(user->id(), ROLE_DISTRICT_COORDINATOR, {district2}).ok());
  ListMapPointsResponse moved;
  grpc::Status s = since(same_area.checkpoint(), &moved);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(moved.reload()) << "a patch would leave the old area's points on the map";
  EXPECT_EQ(moved.points_size() + moved.removed_size(), 0);
  // Read again: the new area only, and live updates go on from its checkpoint.
  ListMapPointsResponse again;
  ASSERT_TRUE(facilities_->ListMapPoints(As("coord_moved").get(), full, &again).ok());
  for (const MapPoint& point : again.points()) EXPECT_NE(point.id(), here.id());
  ListMapPointsResponse after;
  ASSERT_TRUE(since(again.checkpoint(), &after).ok());
  EXPECT_FALSE(after.reload());
}

// The live update under the queue's filter: a request that comes to match brings its
// facility (with its visits); one that stops matching takes its facility away.
TEST_F(RecordServicesTest, MapChangesFollowTheQueueFilter) {
  const Facility with = MakeFacility("collab1", c1_);
  const Facility later = MakeFacility("collab1", c1_);
  auto draft = [&](const Facility& f) {
    CreateSupportRequestRequest create;
    create.mutable_support_request()->set_facility_id(f.id());
    create.mutable_support_request()->set_category(SUPPORT_CATEGORY_CLEANER_PRODUCTION);
    create.mutable_support_request()->set_description("Lò đốt trấu sạch");
    create.mutable_support_request()->set_requested_amount_vnd(30000000);
    SupportRequest out;
    EXPECT_TRUE(requests_->CreateSupportRequest(As("collab1").get(), create, &out).ok());
    return out;
  };
  const SupportRequest first = draft(with);
  CreateVisitRequest cv;
  cv.mutable_visit()->set_facility_id(later.id());
  cv.mutable_visit()->set_purpose(VISIT_PURPOSE_FOLLOW_UP);
  Visit visit;
  ASSERT_TRUE(visits_->CreateVisit(As("collab1").get(), cv, &visit).ok());
  ListMapPointsRequest map;
  map.mutable_requests()->set_category(SUPPORT_CATEGORY_CLEANER_PRODUCTION);
  map.mutable_requests()->set_status(REQUEST_STATUS_DRAFT);
  ListMapPointsResponse full;
  ASSERT_TRUE(facilities_->ListMapPoints(As("coord1").get(), map, &full).ok());
  ASSERT_EQ(full.points_size(), 1);  // `with`, no visit
  // A draft for `later`: it joins, with its visit.
  draft(later);
  ListMapPointsRequest since = map;
  since.set_changed_since(full.checkpoint());
  ListMapPointsResponse joined;
  grpc::Status s = facilities_->ListMapPoints(As("coord1").get(), since, &joined);
  ASSERT_TRUE(s.ok()) << s.error_message();
  std::set<std::string> ids;
  for (const MapPoint& p : joined.points()) ids.insert(p.id());
  EXPECT_EQ(ids, (std::set<std::string>{later.id(), visit.id()}));
  EXPECT_EQ(joined.removed_size(), 0);
  // `with`'s only draft is submitted: no longer a draft, its facility leaves the map.
  TransitionRequest submit;
  submit.set_id(first.id());
  SupportRequest submitted;
  s = requests_->SubmitSupportRequest(As("collab1").get(), submit, &submitted);
  ASSERT_TRUE(s.ok()) << s.error_message();
  since.set_changed_since(joined.checkpoint());
  ListMapPointsResponse left;
  ASSERT_TRUE(facilities_->ListMapPoints(As("coord1").get(), since, &left).ok());
  EXPECT_EQ(left.points_size(), 0);
  ASSERT_EQ(left.removed_size(), 1);
  EXPECT_EQ(left.removed(0).id(), with.id());
}

// Record exports (issue 16): the rows of ExportRecords are the records the lists give for
// the same filter and scope; CSV has a BOM; XLSX is a zip; bad input names the field.
TEST_F(RecordServicesTest, RecordExportsHonourTheFiltersAndTheScope) {
  const Facility f1 = MakeFacility("collab1", c1_);
  const Facility f9 = MakeFacility("collab9", c9_);
  const SupportRequest r1 = MakeRequest("collab1", f1);
  const SupportRequest r9 = MakeRequest("collab9", f9);
  auto stub = RecordExportService::NewStub(*channel_);
  auto run = [&](const std::string& user, const ExportRecordsRequest& req, std::string* name,
                 grpc::Status* status) {
    auto ctx = As(user);
    std::unique_ptr<grpc::ClientReader<ExportChunk>> reader = stub->ExportRecords(ctx.get(), req);
    std::string bytes;
    ExportChunk chunk;
    while (reader->Read(&chunk)) {
      if (!chunk.file_name().empty()) *name = chunk.file_name();
      bytes += chunk.data();
    }
    *status = reader->Finish();
    return bytes;
  };
  // Requests, CSV, with the queue's filter: exactly the ids ListSupportRequests gives.
  ExportRecordsRequest req;
  req.set_type(EXPORT_RECORD_TYPE_REQUESTS);
  req.set_format(EXPORT_FORMAT_CSV);
  req.mutable_requests()->set_status(REQUEST_STATUS_DRAFT);
  req.mutable_requests()->set_category(SUPPORT_CATEGORY_MACHINERY_TECHNOLOGY);
  std::string name;
  grpc::Status s;
  const std::string csv = run("officer1", req, &name, &s);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(name, "de-nghi-ho-tro.csv");
  ASSERT_EQ(csv.substr(0, 3), "\xEF\xBB\xBF") << "UTF-8 BOM";
  std::vector<std::string> exported;
  const std::string body = csv.substr(3);
  for (absl::string_view line : absl::StrSplit(body, "\r\n", absl::SkipEmpty())) {
    exported.push_back(std::string(line.substr(0, line.find(','))));
  }
  ASSERT_FALSE(exported.empty());
  exported.erase(exported.begin());  // the header
  std::vector<std::string> listed;
  ListSupportRequestsRequest lr = req.requests();
  while (true) {
    ListSupportRequestsResponse page;
    ASSERT_TRUE(requests_->ListSupportRequests(As("officer1").get(), lr, &page).ok());
    for (const SupportRequest& r : page.support_requests()) listed.push_back(r.id());
    if (page.next_page_token().empty()) break;
    lr.set_page_token(page.next_page_token());
  }
  std::sort(exported.begin(), exported.end());
  std::sort(listed.begin(), listed.end());
  EXPECT_EQ(exported, listed);
  EXPECT_TRUE(std::binary_search(exported.begin(), exported.end(), r1.id()));
  EXPECT_FALSE(std::binary_search(exported.begin(), exported.end(), r9.id())) << "province 91";
  // Facilities of coord1, XLSX: a zip (PK) with its facility, never another province's.
  ExportRecordsRequest fx;
  fx.set_type(EXPORT_RECORD_TYPE_FACILITIES);
  fx.set_format(EXPORT_FORMAT_XLSX);
  const std::string xlsx = run("coord1", fx, &name, &s);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(name, "co-so.xlsx");
  EXPECT_EQ(xlsx.substr(0, 2), "PK");
  fx.set_format(EXPORT_FORMAT_CSV);
  const std::string facilities_csv = run("coord1", fx, &name, &s);
  ASSERT_TRUE(s.ok());
  EXPECT_NE(facilities_csv.find(f1.id()), std::string::npos);
  EXPECT_EQ(facilities_csv.find(f9.id()), std::string::npos);
  EXPECT_NE(facilities_csv.find("Xã Một"), std::string::npos) << "the commune's name";
  // Bad input and scope.
  struct Bad {
    std::string field;
    grpc::StatusCode code;
    std::function<void(ExportRecordsRequest*)> set;
  };
  for (const Bad& b : std::vector<Bad>{
           {"format:", grpc::StatusCode::INVALID_ARGUMENT,
            [](ExportRecordsRequest* r) { r->set_format(EXPORT_FORMAT_UNSPECIFIED); }},
           {"type:", grpc::StatusCode::INVALID_ARGUMENT,
            [](ExportRecordsRequest* r) { r->set_type(EXPORT_RECORD_TYPE_UNSPECIFIED); }},
           {"requests.category:", grpc::StatusCode::INVALID_ARGUMENT,
            [](ExportRecordsRequest* r) {
              r->set_type(EXPORT_RECORD_TYPE_REQUESTS);
              r->mutable_requests()->set_category(static_cast<SupportCategory>(99));
            }},
           {"kind:", grpc::StatusCode::INVALID_ARGUMENT,
            [](ExportRecordsRequest* r) { r->set_kind(static_cast<FacilityKind>(99)); }},
           {"org_unit_id:", grpc::StatusCode::NOT_FOUND,
            [](ExportRecordsRequest* r) { r->set_org_unit_id(c9_); }},
           {"requests.commune_ids:", grpc::StatusCode::NOT_FOUND,
            [](ExportRecordsRequest* r) {
              r->set_type(EXPORT_RECORD_TYPE_REQUESTS);
              r->mutable_requests()->add_commune_ids(c9_);
            }},
       }) {
    ExportRecordsRequest r;
    r.set_type(EXPORT_RECORD_TYPE_FACILITIES);
    r.set_format(EXPORT_FORMAT_CSV);
    b.set(&r);
    run("coord1", r, &name, &s);
    EXPECT_EQ(s.error_code(), b.code) << b.field;
    EXPECT_THAT(s.error_message(), HasSubstr(b.field));
  }
  run("", fx, &name, &s);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

// Every chunk of an export call, concatenated; the file's name and the call's status.
std::string ReadExport(RecordExportService::Stub& stub, grpc::ClientContext* ctx,
                       const ExportRecordsRequest& req, std::string* name, grpc::Status* status) {
  std::unique_ptr<grpc::ClientReader<ExportChunk>> reader = stub.ExportRecords(ctx, req);
  std::string bytes;
  ExportChunk chunk;
  while (reader->Read(&chunk)) {
    if (!chunk.file_name().empty()) *name = chunk.file_name();
    bytes += chunk.data();
  }
  *status = reader->Finish();
  return bytes;
}

// The first field of each CSV line after the header (the record ids), sorted.
std::vector<std::string> CsvIds(const std::string& csv) {
  std::vector<std::string> ids;
  for (absl::string_view line : absl::StrSplit(csv.substr(3), "\r\n", absl::SkipEmpty())) {
    ids.push_back(std::string(line.substr(0, line.find(','))));
  }
  if (!ids.empty()) ids.erase(ids.begin());
  std::sort(ids.begin(), ids.end());
  return ids;
}

// The visits of a registry search: read facility by facility (issue 16: a search matching
// a tenth of a province reads a tenth of its visits), they are exactly the rows of the
// unfiltered export whose facility matches, in the dates asked, grouped by facility.
TEST_F(RecordServicesTest, VisitExportOfASearchHasEveryVisitOfItsFacilitiesOnly) {
  auto make = [&](const std::string& user, int64_t commune, const std::string& name) {
    CreateFacilityRequest req;
    req.mutable_facility()->set_commune_id(commune);
    req.mutable_facility()->set_name(name);
    req.mutable_facility()->set_kind(FACILITY_KIND_HOUSEHOLD_BUSINESS);
    Facility out;
    grpc::Status s = facilities_->CreateFacility(As(user).get(), req, &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  };
  const Facility kiln1 = make("collab1", c1_, "Lò gốm Phù Lãng");
  const Facility kiln2 = make("collab3", c3_, "Gốm Phù Lãng Hai");
  const Facility other = make("collab1", c1_, "Cơ sở mây tre Phú Lâm");
  std::set<std::string> want;
  int64_t day = 1'710'000'000'000;
  for (const auto& [f, user, n] : std::vector<std::tuple<Facility, std::string, int>>{
           {kiln1, "collab1", 3}, {other, "collab1", 2}, {kiln2, "collab3", 2}}) {
    for (int i = 0; i < n; ++i) {
      CreateVisitRequest r;
      r.mutable_visit()->set_facility_id(f.id());
      r.mutable_visit()->set_purpose(VISIT_PURPOSE_FOLLOW_UP);
      r.mutable_visit()->set_visited_ms(day += 86'400'000);
      Visit out;
      grpc::Status s = visits_->CreateVisit(As(user).get(), r, &out);
      ASSERT_TRUE(s.ok()) << s.error_message();
      if (f.id() != other.id()) want.insert(out.id());
    }
  }
  auto stub = RecordExportService::NewStub(*channel_);
  // Each exported row's (visit id, facility id), in the file's order.
  auto rows = [&](const ExportRecordsRequest& req) {
    std::string name;
    grpc::Status s;
    const std::string csv = ReadExport(*stub, As("officer1").get(), req, &name, &s);
    EXPECT_TRUE(s.ok()) << s.error_message();
    std::vector<std::pair<std::string, std::string>> out;
    for (absl::string_view line : absl::StrSplit(csv.substr(3), "\r\n", absl::SkipEmpty())) {
      std::vector<std::string> cells = absl::StrSplit(line, absl::MaxSplits(',', 2));
      if (cells.size() >= 2) out.emplace_back(cells[0], cells[1]);
    }
    if (!out.empty()) out.erase(out.begin());  // the header
    return out;
  };
  ExportRecordsRequest all;
  all.set_type(EXPORT_RECORD_TYPE_VISITS);
  all.set_format(EXPORT_FORMAT_CSV);
  ExportRecordsRequest search = all;
  search.set_query("phu lang");
  std::set<std::string> oracle;
  for (const auto& [visit, facility] : rows(all)) {
    if (facility == kiln1.id() || facility == kiln2.id()) oracle.insert(visit);
  }
  EXPECT_EQ(oracle, want);
  const auto found = rows(search);
  std::set<std::string> found_ids;
  int groups = 0;
  for (size_t i = 0; i < found.size(); ++i) {
    found_ids.insert(found[i].first);
    if (i == 0 || found[i].second != found[i - 1].second) ++groups;
  }
  EXPECT_EQ(found.size(), want.size()) << "no visit twice";
  EXPECT_EQ(found_ids, want);
  EXPECT_EQ(groups, 2) << "grouped by facility";
  // The dates still hold: only the last of kiln1's visits and kiln2's.
  search.set_visited_from_ms(1'710'000'000'000 + 3 * 86'400'000);
  std::set<std::string> dated;
  for (const auto& [visit, facility] : rows(search)) dated.insert(visit);
  EXPECT_EQ(dated.size(), 3u);
  // Another province's officer: nothing of these.
  std::string name;
  grpc::Status s;
  const std::string foreign = ReadExport(*stub, As("officer9").get(), search, &name, &s);
  for (const std::string& id : want) EXPECT_THAT(foreign, Not(HasSubstr(id)));
}

// Saved filters carry everywhere (issue 16): with the review queue's filter, the map's
// points are the facilities of the requests that ListSupportRequests gives for it (and
// their visits), filtered by the server, and the facility and visit exports are the same.
TEST_F(RecordServicesTest, MapPointsAndExportsFollowTheQueueFilter) {
  const Facility with = MakeFacility("collab1", c1_);
  const Facility without = MakeFacility("collab1", c1_);
  CreateSupportRequestRequest create;
  create.mutable_support_request()->set_facility_id(with.id());
  create.mutable_support_request()->set_category(SUPPORT_CATEGORY_CLEANER_PRODUCTION);
  create.mutable_support_request()->set_description("Lò đốt trấu sạch");
  create.mutable_support_request()->set_requested_amount_vnd(30000000);
  SupportRequest request;
  ASSERT_TRUE(requests_->CreateSupportRequest(As("collab1").get(), create, &request).ok());
  std::map<std::string, std::string> visit_of;  // facility id -> its visit's id
  for (const Facility* f : {&with, &without}) {
    CreateVisitRequest r;
    r.mutable_visit()->set_facility_id(f->id());
    r.mutable_visit()->set_purpose(VISIT_PURPOSE_FOLLOW_UP);
    r.mutable_visit()->set_visited_ms(1'710'000'000'000);
    Visit out;
    ASSERT_TRUE(visits_->CreateVisit(As("collab1").get(), r, &out).ok());
    visit_of[f->id()] = out.id();
  }
  ListSupportRequestsRequest filter;
  filter.set_category(SUPPORT_CATEGORY_CLEANER_PRODUCTION);
  filter.set_status(REQUEST_STATUS_DRAFT);
  filter.add_commune_ids(c1_);
  // The oracle: the facilities of the requests the queue lists for this filter.
  std::set<std::string> want;
  ListSupportRequestsRequest lr = filter;
  while (true) {
    ListSupportRequestsResponse page;
    ASSERT_TRUE(requests_->ListSupportRequests(As("coord1").get(), lr, &page).ok());
    for (const SupportRequest& r : page.support_requests()) want.insert(r.facility_id());
    if (page.next_page_token().empty()) break;
    lr.set_page_token(page.next_page_token());
  }
  ASSERT_TRUE(want.count(with.id()));
  ASSERT_FALSE(want.count(without.id()));

  ListMapPointsRequest map;
  *map.mutable_requests() = filter;
  map.set_page_size(1);  // the filter holds across pages
  std::set<std::string> facilities, visits, visit_facilities;
  grpc::Status s;
  while (true) {
    ListMapPointsResponse page;
    s = facilities_->ListMapPoints(As("coord1").get(), map, &page);
    ASSERT_TRUE(s.ok()) << s.error_message();
    for (const MapPoint& p : page.points()) {
      if (p.type() == MAP_POINT_TYPE_FACILITY) facilities.insert(p.id());
      if (p.type() == MAP_POINT_TYPE_VISIT) {
        visits.insert(p.id());
        visit_facilities.insert(p.facility_id());
      }
    }
    if (page.next_page_token().empty()) break;
    map.set_page_token(page.next_page_token());
  }
  EXPECT_EQ(facilities, want);
  EXPECT_TRUE(
      std::includes(want.begin(), want.end(), visit_facilities.begin(), visit_facilities.end()))
      << "only visits of the filter's facilities";
  EXPECT_TRUE(visits.count(visit_of[with.id()]));
  EXPECT_FALSE(visits.count(visit_of[without.id()]));

  // The exports of the map's filter: the same facilities, the same visits.
  auto stub = RecordExportService::NewStub(*channel_);
  ExportRecordsRequest fx;
  fx.set_type(EXPORT_RECORD_TYPE_FACILITIES);
  fx.set_format(EXPORT_FORMAT_CSV);
  *fx.mutable_requests() = filter;
  std::string name;
  const std::vector<std::string> exported =
      CsvIds(ReadExport(*stub, As("coord1").get(), fx, &name, &s));
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(exported, std::vector<std::string>(want.begin(), want.end()));
  fx.set_type(EXPORT_RECORD_TYPE_VISITS);
  const std::vector<std::string> exported_visits =
      CsvIds(ReadExport(*stub, As("coord1").get(), fx, &name, &s));
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(exported_visits, std::vector<std::string>(visits.begin(), visits.end()));

  // The collaborator of the filter: only that collaborator's visits.
  ListMapPointsRequest by_other;
  *by_other.mutable_requests() = filter;
  by_other.mutable_requests()->set_author_id(users_["collab3"]);
  ListMapPointsResponse none;
  ASSERT_TRUE(facilities_->ListMapPoints(As("officer1").get(), by_other, &none).ok());
  for (const MapPoint& p : none.points()) EXPECT_NE(p.id(), with.id()) << "collab1's request";

  // Bad input names the nested field; another area is NOT_FOUND, as for the queue.
  for (const auto& [field, code, set] :
       std::vector<std::tuple<std::string, grpc::StatusCode,
                              std::function<void(ListSupportRequestsRequest*)>>>{
           {"requests.status:", grpc::StatusCode::INVALID_ARGUMENT,
            [](auto* r) { r->set_status(static_cast<RequestStatus>(99)); }},
           {"requests.min_age_days:", grpc::StatusCode::INVALID_ARGUMENT,
            [](auto* r) { r->set_min_age_days(-1); }},
           {"requests.commune_ids:", grpc::StatusCode::NOT_FOUND,
            [](auto* r) { r->add_commune_ids(c9_); }},
       }) {
    ListMapPointsRequest bad;
    set(bad.mutable_requests());
    ListMapPointsResponse out;
    s = facilities_->ListMapPoints(As("coord1").get(), bad, &out);
    EXPECT_EQ(s.error_code(), code) << field;
    EXPECT_THAT(s.error_message(), HasSubstr(field));
    ExportRecordsRequest bad_export = fx;
    set(bad_export.mutable_requests());
    ReadExport(*stub, As("coord1").get(), bad_export, &name, &s);
    EXPECT_EQ(s.error_code(), code) << field;
    EXPECT_THAT(s.error_message(), HasSubstr(field));
  }
}

// Exports speak Vietnamese (issue 16): enum values as the console's labels, Vietnamese by
// default and English on request; in XLSX money is a number in the đồng format and dates
// are dates. The files are read back (CSV as text, XLSX unzipped).
TEST_F(RecordServicesTest, ExportsWriteVietnameseLabelsAndReadBack) {
  const Facility f = MakeFacility("collab1", c1_);
  const SupportRequest r = MakeRequest("collab1", f);  // draft, machinery, local, 80,000,000
  auto stub = RecordExportService::NewStub(*channel_);
  ExportRecordsRequest req;
  req.set_type(EXPORT_RECORD_TYPE_REQUESTS);
  req.set_format(EXPORT_FORMAT_CSV);
  req.mutable_requests()->set_facility_id(f.id());
  std::string name;
  grpc::Status s;
  const std::string vi = ReadExport(*stub, As("coord1").get(), req, &name, &s);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const std::vector<std::string> lines = absl::StrSplit(vi.substr(3), "\r\n", absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u) << vi;
  EXPECT_THAT(lines[0], HasSubstr("Trạng thái / Status"));
  EXPECT_THAT(lines[1], HasSubstr(",\"Máy móc, công nghệ\",Nháp,80000000,"));
  EXPECT_THAT(lines[1], HasSubstr(",Ngân sách địa phương,"));
  EXPECT_EQ(lines[1].find("DRAFT"), std::string::npos);
  req.set_language("en");
  const std::string en = ReadExport(*stub, As("coord1").get(), req, &name, &s);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_THAT(en, HasSubstr(",Machinery and technology,Draft,80000000,"));
  EXPECT_THAT(en, HasSubstr(",Local budget,"));
  EXPECT_THAT(en, HasSubstr("Trạng thái / Status")) << "headers stay Vietnamese first";
  req.set_language("fr");
  ReadExport(*stub, As("coord1").get(), req, &name, &s);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("language:"));

  // XLSX, read back with unzip.
  req.set_language("");
  req.set_format(EXPORT_FORMAT_XLSX);
  const std::string xlsx = ReadExport(*stub, As("coord1").get(), req, &name, &s);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(name, "de-nghi-ho-tro.xlsx");
  kcnet::testing::TempDir dir;
  const std::string path = dir.path() + "/export.xlsx";
  std::ofstream(path, std::ios::binary) << xlsx;
  auto unzip = [&](const std::string& member) {
    std::string out;
    std::FILE* pipe = popen(("unzip -p '" + path + "' " + member).c_str(), "r");
    if (pipe == nullptr) return out;
    char buf[4096];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
    pclose(pipe);
    return out;
  };
  const std::string sheet = unzip("xl/worksheets/sheet1.xml");
  const std::string styles = unzip("xl/styles.xml");
  ASSERT_FALSE(sheet.empty()) << "the workbook has its sheet";
  EXPECT_THAT(sheet, HasSubstr(r.id()));
  EXPECT_THAT(sheet, HasSubstr("Nháp"));
  EXPECT_THAT(sheet, HasSubstr("Máy móc, công nghệ"));
  EXPECT_THAT(sheet, HasSubstr("Ngân sách địa phương"));
  // F2, the requested amount: a number with a style (the đồng format); K2, created: a date
  // (a serial day number with the dd/mm/yyyy style).
  EXPECT_THAT(sheet, ::testing::ContainsRegex("<c r=\"F2\" s=\"[0-9]+\"><v>80000000</v></c>"));
  EXPECT_THAT(sheet, ::testing::ContainsRegex("<c r=\"K2\" s=\"[0-9]+\"><v>[0-9]+</v></c>"));
  EXPECT_THAT(styles, HasSubstr("formatCode=\"dd/mm/yyyy\""));
  EXPECT_THAT(styles, HasSubstr("₫"));
}

}  // namespace
}  // namespace kcnet::server
