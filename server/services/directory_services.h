// The directory's unary services: AuthService (sign-in), OrgUnitService (the org-unit tree)
// and UserService (accounts). docs/API.md has the table of who may call what.
//
// Scope rules, the same for every method:
//   - A caller works in the union of the subtrees of its org units ("its scope").
//   - Org units: a caller sees the units in its scope and their ancestors (the path up to
//     the root), nothing else; any other unit is NOT_FOUND, as if it did not exist.
//   - Users: a caller sees the users with at least one org unit in its scope; others are
//     NOT_FOUND. Only administrators change accounts (PERMISSION_DENIED otherwise), and
//     only accounts whose org units all lie in the administrator's scope, assigned to
//     units in that scope.
//
// Every handler returns at once; the work runs on the RpcRunner's storage threads.
//
// Thread-safety: the services are thread-safe; the directory and the runner must outlive
// them.
#ifndef KCNET_SERVER_SERVICES_DIRECTORY_SERVICES_H_
#define KCNET_SERVER_SERVICES_DIRECTORY_SERVICES_H_

#include <memory>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "kcnet/v1/services.grpc.pb.h"
#include "server/directory/directory.h"
#include "server/rpc/rpc_runner.h"

namespace kcnet::server {

// Login (public; with a device id it also issues a device credential), Logout (revokes the
// call's own token and, with a device id, the caller's credential for it), WhoAmI,
// RefreshToken (public: a device credential for a new token), RevokeDeviceCredentials
// (administrators).
class AuthServiceImpl final : public kcnet::v1::AuthService::CallbackService {
 public:
  AuthServiceImpl(Directory* directory, RpcRunner* runner)
      : directory_(directory), runner_(runner) {}

  grpc::ServerUnaryReactor* Login(grpc::CallbackServerContext* context,
                                  const kcnet::v1::LoginRequest* request,
                                  kcnet::v1::LoginResponse* response) override;
  grpc::ServerUnaryReactor* Logout(grpc::CallbackServerContext* context,
                                   const kcnet::v1::LogoutRequest* request,
                                   kcnet::v1::LogoutResponse* response) override;
  grpc::ServerUnaryReactor* WhoAmI(grpc::CallbackServerContext* context,
                                   const kcnet::v1::WhoAmIRequest* request,
                                   kcnet::v1::WhoAmIResponse* response) override;
  grpc::ServerUnaryReactor* RefreshToken(grpc::CallbackServerContext* context,
                                         const kcnet::v1::RefreshTokenRequest* request,
                                         kcnet::v1::LoginResponse* response) override;
  grpc::ServerUnaryReactor* RevokeDeviceCredentials(
      grpc::CallbackServerContext* context,
      const kcnet::v1::RevokeDeviceCredentialsRequest* request,
      kcnet::v1::RevokeDeviceCredentialsResponse* response) override;

 private:
  Directory* const directory_;
  RpcRunner* const runner_;
};

// GetOrgUnit and ListOrgUnits (children of a unit, or the caller's own units for
// parent_id 0), ordered by official code; GetScopeDirectory (a device's names and codes).
class OrgUnitServiceImpl final : public kcnet::v1::OrgUnitService::CallbackService {
 public:
  OrgUnitServiceImpl(Directory* directory, RpcRunner* runner)
      : directory_(directory), runner_(runner) {}

  grpc::ServerUnaryReactor* GetOrgUnit(grpc::CallbackServerContext* context,
                                       const kcnet::v1::GetOrgUnitRequest* request,
                                       kcnet::v1::OrgUnit* response) override;
  grpc::ServerUnaryReactor* ListOrgUnits(grpc::CallbackServerContext* context,
                                         const kcnet::v1::ListOrgUnitsRequest* request,
                                         kcnet::v1::ListOrgUnitsResponse* response) override;
  // The caller's scope and the path above it, with the users who work there
  // (scope_directory.cc): what a device shows names with.
  grpc::ServerUnaryReactor* GetScopeDirectory(grpc::CallbackServerContext* context,
                                              const kcnet::v1::GetScopeDirectoryRequest* request,
                                              kcnet::v1::ScopeDirectory* response) override;
  // The official code list's import, for an administrator whose scope covers every root.
  grpc::ServerUnaryReactor* ImportOrgUnits(grpc::CallbackServerContext* context,
                                           const kcnet::v1::ImportOrgUnitsRequest* request,
                                           kcnet::v1::ImportOrgUnitsResponse* response) override;

 private:
  Directory* const directory_;
  RpcRunner* const runner_;
};

// GetUser, ListUsers (ordered by username), and the administrators' CreateUser,
// UpdateUser and ResetPassword.
//
// UpdateUser changes role and org_unit_ids together (one directory write) and deactivates
// with active=false. Two changes the directory cannot make yet answer UNIMPLEMENTED:
// a new display_name, and active=true for a deactivated user; naming them in the mask
// with the current value is accepted (nothing to change).
class UserServiceImpl final : public kcnet::v1::UserService::CallbackService {
 public:
  UserServiceImpl(Directory* directory, RpcRunner* runner)
      : directory_(directory), runner_(runner) {}

  grpc::ServerUnaryReactor* GetUser(grpc::CallbackServerContext* context,
                                    const kcnet::v1::GetUserRequest* request,
                                    kcnet::v1::User* response) override;
  grpc::ServerUnaryReactor* ListUsers(grpc::CallbackServerContext* context,
                                      const kcnet::v1::ListUsersRequest* request,
                                      kcnet::v1::ListUsersResponse* response) override;
  grpc::ServerUnaryReactor* CreateUser(grpc::CallbackServerContext* context,
                                       const kcnet::v1::CreateUserRequest* request,
                                       kcnet::v1::User* response) override;
  grpc::ServerUnaryReactor* UpdateUser(grpc::CallbackServerContext* context,
                                       const kcnet::v1::UpdateUserRequest* request,
                                       kcnet::v1::User* response) override;
  grpc::ServerUnaryReactor* ResetPassword(grpc::CallbackServerContext* context,
                                          const kcnet::v1::ResetPasswordRequest* request,
                                          kcnet::v1::ResetPasswordResponse* response) override;

 private:
  Directory* const directory_;
  RpcRunner* const runner_;
};

// The three services above, to register on a grpc::ServerBuilder.
std::vector<std::unique_ptr<grpc::Service>> MakeDirectoryServices(Directory* directory,
                                                                  RpcRunner* runner);

}  // namespace kcnet::server

#endif  // KCNET_SERVER_SERVICES_DIRECTORY_SERVICES_H_
