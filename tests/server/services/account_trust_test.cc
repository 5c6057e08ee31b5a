// Trust holes of issue 13 in accounts and sign-in (parts 5 and 6) on a real server and a
// real directory file: a bad phone that still created the user, an administrator changing
// its own role, account changes without an audit trail, a lock-out that parallel guesses
// passed and a restart forgot, and sign-in floods without a rate limit.
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "google/rpc/error_details.pb.h"
#include "gtest/gtest.h"
#include "kcnet/v1/services.grpc.pb.h"
#include "tests/server/services/test_server.h"
#include "tests/testing/test_util.h"

namespace kcnet::server {
namespace {

using ::kcnet::server::testing::Authorize;
using ::kcnet::server::testing::FieldViolations;
using ::kcnet::server::testing::kTestStartMs;
using ::kcnet::server::testing::SignIn;
using ::kcnet::server::testing::TestServer;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Pair;
using namespace ::kcnet::v1;  // NOLINT: messages and enum constants

constexpr char kPassword[] = "password-123";

class AccountTrustTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.ok());
    Directory& d = server_.directory();
    province_ = d.CreateOrgUnit("90", "Tỉnh", ORG_UNIT_LEVEL_PROVINCE, 0)->id();
    commune_ =
        d.CreateOrgUnit("90101", "Xã", ORG_UNIT_LEVEL_COMMUNE,
                        d.CreateOrgUnit("901", "Huyện", ORG_UNIT_LEVEL_DISTRICT, province_)->id())
            ->id();
    auto admin = d.CreateUser("admin1", "Admin", kPassword, ROLE_ADMINISTRATOR, {province_});
    ASSERT_TRUE(admin.ok());
    admin_id_ = admin->id();
    channel_ = server_.Channel();
    users_ = UserService::NewStub(channel_);
    admin_token_ = SignIn(channel_, "admin1", kPassword);
  }

  std::unique_ptr<grpc::ClientContext> AsAdmin() {
    auto context = std::make_unique<grpc::ClientContext>();
    Authorize(context.get(), admin_token_);
    return context;
  }

  TestServer server_;
  int64_t province_ = 0, commune_ = 0, admin_id_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<UserService::Stub> users_;
  std::string admin_token_;
};

TEST_F(AccountTrustTest, CreateUserWithABadPhoneStoresNothing) {
  CreateUserRequest request;
  request.mutable_user()->set_username("collab.phone");
  request.mutable_user()->set_display_name("C");
  request.mutable_user()->set_role(ROLE_COMMUNE_COLLABORATOR);
  request.mutable_user()->add_org_unit_ids(commune_);
  request.mutable_user()->set_phone("call me maybe");
  request.set_password(kPassword);
  User out;
  grpc::Status status = users_->CreateUser(AsAdmin().get(), request, &out);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  ASSERT_FALSE(FieldViolations(status).empty());
  EXPECT_EQ(FieldViolations(status)[0].first, "user.phone");
  EXPECT_EQ(server_.directory().FindUser("collab.phone").status().code(),
            absl::StatusCode::kNotFound);
  // The same request with a good phone then succeeds (the username was not taken).
  request.mutable_user()->set_phone("+84 912 345 678");
  status = users_->CreateUser(AsAdmin().get(), request, &out);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(out.phone(), "+84 912 345 678");
}

TEST_F(AccountTrustTest, AnAdministratorCannotChangeItsOwnRoleUnitsOrActivity) {
  for (const char* path : {"role", "org_unit_ids", "active"}) {
    UpdateUserRequest request;
    request.mutable_user()->set_id(admin_id_);
    request.mutable_user()->set_role(ROLE_PROVINCE_OFFICER);
    request.mutable_user()->add_org_unit_ids(commune_);
    request.mutable_user()->set_active(false);
    request.mutable_update_mask()->add_paths(path);
    User out;
    grpc::Status status = users_->UpdateUser(AsAdmin().get(), request, &out);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << path << ": " << status.error_message();
  }
  absl::StatusOr<User> me = server_.directory().GetUser(admin_id_);
  ASSERT_TRUE(me.ok());
  EXPECT_EQ(me->role(), ROLE_ADMINISTRATOR);
  EXPECT_TRUE(me->active());
  // Its own phone is fine.
  UpdateUserRequest phone;
  phone.mutable_user()->set_id(admin_id_);
  phone.mutable_user()->set_phone("0912");
  phone.mutable_update_mask()->add_paths("phone");
  User out;
  EXPECT_TRUE(users_->UpdateUser(AsAdmin().get(), phone, &out).ok());
}

TEST_F(AccountTrustTest, AccountChangesLeaveAnAuditTrail) {
  CreateUserRequest create;
  create.mutable_user()->set_username("collab.audit");
  create.mutable_user()->set_display_name("C");
  create.mutable_user()->set_role(ROLE_COMMUNE_COLLABORATOR);
  create.mutable_user()->add_org_unit_ids(commune_);
  create.set_password(kPassword);
  User user;
  ASSERT_TRUE(users_->CreateUser(AsAdmin().get(), create, &user).ok());
  UpdateUserRequest update;
  update.mutable_user()->set_id(user.id());
  update.mutable_user()->set_role(ROLE_DISTRICT_COORDINATOR);
  update.mutable_user()->set_active(false);
  update.mutable_update_mask()->add_paths("role");
  update.mutable_update_mask()->add_paths("active");
  User out;
  grpc::Status status = users_->UpdateUser(AsAdmin().get(), update, &out);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ResetPasswordRequest reset;
  reset.set_user_id(user.id());
  reset.set_new_password("new-password-1");
  ResetPasswordResponse reset_out;
  ASSERT_TRUE(users_->ResetPassword(AsAdmin().get(), reset, &reset_out).ok());

  absl::StatusOr<std::vector<AuditEntry>> trail = server_.directory().ListAudit(0, 100);
  ASSERT_TRUE(trail.ok()) << trail.status();
  std::vector<std::string> lines;
  for (const AuditEntry& e : *trail) {
    if (e.target_user_id != user.id()) continue;
    EXPECT_EQ(e.actor_id, admin_id_);
    EXPECT_EQ(e.actor, "admin1");
    EXPECT_EQ(e.at_ms, kTestStartMs);
    lines.push_back(absl::StrCat(e.action, " ", e.details));
  }
  EXPECT_THAT(lines, Contains(HasSubstr("create_user")));
  EXPECT_THAT(lines, Contains(HasSubstr("commune_collaborator -> district_coordinator")));
  EXPECT_THAT(lines, Contains(HasSubstr("deactivate_user")));
  EXPECT_THAT(lines, Contains(HasSubstr("reset_password")));
  for (const std::string& line : lines)
    EXPECT_THAT(line, ::testing::Not(HasSubstr("new-password")));
}

// ---- Sign-in --------------------------------------------------------------------------

class LockoutTest : public ::testing::Test {
 protected:
  DirectoryOptions Options() {
    DirectoryOptions options;
    options.clock = &clock_;
    options.password_ops_limit = kArgon2OpsLimitMin;
    options.password_mem_limit = kArgon2MemLimitMin;
    options.lockout_after_failures = 3;
    options.lockout_initial = absl::Minutes(1);
    return options;
  }
  kcnet::testing::TempDir dir_;
  sync::FakeClock clock_{kTestStartMs};
};

TEST_F(LockoutTest, TheLockOutSurvivesARestart) {
  const std::string path = absl::StrCat(dir_.path(), "/directory.db");
  {
    auto directory = Directory::Open(path, Options());
    ASSERT_TRUE(directory.ok());
    const int64_t unit =
        (*directory)->CreateOrgUnit("90", "Tỉnh", ORG_UNIT_LEVEL_PROVINCE, 0)->id();
    ASSERT_TRUE((*directory)
                    ->CreateUser("collab1", "C", kPassword, ROLE_COMMUNE_COLLABORATOR, {unit})
                    .ok());
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ((*directory)->Login("collab1", "wrong").status().code(),
                absl::StatusCode::kUnauthenticated);
    }
    EXPECT_EQ((*directory)->Login("collab1", kPassword).status().code(),
              absl::StatusCode::kResourceExhausted);
  }
  auto reopened = Directory::Open(path, Options());
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ((*reopened)->Login("collab1", kPassword).status().code(),
            absl::StatusCode::kResourceExhausted);
  clock_.Advance(61 * 1000);
  EXPECT_TRUE((*reopened)->Login("collab1", kPassword).ok());
}

TEST_F(LockoutTest, ParallelGuessesAreCountedBeforeTheHash) {
  DirectoryOptions options = Options();
  // A hash slow enough that the guesses overlap.
  options.password_ops_limit = 3;
  options.password_mem_limit = size_t{8} << 20;
  auto directory = Directory::Open(absl::StrCat(dir_.path(), "/d.db"), options);
  ASSERT_TRUE(directory.ok());
  const int64_t unit = (*directory)->CreateOrgUnit("90", "Tỉnh", ORG_UNIT_LEVEL_PROVINCE, 0)->id();
  ASSERT_TRUE(
      (*directory)->CreateUser("collab1", "C", kPassword, ROLE_COMMUNE_COLLABORATOR, {unit}).ok());
  std::atomic<int> hashed{0};
  absl::Notification go;
  std::vector<std::thread> threads;
  for (int i = 0; i < 12; ++i) {
    threads.emplace_back([&] {
      go.WaitForNotification();
      if ((*directory)->Login("collab1", "wrong").status().code() ==
          absl::StatusCode::kUnauthenticated) {
        ++hashed;
      }
    });
  }
  go.Notify();
  for (std::thread& t : threads) t.join();
  EXPECT_LE(hashed.load(), 3);
}

TEST(SignInLimitTest, ASignInFloodFromOnePeerIsRefusedWithARetryDelay) {
  TestServer server([](ServerOptions& options) {
    options.sign_in.per_peer.burst = 3;
    options.sign_in.per_peer.per_second = 0.01;
  });
  ASSERT_TRUE(server.ok());
  auto auth = AuthService::NewStub(server.Channel());
  grpc::Status status;
  for (int i = 0; i < 4; ++i) {
    grpc::ClientContext context;
    LoginRequest request;
    request.set_username(absl::StrCat("nobody", i));
    request.set_password("wrong-password");
    LoginResponse response;
    status = auth->Login(&context, request, &response);
    if (i < 3) {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    }
  }
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("retry in"));
  google::rpc::Status details;
  ASSERT_TRUE(details.ParseFromString(status.error_details()));
  bool has_retry_info = false;
  for (const google::protobuf::Any& any : details.details()) {
    google::rpc::RetryInfo info;
    if (any.UnpackTo(&info)) has_retry_info = info.retry_delay().seconds() > 0;
  }
  EXPECT_TRUE(has_retry_info);
}

TEST(SignInLimitTest, ASignInFloodForOneUserIsRefusedWithARetryDelay) {
  TestServer server([](ServerOptions& options) {
    options.sign_in.per_user.burst = 2;
    options.sign_in.per_user.per_second = 0.01;
  });
  ASSERT_TRUE(server.ok());
  auto auth = AuthService::NewStub(server.Channel());
  grpc::Status status;
  for (int i = 0; i < 3; ++i) {
    grpc::ClientContext context;
    LoginRequest request;
    request.set_username("somebody");
    request.set_password("wrong-password");
    LoginResponse response;
    status = auth->Login(&context, request, &response);
  }
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("retry in"));
  // Another username from the same peer still gets through.
  grpc::ClientContext context;
  LoginRequest request;
  request.set_username("other");
  request.set_password("wrong-password");
  LoginResponse response;
  EXPECT_EQ(auth->Login(&context, request, &response).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

}  // namespace
}  // namespace kcnet::server
