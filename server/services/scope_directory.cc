// OrgUnitService.GetScopeDirectory: what a device needs to show names instead of ids (the
// org units of the caller's scope and the path above them, and the users who work there),
// in one answer whose version is a digest of its content, so that an unchanged directory
// costs one tiny "not modified" answer. docs/API.md, "The device's directory".
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "server/directory/secrets.h"
#include "server/services/directory_services.h"

namespace kcnet::server {
namespace {

using kcnet::v1::OrgUnit;
using kcnet::v1::ScopeDirectory;

// The ids of the caller's scope (the subtrees of its org units) and of every ancestor of
// its org units. Units removed since the token was issued contribute nothing.
absl::StatusOr<absl::flat_hash_set<int64_t>> ScopeAndPathAbove(Directory& directory,
                                                               const Principal& caller) {
  absl::flat_hash_set<int64_t> ids;
  for (int64_t root : caller.org_unit_ids) {
    absl::StatusOr<std::vector<int64_t>> subtree = directory.Subtree({root});
    if (!subtree.ok()) {
      if (subtree.status().code() == absl::StatusCode::kNotFound) continue;
      return subtree.status();
    }
    ids.insert(subtree->begin(), subtree->end());
    // The path above: parents up to the root of the tree.
    for (int64_t at = root; at != 0;) {
      absl::StatusOr<OrgUnit> unit = directory.GetOrgUnit(at);
      if (!unit.ok()) {
        if (unit.status().code() == absl::StatusCode::kNotFound) break;
        return unit.status();
      }
      ids.insert(at);
      at = unit->parent_id();
    }
  }
  return ids;
}

// A digest of the directory's content: its version. Deterministic serialization, so the
// same content always gives the same version (also across server restarts).
std::string VersionOf(const ScopeDirectory& directory) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream out(&stream);
    out.SetSerializationDeterministic(true);
    directory.SerializeToCodedStream(&out);
  }
  return absl::BytesToHexString(internal::Sha256(bytes).substr(0, 16));
}

}  // namespace

grpc::ServerUnaryReactor* OrgUnitServiceImpl::GetScopeDirectory(
    grpc::CallbackServerContext* context, const kcnet::v1::GetScopeDirectoryRequest* request,
    ScopeDirectory* response) {
  return runner_->Run(
      context, "/kcnet.v1.OrgUnitService/GetScopeDirectory",
      [this, request, response](const Principal* caller) -> absl::Status {
        if (request->known_version().size() > 64) {
          return absl::InvalidArgumentError(
              "known_version: at most 64 characters (the version of an earlier answer)");
        }
        absl::StatusOr<absl::flat_hash_set<int64_t>> ids = ScopeAndPathAbove(*directory_, *caller);
        if (!ids.ok()) return ids.status();
        std::vector<int64_t> sorted(ids->begin(), ids->end());
        std::sort(sorted.begin(), sorted.end());

        ScopeDirectory full;
        for (int64_t id : sorted) {
          absl::StatusOr<OrgUnit> unit = directory_->GetOrgUnit(id);
          if (!unit.ok()) {
            if (unit.status().code() == absl::StatusCode::kNotFound) continue;  // just removed
            return unit.status();
          }
          *full.add_org_units() = *std::move(unit);
        }
        // Users who work in the scope or on the path above, deactivated ones too (their
        // names stay on the records they wrote). Only id, display name, role, active.
        absl::StatusOr<std::vector<kcnet::v1::User>> users = directory_->ListUsers();
        if (!users.ok()) return users.status();
        std::sort(
            users->begin(), users->end(),
            [](const kcnet::v1::User& a, const kcnet::v1::User& b) { return a.id() < b.id(); });
        for (const kcnet::v1::User& user : *users) {
          const bool works_here =
              std::any_of(user.org_unit_ids().begin(), user.org_unit_ids().end(),
                          [&](int64_t unit) { return ids->contains(unit); });
          if (!works_here) continue;
          kcnet::v1::DirectoryUser* out = full.add_users();
          out->set_id(user.id());
          out->set_display_name(user.display_name());
          out->set_role(user.role());
          out->set_active(user.active());
        }

        const std::string version = VersionOf(full);
        if (!request->known_version().empty() && request->known_version() == version) {
          response->set_version(version);
          response->set_not_modified(true);
          return absl::OkStatus();
        }
        *response = std::move(full);
        response->set_version(version);
        return absl::OkStatus();
      });
}

}  // namespace kcnet::server
