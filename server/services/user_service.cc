#include <algorithm>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/rpc/paging.h"
#include "server/services/checks.h"
#include "server/services/directory_services.h"

namespace kcnet::server {
namespace {

using kcnet::v1::User;

// The fields of User that the directory's own errors name ("username: ...").
constexpr std::initializer_list<absl::string_view> kUserFields = {"username", "display_name",
                                                                  "phone", "role", "org_unit_ids"};

absl::Status AdministratorsOnly(const Principal& caller, absl::string_view what) {
  if (caller.role == kcnet::v1::ROLE_ADMINISTRATOR) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat("only administrators may ", what));
}

// The caller, for the directory's audit trail.
AuditActor By(const Principal& caller) { return AuditActor{caller.user_id, caller.username}; }

// The same answer for a user that does not exist and one the caller may not see.
absl::Status UserNotFound(absl::string_view field, int64_t id) {
  return absl::NotFoundError(absl::StrCat(field, ": no user ", id));
}

// The user `id` if the caller may see it, else NOT_FOUND naming `field`.
absl::StatusOr<User> VisibleUser(Directory& directory, const Principal& caller,
                                 absl::string_view field, int64_t id) {
  absl::StatusOr<User> user = directory.GetUser(id);
  if (!user.ok() && user.status().code() != absl::StatusCode::kNotFound) return user.status();
  if (!user.ok() || !MaySeeUser(directory, caller, *user)) return UserNotFound(field, id);
  return user;
}

// The user `id` if the administrator may change it (NOT_FOUND when it may not see it,
// PERMISSION_DENIED when the user also works outside the administrator's scope).
absl::StatusOr<User> ChangeableUser(Directory& directory, const Principal& caller,
                                    absl::string_view field, int64_t id) {
  absl::StatusOr<User> user = VisibleUser(directory, caller, field, id);
  if (!user.ok()) return user.status();
  if (!CoversUser(directory, caller, *user)) {
    return absl::PermissionDeniedError(
        absl::StrCat(field, ": user ", id, " also works outside your org units"));
  }
  return user;
}

// Checks a new assignment: at least one unit, each an id > 0 inside the administrator's
// scope (PERMISSION_DENIED otherwise, the same for units that do not exist).
absl::Status CheckAssignment(Directory& directory, const Principal& caller,
                             const google::protobuf::RepeatedField<int64_t>& units) {
  if (units.empty()) {
    return absl::InvalidArgumentError("user.org_unit_ids: at least one org unit is required");
  }
  for (int i = 0; i < units.size(); ++i) {
    const std::string field = absl::StrCat("user.org_unit_ids[", i, "]");
    absl::Status status = CheckId(field, units[i]);
    if (!status.ok()) return status;
    if (!Covers(directory, caller, units[i])) {
      return absl::PermissionDeniedError(
          absl::StrCat(field, ": org unit ", units[i], " is not within your org units"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

grpc::ServerUnaryReactor* UserServiceImpl::GetUser(grpc::CallbackServerContext* context,
                                                   const kcnet::v1::GetUserRequest* request,
                                                   User* response) {
  return runner_->Run(
      context, "/kcnet.v1.UserService/GetUser", [this, request, response](const Principal* caller) {
        absl::Status status = CheckId("id", request->id());
        if (!status.ok()) return status;
        absl::StatusOr<User> user = VisibleUser(*directory_, *caller, "id", request->id());
        if (!user.ok()) return user.status();
        *response = *std::move(user);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* UserServiceImpl::ListUsers(grpc::CallbackServerContext* context,
                                                     const kcnet::v1::ListUsersRequest* request,
                                                     kcnet::v1::ListUsersResponse* response) {
  return runner_->Run(
      context, "/kcnet.v1.UserService/ListUsers",
      [this, request, response](const Principal* caller) -> absl::Status {
        absl::StatusOr<int> page_size = PageSize(request->page_size());
        if (!page_size.ok()) return page_size.status();
        const uint64_t fingerprint = QueryFingerprint(*request, absl::StrCat(caller->user_id));
        absl::StatusOr<std::string> position = DecodePageToken(request->page_token(), fingerprint);
        if (!position.ok()) return position.status();

        std::vector<User> users;
        for (int64_t root : caller->org_unit_ids) {
          // A unit removed since the token was issued contributes nobody.
          UserFilter filter;
          filter.within = {root};
          absl::StatusOr<std::vector<User>> some = directory_->ListUsers(filter);
          if (!some.ok()) {
            if (some.status().code() == absl::StatusCode::kNotFound) continue;
            return some.status();
          }
          for (User& user : *some) users.push_back(std::move(user));
        }
        std::sort(users.begin(), users.end(),
                  [](const User& a, const User& b) { return a.username() < b.username(); });
        users.erase(std::unique(users.begin(), users.end(),
                                [](const User& a, const User& b) { return a.id() == b.id(); }),
                    users.end());

        std::string next;
        std::vector<User> page = TakePage(
            std::move(users), *position, *page_size,
            [](const User& user) -> const std::string& { return user.username(); }, &next);
        for (User& user : page) *response->add_users() = std::move(user);
        if (!next.empty()) response->set_next_page_token(EncodePageToken(fingerprint, next));
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* UserServiceImpl::CreateUser(grpc::CallbackServerContext* context,
                                                      const kcnet::v1::CreateUserRequest* request,
                                                      User* response) {
  return runner_->Run(
      context, "/kcnet.v1.UserService/CreateUser",
      [this, request, response](const Principal* caller) -> absl::Status {
        absl::Status status = AdministratorsOnly(*caller, "create users");
        if (!status.ok()) return status;
        if (!request->has_user()) return absl::InvalidArgumentError("user: required");
        const User& user = request->user();
        if (user.id() != 0) {
          return absl::InvalidArgumentError("user.id: must be 0; the server assigns ids");
        }
        status = CheckRole("user.role", user.role());
        if (!status.ok()) return status;
        status = CheckAssignment(*directory_, *caller, user.org_unit_ids());
        if (!status.ok()) return status;
        const std::vector<int64_t> units(user.org_unit_ids().begin(), user.org_unit_ids().end());
        // One directory write with the phone: a bad phone stores nothing.
        absl::StatusOr<User> created =
            directory_->CreateUser(user.username(), user.display_name(), request->password(),
                                   user.role(), units, user.phone(), By(*caller));
        if (!created.ok()) return UnderField(created.status(), "user", kUserFields);
        *response = *std::move(created);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* UserServiceImpl::UpdateUser(grpc::CallbackServerContext* context,
                                                      const kcnet::v1::UpdateUserRequest* request,
                                                      User* response) {
  return runner_->Run(
      context, "/kcnet.v1.UserService/UpdateUser",
      [this, request, response](const Principal* caller) -> absl::Status {
        absl::Status status = AdministratorsOnly(*caller, "update users");
        if (!status.ok()) return status;
        if (!request->has_user()) return absl::InvalidArgumentError("user: required");
        const User& user = request->user();
        status = CheckId("user.id", user.id());
        if (!status.ok()) return status;
        const google::protobuf::FieldMask& mask = request->update_mask();
        status = CheckUpdateMask(mask, {"display_name", "phone", "role", "org_unit_ids", "active"});
        if (!status.ok()) return status;
        const bool new_role = MaskHas(mask, "role");
        const bool new_units = MaskHas(mask, "org_unit_ids");
        if (new_role) {
          status = CheckRole("user.role", user.role());
          if (!status.ok()) return status;
        }
        absl::StatusOr<User> current = ChangeableUser(*directory_, *caller, "user.id", user.id());
        if (!current.ok()) return current.status();
        // An administrator's own role, units and activity are changed by another
        // administrator: one account must not widen (or lock) itself.
        if (user.id() == caller->user_id && (new_role || new_units || MaskHas(mask, "active"))) {
          return absl::PermissionDeniedError(
              "user.id: administrators may not change their own role, org units or activity; "
              "ask another administrator");
        }
        if (new_units) {
          status = CheckAssignment(*directory_, *caller, user.org_unit_ids());
          if (!status.ok()) return status;
        }
        const bool new_profile = MaskHas(mask, "display_name") || MaskHas(mask, "phone");
        const bool deactivate = MaskHas(mask, "active") && !user.active() && current->active();
        const bool activate = MaskHas(mask, "active") && user.active() && !current->active();
        if (new_profile) {
          absl::StatusOr<User> profiled = directory_->UpdateProfile(
              user.id(),
              MaskHas(mask, "display_name") ? user.display_name() : current->display_name(),
              MaskHas(mask, "phone") ? user.phone() : current->phone(), By(*caller));
          if (!profiled.ok()) return UnderField(profiled.status(), "user", kUserFields);
        }
        if (activate) {
          status = directory_->ActivateUser(user.id(), By(*caller));
          if (!status.ok()) return status;
        }

        if (new_role || new_units) {
          const kcnet::v1::Role role = new_role ? user.role() : current->role();
          const auto& ids = new_units ? user.org_unit_ids() : current->org_unit_ids();
          absl::StatusOr<User> assigned = directory_->AssignUser(
              user.id(), role, std::vector<int64_t>(ids.begin(), ids.end()), By(*caller));
          if (!assigned.ok()) return UnderField(assigned.status(), "user", kUserFields);
        }
        if (deactivate) {
          status = directory_->DeactivateUser(user.id(), By(*caller));
          if (!status.ok()) return status;
        }
        absl::StatusOr<User> updated = directory_->GetUser(user.id());
        if (!updated.ok()) return updated.status();
        *response = *std::move(updated);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* UserServiceImpl::ResetPassword(
    grpc::CallbackServerContext* context, const kcnet::v1::ResetPasswordRequest* request,
    kcnet::v1::ResetPasswordResponse* response) {
  return runner_->Run(context, "/kcnet.v1.UserService/ResetPassword",
                      [this, request](const Principal* caller) -> absl::Status {
                        absl::Status status = AdministratorsOnly(*caller, "reset passwords");
                        if (!status.ok()) return status;
                        status = CheckId("user_id", request->user_id());
                        if (!status.ok()) return status;
                        absl::StatusOr<User> target =
                            ChangeableUser(*directory_, *caller, "user_id", request->user_id());
                        if (!target.ok()) return target.status();
                        status = directory_->ResetPassword(request->user_id(),
                                                           request->new_password(), By(*caller));
                        return RenameField(status, "password", "new_password");
                      });
}

}  // namespace kcnet::server
