// Checks shared by the directory services: input validation (errors name the field, so
// that ToGrpcStatus() attaches a BadRequest field violation) and the caller's scope.
//
// Thread-safety: the functions are thread-safe (the Directory is).
#ifndef KCNET_SERVER_SERVICES_CHECKS_H_
#define KCNET_SERVER_SERVICES_CHECKS_H_

#include <cstdint>
#include <initializer_list>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/field_mask.pb.h"
#include "kcnet/v1/domain.pb.h"
#include "server/directory/directory.h"

namespace kcnet::server {

// ---- Validation -------------------------------------------------------------------

// INVALID_ARGUMENT "<field>: must be > 0, got N" unless id > 0.
absl::Status CheckId(absl::string_view field, int64_t id);

// INVALID_ARGUMENT naming `field` unless `role` is a known role other than unspecified.
absl::Status CheckRole(absl::string_view field, kcnet::v1::Role role);

// INVALID_ARGUMENT unless `mask` names at least one path, each one of `allowed`
// ("update_mask: ..." / "update_mask.paths[i]: ...").
absl::Status CheckUpdateMask(const google::protobuf::FieldMask& mask,
                             std::initializer_list<absl::string_view> allowed);

// True when `mask` names `path`.
bool MaskHas(const google::protobuf::FieldMask& mask, absl::string_view path);

// `status` with its leading field path put under `parent` ("username: x" becomes
// "user.username: x") when that field is one of `fields`; any other status unchanged.
absl::Status UnderField(absl::Status status, absl::string_view parent,
                        std::initializer_list<absl::string_view> fields);

// `status` with its leading field `from` renamed to `to` ("password: x" becomes
// "new_password: x"); any other status unchanged.
absl::Status RenameField(absl::Status status, absl::string_view from, absl::string_view to);

// ---- Scope ------------------------------------------------------------------------

// True when `unit_id` lies in one of the caller's subtrees.
bool Covers(Directory& directory, const Principal& caller, int64_t unit_id);

// True when the caller may see the org unit: it lies in the caller's scope or is an
// ancestor of one of the caller's units.
bool MaySeeOrgUnit(Directory& directory, const Principal& caller, int64_t unit_id);

// True when at least one of the user's org units lies in the caller's scope.
bool MaySeeUser(Directory& directory, const Principal& caller, const kcnet::v1::User& user);

// True when every one of the user's org units lies in the caller's scope.
bool CoversUser(Directory& directory, const Principal& caller, const kcnet::v1::User& user);

}  // namespace kcnet::server

#endif  // KCNET_SERVER_SERVICES_CHECKS_H_
