#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/rpc/storage_rpc_runner.h"
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
  return runner_->RunSignIn(context, "/kcnet.v1.AuthService/Login", request->username(),
                            [this, request, response](const Principal*) {
                              absl::Status status =
                                  CheckCredential("username", request->username());
                              if (!status.ok()) return status;
                              status = CheckCredential("password", request->password());
                              if (!status.ok()) return status;
                              absl::StatusOr<LoginResult> result =
                                  directory_->Login(request->username(), request->password());
                              if (!result.ok()) return result.status();
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
  return runner_->Run(
      context, "/kcnet.v1.AuthService/Logout",
      [this, token = std::move(token)](const Principal*) { return directory_->Logout(token); });
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
