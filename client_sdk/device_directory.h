// DeviceDirectory: the device's copy of its directory (OrgUnitService.GetScopeDirectory,
// docs/API.md): the org units of the user's scope and the path above it, and the users
// who work there (id, display name, role), so that the SDK, the CLI and apps show
// "Xã An Bình (90101)" and "Nguyễn Văn An" instead of ids, offline too.
//
// It lives in the device store's file, in tables of its own (created by the device store's
// migration 2 -> 3, kDeviceStoreMigrations in sync/device_store.h; DeviceStore::PurgeAll empties
// them with the user's other data on sign-out and user switch). The copy is replaced whole, in one
// transaction, together with the version the server gave it.
//
// Thread-safety: thread-safe (every call runs under the DeviceStore's lock).
#ifndef KCNET_CLIENT_SDK_DEVICE_DIRECTORY_H_
#define KCNET_CLIENT_SDK_DEVICE_DIRECTORY_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kcnet/v1/domain.pb.h"
#include "kcnet/v1/services.pb.h"
#include "sync/device_store.h"

namespace kcnet::sdk {

// The directory's tables (created by kDeviceStoreMigrations, sync/device_store.h):
//   _dir_org_units: one row per org unit (code indexed: `--commune 90101`);
//   _dir_users:     one row per user, only what GetScopeDirectory gives;
//   _dir_meta:      'version' -> the server's version of this copy.
// The tables PurgeAll empties (DeviceStoreOptions::app_tables).
std::vector<std::string> DeviceDirectoryTables();

class DeviceDirectory {
 public:
  // `store` was opened with DeviceDirectoryTables() as its app tables, and must
  // outlive this object.
  explicit DeviceDirectory(sync::DeviceStore* store) : store_(store) {}

  // The version of the stored copy; empty when there is none.
  absl::StatusOr<std::string> Version();
  // Replaces the stored copy with `directory` (a full answer, not `not_modified`).
  absl::Status Replace(const kcnet::v1::ScopeDirectory& directory);

  // Lookups in the stored copy; nullopt when it does not hold the id / code. A user has
  // only id, display_name, role and active set.
  absl::StatusOr<std::optional<kcnet::v1::OrgUnit>> OrgUnit(int64_t id);
  absl::StatusOr<std::optional<kcnet::v1::OrgUnit>> OrgUnitByCode(absl::string_view code);
  absl::StatusOr<std::optional<kcnet::v1::User>> User(int64_t id);
  // Every org unit of the copy, ordered by id.
  absl::StatusOr<std::vector<kcnet::v1::OrgUnit>> OrgUnits();

 private:
  // The units `where` selects (a WHERE clause or empty), after `bind` (optional) bound its
  // parameters.
  absl::StatusOr<std::vector<kcnet::v1::OrgUnit>> SelectUnits(
      absl::string_view where, const std::function<void(sync::Statement*)>& bind);
  sync::DeviceStore* const store_;
};

}  // namespace kcnet::sdk

#endif  // KCNET_CLIENT_SDK_DEVICE_DIRECTORY_H_
