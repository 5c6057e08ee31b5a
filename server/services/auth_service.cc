#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/rpc/storage_rpc_runner.h"
#include "server/services/checks.h"
#include "server/services/directory_services.h"

namespace kcnet::server {
namespace {

// Longer than any username or password the directory accepts.
constexpr size_t kMaxCredentialBytes = 1024;

absl::Status CheckCredential(absl::string_view field, const std::string& value) {
  if (value.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": required"));
  if (value.size() > kMaxCredentialBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": longer than ", kMaxCredentialBytes, " bytes"));
  }
  return absl::OkStatus();
}

}  // namespace

grpc::ServerUnaryReactor* AuthServiceImpl::Login(grpc::CallbackServerContext* context,
                                                 const kcnet::v1::LoginRequest* request,
                                                 kcnet::v1::LoginResponse* response) {
  return runner_->RunSignIn(
      context, "/kcnet.v1.AuthService/Login", request->username(),
      [this, request, response](const Principal*) {
        absl::Status status = CheckCredential("username", request->username());
        if (!status.ok()) return status;
        status = CheckCredential("password", request->password());
        if (!status.ok()) return status;
        if (request->device_id().size() > 128) {
          return absl::InvalidArgumentError(absl::StrCat(
              "device_id: must be at most 128 bytes, got ", request->device_id().size()));
        }
        absl::StatusOr<LoginResult> result =
            directory_->Login(request->username(), request->password());
        if (!result.ok()) return result.status();
        if (!request->device_id().empty()) {
          absl::StatusOr<std::string> credential =
              directory_->IssueDeviceCredential(result->user.id(), request->device_id());
          if (!credential.ok()) {
            // Nothing stays behind from a failed call: the token dies with it.
            directory_->Logout(result->token).IgnoreError();
            return credential.status();
          }
          response->set_device_credential(*std::move(credential));
        }
        response->set_token(result->token);
        response->set_expires_ms(result->expires_ms);
        *response->mutable_user() = std::move(result->user);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AuthServiceImpl::Logout(grpc::CallbackServerContext* context,
                                                  const kcnet::v1::LogoutRequest* request,
                                                  kcnet::v1::LogoutResponse* response) {
  // The runner authenticates the same token before the body runs.
  std::string token = BearerToken(*context).value_or("");
  return runner_->Run(context, "/kcnet.v1.AuthService/Logout",
                      [this, request, token = std::move(token)](const Principal* caller) {
                        if (request->device_id().size() > 128) {
                          return absl::InvalidArgumentError("device_id: must be at most 128 bytes");
                        }
                        if (!request->device_id().empty()) {
                          absl::StatusOr<int> revoked = directory_->RevokeDeviceCredentials(
                              request->device_id(), caller->user_id, caller->user_id);
                          if (!revoked.ok()) return revoked.status();
                        }
                        return directory_->Logout(token);
                      });
}

grpc::ServerUnaryReactor* AuthServiceImpl::RefreshToken(
    grpc::CallbackServerContext* context, const kcnet::v1::RefreshTokenRequest* request,
    kcnet::v1::LoginResponse* response) {
  return runner_->RunPublic(
      context, "/kcnet.v1.AuthService/RefreshToken", [this, request, response](const Principal*) {
        absl::StatusOr<LoginResult> result =
            directory_->RefreshToken(request->device_id(), request->device_credential());
        if (!result.ok()) return result.status();
        response->set_token(result->token);
        response->set_expires_ms(result->expires_ms);
        *response->mutable_user() = std::move(result->user);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AuthServiceImpl::RevokeDeviceCredentials(
    grpc::CallbackServerContext* context, const kcnet::v1::RevokeDeviceCredentialsRequest* request,
    kcnet::v1::RevokeDeviceCredentialsResponse* response) {
  return runner_->Run(
      context, "/kcnet.v1.AuthService/RevokeDeviceCredentials",
      [this, request, response](const Principal* caller) -> absl::Status {
        if (caller->role != kcnet::v1::ROLE_ADMINISTRATOR) {
          return absl::PermissionDeniedError("RevokeDeviceCredentials: administrators only");
        }
        if (request->user_id() > 0) {
          // As for a password reset: a user whose org units all lie in the
          // administrator's scope; one outside it reads like an unknown one.
          absl::StatusOr<kcnet::v1::User> user = directory_->GetUser(request->user_id());
          if (!user.ok() || !MaySeeUser(*directory_, *caller, *user)) {
            return absl::NotFoundError(absl::StrCat("user_id: no user ", request->user_id()));
          }
          if (!CoversUser(*directory_, *caller, *user)) {
            return absl::PermissionDeniedError(absl::StrCat("user_id: user ", request->user_id(),
                                                            " also works outside your org units"));
          }
        }
        absl::StatusOr<int> revoked = directory_->RevokeDeviceCredentials(
            request->device_id(), request->user_id(), caller->user_id);
        if (!revoked.ok()) return revoked.status();
        response->set_revoked(*revoked);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AuthServiceImpl::WhoAmI(grpc::CallbackServerContext* context,
                                                  const kcnet::v1::WhoAmIRequest* request,
                                                  kcnet::v1::WhoAmIResponse* response) {
  return runner_->Run(context, "/kcnet.v1.AuthService/WhoAmI",
                      [this, response](const Principal* caller) {
                        absl::StatusOr<kcnet::v1::User> user = directory_->GetUser(caller->user_id);
                        if (!user.ok()) return user.status();
                        *response->mutable_user() = *std::move(user);
                        return absl::OkStatus();
                      });
}

std::vector<std::unique_ptr<grpc::Service>> MakeDirectoryServices(Directory* directory,
                                                                  RpcRunner* runner) {
  std::vector<std::unique_ptr<grpc::Service>> services;
  services.push_back(std::make_unique<AuthServiceImpl>(directory, runner));
  services.push_back(std::make_unique<OrgUnitServiceImpl>(directory, runner));
  services.push_back(std::make_unique<UserServiceImpl>(directory, runner));
  return services;
}

}  // namespace kcnet::server
