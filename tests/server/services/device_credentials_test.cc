// Device credentials through a real server: Login with a device id issues one, RefreshToken
// trades it for a token without the password (also 180 days later), Logout with the device
// id and an administrator revoke it, and a revoked credential reads like an unknown one.
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kcnet/v1/services.grpc.pb.h"
#include "tests/server/services/test_server.h"

namespace kcnet::server {
namespace {

using ::kcnet::server::testing::Authorize;
using ::kcnet::server::testing::TestServer;
using ::testing::HasSubstr;

constexpr char kPassword[] = "pw-collab-123";
constexpr int64_t kDayMs = 24 * 3600 * 1000;

class DeviceCredentialsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.ok());
    absl::StatusOr<v1::OrgUnit> p =
        server_.directory().CreateOrgUnit("10", "P", v1::ORG_UNIT_LEVEL_PROVINCE, 0);
    ASSERT_TRUE(p.ok());
    absl::StatusOr<v1::User> collab = server_.directory().CreateUser(
        "collab", "Collab", kPassword, v1::ROLE_COMMUNE_COLLABORATOR, {p->id()});
    ASSERT_TRUE(collab.ok());
    collab_id_ = collab->id();
    ASSERT_TRUE(server_.directory()
                    .CreateUser("admin", "Admin", kPassword, v1::ROLE_ADMINISTRATOR, {p->id()})
                    .ok());
    auth_ = v1::AuthService::NewStub(server_.Channel());
  }

  v1::LoginResponse Login(const std::string& user, const std::string& device) {
    grpc::ClientContext ctx;
    v1::LoginRequest req;
    req.set_username(user);
    req.set_password(kPassword);
    req.set_device_id(device);
    v1::LoginResponse resp;
    grpc::Status s = auth_->Login(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp;
  }

  grpc::Status Refresh(const std::string& device, const std::string& credential,
                       v1::LoginResponse* resp) {
    grpc::ClientContext ctx;
    v1::RefreshTokenRequest req;
    req.set_device_id(device);
    req.set_device_credential(credential);
    return auth_->RefreshToken(&ctx, req, resp);
  }

  grpc::Status WhoAmI(const std::string& token) {
    grpc::ClientContext ctx;
    Authorize(&ctx, token);
    v1::WhoAmIResponse resp;
    return auth_->WhoAmI(&ctx, v1::WhoAmIRequest(), &resp);
  }

  TestServer server_;
  std::unique_ptr<v1::AuthService::Stub> auth_;
  int64_t collab_id_ = 0;
};

TEST_F(DeviceCredentialsTest, ACredentialBuysTokensWithoutThePasswordForMonths) {
  v1::LoginResponse login = Login("collab", "tab-1");
  ASSERT_FALSE(login.device_credential().empty());
  EXPECT_NE(login.device_credential(), login.token());
  server_.clock().Advance(180 * kDayMs);
  EXPECT_EQ(WhoAmI(login.token()).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  v1::LoginResponse fresh;
  grpc::Status s = Refresh("tab-1", login.device_credential(), &fresh);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(fresh.device_credential().empty());
  EXPECT_EQ(fresh.user().username(), "collab");
  EXPECT_GT(fresh.expires_ms(), login.expires_ms());
  EXPECT_TRUE(WhoAmI(fresh.token()).ok());
  // Bound to its device id: another device id with it is refused.
  v1::LoginResponse other;
  EXPECT_EQ(Refresh("tab-2", login.device_credential(), &other).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // Without a device id, Login issues none.
  grpc::ClientContext ctx;
  v1::LoginRequest req;
  req.set_username("collab");
  req.set_password(kPassword);
  v1::LoginResponse plain;
  ASSERT_TRUE(auth_->Login(&ctx, req, &plain).ok());
  EXPECT_TRUE(plain.device_credential().empty());
}

TEST_F(DeviceCredentialsTest, RevokedReadsLikeUnknownAfterLogoutOrAnAdministrator) {
  v1::LoginResponse login = Login("collab", "tab-1");
  v1::LoginResponse resp;
  const grpc::Status unknown = Refresh("tab-1", "not-a-credential", &resp);
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  // Sign-out with the device id revokes the token and the credential.
  {
    grpc::ClientContext ctx;
    Authorize(&ctx, login.token());
    v1::LogoutRequest req;
    req.set_device_id("tab-1");
    v1::LogoutResponse out;
    ASSERT_TRUE(auth_->Logout(&ctx, req, &out).ok());
  }
  EXPECT_EQ(WhoAmI(login.token()).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  grpc::Status revoked = Refresh("tab-1", login.device_credential(), &resp);
  EXPECT_EQ(revoked.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(revoked.error_message(), unknown.error_message());

  // An administrator revokes a device's credentials; a collaborator may not.
  v1::LoginResponse again = Login("collab", "tab-1");
  v1::LoginResponse admin = Login("admin", "admin-pc");
  v1::RevokeDeviceCredentialsRequest req;
  req.set_device_id("tab-1");
  v1::RevokeDeviceCredentialsResponse out;
  {
    grpc::ClientContext ctx;
    Authorize(&ctx, again.token());
    EXPECT_EQ(auth_->RevokeDeviceCredentials(&ctx, req, &out).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  ASSERT_TRUE(Refresh("tab-1", again.device_credential(), &resp).ok());
  {
    grpc::ClientContext ctx;
    Authorize(&ctx, admin.token());
    grpc::Status s = auth_->RevokeDeviceCredentials(&ctx, req, &out);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(out.revoked(), 1);
  }
  revoked = Refresh("tab-1", again.device_credential(), &resp);
  EXPECT_EQ(revoked.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(revoked.error_message(), unknown.error_message());
  EXPECT_THAT(revoked.error_message(), HasSubstr("sign in again"));
  // By user: every device of the user (a password that leaked).
  v1::LoginResponse third = Login("collab", "tab-3");
  v1::RevokeDeviceCredentialsRequest by_user;
  by_user.set_user_id(collab_id_);
  {
    grpc::ClientContext ctx;
    Authorize(&ctx, admin.token());
    grpc::Status s = auth_->RevokeDeviceCredentials(&ctx, by_user, &out);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(out.revoked(), 1);
  }
  EXPECT_EQ(Refresh("tab-3", third.device_credential(), &resp).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // Neither given: refused, naming the field.
  {
    grpc::ClientContext ctx;
    Authorize(&ctx, admin.token());
    grpc::Status s =
        auth_->RevokeDeviceCredentials(&ctx, v1::RevokeDeviceCredentialsRequest(), &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("device_id"));
  }
}

TEST_F(DeviceCredentialsTest, ADeactivatedUsersCredentialIsRefused) {
  v1::LoginResponse login = Login("collab", "tab-1");
  ASSERT_TRUE(server_.directory().DeactivateUser(collab_id_).ok());
  v1::LoginResponse resp;
  EXPECT_EQ(Refresh("tab-1", login.device_credential(), &resp).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

}  // namespace
}  // namespace kcnet::server
