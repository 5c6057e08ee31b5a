// The field scenario of `kcnet demo` driven through kcnet::sdk::Client against a real
// KcnetServer on port 0 (in process): two collaborator tablets of one commune work offline
// (facilities, visits, requests drafted and submitted), reconnect; the district coordinator
// endorses one request and returns the other; the province officer approves the endorsed
// one; both tablets edit the same facility offline and converge with a conflict report;
// finally every store's checkpoints equal the server's, commune by commune.
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kcnet/client.h"
#include "server/app/kcnet_server.h"
#include "tests/testing/test_plans.h"
#include "tests/testing/test_server.h"
#include "tests/testing/test_util.h"

namespace kcnet::sdk {
namespace {

using ::testing::Contains;
using ::testing::Not;
using namespace ::kcnet::v1;  // NOLINT: messages and enum constants

constexpr char kPassword[] = "password-123";

template <typename T>
T Ok(absl::StatusOr<T> v) {
  EXPECT_TRUE(v.ok()) << v.status();
  return v.ok() ? *std::move(v) : T();
}

std::vector<std::string> Ids(const std::vector<SupportRequest>& requests) {
  std::vector<std::string> ids;
  for (const SupportRequest& r : requests) ids.push_back(r.id());
  return ids;
}

class FieldScenarioTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server::ServerOptions options =
        kcnet::testing::TestServerOptions(dir_.File("server"), "127.0.0.1:0");
    absl::StatusOr<std::unique_ptr<server::KcnetServer>> server =
        server::KcnetServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    address_ = absl::StrCat("127.0.0.1:", server_->port());
    server::Directory* d = server_->directory();
    const int64_t province = d->CreateOrgUnit("90", "Tỉnh Demo", ORG_UNIT_LEVEL_PROVINCE, 0)->id();
    const int64_t district =
        d->CreateOrgUnit("901", "Huyện Đông Demo", ORG_UNIT_LEVEL_DISTRICT, province)->id();
    commune_ = d->CreateOrgUnit("90101", "Xã An Bình Demo", ORG_UNIT_LEVEL_COMMUNE, district)->id();
    other_commune_ =
        d->CreateOrgUnit("90102", "Xã Phú Lộc Demo", ORG_UNIT_LEVEL_COMMUNE, district)->id();
    for (const auto& [name, role, unit] : std::vector<std::tuple<std::string, Role, int64_t>>{
             {"collab1", ROLE_COMMUNE_COLLABORATOR, commune_},
             {"collab3", ROLE_COMMUNE_COLLABORATOR, commune_},
             {"coord1", ROLE_DISTRICT_COORDINATOR, district},
             {"officer1", ROLE_PROVINCE_OFFICER, province}}) {
      ASSERT_TRUE(d->CreateUser(name, name, kPassword, role, {unit}).ok()) << name;
    }
    // Approvals draw on the province's plan (server/plans).
    ASSERT_TRUE(kcnet::testing::SeedPlan(*server_, province).ok());
  }

  void TearDown() override {
    devices_.clear();
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(1));
  }

  // Opens (or reopens) `device`'s store, online or offline (no server address).
  Client* Open(const std::string& device, bool online) {
    devices_.erase(device);
    ClientOptions o;
    o.path = dir_.File(device + ".db");
    o.device_id = device;
    o.server_address = online ? address_ : "";
    o.durable = false;
    o.sync_timeout = absl::Seconds(30);
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Open(o);
    EXPECT_TRUE(client.ok()) << device << ": " << client.status();
    if (!client.ok()) return nullptr;
    Client* raw = client->get();
    devices_[device] = *std::move(client);
    return raw;
  }

  Client* SignedIn(const std::string& device, const std::string& user) {
    Client* client = Open(device, true);
    if (client == nullptr) return nullptr;
    absl::Status status = client->SignIn(user, kPassword);
    EXPECT_TRUE(status.ok()) << device << ": " << status;
    return client;
  }

  SyncSummary Sync(Client* client) {
    absl::StatusOr<SyncSummary> summary = client->SyncNow();
    EXPECT_TRUE(summary.ok()) << summary.status();
    return summary.ok() ? *std::move(summary) : SyncSummary();
  }

  // A facility, a visit and a submitted request, offline; returns {facility, request}.
  std::pair<std::string, std::string> FieldWork(Client* c, const std::string& name,
                                                SupportCategory category, int64_t amount) {
    Facility f;
    f.set_commune_id(commune_);
    f.set_name(name);
    f.set_owner_name("Nguyễn Văn Tư");
    f.set_kind(FACILITY_KIND_HOUSEHOLD_BUSINESS);
    f.set_workers(8);
    f.set_latitude(20.1);
    f.set_longitude(105.5);
    const Facility added = Ok(c->RegisterFacility(f));
    Visit v;
    v.set_facility_id(added.id());
    v.set_purpose(VISIT_PURPOSE_SURVEY);
    v.set_findings("cần máy móc");
    v.add_needs(category);
    const Visit visit = Ok(c->RecordVisit(v));
    EXPECT_EQ(visit.commune_id(), commune_);
    SupportRequest r;
    r.set_facility_id(added.id());
    r.set_category(category);
    r.set_description("Hỗ trợ " + name);
    r.set_requested_amount_vnd(amount);
    r.set_proposed_funding(FUNDING_SOURCE_LOCAL);
    const SupportRequest drafted = Ok(c->DraftRequest(r));
    EXPECT_EQ(drafted.status(), REQUEST_STATUS_DRAFT);
    EXPECT_EQ(Ok(c->Submit(drafted.id())).status(), REQUEST_STATUS_SUBMITTED);
    return {added.id(), drafted.id()};
  }

  // Every bucket the client holds has the server's checksum and record count; returns the
  // number of buckets.
  size_t ExpectSameAsServer(const std::string& device) {
    SCOPED_TRACE(device);
    Client* client = devices_.at(device).get();
    const SyncStatus status = client->Status();
    EXPECT_EQ(status.pending_uploads, 0);
    EXPECT_EQ(status.unconfirmed, 0);
    std::vector<BucketCheckpoint> mine = Ok(client->Checkpoints());
    EXPECT_FALSE(mine.empty());
    for (const BucketCheckpoint& cp : mine) {
      absl::StatusOr<BucketCheckpoint> server = server_->store()->Checkpoint(cp.bucket());
      EXPECT_TRUE(server.ok()) << server.status();
      if (!server.ok()) continue;
      EXPECT_EQ(cp.checksum(), server->checksum()) << "bucket " << cp.bucket();
      EXPECT_EQ(cp.records(), server->records()) << "bucket " << cp.bucket();
    }
    return mine.size();
  }

  kcnet::testing::TempDir dir_;
  std::unique_ptr<server::KcnetServer> server_;
  std::string address_;
  int64_t commune_ = 0, other_commune_ = 0;
  std::map<std::string, std::unique_ptr<Client>> devices_;
};

TEST_F(FieldScenarioTest, TabletsWorkOfflineReviewersDecideAndEveryStoreConverges) {
  // Both tablets sign in online once, then work offline.
  ASSERT_NE(SignedIn("tablet-a", "collab1"), nullptr);
  ASSERT_NE(SignedIn("tablet-b", "collab3"), nullptr);
  Client* a = Open("tablet-a", false);
  Client* b = Open("tablet-b", false);
  ASSERT_TRUE(a != nullptr && b != nullptr);
  ASSERT_TRUE(a->user().has_value());  // kept across the reopen
  const auto [facility_a, request_1] =
      FieldWork(a, "Cơ sở bánh đa Tư", SUPPORT_CATEGORY_MACHINERY_TECHNOLOGY, 120000000);
  const auto [facility_b, request_2] =
      FieldWork(b, "Xưởng nón lá Hậu", SUPPORT_CATEGORY_TRAINING, 45000000);
  EXPECT_EQ(a->Status().pending_uploads, 4);  // facility, visit, draft, submit
  EXPECT_EQ(b->Status().pending_uploads, 4);
  EXPECT_FALSE(a->SyncNow().ok());  // offline: fails, keeps everything
  EXPECT_EQ(a->Status().pending_uploads, 4);
  EXPECT_EQ(Ok(a->FacilitiesOfCommune(commune_)).size(), 1u);  // its own, from the overlay

  // Reconnect: each tablet gets the other's records.
  a = Open("tablet-a", true);
  b = Open("tablet-b", true);
  EXPECT_EQ(Sync(a).pushed_mutations, 4);
  EXPECT_EQ(Sync(b).pushed_mutations, 4);
  Sync(a);
  EXPECT_EQ(Ok(a->GetFacility(facility_b)).name(), "Xưởng nón lá Hậu");
  EXPECT_EQ(Ok(b->GetFacility(facility_a)).name(), "Cơ sở bánh đa Tư");
  EXPECT_EQ(Ok(a->VisitsOfFacility(facility_b)).size(), 1u);
  EXPECT_EQ(a->Status().pending_uploads, 0);

  // The district coordinator endorses one request and returns the other.
  Client* coord = SignedIn("coord-tablet", "coord1");
  ASSERT_NE(coord, nullptr);
  Sync(coord);
  const std::vector<std::string> waiting = Ids(Ok(coord->RequestsAwaitingMyReview()));
  EXPECT_THAT(waiting, Contains(request_1));
  EXPECT_THAT(waiting, Contains(request_2));
  EXPECT_EQ(Ok(coord->Endorse(request_1, "phù hợp kế hoạch")).status(), REQUEST_STATUS_ENDORSED);
  EXPECT_EQ(Ok(coord->Return(request_2, "bổ sung báo giá")).status(), REQUEST_STATUS_RETURNED);
  Sync(coord);

  // The province officer approves the endorsed one.
  Client* officer = SignedIn("officer-laptop", "officer1");
  ASSERT_NE(officer, nullptr);
  Sync(officer);
  const std::vector<std::string> for_officer = Ids(Ok(officer->RequestsAwaitingMyReview()));
  EXPECT_THAT(for_officer, Contains(request_1));
  EXPECT_THAT(for_officer, Not(Contains(request_2)));
  const SupportRequest approved =
      Ok(officer->Approve(request_1, 100000000, FUNDING_SOURCE_LOCAL, "duyệt"));
  EXPECT_EQ(approved.status(), REQUEST_STATUS_APPROVED);
  Sync(officer);
  Sync(a);
  Sync(b);
  const SupportRequest seen_1 = Ok(a->GetRequest(request_1));
  EXPECT_EQ(seen_1.status(), REQUEST_STATUS_APPROVED);
  EXPECT_EQ(seen_1.approved_amount_vnd(), 100000000);
  EXPECT_EQ(seen_1.approved_funding(), FUNDING_SOURCE_LOCAL);
  EXPECT_EQ(Ok(b->GetRequest(request_2)).status(), REQUEST_STATUS_RETURNED);
  EXPECT_THAT(Ids(Ok(b->RequestsAwaitingMyReview())), Contains(request_2));  // its own, returned
  std::vector<RequestAction> trail;
  for (const RequestEvent& e : Ok(a->RequestEvents(request_1))) trail.push_back(e.action());
  EXPECT_EQ(trail, (std::vector<RequestAction>{REQUEST_ACTION_CREATE, REQUEST_ACTION_SUBMIT,
                                               REQUEST_ACTION_ENDORSE, REQUEST_ACTION_APPROVE}));

  // Both tablets edit the same facility offline; tablet-b's edit is the later one.
  a = Open("tablet-a", false);
  b = Open("tablet-b", false);
  Facility edit;
  edit.set_id(facility_a);
  edit.set_workers(12);
  EXPECT_EQ(Ok(a->UpdateFacility(edit, {"workers"})).workers(), 12);
  absl::SleepFor(absl::Milliseconds(20));
  edit.set_workers(15);
  EXPECT_EQ(Ok(b->UpdateFacility(edit, {"workers"})).workers(), 15);
  a = Open("tablet-a", true);
  b = Open("tablet-b", true);
  EXPECT_TRUE(Sync(b).reports.empty());
  const SyncSummary lost = Sync(a);
  ASSERT_EQ(lost.reports.size(), 1u);
  const Report& report = lost.reports[0];
  EXPECT_FALSE(report.refused);
  EXPECT_FALSE(report.reason.empty());
  EXPECT_EQ(report.result.outcome(), MUTATION_OUTCOME_APPLIED_WITH_CONFLICT);
  ASSERT_EQ(report.result.conflicts_size(), 1);
  EXPECT_EQ(report.result.conflicts(0).field(),
            static_cast<uint32_t>(Facility::kWorkersFieldNumber));
  EXPECT_EQ(report.result.conflicts(0).winner_value().int_value(), 15);
  EXPECT_EQ(report.result.conflicts(0).loser_value().int_value(), 12);
  EXPECT_EQ(Ok(a->ListReports()).size(), 1u);  // kept for the app until taken
  Sync(b);

  // Everybody syncs once more; every store equals the server, and a fresh store too.
  for (const char* device : {"tablet-b", "coord-tablet", "officer-laptop", "tablet-a"}) {
    Sync(devices_.at(device).get());
  }
  Client* fresh = SignedIn("fresh-check", "officer1");
  ASSERT_NE(fresh, nullptr);
  Sync(fresh);
  for (const char* device :
       {"tablet-a", "tablet-b", "coord-tablet", "officer-laptop", "fresh-check"}) {
    ExpectSameAsServer(device);
    Client* c = devices_.at(device).get();
    EXPECT_EQ(Ok(c->GetFacility(facility_a)).workers(), 15) << device;
    EXPECT_EQ(Ok(c->GetRequest(request_1)).status(), REQUEST_STATUS_APPROVED) << device;
    EXPECT_EQ(Ok(c->GetRequest(request_2)).status(), REQUEST_STATUS_RETURNED) << device;
  }
  // The tablets hold their commune; the reviewers hold the district's communes.
  EXPECT_EQ(Ok(a->Checkpoints()).size(), 1u);
  EXPECT_EQ(Ok(coord->Checkpoints()).size(), 2u);
  EXPECT_EQ(Ok(fresh->Checkpoints()).size(), 2u);
}

}  // namespace
}  // namespace kcnet::sdk
