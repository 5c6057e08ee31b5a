// kcnet::sdk::Client end to end: a real KcnetServer on port 0, real store files. Offline
// writes checked by the shared rules, queries with the pending overlay, Vietnamese search,
// observers, sign-in kept across restarts, two tablets converging with a conflict report,
// a refused write reported and rolled back, background sync backing off while the server
// is down and catching up when it returns, and bad input refused with nothing stored.
#include "kcnet/client.h"

#include <netinet/in.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpc/support/log.h"
#include "gtest/gtest.h"
#include "server/app/kcnet_server.h"
#include "sync/hlc.h"
#include "sync/model/record_types.h"
#include "sync/sqlite.h"
#include "tests/testing/test_server.h"
#include "tests/testing/test_util.h"

namespace kcnet::sdk {
namespace {

using ::testing::HasSubstr;
using ::testing::SizeIs;
using namespace ::kcnet::v1;  // NOLINT: messages and enum constants

constexpr char kPassword[] = "password-123";

Facility NewFacility(int64_t commune, const std::string& name,
                     const std::string& owner = "Nguyễn Văn An", const std::string& products = "") {
  Facility f;
  f.set_commune_id(commune);
  f.set_name(name);
  f.set_owner_name(owner);
  f.set_main_products(products);
  f.set_kind(FACILITY_KIND_HOUSEHOLD_BUSINESS);
  f.set_sector(SECTOR_HANDICRAFTS);
  f.set_latitude(21.03);
  f.set_longitude(105.85);
  f.set_workers(12);
  return f;
}

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StartServer("127.0.0.1:0");
    server::Directory* d = server_->directory();
    const int64_t p = d->CreateOrgUnit("90", "Tỉnh Demo", ORG_UNIT_LEVEL_PROVINCE, 0)->id();
    district_ = d->CreateOrgUnit("901", "Huyện Một", ORG_UNIT_LEVEL_DISTRICT, p)->id();
    commune_ = d->CreateOrgUnit("90101", "Xã Một", ORG_UNIT_LEVEL_COMMUNE, district_)->id();
    province_ = p;
    for (const auto& [name, role, unit] : std::vector<std::tuple<std::string, Role, int64_t>>{
             {"ctv_an", ROLE_COMMUNE_COLLABORATOR, commune_},
             {"ctv_binh", ROLE_COMMUNE_COLLABORATOR, commune_},
             {"dp_huyen", ROLE_DISTRICT_COORDINATOR, district_},
             {"so_ct", ROLE_PROVINCE_OFFICER, province_}}) {
      ASSERT_TRUE(d->CreateUser(name, name, kPassword, role, {unit}).ok());
    }
  }

  void StartServer(const std::string& listen) {
    server::ServerOptions options = kcnet::testing::TestServerOptions(dir_.File("server"), listen);
    if (directory_clock_ != nullptr) options.directory.clock = directory_clock_.get();
    absl::StatusOr<std::unique_ptr<server::KcnetServer>> server =
        server::KcnetServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    address_ = absl::StrCat("127.0.0.1:", server_->port());
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::Seconds(1));
  }

  ClientOptions Options(const std::string& device) {
    ClientOptions o;
    o.path = dir_.File(device + ".db");
    o.device_id = device;
    o.server_address = address_;
    o.durable = false;
    o.sync_timeout = absl::Seconds(20);
    o.seed = 7;
    return o;
  }

  std::unique_ptr<Client> SignedIn(const std::string& device, const std::string& user) {
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Open(Options(device));
    EXPECT_TRUE(client.ok()) << client.status();
    if (!client.ok()) return nullptr;
    absl::Status status = (*client)->SignIn(user, kPassword);
    EXPECT_TRUE(status.ok()) << status;
    return *std::move(client);
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
      absl::StatusOr<BucketCheckpoint> server = server_->store()->Checkpoint(cp.bucket());
      ASSERT_TRUE(server.ok());
      EXPECT_EQ(cp.checksum(), server->checksum()) << "bucket " << cp.bucket();
      EXPECT_EQ(cp.records(), server->records()) << "bucket " << cp.bucket();
    }
  }

  kcnet::testing::TempDir dir_;
  // Set before SetUp: the server's directory (token expiry) runs on this clock.
  std::unique_ptr<sync::FakeClock> directory_clock_;
  std::unique_ptr<server::KcnetServer> server_;
  std::string address_;
  int64_t province_ = 0, district_ = 0, commune_ = 0;
};

TEST_F(ClientTest, OfflineWritesQueueThenSyncAndMatchTheServer) {
  std::unique_ptr<Client> an = SignedIn("tab-an", "ctv_an");
  ASSERT_NE(an, nullptr);
  ASSERT_TRUE(an->user().has_value());
  EXPECT_EQ(an->user()->role(), ROLE_COMMUNE_COLLABORATOR);
  std::vector<ChangeEvent> events;
  absl::Mutex mu;
  const int handle = an->AddObserver([&](const ChangeEvent& e) {
    absl::MutexLock lock(&mu);
    events.push_back(e);
  });

  Facility f = Ok(an->RegisterFacility(NewFacility(commune_, "Cơ sở mây tre đan Phú Vinh")));
  ASSERT_FALSE(f.id().empty());
  EXPECT_EQ(f.created_by(), an->user()->id());
  Visit v;
  v.set_facility_id(f.id());
  v.set_purpose(VISIT_PURPOSE_SURVEY);
  v.set_findings("Cần máy chẻ nan");
  v = Ok(an->RecordVisit(v));
  EXPECT_EQ(v.commune_id(), commune_);
  SupportRequest r;
  r.set_facility_id(f.id());
  r.set_category(SUPPORT_CATEGORY_MACHINERY_TECHNOLOGY);
  r.set_description("Hỗ trợ máy chẻ nan");
  r.set_requested_amount_vnd(50'000'000);
  r = Ok(an->DraftRequest(r));
  EXPECT_EQ(r.status(), REQUEST_STATUS_DRAFT);
  r = Ok(an->Submit(r.id()));
  EXPECT_EQ(r.status(), REQUEST_STATUS_SUBMITTED);
  EXPECT_THAT(Ok(an->RequestEvents(r.id())), SizeIs(2));  // create, submit

  EXPECT_THAT(Ok(an->FacilitiesOfCommune(commune_)), SizeIs(1));
  EXPECT_THAT(Ok(an->VisitsOfFacility(f.id())), SizeIs(1));
  EXPECT_THAT(Ok(an->PendingUploads()), SizeIs(4));
  {
    absl::MutexLock lock(&mu);
    ASSERT_THAT(events, SizeIs(4));
    EXPECT_EQ(events[0].source, ChangeEvent::Source::kLocal);
    EXPECT_EQ(events[0].records[0].id, f.id());
  }
  // Nothing reached the server yet.
  EXPECT_FALSE(
      server_->store()->ReadRecord(model::kFacilityType, *sync::UuidFromText(f.id()))->has_value());

  std::vector<SyncProgress> progress;
  SyncSummary summary = Ok(an->SyncNow([&](const SyncProgress& p) { progress.push_back(p); }));
  EXPECT_EQ(summary.pushed_mutations, 4);
  EXPECT_TRUE(summary.reports.empty());
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.back().buckets_total, 1);
  SyncStatus status = an->Status();
  EXPECT_EQ(status.pending_uploads, 0);
  EXPECT_EQ(status.unconfirmed, 0);
  EXPECT_TRUE(status.last_error.ok());
  EXPECT_TRUE(status.last_success.has_value());
  ExpectSameAsServer(*an);
  EXPECT_TRUE(
      server_->store()->ReadRecord(model::kFacilityType, *sync::UuidFromText(f.id()))->has_value());
  an->RemoveObserver(handle);
  const size_t seen = events.size();
  Visit second;
  second.set_facility_id(f.id());
  Ok(an->RecordVisit(second));
  EXPECT_EQ(events.size(), seen) << "a removed observer is not called";
}

TEST_F(ClientTest, SignInIsKeptAndTheAppWorksOfflineAfterARestart) {
  std::unique_ptr<Client> an = SignedIn("tab-an", "ctv_an");
  ASSERT_NE(an, nullptr);
  ASSERT_TRUE(an->SyncNow().ok());
  an.reset();
  server_->Shutdown(absl::Seconds(1));  // the server is gone
  ClientOptions options = Options("tab-an");
  std::unique_ptr<Client> again = Ok(Client::Open(options));
  ASSERT_NE(again, nullptr);
  ASSERT_TRUE(again->user().has_value());
  EXPECT_EQ(again->user()->username(), "ctv_an");
  Facility f = Ok(again->RegisterFacility(NewFacility(commune_, "Lò gốm Bát Tràng")));
  EXPECT_EQ(Ok(again->GetFacility(f.id())).name(), "Lò gốm Bát Tràng");
  options.sync_timeout = absl::Seconds(2);
  absl::StatusOr<SyncSummary> offline = again->SyncNow();
  EXPECT_EQ(offline.status().code(), absl::StatusCode::kUnavailable) << offline.status();
  EXPECT_THAT(offline.status().message(), HasSubstr("kept here"));
  EXPECT_EQ(again->Status().pending_uploads, 1);
  EXPECT_FALSE(again->Status().last_error.ok());
  // Another device id on the same file is refused.
  options.device_id = "someone-else";
  again.reset();
  absl::StatusOr<std::unique_ptr<Client>> foreign = Client::Open(options);
  EXPECT_EQ(foreign.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(ClientTest, TwoTabletsEditTheSameFacilityOfflineAndConverge) {
  std::unique_ptr<Client> an = SignedIn("tab-an", "ctv_an");
  std::unique_ptr<Client> binh = SignedIn("tab-binh", "ctv_binh");
  Facility f = Ok(an->RegisterFacility(NewFacility(commune_, "Hợp tác xã dệt lụa")));
  ASSERT_TRUE(an->SyncNow().ok());
  ASSERT_TRUE(binh->SyncNow().ok());
  ASSERT_EQ(Ok(binh->GetFacility(f.id())).name(), "Hợp tác xã dệt lụa");
  Facility edit = f;
  edit.set_workers(20);
  Ok(an->UpdateFacility(edit, {"workers"}));
  absl::SleepFor(absl::Milliseconds(5));  // binh's edit is the later one
  edit.set_workers(25);
  edit.set_name("HTX dệt lụa Vạn Phúc");
  Ok(binh->UpdateFacility(edit, {"workers", "name"}));
  ASSERT_TRUE(an->SyncNow().ok());
  SyncSummary b = Ok(binh->SyncNow());
  ASSERT_TRUE(an->SyncNow().ok());
  ASSERT_THAT(b.reports, SizeIs(1));
  EXPECT_FALSE(b.reports[0].refused);
  EXPECT_THAT(b.reports[0].reason, HasSubstr("facility.workers"));
  EXPECT_THAT(Ok(binh->ListReports()), SizeIs(1));
  for (Client* c : {an.get(), binh.get()}) {
    Facility now = Ok(c->GetFacility(f.id()));
    EXPECT_EQ(now.workers(), 25);
    EXPECT_EQ(now.name(), "HTX dệt lụa Vạn Phúc");
    ExpectSameAsServer(*c);
  }
  EXPECT_THAT(Ok(binh->TakeReports()), SizeIs(1));
  EXPECT_THAT(Ok(binh->ListReports()), SizeIs(0));

  // The district coordinator reviews the conflict and restores the overwritten value.
  std::unique_ptr<Client> huyen = SignedIn("tab-huyen", "dp_huyen");
  EXPECT_EQ(an->ListConflicts().status().code(), absl::StatusCode::kPermissionDenied);
  std::vector<Conflict> conflicts = Ok(huyen->ListConflicts());
  ASSERT_THAT(conflicts, SizeIs(1));
  EXPECT_EQ(conflicts[0].field(), Facility::kWorkersFieldNumber);
  EXPECT_EQ(conflicts[0].winner_value().int_value(), 25);
  EXPECT_EQ(conflicts[0].loser_value().int_value(), 20);
  Conflict resolved = Ok(huyen->ResolveConflict(conflicts[0].id(), /*restore_loser=*/true));
  EXPECT_TRUE(resolved.resolved());
  EXPECT_THAT(Ok(huyen->ListConflicts()), SizeIs(0));
  EXPECT_THAT(Ok(huyen->ListConflicts(0, /*include_resolved=*/true)), SizeIs(1));
  EXPECT_EQ(huyen->ResolveConflict(0, false).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(huyen->ListConflicts(-1).status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(an->SyncNow().ok());
  EXPECT_EQ(Ok(an->GetFacility(f.id())).workers(), 20);
  ExpectSameAsServer(*an);
}

TEST_F(ClientTest, AWriteTheServerRefusesIsReportedAndRolledBack) {
  std::unique_ptr<Client> an = SignedIn("tab-an", "ctv_an");
  std::unique_ptr<Client> huyen = SignedIn("tab-huyen", "dp_huyen");
  Facility f = Ok(an->RegisterFacility(NewFacility(commune_, "Xưởng mộc")));
  SupportRequest r;
  r.set_facility_id(f.id());
  r.set_category(SUPPORT_CATEGORY_TRAINING);
  r.set_requested_amount_vnd(10'000'000);
  r = Ok(an->DraftRequest(r));
  Ok(an->Submit(r.id()));
  ASSERT_TRUE(an->SyncNow().ok());
  ASSERT_TRUE(huyen->SyncNow().ok());
  std::vector<SupportRequest> review = Ok(huyen->RequestsAwaitingMyReview());
  ASSERT_THAT(review, SizeIs(1));
  EXPECT_EQ(review[0].id(), r.id());
  EXPECT_THAT(Ok(an->RequestsAwaitingMyReview()), SizeIs(0));
  EXPECT_EQ(Ok(huyen->Reject(r.id(), "Không đủ điều kiện")).status(), REQUEST_STATUS_REJECTED);
  EXPECT_THAT(Ok(huyen->RequestsAwaitingMyReview()), SizeIs(0));
  ASSERT_TRUE(huyen->SyncNow().ok());
  // The author, not yet aware, cancels: fine locally, refused by the server.
  std::atomic<int> reported{0};
  an->AddObserver([&](const ChangeEvent& e) {
    if (e.source == ChangeEvent::Source::kReport) ++reported;
  });
  EXPECT_EQ(Ok(an->Act(r.id(), REQUEST_ACTION_CANCEL)).status(), REQUEST_STATUS_CANCELLED);
  SyncSummary s = Ok(an->SyncNow());
  ASSERT_THAT(s.reports, SizeIs(1));
  EXPECT_TRUE(s.reports[0].refused);
  EXPECT_THAT(s.reports[0].reason, HasSubstr("support_request.status"));
  EXPECT_EQ(reported.load(), 1);
  EXPECT_EQ(Ok(an->GetRequest(r.id())).status(), REQUEST_STATUS_REJECTED);
  EXPECT_EQ(an->Status().pending_uploads, 0);
  ExpectSameAsServer(*an);
}

TEST_F(ClientTest, TheRulesAndBadInputAreCheckedOfflineAndNothingIsStored) {
  absl::StatusOr<std::unique_ptr<Client>> anonymous = Client::Open(Options("tab-x"));
  ASSERT_TRUE(anonymous.ok());
  EXPECT_EQ((*anonymous)->RegisterFacility(NewFacility(commune_, "X")).status().code(),
            absl::StatusCode::kFailedPrecondition);
  std::unique_ptr<Client> an = SignedIn("tab-an", "ctv_an");
  Facility bad = NewFacility(commune_, "Xưởng");
  bad.set_latitude(95);
  absl::Status s = an->RegisterFacility(bad).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), ::testing::StartsWith("facility.latitude")) << s;
  s = an->RegisterFacility(NewFacility(commune_ + 999, "Ngoài phạm vi")).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << s;
  EXPECT_THAT(an->RegisterFacility(NewFacility(0, "X")).status().message(),
              HasSubstr("facility.commune_id"));
  EXPECT_EQ(an->GetFacility("not-a-uuid").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(an->GetFacility("0f8fad5b-d9cb-469f-a165-70867728950e").status().code(),
            absl::StatusCode::kNotFound);
  Facility f = Ok(an->RegisterFacility(NewFacility(commune_, "Xưởng")));
  EXPECT_THAT(an->UpdateFacility(f, {"nope"}).status().message(), HasSubstr("fields[0]"));
  EXPECT_THAT(an->UpdateFacility(f, {"commune_id"}).status().message(), HasSubstr("fields[0]"));
  EXPECT_THAT(an->UpdateFacility(f, {}).status().message(), HasSubstr("fields"));
  SupportRequest r;
  r.set_facility_id(f.id());
  r.set_category(SUPPORT_CATEGORY_TRAINING);
  r.set_requested_amount_vnd(-5);
  EXPECT_THAT(an->DraftRequest(r).status().message(), HasSubstr("requested_amount_vnd"));
  r.set_requested_amount_vnd(5'000'000);
  r = Ok(an->DraftRequest(r));
  // A collaborator may not endorse; a draft cannot be approved; a comment needs text.
  s = an->Endorse(r.id(), "ok").status();
  EXPECT_THAT(s.message(), HasSubstr("status"));
  EXPECT_TRUE(s.code() == absl::StatusCode::kPermissionDenied ||
              s.code() == absl::StatusCode::kFailedPrecondition)
      << s;
  EXPECT_EQ(an->Approve(r.id(), 1, FUNDING_SOURCE_LOCAL, "").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(an->Comment(r.id(), "").status().message(), HasSubstr("note"));
  EXPECT_EQ(an->Act(r.id(), REQUEST_ACTION_APPROVE).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(an->Act(r.id(), static_cast<RequestAction>(77)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(an->SearchFacilities("   ").status().message(), HasSubstr("query"));
  EXPECT_THAT(an->SearchFacilities("x", 0).status().message(), HasSubstr("limit"));
  // Only the facility and the draft (with its event) were stored.
  EXPECT_THAT(Ok(an->PendingUploads()), SizeIs(2));
  EXPECT_THAT(Ok(an->FacilitiesOfCommune(commune_)), SizeIs(1));
  // A comment is fine and lands in the audit trail.
  Ok(an->Comment(r.id(), "Đã bổ sung hồ sơ"));
  EXPECT_THAT(Ok(an->RequestEvents(r.id())), SizeIs(2));
  // Bad options.
  ClientOptions o = Options("tab-y");
  o.path = "";
  EXPECT_THAT(Client::Open(o).status().message(), HasSubstr("path"));
  o = Options("tab-y");
  o.path = dir_.File("no-such-folder/a.db");
  EXPECT_THAT(Client::Open(o).status().message(), HasSubstr("no-such-folder does not exist"));
  o = Options("tab-y");
  o.server_address = "no-port";
  EXPECT_THAT(Client::Open(o).status().message(), HasSubstr("server_address"));
}

TEST_F(ClientTest, ACorruptStoreIsRefusedAtOpen) {
  const std::string path = dir_.File("garbage.db");
  {
    FILE* f = fopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    const std::string junk(8192, 'x');
    fwrite(junk.data(), 1, junk.size(), f);
    fclose(f);
  }
  ClientOptions o = Options("tab-z");
  o.path = path;
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Open(o);
  ASSERT_FALSE(client.ok());
  EXPECT_THAT(client.status().message(), HasSubstr("garbage.db"));
}

TEST_F(ClientTest, SearchIgnoresDiacriticsAndRanksTheNameFirst) {
  std::unique_ptr<Client> an = SignedIn("tab-an", "ctv_an");
  Ok(an->RegisterFacility(NewFacility(commune_, "Gốm sứ Hà Nội")));
  Ok(an->RegisterFacility(
      NewFacility(commune_, "Mây tre Phú Vinh", "Trần Thị Hà", "nón lá Hà Nội")));
  Ok(an->RegisterFacility(NewFacility(commune_, "Đồ gỗ Đồng Kỵ", "Đặng Văn Đông")));
  for (const char* q : {"ha noi", "HA NOI", "Hà Nội", "hà nội"}) {
    std::vector<FacilityHit> hits = Ok(an->SearchFacilities(q));
    ASSERT_THAT(hits, SizeIs(2)) << q;
    EXPECT_EQ(hits[0].facility.name(), "Gốm sứ Hà Nội") << q;
    EXPECT_LE(hits[0].rank, hits[1].rank);
  }
  std::vector<FacilityHit> d = Ok(an->SearchFacilities("dong ky"));
  ASSERT_THAT(d, SizeIs(1));
  EXPECT_EQ(d[0].facility.name(), "Đồ gỗ Đồng Kỵ");
  EXPECT_THAT(Ok(an->SearchFacilities("DANG")), SizeIs(1));  // the owner, Đ as D
}

TEST_F(ClientTest, BackgroundSyncBacksOffWhileTheServerIsDownAndCatchesUp) {
  std::unique_ptr<Client> an = SignedIn("tab-an", "ctv_an");
  ASSERT_TRUE(an->SyncNow().ok());
  const std::string listen = address_;
  server_->Shutdown(absl::Seconds(1));
  server_.reset();
  ClientOptions o = Options("tab-an");
  an.reset();
  o.initial_backoff = absl::Milliseconds(20);
  o.max_backoff = absl::Milliseconds(200);
  o.write_delay = absl::ZeroDuration();
  o.interval = absl::Milliseconds(100);
  o.sync_timeout = absl::Seconds(2);
  an = Ok(Client::Open(o));
  Facility f = Ok(an->RegisterFacility(NewFacility(commune_, "Cơ sở chế biến chè")));
  an->StartBackgroundSync();
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (an->Status().failures_in_a_row < 3 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  SyncStatus down = an->Status();
  EXPECT_GE(down.failures_in_a_row, 3);
  EXPECT_THAT(down.last_error.message(), HasSubstr("cannot reach"));
  EXPECT_EQ(down.pending_uploads, 1);
  EXPECT_TRUE(down.background);
  StartServer(listen);  // back on the same port and data
  while ((an->Status().pending_uploads != 0 || an->Status().unconfirmed != 0 ||
          !an->Status().last_error.ok()) &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  SyncStatus up = an->Status();
  EXPECT_EQ(up.pending_uploads, 0);
  EXPECT_TRUE(up.last_error.ok()) << up.last_error;
  EXPECT_EQ(up.failures_in_a_row, 0);
  ASSERT_TRUE(an->StopBackgroundSync().ok());
  EXPECT_FALSE(an->Status().background);
  EXPECT_TRUE(
      server_->store()->ReadRecord(model::kFacilityType, *sync::UuidFromText(f.id()))->has_value());
  ExpectSameAsServer(*an);
}

// A TCP listener that never accepts: connections complete in the kernel's backlog and
// then hear nothing, like a server stuck behind a captive portal or a dead proxy.
class StalledServer {
 public:
  StalledServer() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(listen(fd_, 16), 0);
    socklen_t len = sizeof addr;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    address_ = absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
  }
  ~StalledServer() { close(fd_); }
  const std::string& address() const { return address_; }

 private:
  int fd_ = -1;
  std::string address_;
};

class LifecycleTest : public ClientTest {
 protected:
  // A signed-in client (its account stored) reopened against a server that never answers.
  std::unique_ptr<Client> StalledClient(const std::string& device, absl::Duration timeout) {
    { SignedIn(device, "ctv_an"); }
    ClientOptions o = Options(device);
    o.server_address = stalled_.address();
    o.sync_timeout = timeout;
    o.initial_backoff = absl::Milliseconds(10);
    o.max_backoff = absl::Milliseconds(20);
    return Ok(Client::Open(o));
  }
  static bool WaitFor(const std::function<bool()>& condition,
                      absl::Duration limit = absl::Seconds(10)) {
    const absl::Time deadline = absl::Now() + limit;
    while (!condition()) {
      if (absl::Now() > deadline) return false;
      absl::SleepFor(absl::Milliseconds(5));
    }
    return true;
  }
  StalledServer stalled_;
};

TEST_F(LifecycleTest, AnObserverMayWriteFromItsCallback) {
  std::unique_ptr<Client> an = SignedIn("tab-an", "ctv_an");
  ASSERT_NE(an, nullptr);
  std::atomic<int> calls{0};
  absl::Status inner;
  an->AddObserver([&](const ChangeEvent& e) {
    if (e.source != ChangeEvent::Source::kLocal || calls++ > 0) return;
    inner = an->RegisterFacility(NewFacility(commune_, "Ghi từ observer")).status();
  });
  Ok(an->RegisterFacility(NewFacility(commune_, "Cơ sở đầu tiên")));
  ASSERT_TRUE(WaitFor([&] { return calls.load() >= 2; }));
  EXPECT_TRUE(inner.ok()) << inner;
  EXPECT_THAT(Ok(an->FacilitiesOfCommune(commune_)), SizeIs(2));
}

TEST_F(LifecycleTest, AnObserverMaySyncFromASyncEvent) {
  std::unique_ptr<Client> an = SignedIn("tab-an", "ctv_an");
  ASSERT_NE(an, nullptr);
  Ok(an->RegisterFacility(NewFacility(commune_, "Cơ sở cần đồng bộ")));
  std::atomic<int> synced{0};
  std::atomic<bool> done{false};
  absl::Status inner;
  an->AddObserver([&](const ChangeEvent& e) {
    if (e.source != ChangeEvent::Source::kSync || synced++ > 0) return;
    inner = an->SyncNow().status();  // on the notifier thread, after the outer sync
    done = true;
  });
  ASSERT_TRUE(an->SyncNow().ok());
  ASSERT_TRUE(WaitFor([&] { return done.load(); }));
  EXPECT_TRUE(inner.ok()) << inner;
}

TEST_F(LifecycleTest, ASecondHandleOnTheSameStoreIsRefused) {
  std::unique_ptr<Client> first = Ok(Client::Open(Options("tab-an")));
  ASSERT_NE(first, nullptr);
  absl::StatusOr<std::unique_ptr<Client>> second = Client::Open(Options("tab-an"));
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(second.status().message(), HasSubstr("tab-an.db"));
  first.reset();
  EXPECT_TRUE(Client::Open(Options("tab-an")).ok()) << "closing releases the store";
}

TEST_F(LifecycleTest, ABusyStoreIsNotReportedAsAnUnreachableServer) {
  for (int code : {SQLITE_BUSY, SQLITE_LOCKED}) {
    absl::Status s = sync::SqliteStatus(code, nullptr, "write");
    EXPECT_NE(s.code(), absl::StatusCode::kUnavailable) << s;
    EXPECT_THAT(s.message(), HasSubstr("write"));
  }
}

TEST_F(LifecycleTest, CloseReturnsQuicklyWhileTheBackgroundSyncWaitsOnAStalledServer) {
  std::unique_ptr<Client> an = StalledClient("tab-an", absl::Seconds(20));
  ASSERT_NE(an, nullptr);
  an->StartBackgroundSync();
  ASSERT_TRUE(WaitFor([&] { return an->Status().syncing; }));
  absl::SleepFor(absl::Milliseconds(200));  // well inside the stalled call
  const absl::Time start = absl::Now();
  an.reset();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5)) << "a liveness bound, not a speed goal";
}

TEST_F(LifecycleTest, StopAndCloseFromAnObserverAnswerFailedPrecondition) {
  std::unique_ptr<Client> an = SignedIn("tab-an", "ctv_an");
  ASSERT_NE(an, nullptr);
  an->StartBackgroundSync();
  std::atomic<int> calls{0};
  absl::Status stop, close, sync_from_progress, close_from_progress;
  an->AddObserver([&](const ChangeEvent& e) {
    if (e.source != ChangeEvent::Source::kLocal || calls++ > 0) return;
    stop = an->StopBackgroundSync();
    close = an->Close();
  });
  Ok(an->RegisterFacility(NewFacility(commune_, "Cơ sở")));
  EXPECT_EQ(stop.code(), absl::StatusCode::kFailedPrecondition) << stop;
  EXPECT_EQ(close.code(), absl::StatusCode::kFailedPrecondition) << close;
  EXPECT_TRUE(an->Status().background) << "the refused stop stopped nothing";
  EXPECT_TRUE(an->StopBackgroundSync().ok());
  // A progress callback runs inside its sync: a nested SyncNow or a Close would wait for it.
  bool once = false;
  ASSERT_TRUE(an->SyncNow([&](const SyncProgress&) {
                  if (once) return;
                  once = true;
                  sync_from_progress = an->SyncNow().status();
                  close_from_progress = an->Close();
                }).ok());
  EXPECT_EQ(sync_from_progress.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(close_from_progress.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(an->Close().ok());
  EXPECT_EQ(an->SyncNow().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(an->Close().ok()) << "idempotent";
}

TEST_F(LifecycleTest, AnObserverIsDestroyedOnceOnRemovalOrClose) {
  std::unique_ptr<Client> an = SignedIn("tab-an", "ctv_an");
  ASSERT_NE(an, nullptr);
  auto first = std::make_shared<int>(1);
  auto second = std::make_shared<int>(2);
  std::weak_ptr<int> first_alive = first, second_alive = second;
  const int h1 = an->AddObserver([p = std::move(first)](const ChangeEvent&) {});
  an->AddObserver([p = std::move(second)](const ChangeEvent&) {});
  an->RemoveObserver(h1);
  EXPECT_TRUE(first_alive.expired());
  EXPECT_FALSE(second_alive.expired());
  ASSERT_TRUE(an->Close().ok());
  EXPECT_TRUE(second_alive.expired());
}

TEST_F(LifecycleTest, CancelSyncEndsAStalledSyncAndTheOnesQueuedBehindIt) {
  std::unique_ptr<Client> an = StalledClient("tab-an", absl::Seconds(60));
  ASSERT_NE(an, nullptr);
  std::vector<std::string> logged;
  absl::Mutex log_mu;
  SetLogSink(
      [&](LogLevel, const std::string& m) {
        absl::MutexLock lock(&log_mu);
        logged.push_back(m);
      },
      LogLevel::kInfo);
  absl::Status first, second;
  std::thread a([&] { first = an->SyncNow().status(); });
  ASSERT_TRUE(WaitFor([&] { return an->Status().syncing; }));
  std::thread b([&] { second = an->SyncNow().status(); });  // queued behind the first
  absl::SleepFor(absl::Milliseconds(100));
  const absl::Time start = absl::Now();
  an->CancelSync();
  a.join();
  b.join();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_EQ(first.code(), absl::StatusCode::kCancelled) << first;
  EXPECT_EQ(second.code(), absl::StatusCode::kCancelled) << second;
  EXPECT_EQ(an->Status().failures_in_a_row, 0) << "a cancel is not a server failure";
  SetLogSink(nullptr);
  absl::MutexLock lock(&log_mu);
  EXPECT_THAT(logged, ::testing::Contains(HasSubstr("sync cancelled")));
}

TEST_F(LifecycleTest, SuspendedAndUnreachableBackgroundSyncsWaitAndResumeAtOnce) {
  std::unique_ptr<Client> an = StalledClient("tab-an", absl::Seconds(60));
  ASSERT_NE(an, nullptr);
  an->StartBackgroundSync();
  ASSERT_TRUE(WaitFor([&] { return an->Status().syncing; }));
  an->SetSuspended(true);  // the app went to the background: the running sync ends
  ASSERT_TRUE(WaitFor([&] { return !an->Status().syncing; }, absl::Seconds(5)));
  EXPECT_EQ(an->Status().last_error.code(), absl::StatusCode::kCancelled);
  const std::optional<absl::Time> attempt = an->Status().last_attempt;
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(an->Status().last_attempt, attempt) << "no attempt while suspended";
  EXPECT_TRUE(an->Status().suspended);
  an->SetHostReachable(false);
  an->SetSuspended(false);
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(an->Status().last_attempt, attempt) << "no attempt while the host is unreachable";
  an->SetHostReachable(true);  // retries now
  ASSERT_TRUE(WaitFor([&] { return an->Status().last_attempt != attempt; }, absl::Seconds(5)));
  const absl::Time start = absl::Now();
  an.reset();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

// gRPC's own log lines went to stderr only (which Android drops), never to the app's log
// hook. With a sink installed they reach it, marked "grpc:"; without one, they do not.
TEST_F(LifecycleTest, GrpcLogLinesReachTheAppsLogSink) {
  absl::Mutex mu;
  std::vector<std::string> logged;
  SetLogSink(
      [&](LogLevel, const std::string& m) {
        absl::MutexLock lock(&mu);
        logged.push_back(m);
      },
      LogLevel::kDebug);
  gpr_log(GPR_ERROR, "kcnet test: a line of gRPC's own, number %d", 42);
  // And one gRPC writes by itself: a TLS channel whose trusted roots are not PEM.
  ClientOptions o = Options("tab-tls");
  o.use_tls = true;
  o.tls_root_certs = "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n";
  {
    std::unique_ptr<Client> tablet = Ok(Client::Open(o));
    ASSERT_NE(tablet, nullptr);
    EXPECT_FALSE(tablet->SignIn("ctv_an", kPassword).ok());
  }
  SetLogSink(nullptr);
  gpr_log(GPR_ERROR, "kcnet test: after the sink was removed");  // gRPC's stderr again
  absl::MutexLock lock(&mu);
  EXPECT_THAT(logged, ::testing::Contains(
                          HasSubstr("grpc: kcnet test: a line of gRPC's own, number 42 (")));
  EXPECT_THAT(logged, ::testing::Contains(HasSubstr("root certificate")));
  EXPECT_THAT(logged, ::testing::Not(::testing::Contains(HasSubstr("after the sink was removed"))));
}

TEST_F(LifecycleTest, TlsIsAutomaticAndACaFileMustBeReadable) {
  // localhost is this machine: plaintext by default, so sign-in works against the test server.
  ClientOptions o = Options("tab-an");
  o.server_address = absl::StrCat("localhost:", server_->port());
  std::unique_ptr<Client> an = Ok(Client::Open(o));
  ASSERT_NE(an, nullptr);
  EXPECT_TRUE(an->SignIn("ctv_an", kPassword).ok());
  an.reset();
  o.use_tls = true;  // forced: the plaintext server cannot answer
  an = Ok(Client::Open(o));
  EXPECT_FALSE(an->SignIn("ctv_an", kPassword).ok());
  an.reset();
  o.tls_ca_file = dir_.File("no-such-ca.pem");
  absl::StatusOr<std::unique_ptr<Client>> bad = Client::Open(o);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("no-such-ca.pem"));
}

TEST_F(LifecycleTest, AnUploadTheServerAcknowledgedIsListedAsSent) {
  std::unique_ptr<Client> an = SignedIn("tab-an", "ctv_an");
  ASSERT_NE(an, nullptr);
  ASSERT_TRUE(an->SyncNow().ok());
  Ok(an->RegisterFacility(NewFacility(commune_, "Cơ sở chờ tải về")));
  std::vector<PendingUpload> before = Ok(an->PendingUploads());
  ASSERT_THAT(before, SizeIs(1));
  EXPECT_FALSE(before[0].sent);
  // End the sync as soon as the push is acknowledged, before the download that shows it.
  absl::StatusOr<SyncSummary> cut = an->SyncNow([&](const SyncProgress& p) {
    if (p.pushed_mutations > 0) an->CancelSync();
  });
  EXPECT_EQ(cut.status().code(), absl::StatusCode::kCancelled) << cut.status();
  EXPECT_EQ(an->Status().pending_uploads, 0);
  std::vector<PendingUpload> after = Ok(an->PendingUploads());
  // The server acknowledges a push before the page carrying its changes goes out.
  ASSERT_EQ(an->Status().unconfirmed, 1);
  ASSERT_THAT(after, SizeIs(1));
  EXPECT_EQ(after[0].seq, before[0].seq);
  EXPECT_TRUE(after[0].sent);
  ASSERT_TRUE(an->SyncNow().ok());
  EXPECT_THAT(Ok(an->PendingUploads()), SizeIs(0));
}

TEST_F(LifecycleTest, CloseCancelsASignInStalledOnTheServer) {
  std::unique_ptr<Client> an = StalledClient("tab-an", absl::Seconds(60));
  ASSERT_NE(an, nullptr);
  absl::Status signed_in;
  std::atomic<bool> done{false};
  std::thread t([&] {
    signed_in = an->SignIn("ctv_an", kPassword);  // a 30-second deadline of its own
    done = true;
  });
  absl::SleepFor(absl::Milliseconds(300));
  const absl::Time start = absl::Now();
  ASSERT_TRUE(an->Close().ok());
  EXPECT_TRUE(WaitFor([&] { return done.load(); }, absl::Seconds(5)));
  t.join();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_FALSE(signed_in.ok());
}

// ---- Shared tablets and months offline (issue 14, points 3 and 4) ----------------------

class AccountTest : public ClientTest {
 protected:
  void SetUp() override {
    directory_clock_ = std::make_unique<sync::FakeClock>(absl::ToUnixMillis(absl::Now()));
    ClientTest::SetUp();
    server::Directory* d = server_->directory();
    other_commune_ = d->CreateOrgUnit("90102", "Xã Hai", ORG_UNIT_LEVEL_COMMUNE, district_)->id();
    ASSERT_TRUE(
        d->CreateUser("ctv_chi", "ctv_chi", kPassword, ROLE_COMMUNE_COLLABORATOR, {other_commune_})
            .ok());
  }
  int64_t other_commune_ = 0;
};

// Defect 3: the next user of a shared tablet saw the previous user's communes offline,
// could write there, and could not sync at all (the device stayed registered to the first).
TEST_F(AccountTest, SignOutLeavesNothingForTheNextUserOfASharedTablet) {
  std::unique_ptr<Client> tablet = SignedIn("tab-shared", "ctv_an");
  ASSERT_NE(tablet, nullptr);
  Facility f = Ok(tablet->RegisterFacility(NewFacility(commune_, "Cơ sở mây tre đan Phú Vinh")));
  ASSERT_TRUE(tablet->SyncNow().ok());
  EXPECT_THAT(Ok(tablet->FacilitiesOfCommune(commune_)), SizeIs(1));
  // A switch whose password is wrong changes nothing.
  EXPECT_EQ(tablet->SignIn("ctv_chi", "wrong-password").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(tablet->user()->username(), "ctv_an");
  EXPECT_THAT(Ok(tablet->FacilitiesOfCommune(commune_)), SizeIs(1));
  ASSERT_TRUE(tablet->SignOut().ok());
  // The device was released (by ctv_an, after uploading everything).
  absl::StatusOr<std::vector<sync::ServerStore::DeviceEvent>> log =
      server_->store()->DeviceLog("tab-shared");
  ASSERT_TRUE(log.ok()) << log.status();
  ASSERT_FALSE(log->empty());
  EXPECT_EQ(log->back().event, "released");
  EXPECT_FALSE(tablet->user().has_value());

  ASSERT_TRUE(tablet->SignIn("ctv_chi", kPassword).ok());
  // Nothing of ctv_an's commune shows, nor can be written, offline.
  EXPECT_THAT(Ok(tablet->FacilitiesOfCommune(commune_)), SizeIs(0));
  EXPECT_FALSE(tablet->GetFacility(f.id()).ok());
  EXPECT_EQ(tablet->RegisterFacility(NewFacility(commune_, "Lò gốm")).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(Ok(tablet->TakeReports()).empty());
  // The sign-out released the device: the new user syncs on it, with writes of its own.
  Ok(tablet->RegisterFacility(NewFacility(other_commune_, "Cơ sở bánh đa Tư")));
  absl::StatusOr<SyncSummary> synced = tablet->SyncNow();
  ASSERT_TRUE(synced.ok()) << synced.status();
  EXPECT_TRUE(synced->reports.empty());
  EXPECT_EQ(tablet->Status().pending_uploads, 0);
  EXPECT_THAT(Ok(tablet->FacilitiesOfCommune(other_commune_)), SizeIs(1));
  EXPECT_THAT(Ok(tablet->FacilitiesOfCommune(commune_)), SizeIs(0));
}

// Defect 3: switching users dropped the previous user's queued writes at the next sync.
TEST_F(AccountTest, SwitchingUsersWithPendingWritesIsRefused) {
  std::unique_ptr<Client> tablet = SignedIn("tab-shared", "ctv_an");
  ASSERT_NE(tablet, nullptr);
  Ok(tablet->RegisterFacility(NewFacility(commune_, "Cơ sở mây tre đan Phú Vinh")));
  absl::Status switched = tablet->SignIn("ctv_chi", kPassword);
  EXPECT_EQ(switched.code(), absl::StatusCode::kFailedPrecondition) << switched;
  EXPECT_THAT(switched.message(), HasSubstr("ctv_an"));
  EXPECT_THAT(switched.message(), HasSubstr("ExportPending"));
  absl::Status out = tablet->SignOut();
  EXPECT_EQ(out.code(), absl::StatusCode::kFailedPrecondition) << out;
  // Nothing changed: still ctv_an's, the write still queued, and it uploads.
  ASSERT_TRUE(tablet->user().has_value());
  EXPECT_EQ(tablet->user()->username(), "ctv_an");
  EXPECT_THAT(Ok(tablet->PendingUploads()), SizeIs(1));
  ASSERT_TRUE(tablet->SyncNow().ok());
  EXPECT_EQ(tablet->Status().pending_uploads, 0);
}

// Sign-out with no network (it answered UNAVAILABLE and changed nothing): with nothing
// pending it purges at once and owes the server the release and the revocation, which the
// next connection (here: the next user's sign-in) settles.
TEST_F(AccountTest, SignOutOfflineWithNothingPendingIsSettledAtTheNextConnection) {
  std::unique_ptr<Client> tablet = SignedIn("tab-shared", "ctv_an");
  ASSERT_NE(tablet, nullptr);
  const int64_t an_id = tablet->user()->id();
  Ok(tablet->RegisterFacility(NewFacility(commune_, "Cơ sở mây tre đan Phú Vinh")));
  ASSERT_TRUE(tablet->SyncNow().ok());  // the device is ctv_an's on the server
  tablet.reset();
  ClientOptions offline = Options("tab-shared");
  offline.server_address = "127.0.0.1:1";  // nothing listens there: no network
  tablet = Ok(Client::Open(offline));
  ASSERT_NE(tablet, nullptr);
  absl::Status out = tablet->SignOut();
  ASSERT_TRUE(out.ok()) << out;
  EXPECT_FALSE(tablet->user().has_value());
  EXPECT_THAT(Ok(tablet->FacilitiesOfCommune(commune_)), SizeIs(0)) << "purged at once";
  tablet.reset();

  tablet = Ok(Client::Open(Options("tab-shared")));  // back in coverage
  ASSERT_NE(tablet, nullptr);
  ASSERT_TRUE(tablet->SignIn("ctv_chi", kPassword).ok());
  // ctv_an's sign-out reached the server: the device released, the credential revoked.
  absl::StatusOr<std::vector<sync::ServerStore::DeviceEvent>> log =
      server_->store()->DeviceLog("tab-shared");
  ASSERT_TRUE(log.ok()) << log.status();
  ASSERT_FALSE(log->empty());
  EXPECT_EQ(log->back().event, "released");
  EXPECT_EQ(Ok(server_->directory()->RevokeDeviceCredentials("tab-shared", an_id, 0)), 0)
      << "ctv_an's credential was still live";
  Ok(tablet->RegisterFacility(NewFacility(other_commune_, "Cơ sở bánh đa Tư")));
  absl::StatusOr<SyncSummary> synced = tablet->SyncNow();
  ASSERT_TRUE(synced.ok()) << synced.status();
  EXPECT_EQ(tablet->Status().pending_uploads, 0);
  EXPECT_THAT(Ok(tablet->FacilitiesOfCommune(commune_)), SizeIs(0));
}

// With writes not uploaded, sign-out without a network stays refused with the choice
// (upload first, or export and discard); nothing changes.
TEST_F(AccountTest, SignOutOfflineWithPendingWritesIsRefusedAndChangesNothing) {
  std::unique_ptr<Client> tablet = SignedIn("tab-shared", "ctv_an");
  ASSERT_NE(tablet, nullptr);
  ASSERT_TRUE(tablet->SyncNow().ok());
  tablet.reset();
  ClientOptions offline = Options("tab-shared");
  offline.server_address = "127.0.0.1:1";
  tablet = Ok(Client::Open(offline));
  ASSERT_NE(tablet, nullptr);
  Ok(tablet->RegisterFacility(NewFacility(commune_, "Cơ sở ghi khi mất sóng")));
  absl::Status out = tablet->SignOut();
  EXPECT_EQ(out.code(), absl::StatusCode::kFailedPrecondition) << out;
  EXPECT_THAT(out.message(), HasSubstr("ExportPending"));
  ASSERT_TRUE(tablet->user().has_value());
  EXPECT_EQ(tablet->user()->username(), "ctv_an");
  EXPECT_EQ(tablet->Status().pending_uploads, 1);
  tablet.reset();
  tablet = Ok(Client::Open(Options("tab-shared")));
  ASSERT_NE(tablet, nullptr);
  ASSERT_TRUE(tablet->SyncNow().ok());
  EXPECT_EQ(tablet->Status().pending_uploads, 0);
}

// The same user signing in again after an offline sign-out keeps the device and its new
// credential: the owed revocation is forgotten, never applied to the new sign-in.
TEST_F(AccountTest, SignOutOfflineThenTheSameUserAgainKeepsItsNewCredential) {
  std::unique_ptr<Client> tablet = SignedIn("tab-shared", "ctv_an");
  ASSERT_NE(tablet, nullptr);
  ASSERT_TRUE(tablet->SyncNow().ok());
  tablet.reset();
  ClientOptions offline = Options("tab-shared");
  offline.server_address = "127.0.0.1:1";
  tablet = Ok(Client::Open(offline));
  ASSERT_TRUE(tablet->SignOut().ok());
  tablet.reset();
  tablet = Ok(Client::Open(Options("tab-shared")));
  ASSERT_TRUE(tablet->SignIn("ctv_an", kPassword).ok());
  ASSERT_TRUE(tablet->SyncNow().ok());
  directory_clock_->Advance(absl::ToInt64Milliseconds(absl::Hours(13)));  // the token expired
  Ok(tablet->RegisterFacility(NewFacility(commune_, "Lò gốm Bát Tràng")));
  absl::StatusOr<SyncSummary> synced = tablet->SyncNow();
  ASSERT_TRUE(synced.ok()) << synced.status();
  EXPECT_FALSE(tablet->Status().sign_in_required);
  EXPECT_EQ(tablet->Status().pending_uploads, 0);
}

// Defect 4: a tablet offline for 180 days syncs again without the password.
TEST_F(AccountTest, MonthsOfflineTheTabletSyncsWithoutThePassword) {
  std::unique_ptr<Client> tablet = SignedIn("tab-far", "ctv_an");
  ASSERT_NE(tablet, nullptr);
  ASSERT_TRUE(tablet->SyncNow().ok());
  directory_clock_->Advance(absl::ToInt64Milliseconds(absl::Hours(24 * 180)));
  Ok(tablet->RegisterFacility(NewFacility(commune_, "Lò gốm Bát Tràng")));
  absl::StatusOr<SyncSummary> synced = tablet->SyncNow();
  ASSERT_TRUE(synced.ok()) << synced.status();
  EXPECT_EQ(synced->pushed_mutations, 1);
  EXPECT_EQ(tablet->Status().pending_uploads, 0);
  // And again after a restart and another 180 days.
  tablet.reset();
  directory_clock_->Advance(absl::ToInt64Milliseconds(absl::Hours(24 * 180)));
  tablet = Ok(Client::Open(Options("tab-far")));
  ASSERT_NE(tablet, nullptr);
  Ok(tablet->RegisterFacility(NewFacility(commune_, "Cơ sở bánh đa Tư")));
  synced = tablet->SyncNow();
  ASSERT_TRUE(synced.ok()) << synced.status();
  EXPECT_EQ(tablet->Status().pending_uploads, 0);
}

// The explicit way out: export the previous user's pending writes, then discard them. The
// next user gets a generation of the device of its own (sequences from 1), and so does
// the first user when it comes back.
TEST_F(AccountTest, PendingWritesAreExportedThenDiscardedOnlyWhenTheAppSaysSo) {
  std::unique_ptr<Client> tablet = SignedIn("tab-shared", "ctv_an");
  ASSERT_NE(tablet, nullptr);
  ASSERT_TRUE(tablet->SyncNow().ok());  // the device is ctv_an's on the server
  Ok(tablet->RegisterFacility(NewFacility(commune_, "Cơ sở mây tre đan Phú Vinh")));
  EXPECT_EQ(tablet->ExportPending("").status().code(), absl::StatusCode::kInvalidArgument);
  const std::string exported = dir_.File("an-pending.pb");
  EXPECT_EQ(Ok(tablet->ExportPending(exported)), 1);
  {
    std::ifstream in(exported, std::ios::binary);
    MutationBatch batch;
    ASSERT_TRUE(batch.ParseFromIstream(&in));
    ASSERT_EQ(batch.mutations_size(), 1);
    EXPECT_EQ(batch.mutations(0).seq(), 1u);
  }
  Client::SignInOptions discard;
  discard.discard_pending_of_previous_user = true;
  ASSERT_TRUE(tablet->SignIn("ctv_chi", kPassword, discard).ok());
  EXPECT_EQ(tablet->user()->username(), "ctv_chi");
  EXPECT_EQ(tablet->Status().pending_uploads, 0);
  EXPECT_THAT(Ok(tablet->FacilitiesOfCommune(commune_)), SizeIs(0));
  Ok(tablet->RegisterFacility(NewFacility(other_commune_, "Cơ sở bánh đa Tư")));
  absl::StatusOr<SyncSummary> synced = tablet->SyncNow();
  ASSERT_TRUE(synced.ok()) << synced.status();
  EXPECT_TRUE(synced->reports.empty());
  EXPECT_EQ(tablet->Status().pending_uploads, 0);

  // ctv_chi leaves cleanly; ctv_an comes back and writes again.
  ASSERT_TRUE(tablet->SignOut().ok());
  ASSERT_TRUE(tablet->SignIn("ctv_an", kPassword).ok());
  Ok(tablet->RegisterFacility(NewFacility(commune_, "Lò gốm Bát Tràng")));
  synced = tablet->SyncNow();
  ASSERT_TRUE(synced.ok()) << synced.status();
  EXPECT_TRUE(synced->reports.empty());
  EXPECT_EQ(tablet->Status().pending_uploads, 0);
  EXPECT_THAT(Ok(tablet->FacilitiesOfCommune(commune_)), SizeIs(1));  // the discarded one is gone
  // Sign-out with a pending write is refused unless discarded explicitly.
  Ok(tablet->RegisterFacility(NewFacility(commune_, "Cơ sở nón lá")));
  EXPECT_EQ(tablet->SignOut().code(), absl::StatusCode::kFailedPrecondition);
  Client::SignOutOptions drop;
  drop.discard_pending = true;
  ASSERT_TRUE(tablet->SignOut(drop).ok());
  EXPECT_EQ(tablet->Status().pending_uploads, 0);
  EXPECT_FALSE(tablet->user().has_value());
}

// When the credential itself is refused, the app hears "sign in again" once, background
// sync stops trying, nothing pending is lost, and a sign-in brings everything back.
TEST_F(AccountTest, ARevokedCredentialAsksToSignInAgainAndLosesNothing) {
  std::unique_ptr<Client> tablet = SignedIn("tab-far", "ctv_an");
  ASSERT_NE(tablet, nullptr);
  ASSERT_TRUE(tablet->SyncNow().ok());
  absl::Mutex mu;
  int asked = 0;
  tablet->AddObserver([&](const ChangeEvent& e) {
    if (e.source != ChangeEvent::Source::kSignInRequired) return;
    absl::MutexLock lock(&mu);
    ++asked;
  });
  Ok(tablet->RegisterFacility(NewFacility(commune_, "Lò gốm Bát Tràng")));
  absl::StatusOr<int> revoked = server_->directory()->RevokeDeviceCredentials("tab-far", 0, 0);
  ASSERT_TRUE(revoked.ok()) << revoked.status();
  EXPECT_EQ(*revoked, 1);
  directory_clock_->Advance(absl::ToInt64Milliseconds(absl::Hours(13)));
  absl::StatusOr<SyncSummary> synced = tablet->SyncNow();
  EXPECT_EQ(synced.status().code(), absl::StatusCode::kUnauthenticated) << synced.status();
  EXPECT_THAT(synced.status().message(), HasSubstr("sign in again"));
  EXPECT_TRUE(tablet->Status().sign_in_required);
  EXPECT_EQ(tablet->Status().pending_uploads, 1);
  {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(asked, 1);
  }
  // Kept across a restart; no sync is attempted meanwhile.
  tablet.reset();
  ClientOptions options = Options("tab-far");
  options.interval = absl::Hours(1);
  options.initial_backoff = absl::Milliseconds(1);
  options.max_backoff = absl::Milliseconds(2);
  tablet = Ok(Client::Open(options));
  ASSERT_NE(tablet, nullptr);
  EXPECT_TRUE(tablet->Status().sign_in_required);
  // The background sync looks, makes no attempt, and waits for its interval (it would
  // retry every few ms if it failed).
  tablet->StartBackgroundSync();
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline) {
    SyncStatus st = tablet->Status();
    if (st.next_attempt.has_value() && *st.next_attempt > absl::Now() + absl::Minutes(30)) break;
    absl::SleepFor(absl::Milliseconds(5));
  }
  SyncStatus waiting = tablet->Status();
  ASSERT_TRUE(waiting.next_attempt.has_value());
  EXPECT_GT(*waiting.next_attempt, absl::Now() + absl::Minutes(30));
  EXPECT_FALSE(waiting.last_attempt.has_value());
  EXPECT_EQ(waiting.failures_in_a_row, 0);
  ASSERT_TRUE(tablet->StopBackgroundSync().ok());
  EXPECT_EQ(tablet->SyncNow().status().code(), absl::StatusCode::kUnauthenticated);
  ASSERT_TRUE(tablet->SignIn("ctv_an", kPassword).ok());
  EXPECT_FALSE(tablet->Status().sign_in_required);
  synced = tablet->SyncNow();
  ASSERT_TRUE(synced.ok()) << synced.status();
  EXPECT_EQ(synced->pushed_mutations, 1);
  EXPECT_EQ(tablet->Status().pending_uploads, 0);
}

// ---- The directory on the device (names and codes instead of ids) --------------------

// The tablet shows "Xã Một (90101)" and the coordinator's name, from its own store,
// offline and after a restart; nothing of the sibling commune (90102) or its people.
TEST_F(AccountTest, TheDirectoryArrivesAtSignInAndServesLookupsOfflineAfterARestart) {
  server::Directory* d = server_->directory();
  const int64_t coordinator = Ok(d->FindUser("dp_huyen")).id();
  const int64_t chi = Ok(d->FindUser("ctv_chi")).id();
  ASSERT_TRUE(d->UpdateProfile(coordinator, "Nguyễn Văn An", "0912345678").ok());
  ClientOptions options = Options("tab-dir");
  {
    std::unique_ptr<Client> tablet = SignedIn("tab-dir", "ctv_an");
    ASSERT_NE(tablet, nullptr);
    // Before any sync: the sign-in fetched it.
    EXPECT_EQ(tablet->OrgUnitLabel(commune_), "Xã Một (90101)");
    EXPECT_EQ(tablet->UserLabel(coordinator), "Nguyễn Văn An");
  }
  // The server goes away; the tablet restarts offline.
  server_->Shutdown(absl::Seconds(1));
  server_.reset();
  std::unique_ptr<Client> tablet = Ok(Client::Open(options));
  ASSERT_NE(tablet, nullptr);
  OrgUnit commune = Ok(tablet->GetOrgUnit(commune_));
  EXPECT_EQ(commune.code(), "90101");
  EXPECT_EQ(commune.name(), "Xã Một");
  EXPECT_EQ(commune.level(), ORG_UNIT_LEVEL_COMMUNE);
  EXPECT_EQ(commune.parent_id(), district_);
  EXPECT_EQ(Ok(tablet->FindOrgUnitByCode("90101")).id(), commune_);
  EXPECT_EQ(tablet->OrgUnitLabel(district_), "Huyện Một (901)");  // the path above
  EXPECT_EQ(tablet->OrgUnitLabel(province_), "Tỉnh Demo (90)");
  EXPECT_THAT(Ok(tablet->ListOrgUnits()), SizeIs(3));
  User coord = Ok(tablet->GetDirectoryUser(coordinator));
  EXPECT_EQ(coord.display_name(), "Nguyễn Văn An");
  EXPECT_EQ(coord.role(), ROLE_DISTRICT_COORDINATOR);
  EXPECT_TRUE(coord.phone().empty());     // never sent
  EXPECT_TRUE(coord.username().empty());  // never sent
  // Outside the user's directory: unknown, the id shown instead.
  EXPECT_EQ(tablet->GetOrgUnit(other_commune_).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(tablet->FindOrgUnitByCode("90102").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(tablet->FindOrgUnitByCode("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tablet->OrgUnitLabel(other_commune_), absl::StrCat(other_commune_));
  EXPECT_EQ(tablet->GetDirectoryUser(chi).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(tablet->UserLabel(chi), absl::StrCat(chi));
}

// A changed name arrives with the next sync; signing out, or another user signing in,
// takes the directory away with the rest of the user's data.
TEST_F(AccountTest, TheDirectoryFollowsTheServerAndLeavesWithItsUser) {
  server::Directory* d = server_->directory();
  const int64_t coordinator = Ok(d->FindUser("dp_huyen")).id();
  std::unique_ptr<Client> tablet = SignedIn("tab-dir", "ctv_an");
  ASSERT_NE(tablet, nullptr);
  EXPECT_EQ(tablet->UserLabel(coordinator), "dp_huyen");
  ASSERT_TRUE(tablet->SyncNow().ok());  // nothing changed: the stored copy stays
  EXPECT_EQ(tablet->UserLabel(coordinator), "dp_huyen");
  ASSERT_TRUE(d->UpdateProfile(coordinator, "Nguyễn Văn An", "").ok());
  ASSERT_TRUE(tablet->SyncNow().ok());
  EXPECT_EQ(tablet->UserLabel(coordinator), "Nguyễn Văn An");

  // Another user signs in on the same tablet: only that user's directory remains.
  ASSERT_TRUE(tablet->SignIn("ctv_chi", kPassword).ok());
  EXPECT_EQ(tablet->GetOrgUnit(commune_).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(tablet->OrgUnitLabel(other_commune_), "Xã Hai (90102)");
  EXPECT_EQ(tablet->UserLabel(coordinator), "Nguyễn Văn An");  // decides there too
  ASSERT_TRUE(tablet->SignOut().ok());
  EXPECT_THAT(Ok(tablet->ListOrgUnits()), SizeIs(0));
  EXPECT_EQ(tablet->GetDirectoryUser(coordinator).status().code(), absl::StatusCode::kNotFound);
  // Nothing of it left in the file either.
  tablet.reset();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(Options("tab-dir").path.c_str(), &db), SQLITE_OK);
  for (const char* table : {"_dir_org_units", "_dir_users", "_dir_meta"}) {
    sqlite3_stmt* stmt = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(db, absl::StrCat("SELECT count(*) FROM ", table).c_str(), -1,
                                 &stmt, nullptr),
              SQLITE_OK)
        << table;
    ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
    EXPECT_EQ(sqlite3_column_int(stmt, 0), 0) << table;
    sqlite3_finalize(stmt);
  }
  sqlite3_close(db);
}

}  // namespace
}  // namespace kcnet::sdk
