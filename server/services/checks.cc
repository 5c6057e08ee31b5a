#include "server/services/checks.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kcnet::server {
namespace {

// The field that opens a "field: reason" message, or empty.
absl::string_view LeadingField(absl::string_view message) {
  const size_t colon = message.find(": ");
  return colon == absl::string_view::npos ? absl::string_view() : message.substr(0, colon);
}

}  // namespace

absl::Status CheckId(absl::string_view field, int64_t id) {
  if (id > 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, ": must be > 0, got ", id));
}

absl::Status CheckRole(absl::string_view field, kcnet::v1::Role role) {
  if (role == kcnet::v1::ROLE_UNSPECIFIED) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": required"));
  }
  if (!kcnet::v1::Role_IsValid(role)) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": unknown role ", role));
  }
  return absl::OkStatus();
}

absl::Status CheckUpdateMask(const google::protobuf::FieldMask& mask,
                             std::initializer_list<absl::string_view> allowed) {
  if (mask.paths().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "update_mask: name the fields to change (any of ", absl::StrJoin(allowed, ", "), ")"));
  }
  for (int i = 0; i < mask.paths_size(); ++i) {
    const std::string& path = mask.paths(i);
    if (std::find(allowed.begin(), allowed.end(), path) == allowed.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("update_mask.paths[", i, "]: '", path,
                       "' cannot be updated (allowed: ", absl::StrJoin(allowed, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

bool MaskHas(const google::protobuf::FieldMask& mask, absl::string_view path) {
  return std::find(mask.paths().begin(), mask.paths().end(), path) != mask.paths().end();
}

absl::Status UnderField(absl::Status status, absl::string_view parent,
                        std::initializer_list<absl::string_view> fields) {
  const absl::string_view field = LeadingField(status.message());
  if (field.empty() || std::find(fields.begin(), fields.end(), field) == fields.end()) {
    return status;
  }
  return absl::Status(status.code(), absl::StrCat(parent, ".", status.message()));
}

absl::Status RenameField(absl::Status status, absl::string_view from, absl::string_view to) {
  if (LeadingField(status.message()) != from) return status;
  return absl::Status(status.code(), absl::StrCat(to, status.message().substr(from.size())));
}

bool Covers(Directory& directory, const Principal& caller, int64_t unit_id) {
  for (int64_t root : caller.org_unit_ids) {
    if (directory.IsWithin(unit_id, root)) return true;
  }
  return false;
}

bool MaySeeOrgUnit(Directory& directory, const Principal& caller, int64_t unit_id) {
  for (int64_t root : caller.org_unit_ids) {
    if (directory.IsWithin(unit_id, root) || directory.IsWithin(root, unit_id)) return true;
  }
  return false;
}

bool MaySeeUser(Directory& directory, const Principal& caller, const kcnet::v1::User& user) {
  for (int64_t unit : user.org_unit_ids()) {
    if (Covers(directory, caller, unit)) return true;
  }
  return false;
}

bool CoversUser(Directory& directory, const Principal& caller, const kcnet::v1::User& user) {
  if (user.org_unit_ids().empty()) return false;
  for (int64_t unit : user.org_unit_ids()) {
    if (!Covers(directory, caller, unit)) return false;
  }
  return true;
}

}  // namespace kcnet::server
