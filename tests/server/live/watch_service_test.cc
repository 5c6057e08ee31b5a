// WatchService.WatchChanges against a real KcnetServer on 127.0.0.1: the first notice at
// once, a notice when a write lands in the caller's communes and none for another
// district's, the per-user cap, and a revoked token ending the stream.
#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "kcnet/v1/services.grpc.pb.h"
#include "tests/server/services/test_server.h"

namespace kcnet::server {
namespace {

using ::kcnet::server::testing::Authorize;
using ::kcnet::server::testing::SignIn;
using ::kcnet::server::testing::TestServer;
using v1::ChangeNotice;

// One open WatchChanges stream, read on its own thread.
class Watch {
 public:
  Watch(const std::shared_ptr<grpc::Channel>& channel, const std::string& token)
      : stub_(v1::WatchService::NewStub(channel)) {
    Authorize(&context_, token);
    reader_ = stub_->WatchChanges(&context_, v1::WatchChangesRequest());
    thread_ = std::thread([this] {
      ChangeNotice notice;
      while (reader_->Read(&notice)) {
        absl::MutexLock lock(&mu_);
        seqs_.push_back(notice.seq());
      }
      grpc::Status status = reader_->Finish();
      absl::MutexLock lock(&mu_);
      status_ = status;
      done_ = true;
    });
  }
  ~Watch() {
    context_.TryCancel();
    thread_.join();
  }

  // Waits up to 5 s for at least `n` notices; the count seen.
  size_t WaitForNotices(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]()
                      ABSL_SHARED_LOCKS_REQUIRED(mu_) { return seqs_.size() >= n || done_; };
    mu_.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(5));
    return seqs_.size();
  }
  size_t notices() {
    absl::MutexLock lock(&mu_);
    return seqs_.size();
  }
  uint64_t seq(size_t i) {
    absl::MutexLock lock(&mu_);
    return seqs_.at(i);
  }
  // Waits up to 5 s for the stream to end; its status (OK if it has not ended).
  grpc::Status WaitForEnd() {
    absl::MutexLock lock(&mu_);
    auto ended = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return done_; };
    mu_.AwaitWithTimeout(absl::Condition(&ended), absl::Seconds(5));
    return done_ ? status_ : grpc::Status::OK;
  }
  bool done() {
    absl::MutexLock lock(&mu_);
    return done_;
  }

 private:
  std::unique_ptr<v1::WatchService::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<ChangeNotice>> reader_;
  std::thread thread_;
  absl::Mutex mu_;
  std::vector<uint64_t> seqs_ ABSL_GUARDED_BY(mu_);
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
};

class WatchServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.ok());
    Directory& d = server_.directory();
    auto p = *d.CreateOrgUnit("90", "Tỉnh Demo", v1::ORG_UNIT_LEVEL_PROVINCE, 0);
    auto d1 = *d.CreateOrgUnit("901", "Huyện Một", v1::ORG_UNIT_LEVEL_DISTRICT, p.id());
    auto d2 = *d.CreateOrgUnit("902", "Huyện Hai", v1::ORG_UNIT_LEVEL_DISTRICT, p.id());
    c1_ = d.CreateOrgUnit("90101", "Xã Một", v1::ORG_UNIT_LEVEL_COMMUNE, d1.id())->id();
    c2_ = d.CreateOrgUnit("90201", "Xã Hai", v1::ORG_UNIT_LEVEL_COMMUNE, d2.id())->id();
    ASSERT_TRUE(d.CreateUser("coord1", "Coord 1", "coord1-password", v1::ROLE_DISTRICT_COORDINATOR,
                             {d1.id()})
                    .ok());
    ASSERT_TRUE(d.CreateUser("collab1", "Collab 1", "collab1-password",
                             v1::ROLE_COMMUNE_COLLABORATOR, {c1_})
                    .ok());
    ASSERT_TRUE(d.CreateUser("collab2", "Collab 2", "collab2-password",
                             v1::ROLE_COMMUNE_COLLABORATOR, {c2_})
                    .ok());
    channel_ = server_.Channel();
  }

  void AddFacility(const std::string& user, int64_t commune) {
    auto stub = v1::FacilityService::NewStub(channel_);
    grpc::ClientContext context;
    Authorize(&context, SignIn(channel_, user, user + "-password"));
    v1::CreateFacilityRequest request;
    request.mutable_facility()->set_commune_id(commune);
    request.mutable_facility()->set_name("Cơ sở mây tre đan");
    request.mutable_facility()->set_owner_name("Nguyễn Văn A");
    request.mutable_facility()->set_kind(v1::FACILITY_KIND_HOUSEHOLD_BUSINESS);
    v1::Facility out;
    grpc::Status status = stub->CreateFacility(&context, request, &out);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }

  TestServer server_;
  std::shared_ptr<grpc::Channel> channel_;
  int64_t c1_ = 0;
  int64_t c2_ = 0;
};

TEST_F(WatchServiceTest, NoticeForMyCommunesOnly) {
  Watch watch(channel_, SignIn(channel_, "coord1", "coord1-password"));
  ASSERT_EQ(watch.WaitForNotices(1), 1u);
  EXPECT_EQ(watch.seq(0), 0u);

  AddFacility("collab2", c2_);  // another district
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(watch.notices(), 1u) << "a write in another district's commune is not news";

  AddFacility("collab1", c1_);
  ASSERT_EQ(watch.WaitForNotices(2), 2u);
  EXPECT_EQ(watch.seq(1), 1u);
  EXPECT_FALSE(watch.done());
}

TEST_F(WatchServiceTest, WithoutATokenIsUnauthenticated) {
  auto stub = v1::WatchService::NewStub(channel_);
  grpc::ClientContext context;
  auto reader = stub->WatchChanges(&context, v1::WatchChangesRequest());
  ChangeNotice notice;
  EXPECT_FALSE(reader->Read(&notice));
  grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(status.error_message().rfind("authorization:", 0), 0u) << status.error_message();
}

TEST_F(WatchServiceTest, AtMostFourStreamsPerUser) {
  const std::string token = SignIn(channel_, "coord1", "coord1-password");
  std::vector<std::unique_ptr<Watch>> open;
  for (int i = 0; i < 4; ++i) {
    open.push_back(std::make_unique<Watch>(channel_, token));
    ASSERT_EQ(open.back()->WaitForNotices(1), 1u);
  }
  Watch fifth(channel_, token);
  EXPECT_EQ(fifth.WaitForEnd().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // Closing one makes room again.
  open.pop_back();
  for (int i = 0; i < 50; ++i) {
    Watch again(channel_, token);
    if (again.WaitForNotices(1) == 1u && !again.done()) return;
    absl::SleepFor(absl::Milliseconds(50));
  }
  FAIL() << "no room after closing a stream";
}

TEST_F(WatchServiceTest, RevokedTokenEndsTheStreamAtTheNextNotice) {
  const std::string token = SignIn(channel_, "coord1", "coord1-password");
  Watch watch(channel_, token);
  ASSERT_EQ(watch.WaitForNotices(1), 1u);
  ASSERT_TRUE(server_.directory().Logout(token).ok());
  AddFacility("collab1", c1_);  // a notice goes out, then the token is read again
  AddFacility("collab1", c1_);
  EXPECT_EQ(watch.WaitForEnd().error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

}  // namespace
}  // namespace kcnet::server
